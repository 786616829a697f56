# P1/P2, the tinkex_native side: samples/s on the happy path at each
# concurrency in CONCURRENCY (default "64,256"), `sample_async` with a
# window of N outstanding samples and `max_connections: N`, after an
# untimed warm-up of N samples. Each run submits for RUN_SECONDS (default
# 10; then the outstanding samples are awaited), or, with SAMPLES set
# instead, runs that many samples. The
# result carries the VM's CPU seconds over the timed part (`client_cpu_s`:
# BEAM and native threads alike, from /proc/self/stat) and the simulator's
# (env SIM_PID). Peers: bench/bare_client (P1), bench/python_sdk.py (P2).
#
#   SIM_URL=http://127.0.0.1:PORT BENCH_OUT=out.json RUN_SECONDS=10 \
#     MIX_ENV=prod mix run bench/elixir/throughput.exs

Code.require_file("bench_helper.exs", __DIR__)

amount =
  if System.get_env("SAMPLES") && !System.get_env("RUN_SECONDS"),
    do: Bench.env_int("SAMPLES", 0),
    else: {:seconds, Bench.env_float("RUN_SECONDS", 10.0)}

runs =
  for n <- Bench.env_ints("CONCURRENCY", "64,256") do
    client = Bench.start_client(max_connections: n)
    Bench.warm_up(client, n)
    r = Bench.run_window(client, amount, n)

    IO.puts(
      :stderr,
      "tinkex_native  concurrency #{n}: #{r.ok} samples in #{Float.round(r.seconds, 2)} s = " <>
        "#{round(r.samples_per_s)} samples/s (#{r.errors} errors)"
    )

    if r.errors > 0, do: IO.puts(:stderr, "  first error: #{r.first_error}")
    GenServer.stop(client)
    Map.put(r, :concurrency, n)
  end

Bench.emit(%{client: "tinkex_native", runs: runs})
