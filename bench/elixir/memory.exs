# P3: memory per in-flight sample. IN_FLIGHT samples (default 100 000) are
# submitted with `sample_async` while the simulator holds every result
# HOLD_MS (default 5 000 ms: scenario `latency_ms`). Memory is read before
# and every 50 ms for SETTLE_MS after the last submission: BEAM
# (`:erlang.memory(:total)`) and the whole OS process (VmRSS, which holds
# the BEAM heap and the native side: tokio tasks, sockets' buffers, reqwest).
# The client runs with `max_connections: MAX_CONNECTIONS` (default 1000,
# the library default): that many samples hold an HTTP request, the rest
# wait for a permit; both are "in flight" for the caller.
#
#   SIM_URL=... MIX_ENV=prod mix run bench/elixir/memory.exs

Code.require_file("bench_helper.exs", __DIR__)

n = Bench.env_int("IN_FLIGHT", 100_000)
hold_ms = Bench.env_int("HOLD_MS", 5_000)
settle_ms = Bench.env_int("SETTLE_MS", 3_000)
max_conn = Bench.env_int("MAX_CONNECTIONS", 1_000)

client = Bench.start_client(max_connections: max_conn)
# Warm up with max_conn samples, so the connections exist before "before".
Bench.warm_up(client, max_conn)
Bench.scenario(%{latency_ms: hold_ms})

:erlang.garbage_collect()
Process.sleep(200)
mem0 = :erlang.memory()
beam0 = mem0[:total]
rss0 = Bench.rss_bytes()

prompt = Bench.prompt()
params = Bench.params()
t0 = System.monotonic_time(:millisecond)
Enum.each(1..n, fn _ -> Bench.sample!(client, prompt, params) end)
submit_ms = System.monotonic_time(:millisecond) - t0

# Sample memory until SETTLE_MS after the last submission; results cannot
# arrive before HOLD_MS, so every sample is still in flight throughout.
# This process's garbage (the specs it built) is collected before each
# reading: the figure is what a pending sample retains.
reading = fn ->
  :erlang.garbage_collect()
  {:erlang.memory(:total), Bench.rss_bytes(), System.monotonic_time(:millisecond) - t0}
end

{b_first, r_first, _} = reading.()

peak =
  Stream.repeatedly(fn ->
    Process.sleep(50)
    reading.()
  end)
  |> Enum.take_while(fn {_, _, t} -> t < submit_ms + settle_ms and t < hold_ms - 200 end)
  |> Enum.reduce({b_first, r_first}, fn {b, r, _}, {pb, pr} ->
    {max(b, pb), max(r, pr)}
  end)

{beam1, rss1} = peak
mem1 = :erlang.memory()

beam_split =
  for {k, v} <- mem1,
      k in [:processes, :system, :binary, :ets, :atom, :code],
      into: %{},
      do: {k, v - mem0[k]}

stats = TinkexNative.SamplingClient.stats(client)
received = Process.info(self(), :message_queue_len) |> elem(1)
# A slow submission (a loaded machine) can outlast the hold: count only
# the samples still pending at the last reading.
pending = n - received

result = %{
  in_flight: n,
  received_before_peak: received,
  max_connections: max_conn,
  hold_ms: hold_ms,
  submit_ms: submit_ms,
  beam_before: beam0,
  beam_peak: beam1,
  rss_before: rss0,
  rss_peak: rss1,
  pending_at_peak: pending,
  beam_bytes_per_sample: (beam1 - beam0) / pending,
  beam_delta_by_kind: beam_split,
  rss_bytes_per_sample: (rss1 - rss0) / pending,
  client_stats: Map.take(stats, [:waiting, :in_flight, :processed])
}

IO.puts(
  :stderr,
  "tinkex_native  #{n} in flight (#{max_conn} on the wire, submitted in #{submit_ms} ms): " <>
    "BEAM +#{round(result.beam_bytes_per_sample)} B/sample, RSS +#{round(result.rss_bytes_per_sample)} B/sample"
)

Bench.scenario(%{latency_ms: 0})
Bench.emit(result)
# Leave without waiting for 100k results; the simulator is reset next.
System.halt(0)
