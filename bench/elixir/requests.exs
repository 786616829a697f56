# P6, the tinkex_native side: requests sent per successful sample under a
# 429 storm + 20% 5xx on poll. Just before the first sample every `asample`
# answers 429 (no Retry-After: the client's own fallback applies) and 20%
# of `retrieve_future` polls answer 500; after STORM_MS (default 3 000) the
# 429s lift, the 500s stay. SAMPLES (default 2 000) at CONCURRENCY
# (default 64). The simulator's /_sim/stats before/after count the asample
# + retrieve_future requests. Peer: bench/python_sdk.py --storm-ms, with
# the same scenario.
#
#   SIM_URL=... MIX_ENV=prod mix run bench/elixir/requests.exs

Code.require_file("bench_helper.exs", __DIR__)

total = Bench.env_int("SAMPLES", 2_000)
n = Bench.env_int("CONCURRENCY", 64)
storm_ms = Bench.env_int("STORM_MS", 3_000)

poll_5xx = %{
  endpoint: "retrieve_future",
  match: %{rate: 0.2},
  action: %{status: 500},
  name: "poll-5xx"
}

storm = %{endpoint: "asample", action: %{status: 429}, name: "storm-429"}

client = Bench.start_client(max_connections: n)
Bench.warm_up(client, 1)

Bench.scenario(%{rules: [storm, poll_5xx]})
before = Bench.stats()
{:ok, _} = :timer.apply_after(storm_ms, Bench, :scenario, [%{rules: [poll_5xx]}])
r = Bench.run_window(client, total, n)
Process.sleep(max(0, storm_ms - round(r.seconds * 1000)) + 100)
after_ = Bench.stats()
sent = Bench.sample_requests(after_) - Bench.sample_requests(before)
Bench.scenario(%{rules: []})

result =
  Map.merge(r, %{
    client: "tinkex_native",
    concurrency: n,
    storm_ms: storm_ms,
    requests: sent,
    asample_429s:
      Bench.status_count(after_, "asample", 429) - Bench.status_count(before, "asample", 429),
    requests_per_sample: sent / max(r.ok, 1)
  })

IO.puts(
  :stderr,
  "tinkex_native  #{r.ok} samples (#{r.errors} errors) in #{Float.round(r.seconds, 2)} s under the storm: " <>
    "#{sent} requests = #{Float.round(result.requests_per_sample, 3)} per sample"
)

Bench.emit(result)
