defmodule TinkexNative.ClusterSharedSessionTest do
  # One sampling session sampled from 3 `:peer` nodes: node a creates it,
  # b and c get `TinkexNative.Cluster.session_opts/1` from a and start
  # clients of it. Their seq_ids follow the clone rule (the server's
  # join_sampling_session counter when offered, else a random multiple of
  # 10^9), so no request collides: the simulator deduplicates nothing and
  # every result is the one of its own prompt.
  use ExUnit.Case, async: false
  @moduletag :cluster
  @moduletag timeout: 300_000

  alias TinkexNative.Test.{ClusterNode, ClusterSetup, Peers, TinkerSim}

  @stride 1_000_000_000

  defp run(join?, per_node) do
    scenario = %{"client_config" => %{"sample_join_sampling_session" => join?}}
    ctx = ClusterSetup.start(cluster: true, sim: [scenario: scenario])
    [a | clones] = ctx.peers
    ca = ClusterSetup.client(ctx, a)
    shared = Peers.rpc(a, TinkexNative.Cluster, :session_opts, [ca])
    clone_opts = Keyword.delete(ctx.client_opts, :base_model) ++ shared

    clients =
      [{a, ca}] ++
        for p <- clones do
          {:ok, c} = Peers.rpc(p, ClusterNode, :start_client, [clone_opts])
          {p, c}
        end

    loads =
      for {{p, c}, tag} <- Enum.with_index(clients, 1) do
        {p,
         ClusterSetup.load(ctx, p, c, concurrency: 20, total: per_node, tag: tag, record: true)}
      end

    summaries =
      for {p, l} <- loads do
        s = Peers.rpc(p, ClusterNode, :await_load, [l, 240_000], 250_000)

        assert s.errors == [] and s.done == per_node,
               "#{p.node}: #{inspect(Map.delete(s, :records))}"

        {p.node, s.records}
      end

    {ctx, shared, summaries}
  end

  defp check(ctx, shared, summaries, per_node) do
    ssid = shared[:sampling_session_id]
    asamples = TinkerSim.log(ctx.sim, endpoint: "asample")
    assert length(asamples) == 3 * per_node
    assert TinkerSim.stats(ctx.sim)["duplicate_submissions"] == 0

    assert Enum.all?(
             asamples,
             &(&1["outcome"] == "created" and &1["body"]["sampling_session_id"] == ssid)
           )

    bodies = Map.new(asamples, &{&1["request_id"], &1["body"]})

    for {node, records} <- summaries, {prompt, request_id, tokens} <- records do
      body = Map.fetch!(bodies, request_id)
      [%{"tokens" => sent}] = body["prompt"]["chunks"]
      assert sent == prompt, "#{node}: #{request_id} carried another prompt"
      want = for s <- TinkerSim.expected(ctx.sim, body)["sequences"], do: s["tokens"]
      assert tokens == want, "#{node}: #{request_id} is not its prompt's result"
    end

    # Each node's seq_ids sit in a block of its own.
    for {_node, records} <- summaries do
      records
      |> Enum.map(fn {_, id, _} ->
        id |> String.split(":") |> List.last() |> String.to_integer()
      end)
      |> Enum.map(&div(&1, @stride))
      |> Enum.uniq()
    end
  end

  test "with the server's join_sampling_session: clones 1 and 2, no collision, every result its own" do
    {ctx, shared, summaries} = run(true, 1_000)
    blocks = check(ctx, shared, summaries, 1_000)
    assert Enum.sort(blocks) == [[0], [1], [2]]
    assert TinkerSim.stats(ctx.sim)["endpoints"]["join_sampling_session"] == %{"200" => 2}
  end

  test "without it: random 10^9 bases, no collision, every result its own" do
    {ctx, shared, summaries} = run(false, 300)
    blocks = check(ctx, shared, summaries, 300)
    assert [[0], [x], [y]] = Enum.sort(blocks)
    assert x != y and x > 0 and y > 0
    refute Map.has_key?(TinkerSim.stats(ctx.sim)["endpoints"], "join_sampling_session")
  end
end
