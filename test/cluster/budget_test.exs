defmodule TinkexNative.ClusterBudgetTest do
  # Invariants 2-4 on 3 `:peer` nodes against tinker_sim: the simulator
  # never sees more than n outstanding samples of the key (its
  # `max_futures_outstanding`) through a join, a member killed, the
  # coordinator's node killed and a netsplit; a killed node's share
  # returns within the lease ttl + 1 s with no other node's sample failing
  # or hanging; and the budget is work-conserving.
  use ExUnit.Case, async: false
  @moduletag :cluster
  @moduletag timeout: 180_000

  alias TinkexNative.Test.{ClusterSetup, Peers, TinkerSim}

  @n 20
  @ttl 1_000
  # Samples outstanding at the server for 150-250 ms each, so the count
  # the simulator sees tracks the permits in use.
  @latency "150..250"

  defp setup_cluster(opts \\ []) do
    defaults = [cluster: [max_in_flight: @n, lease_ttl_ms: @ttl], sim: [latency_ms: @latency]]
    ClusterSetup.start(Keyword.merge(defaults, opts))
  end

  defp busy(ctx, peers, concurrency \\ 30) do
    for p <- peers do
      c = ClusterSetup.client(ctx, p)
      {p, ClusterSetup.load(ctx, p, c, concurrency: concurrency)}
    end
  end

  defp leased(ctx, from, peers) do
    nodes = ClusterSetup.stats(ctx, from).nodes
    peers |> Enum.map(&((nodes[&1.node] || %{leased: 0}).leased || 0)) |> Enum.sum()
  end

  defp in_flight(ctx, peer), do: (ClusterSetup.node_stats(ctx, peer) || %{in_flight: 0}).in_flight

  defp done(runs), do: Map.new(runs, fn {p, l} -> {p.node, ClusterSetup.status(p, l).done} end)

  # Waits until every load in `runs` did `more` samples beyond `since`.
  defp progress(runs, since, more, what) do
    ClusterSetup.await(
      fn -> Enum.all?(done(runs), fn {n, d} -> d >= Map.get(since, n, 0) + more end) end,
      30_000,
      what
    )
  end

  defp assert_bound(ctx) do
    stats = TinkerSim.stats(ctx.sim)
    max = stats["max_futures_outstanding"]
    assert max <= @n, "the simulator saw #{max} outstanding samples (budget #{@n})"
    # ... and the budget was used, so the bound means something.
    assert max >= @n - 2, "only #{max} outstanding at most: the budget was never full"
  end

  test "a node joining" do
    ctx = setup_cluster(connect: false)
    [a, b, c] = ctx.peers
    :ok = Peers.connect([a, b])
    runs = busy(ctx, [a, b])

    ClusterSetup.await(
      fn -> leased(ctx, a, [a, b]) == @n end,
      5_000,
      "a and b sharing the budget"
    )

    progress(runs, %{}, 20, "a and b sampling")

    :ok = Peers.connect(ctx.peers)
    runs = runs ++ busy(ctx, [c])
    ClusterSetup.await(fn -> in_flight(ctx, c) >= 4 end, 5_000, "c getting a share")
    progress(runs, done(runs), 20, "all three sampling")

    for {p, l} <- runs, do: ClusterSetup.stop_load!(p, l)
    assert_bound(ctx)
  end

  for role <- [:member, :coordinator] do
    test "a #{role} node killed mid-run: its share returns within ttl + 1 s, nothing else fails" do
      ctx = setup_cluster()
      runs = busy(ctx, ctx.peers)

      ClusterSetup.await(
        fn -> leased(ctx, hd(ctx.peers), ctx.peers) == @n end,
        5_000,
        "full budget"
      )

      progress(runs, %{}, 10, "all three sampling")

      coordinator = ClusterSetup.coordinator(ctx)

      victim =
        case unquote(role) do
          :coordinator -> coordinator
          :member -> Enum.find(ctx.peers, &(&1 != coordinator))
        end

      survivors = ctx.peers -- [victim]
      runs = Enum.reject(runs, fn {p, _} -> p == victim end)
      before = done(runs)
      :ok = Peers.kill(victim)

      took =
        ClusterSetup.await(
          fn -> leased(ctx, hd(survivors), survivors) == @n end,
          @ttl + 3_000,
          "the share returning"
        )

      assert took <= @ttl + 1_000, "the killed node's share took #{took} ms to return"

      # The survivors use it, and none of their samples failed or hung.
      ClusterSetup.await(
        fn -> Enum.all?(survivors, &(in_flight(ctx, &1) >= 8)) end,
        5_000,
        "the survivors using the whole budget"
      )

      progress(runs, before, 20, "the survivors sampling")

      if unquote(role) == :coordinator,
        do: assert(ClusterSetup.coordinator(ctx, hd(survivors)) in survivors)

      for {p, l} <- runs, do: ClusterSetup.stop_load!(p, l)
      assert_bound(ctx)
    end
  end

  for role <- [:member, :coordinator] do
    test "a netsplit cutting off a #{role} node: never over budget, the cut-off node resumes after the heal" do
      # Samples longer than the lease and its margin: the cut-off node's
      # requests would still run at the server when the majority takes
      # its share, unless they are withdrawn.
      ctx = setup_cluster(sim: [latency_ms: "1000..2000"])
      runs = busy(ctx, ctx.peers)

      ClusterSetup.await(
        fn -> leased(ctx, hd(ctx.peers), ctx.peers) == @n end,
        5_000,
        "full budget"
      )

      progress(runs, %{}, 10, "all three sampling")

      coordinator = ClusterSetup.coordinator(ctx)

      cut =
        case unquote(role) do
          :coordinator -> coordinator
          :member -> Enum.find(ctx.peers, &(&1 != coordinator))
        end

      majority = ctx.peers -- [cut]
      :ok = Peers.split(cut, majority)

      # The cut-off node's lease runs out: its requests are withdrawn
      # from the server and it starts nothing more.
      ClusterSetup.await(
        fn ->
          s = ClusterSetup.node_stats(ctx, cut)
          s.lease_expired and s.in_flight == 0
        end,
        @ttl * 3,
        "the cut-off node stopping"
      )

      # The majority takes over the whole budget.
      ClusterSetup.await(
        fn -> leased(ctx, hd(majority), majority) == @n end,
        @ttl * 4,
        "the majority taking the budget"
      )

      majority_runs = Enum.reject(runs, fn {p, _} -> p == cut end)
      progress(majority_runs, done(majority_runs), 20, "the majority sampling")

      stalled = ClusterSetup.status(cut, runs |> Enum.find(fn {p, _} -> p == cut end) |> elem(1))
      assert TinkerSim.stats(ctx.sim)["max_futures_outstanding"] <= @n

      # Heal: the cut-off node gets a share again and its samples, which
      # waited (none failed), go on.
      :ok = Peers.connect(ctx.peers)
      ClusterSetup.await(fn -> in_flight(ctx, cut) >= 3 end, @ttl * 5, "the healed node sampling")
      progress(runs, %{cut.node => stalled.done}, 10, "everyone sampling after the heal")

      for {p, l} <- runs, do: ClusterSetup.stop_load!(p, l)
      assert_bound(ctx)
      assert TinkerSim.stats(ctx.sim)["futures_cancelled"] > 0, "nothing was withdrawn"
    end
  end

  test "2 nodes, the senior one killed: no majority left, so the other waits for forget_node/3" do
    ctx = setup_cluster(peers: 2)
    [senior, junior] = Enum.sort_by(ctx.peers, & &1.node)
    runs = busy(ctx, ctx.peers)
    ClusterSetup.await(fn -> leased(ctx, junior, ctx.peers) == @n end, 5_000, "full budget")
    :ok = Peers.kill(senior)

    # Crashed or cut off: the junior cannot tell, and alone is no majority.
    ClusterSetup.await(
      fn -> ClusterSetup.node_stats(ctx, junior).lease_expired end,
      @ttl * 3,
      "the junior's lease running out"
    )

    assert :ok =
             Peers.rpc(junior, TinkexNative.Cluster, :forget_node, [
               ctx.base_url,
               ctx.key,
               senior.node
             ])

    ClusterSetup.await(
      fn -> leased(ctx, junior, [junior]) == @n end,
      @ttl * 3,
      "the junior taking the budget"
    )

    [{^junior, load}] = Enum.filter(runs, fn {p, _} -> p == junior end)
    before = ClusterSetup.status(junior, load).done

    ClusterSetup.await(
      fn -> ClusterSetup.status(junior, load).done >= before + 20 end,
      10_000,
      "sampling"
    )

    ClusterSetup.stop_load!(junior, load)
    assert TinkerSim.stats(ctx.sim)["max_futures_outstanding"] <= @n
  end

  test "work-conserving: one busy node takes ≥ 27 of 30 within 1 s; three busy nodes ≥ 8 each" do
    ctx =
      ClusterSetup.start(
        cluster: [max_in_flight: 30, lease_ttl_ms: @ttl],
        sim: [latency_ms: @latency]
      )

    [a, b, c] = ctx.peers
    clients = Map.new(ctx.peers, &{&1.node, ClusterSetup.client(ctx, &1)})
    load = fn p -> {p, ClusterSetup.load(ctx, p, clients[p.node], concurrency: 60)} end

    first = load.(a)

    took =
      ClusterSetup.await(
        fn -> in_flight(ctx, a) >= 27 end,
        5_000,
        "a single busy node filling the budget"
      )

    assert took <= 1_000, "a single busy node took #{took} ms to reach 27 in flight"

    runs = [first, load.(b), load.(c)]

    ClusterSetup.await(
      fn -> Enum.all?(ctx.peers, &(in_flight(ctx, &1) >= 8)) end,
      5_000,
      "three busy nodes sharing"
    )

    for {p, l} <- runs, do: ClusterSetup.stop_load!(p, l)
    assert TinkerSim.stats(ctx.sim)["max_futures_outstanding"] <= 30
  end
end
