# P1/P2, the tinkex_native side: samples/s on the happy path, SAMPLES
# samples (default 20 000) at each concurrency in CONCURRENCY (default
# "64,256"), `sample_async` with a window of N outstanding samples and
# `max_connections: N`. Peers: bench/bare_client (P1), bench/python_sdk.py (P2).
#
#   SIM_URL=http://127.0.0.1:PORT BENCH_OUT=out.json \
#     MIX_ENV=prod mix run bench/elixir/throughput.exs

Code.require_file("bench_helper.exs", __DIR__)

total = Bench.env_int("SAMPLES", 20_000)

runs =
  for n <- Bench.env_ints("CONCURRENCY", "64,256") do
    client = Bench.start_client(max_connections: n)
    Bench.warm_up(client, n)
    r = Bench.run_window(client, total, n)

    IO.puts(
      :stderr,
      "tinkex_native  concurrency #{n}: #{r.ok} samples in #{Float.round(r.seconds, 2)} s = " <>
        "#{round(r.samples_per_s)} samples/s (#{r.errors} errors)"
    )

    if r.errors > 0, do: IO.puts(:stderr, "  first error: #{r.first_error}")
    GenServer.stop(client)
    Map.put(r, :concurrency, n)
  end

Bench.emit(%{client: "tinkex_native", samples: total, runs: runs})
