defmodule TinkexNative.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    children = [
      TinkexNative.ClientTable
    ]

    Supervisor.start_link(children, strategy: :one_for_one, name: TinkexNative.Supervisor)
  end
end
