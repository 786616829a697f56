# P6, the tinkex_native side: requests sent per successful sample under a
# 429 storm + 20% 5xx on poll. Just before the first sample every `asample`
# answers 429 (no Retry-After: the client's own fallback applies) and 20%
# of polls (`retrieve_future`, and `retrieve_futures` when the server turns
# the session poller on) answer 500; after STORM_MS (default 3 000) the
# 429s lift, the 500s stay. SAMPLES (default 2 000) at CONCURRENCY
# (default 64). The simulator's /_sim/stats before/after count the asample
# + retrieve_future + retrieve_futures requests. Peer:
# bench/python_sdk.py --storm-ms, with the same scenario.
#
# CLIENT_CONFIG (a JSON object, default {}) is what the simulator answers
# to `POST client/config` for this run: the server flags, e.g.
# {"sample_use_retrieve_futures": true}. It is set before the client starts
# (a client reads its flags once, at start).
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

# A rule of its own, after poll_5xx: a rule's draws hash its index, so
# poll_5xx draws the same with or without it.
poll_5xx_session = %{
  endpoint: "retrieve_futures",
  match: %{rate: 0.2},
  action: %{status: 500},
  name: "poll-5xx-session"
}

storm = %{endpoint: "asample", action: %{status: 429}, name: "storm-429"}
faults = [poll_5xx, poll_5xx_session]

client_config = System.get_env("CLIENT_CONFIG", "{}")

unless String.starts_with?(String.trim(client_config), "{") do
  raise ArgumentError,
        "CLIENT_CONFIG: expected a JSON object of server flags, got #{inspect(client_config)}"
end

# The simulator rejects malformed JSON (the admin call then raises with its
# message).
Bench.scenario(%{client_config: {:json, client_config}})
client = Bench.start_client(max_connections: n)
Bench.warm_up(client, 1)

Bench.scenario(%{rules: [storm | faults]})
before = Bench.stats()
{:ok, _} = :timer.apply_after(storm_ms, Bench, :scenario, [%{rules: faults}])
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
    client_config: {:json, client_config},
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
