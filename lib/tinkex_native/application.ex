defmodule TinkexNative.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    # A NIF that cannot load stops the application here, with the fix in
    # the message, instead of surfacing later as `:nif_not_loaded`.
    with :ok <- native_loaded() do
      children = [
        TinkexNative.ClientTable,
        TinkexNative.Cluster.Supervisor
      ]

      Supervisor.start_link(children, strategy: :one_for_one, name: TinkexNative.Supervisor)
    end
  end

  # Here, not in `TinkexNative.Native`: that module does not exist when
  # its `@on_load` failed.
  defp native_loaded do
    case Code.ensure_loaded(TinkexNative.Native) do
      {:module, _} ->
        :ok

      {:error, reason} ->
        default = "TinkexNative.Native could not be loaded: #{inspect(reason)}"

        {:error,
         {:native_not_loaded, :persistent_term.get({TinkexNative.Native, :load_error}, default)}}
    end
  end
end
