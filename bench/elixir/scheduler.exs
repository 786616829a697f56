# P4: scheduler health under a 429 storm. IN_FLIGHT samples (default
# 10 000) are submitted with `sample_async` (`max_connections:
# MAX_CONNECTIONS`, default 2 000) while every `asample` answers 429 with
# `retry-after-ms: RETRY_AFTER_MS` (default 100) for STORM_MS (default
# 3 000 ms); then the storm lifts and all samples complete. Throughout:
#
# - `:erlang.system_monitor(collector, [{:long_schedule, 1}])`: every
#   process or port that ran ≥ 1 ms without yielding is reported; events
#   whose in/out location is a function of `TinkexNative.Native` (a NIF) count
#   as NIF events (target 0);
# - a ping process sleeps 1 ms in a loop and records how late it wakes;
#   its p99 lateness under load is the figure (target ≤ 5 ms). One second
#   of pings before the load gives this machine's baseline (a 1 ms BEAM
#   timer fires on a 1 ms tick, so 0–1 ms late at rest).
#
#   SIM_URL=... MIX_ENV=prod mix run bench/elixir/scheduler.exs

Code.require_file("bench_helper.exs", __DIR__)

n = Bench.env_int("IN_FLIGHT", 10_000)
max_conn = Bench.env_int("MAX_CONNECTIONS", 2_000)
storm_ms = Bench.env_int("STORM_MS", 3_000)
retry_after = Bench.env_int("RETRY_AFTER_MS", 100)

client = Bench.start_client(max_connections: max_conn)
Bench.warm_up(client, 64)

nif? = fn
  {TinkexNative.Native, _, _} -> true
  _ -> false
end

collector =
  spawn_link(fn ->
    loop = fn loop, events ->
      receive do
        {:monitor, who, :long_schedule, info} ->
          loop.(loop, [{who, info} | events])

        {:report, to} ->
          send(to, {:events, Enum.reverse(events)})
      end
    end

    loop.(loop, [])
  end)

pinger =
  spawn_link(fn ->
    loop = fn loop, acc ->
      receive do
        {:report, to} ->
          send(to, {:pings, acc})
      after
        0 ->
          t = System.monotonic_time(:microsecond)

          receive do
          after
            1 -> :ok
          end

          now = System.monotonic_time(:microsecond)
          loop.(loop, [{now, now - t - 1000} | acc])
      end
    end

    loop.(loop, [])
  end)

:erlang.system_monitor(collector, [{:long_schedule, 1}])
Process.sleep(Bench.env_int("BASELINE_MS", 1_000))

Bench.scenario(%{
  rules: [
    %{
      endpoint: "asample",
      action: %{status: 429, headers: %{"retry-after-ms" => Integer.to_string(retry_after)}},
      name: "storm-429"
    }
  ]
})

cpu0 = Bench.cpu_pair()
t0 = System.monotonic_time(:millisecond)
load_from_us = System.monotonic_time(:microsecond)
{:ok, _} = :timer.apply_after(storm_ms, Bench, :scenario, [%{rules: []}])
prompt = Bench.prompt()
params = Bench.params()
Enum.each(1..n, fn _ -> Bench.sample!(client, prompt, params) end)
submit_ms = System.monotonic_time(:millisecond) - t0
{ok, errors, first_error} = Bench.drain(n, fn -> :ok end, 0, 0, nil)
total_ms = System.monotonic_time(:millisecond) - t0
cpu = Bench.cpu_delta(cpu0, Bench.cpu_pair())

:erlang.system_monitor(:undefined)
send(pinger, {:report, self()})
pings = receive do: ({:pings, p} -> p)
send(collector, {:report, self()})
events = receive do: ({:events, e} -> e)

{loaded, at_rest} = Enum.split_with(pings, fn {t, _} -> t >= load_from_us end)
lateness = loaded |> Enum.map(&elem(&1, 1)) |> Enum.sort()
baseline = at_rest |> Enum.map(&elem(&1, 1)) |> Enum.sort()

nif_events =
  Enum.filter(events, fn {_who, info} ->
    Enum.any?(info, fn
      {:in, loc} -> nif?.(loc)
      {:out, loc} -> nif?.(loc)
      _ -> false
    end)
  end)

ms = fn us -> Float.round(us / 1000, 3) end
stats = TinkexNative.SamplingClient.stats(client)

result = %{
  in_flight: n,
  max_connections: max_conn,
  storm_ms: storm_ms,
  retry_after_ms: retry_after,
  ok: ok,
  errors: errors,
  first_error: first_error && inspect(first_error, limit: 20),
  submit_ms: submit_ms,
  total_ms: total_ms,
  client_cpu_s: cpu.client_cpu_s,
  sim_cpu_s: cpu.sim_cpu_s,
  long_schedule_events: length(events),
  long_schedule_nif_events: length(nif_events),
  long_schedule_examples: events |> Enum.take(5) |> Enum.map(&inspect(&1, limit: 30)),
  ping_count: length(lateness),
  ping_lateness_p50_ms: ms.(Bench.percentile(lateness, 0.5)),
  ping_lateness_p99_ms: ms.(Bench.percentile(lateness, 0.99)),
  ping_lateness_max_ms: ms.(List.last(lateness)),
  baseline_ping_count: length(baseline),
  baseline_ping_lateness_p50_ms: ms.(Bench.percentile(baseline, 0.5)),
  baseline_ping_lateness_p99_ms: ms.(Bench.percentile(baseline, 0.99)),
  asample_429s: Bench.status_count(Bench.stats(), "asample", 429),
  handler_retries: Map.get(stats, :retries)
}

IO.puts(
  :stderr,
  "tinkex_native  #{n} samples through a #{storm_ms} ms 429 storm in #{total_ms} ms (#{errors} errors): " <>
    "#{result.long_schedule_nif_events} NIF long_schedule events (#{result.long_schedule_events} in all), " <>
    "ping lateness p50 #{result.ping_lateness_p50_ms} ms p99 #{result.ping_lateness_p99_ms} ms " <>
    "max #{result.ping_lateness_max_ms} ms (at rest: p99 #{result.baseline_ping_lateness_p99_ms} ms)"
)

Bench.emit(result)
