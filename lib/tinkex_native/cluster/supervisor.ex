defmodule TinkexNative.Cluster.Supervisor do
  @moduledoc false
  # The cluster layer's processes on this node: the `:pg` scope the
  # members of every key join, a registry of this node's members (one per
  # key), and the dynamic supervisors of members and coordinators. Nothing
  # runs until a client starts with `cluster:` set.
  use Supervisor

  def start_link(_), do: Supervisor.start_link(__MODULE__, nil, name: __MODULE__)

  @impl true
  def init(nil) do
    children = [
      %{id: :pg, start: {:pg, :start_link, [TinkexNative.Cluster.Member.scope()]}},
      {Registry, keys: :unique, name: TinkexNative.Cluster.Registry},
      {DynamicSupervisor, name: TinkexNative.Cluster.Members, strategy: :one_for_one},
      {DynamicSupervisor, name: TinkexNative.Cluster.Coordinators, strategy: :one_for_one}
    ]

    Supervisor.init(children, strategy: :one_for_one)
  end
end
