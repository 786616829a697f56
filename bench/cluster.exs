# The cluster layer's cost (TinkexNative.Cluster), on `:peer` nodes of this
# machine against one release tinker_sim (no latency, log off):
#
#   A. throughput of 3 nodes sharing one budget of N in flight against 1
#      node with the same budget (same concurrency at the server); the 3
#      nodes share this machine's cores with the simulator, so the ratio
#      shows the layer's overhead, not a scale-out;
#   B. cluster messages per sample over that 3-node run (member <->
#      coordinator and backoff relay, every node together; target ≤ 0.1),
#      and the native budget reports per sample (local, not messages
#      between nodes);
#   C. one node: `cluster: [max_in_flight: N]` against `cluster: false`,
#      rounds alternated (target ≥ 0.9×).
#
#   TINKEX_NIF_PROFILE=release MIX_ENV=test mix run bench/cluster.exs
#
# Env: SAMPLES (20000, per run of A/B), ROUND_SAMPLES (10000, per round of
# C), ROUNDS (3), CONCURRENCY (96: samples kept outstanding per node, and
# N), BENCH_OUT (a JSON file for the figures).

alias TinkexNative.Test.{ClusterNode, Peers, TinkerSim}

env = fn name, default -> String.to_integer(System.get_env(name, to_string(default))) end
samples = env.("SAMPLES", 20_000)
round_samples = env.("ROUND_SAMPLES", 10_000)
rounds = env.("ROUNDS", 3)
c = env.("CONCURRENCY", 96)

if System.get_env("TINKEX_NIF_PROFILE") != "release",
  do: IO.puts(:stderr, "warning: TINKEX_NIF_PROFILE is not release: a debug NIF and simulator")

sim = TinkerSim.start(log: false)

client_opts = fn key, cluster ->
  [
    base_url: sim.base_url,
    api_key: key,
    base_model: "Qwen/Qwen3-8B",
    cluster: cluster,
    retry_config: [max_connections: c]
  ]
end

start_clients = fn peers, key, cluster ->
  for p <- peers do
    {:ok, client} = Peers.rpc(p, ClusterNode, :start_client, [client_opts.(key, cluster)])
    # Warm-up: sessions, connections.
    l = Peers.rpc(p, ClusterNode, :start_load, [client, [concurrency: 8, total: 64]])
    %{errors: []} = Peers.rpc(p, ClusterNode, :await_load, [l])
    {p, client}
  end
end

# Runs `total` samples split evenly over `clients`, each keeping `c`
# outstanding; returns {samples/s, seconds} (wall time of the slowest node).
run = fn clients, total ->
  per = div(total, length(clients))

  loads =
    for {p, client} <- clients,
        do: {p, Peers.rpc(p, ClusterNode, :start_load, [client, [concurrency: c, total: per]])}

  results = for {p, l} <- loads, do: Peers.rpc(p, ClusterNode, :await_load, [l, 600_000], 610_000)
  for r <- results, r.errors != [], do: raise("errors: #{inspect(Enum.take(r.errors, 3))}")
  seconds = results |> Enum.map(& &1.seconds) |> Enum.max()
  {per * length(clients) / seconds, seconds}
end

stats = fn peer, key -> Peers.rpc(peer, TinkexNative.Cluster, :stats, [sim.base_url, key]) end
round2 = fn x -> Float.round(x * 1.0, 2) end

# A and B ---------------------------------------------------------------
peers = Peers.start(3, prefix: "bench#{System.unique_integer([:positive])}")
:ok = Peers.connect(peers)
[one | _] = peers

key1 = "tml-bench-one-#{System.unique_integer([:positive])}"
single = start_clients.([one], key1, max_in_flight: c)
{one_rate, one_s} = run.(single, samples)

key3 = "tml-bench-three-#{System.unique_integer([:positive])}"
three = start_clients.(peers, key3, max_in_flight: c)
before = stats.(one, key3)
{three_rate, three_s} = run.(three, samples)
after_ = stats.(one, key3)
messages = after_.messages_sent - before.messages_sent
native = Enum.sum(for {n, s} <- after_.nodes, do: s.native_events - before.nodes[n].native_events)

IO.puts(:stderr, """
A. one budget of #{c} in flight, #{samples} samples:
     1 node:  #{round(one_rate)} samples/s (#{round2.(one_s)} s)
     3 nodes: #{round(three_rate)} samples/s (#{round2.(three_s)} s)   ratio 3/1 = #{round2.(three_rate / one_rate)}
     (3 nodes + the simulator on #{System.schedulers_online()} shared cores)
B. 3 nodes: #{messages} cluster messages for #{samples} samples = #{Float.round(messages / samples, 4)} per sample
     native budget reports to the members: #{native} = #{Float.round(native / samples, 4)} per sample
""")

# C -------------------------------------------------------------------
keyc = "tml-bench-c-#{System.unique_integer([:positive])}"
[{_, plain}] = start_clients.([one], keyc, false)
[{_, budgeted}] = start_clients.([one], keyc <> "-cluster", max_in_flight: c)

{plain_t, budget_t} =
  Enum.reduce(1..rounds, {0.0, 0.0}, fn _, {pt, bt} ->
    {_, s1} = run.([{one, plain}], round_samples)
    {_, s2} = run.([{one, budgeted}], round_samples)
    {pt + s1, bt + s2}
  end)

plain_rate = rounds * round_samples / plain_t
budget_rate = rounds * round_samples / budget_t

IO.puts(:stderr, """
C. one node, #{rounds} alternated rounds of #{round_samples} samples at #{c} outstanding:
     cluster: false                   #{round(plain_rate)} samples/s
     cluster: [max_in_flight: #{c}]     #{round(budget_rate)} samples/s   ratio = #{round2.(budget_rate / plain_rate)}
""")

if out = System.get_env("BENCH_OUT") do
  File.write!(
    out,
    TinkexNative.Test.JSON.encode!(%{
      concurrency: c,
      samples: samples,
      one_node_samples_per_s: one_rate,
      three_nodes_samples_per_s: three_rate,
      three_over_one: three_rate / one_rate,
      cluster_messages: messages,
      messages_per_sample: messages / samples,
      native_reports_per_sample: native / samples,
      budget_over_plain: budget_rate / plain_rate
    })
  )
end

TinkerSim.stop(sim)
