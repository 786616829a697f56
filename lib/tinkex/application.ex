defmodule Tinkex.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    children = [
      Tinkex.ClientTable
    ]

    Supervisor.start_link(children, strategy: :one_for_one, name: Tinkex.Supervisor)
  end
end
