# Shared-backoff wake error: 1000 waiters, each on its own limiter with a
# random deadline 10..500 ms ahead; wake error = actual wake − deadline.
# Peers, on the same deadlines: the old tinkex loop (check, sleep 100 ms)
# and the Python SDK's loop (check, sleep 1 s).
#
#   TINKEX_NIF_PROFILE=release mix run bench/rate_limiter_wake.exs
#
# Prints one line per strategy: p50 / p99 / max wake error in ms, and with
# BENCH_JSON=path writes the raw samples for the plot in bench/run.

alias TinkexNative.RateLimiter

n = String.to_integer(System.get_env("WAKE_N", "1000"))
:rand.seed(:exsss, {1, 2, 3})
deadlines = for _ <- 1..n, do: 10 + :rand.uniform(490)

now_us = fn -> System.monotonic_time(:microsecond) end

poll_wait = fn deadline_us, step_ms ->
  Stream.repeatedly(fn -> nil end)
  |> Enum.reduce_while(nil, fn _, _ ->
    if now_us.() >= deadline_us, do: {:halt, :ok}, else: Process.sleep(step_ms) && {:cont, nil}
  end)
end

strategies = [
  {"tinkex_native (one exact timer)",
   fn i, ms ->
     l = RateLimiter.for_key("http://wake-#{i}.bench", "tml-bench")
     RateLimiter.set_backoff(l, ms)
     deadline = now_us.() + ms * 1000
     RateLimiter.wait(l)
     now_us.() - deadline
   end},
  {"old tinkex (100 ms polling)",
   fn _i, ms ->
     deadline = now_us.() + ms * 1000
     poll_wait.(deadline, 100)
     now_us.() - deadline
   end},
  {"Python SDK (1 s polling)",
   fn _i, ms ->
     deadline = now_us.() + ms * 1000
     poll_wait.(deadline, 1000)
     now_us.() - deadline
   end}
]

pct = fn sorted, p -> Enum.at(sorted, min(length(sorted) - 1, trunc(p * length(sorted)))) end

results =
  for {name, fun} <- strategies do
    errors =
      deadlines
      |> Enum.with_index()
      |> Enum.map(fn {ms, i} -> Task.async(fn -> fun.(i, ms) end) end)
      |> Task.await_many(:infinity)
      |> Enum.sort()

    ms = fn us -> Float.round(us / 1000, 2) end

    IO.puts(
      "#{String.pad_trailing(name, 34)} p50 #{ms.(pct.(errors, 0.5))} ms  p99 #{ms.(pct.(errors, 0.99))} ms  max #{ms.(List.last(errors))} ms  (n=#{n})"
    )

    {name, errors}
  end

if path = System.get_env("BENCH_JSON") do
  body =
    Enum.map_join(results, ",", fn {name, errs} ->
      ~s("#{name}":[#{Enum.join(errs, ",")}])
    end)

  File.write!(path, "{" <> body <> "}")
end
