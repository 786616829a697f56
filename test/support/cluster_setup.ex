defmodule TinkexNative.Test.ClusterSetup do
  @moduledoc """
  What every multi-node test of `test/cluster/` starts with: a simulator,
  `:peer` nodes (connected, unless `connect: false`), and a key of its own.

      ctx = ClusterSetup.start(cluster: [max_in_flight: 20, lease_ttl_ms: 1_000])
      a = ClusterSetup.client(ctx, hd(ctx.peers))
      load = ClusterSetup.load(ctx, hd(ctx.peers), a, concurrency: 30)
  """

  import ExUnit.Assertions

  alias TinkexNative.Test.{ClusterNode, Peers, TinkerSim}

  @doc """
  Options: `:peers` (3), `:sim` (options of `TinkerSim.start/1`),
  `:cluster` (the clients' `:cluster` option), `:connect` (true),
  `:client` (more start options).
  """
  def start(opts) do
    sim = TinkerSim.start(Keyword.get(opts, :sim, []))
    peers = Peers.start(Keyword.get(opts, :peers, 3))
    if Keyword.get(opts, :connect, true), do: :ok = Peers.connect(peers)
    key = "tml-cluster-#{System.unique_integer([:positive])}"

    client_opts =
      [base_url: sim.base_url, api_key: key, base_model: "Qwen/Qwen3-8B"] ++
        Keyword.get(opts, :client, []) ++ [cluster: Keyword.fetch!(opts, :cluster)]

    %{sim: sim, peers: peers, key: key, base_url: sim.base_url, client_opts: client_opts}
  end

  @doc "Starts a client on `peer` (extra start options override)."
  def client(ctx, peer, extra \\ []) do
    {:ok, pid} =
      Peers.rpc(peer, ClusterNode, :start_client, [Keyword.merge(ctx.client_opts, extra)])

    pid
  end

  @doc "Starts a load on `peer` (see `TinkexNative.Test.ClusterNode.start_load/2`)."
  def load(_ctx, peer, client, opts),
    do: Peers.rpc(peer, ClusterNode, :start_load, [client, opts])

  @doc "Stops a load and returns its summary; asserts no sample failed or hung."
  def stop_load!(peer, load, timeout \\ 60_000) do
    summary = Peers.rpc(peer, ClusterNode, :stop_load, [load, timeout], timeout + 10_000)
    assert summary.errors == [], "samples failed on #{peer.node}: #{inspect(summary.errors)}"
    assert summary.outstanding == 0, "#{summary.outstanding} samples hung on #{peer.node}"
    summary
  end

  @doc "The load's counters."
  def status(peer, load), do: Peers.rpc(peer, ClusterNode, :load_status, [load])

  @doc "`TinkexNative.Cluster.stats/2` as seen from `peer`."
  def stats(ctx, peer), do: Peers.rpc(peer, TinkexNative.Cluster, :stats, [ctx.base_url, ctx.key])

  @doc "`peer`'s own entry of the stats (nil while it has none)."
  def node_stats(ctx, peer), do: stats(ctx, peer).nodes[peer.node]

  @doc "The peer whose node runs the coordinator, as `from` (default: the first peer) sees it."
  def coordinator(ctx, from \\ nil) do
    node = stats(ctx, from || hd(ctx.peers)).coordinator
    Enum.find(ctx.peers, &(&1.node == node))
  end

  @doc "Waits until `fun` holds (checked every 5 ms); returns the ms it took."
  def await(fun, ms, what) do
    t0 = System.monotonic_time(:millisecond)
    deadline = t0 + ms
    poll(fun, deadline, what)
    System.monotonic_time(:millisecond) - t0
  end

  defp poll(fun, deadline, what) do
    cond do
      fun.() ->
        :ok

      System.monotonic_time(:millisecond) > deadline ->
        flunk("#{what}: did not happen in time")

      true ->
        Process.sleep(5)
        poll(fun, deadline, what)
    end
  end
end
