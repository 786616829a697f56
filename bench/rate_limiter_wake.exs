# Shared-backoff wake error: 1000 waiters (WAKE_N), each on its own limiter
# with a random deadline 10..500 ms ahead; wake error = actual wake −
# deadline.
#
# The peers are not the other SDKs themselves but Elixir loops here that
# wait the way they do, on the same deadlines:
#
# - one `Process.sleep` of the remaining milliseconds, as tinkex
#   0.1.9–0.4.0 does (`Tinkex.RateLimiter.wait_for_backoff`, with the
#   deadline kept in whole milliseconds as it keeps it);
# - a 100 ms polling loop (check, `Process.sleep(100)`), as tinkex up to
#   0.1.8 did;
# - a 1 s polling loop (check, sleep 1 s), as the Python SDK does before
#   an asample while the shared 429 backoff is on.
#
#   TINKEX_NIF_PROFILE=release mix run bench/rate_limiter_wake.exs
#
# Prints one line per strategy: p50 / p99 / max wake error in ms, and with
# BENCH_JSON=path writes the raw samples (µs) for the report of bench/run:
# {"strategies": [{"key", "label", "errors_us": [...]}, ...]}.

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

now_ms = fn -> System.monotonic_time(:millisecond) end

# {key, label, wait}: `wait.(i, ms)` waits out a backoff of `ms` set now and
# returns its wake error in µs.
strategies = [
  {"tinkex_native", "tinkex_native (one exact timer)",
   fn i, ms ->
     l = RateLimiter.for_key("http://wake-#{i}.bench", "tml-bench")
     RateLimiter.set_backoff(l, ms)
     deadline = now_us.() + ms * 1000
     RateLimiter.wait(l)
     now_us.() - deadline
   end},
  {"exact_sleep", "one Process.sleep of the remaining ms, as tinkex 0.1.9–0.4.0 does",
   fn _i, ms ->
     deadline = now_us.() + ms * 1000
     until_ms = now_ms.() + ms
     wait_ms = until_ms - now_ms.()
     if wait_ms > 0, do: Process.sleep(wait_ms)
     now_us.() - deadline
   end},
  {"poll_100ms", "a 100 ms polling loop, as tinkex ≤ 0.1.8 did",
   fn _i, ms ->
     deadline = now_us.() + ms * 1000
     poll_wait.(deadline, 100)
     now_us.() - deadline
   end},
  {"poll_1s", "a 1 s polling loop, as the Python SDK does",
   fn _i, ms ->
     deadline = now_us.() + ms * 1000
     poll_wait.(deadline, 1000)
     now_us.() - deadline
   end}
]

pct = fn sorted, p -> Enum.at(sorted, min(length(sorted) - 1, trunc(p * length(sorted)))) end

results =
  for {key, label, fun} <- strategies do
    errors =
      deadlines
      |> Enum.with_index()
      |> Enum.map(fn {ms, i} -> Task.async(fn -> fun.(i, ms) end) end)
      |> Task.await_many(:infinity)
      |> Enum.sort()

    ms = fn us -> Float.round(us / 1000, 2) end

    IO.puts(
      "#{String.pad_trailing(key, 14)} p50 #{ms.(pct.(errors, 0.5))} ms  p99 #{ms.(pct.(errors, 0.99))} ms  max #{ms.(List.last(errors))} ms  (n=#{n}; #{label})"
    )

    {key, label, errors}
  end

if path = System.get_env("BENCH_JSON") do
  body =
    Enum.map_join(results, ",", fn {key, label, errs} ->
      ~s({"key":"#{key}","label":"#{label}","errors_us":[#{Enum.join(errs, ",")}]})
    end)

  File.write!(path, ~s({"strategies":[) <> body <> "]}")
end
