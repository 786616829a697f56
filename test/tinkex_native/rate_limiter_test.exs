defmodule TinkexNative.RateLimiterTest do
  use ExUnit.Case, async: true
  doctest TinkexNative.RateLimiter

  import TinkexNative.Test.Wait

  alias TinkexNative.RateLimiter

  defp unique_limiter do
    RateLimiter.for_key("http://rl-#{System.unique_integer([:positive])}.test", "tml-k")
  end

  test "same key shares a limiter, different keys do not" do
    url = "http://share-#{System.unique_integer([:positive])}.test"
    a = RateLimiter.for_key(url, "tml-a")
    b = RateLimiter.for_key(url <> "/", "tml-a")
    c = RateLimiter.for_key(url, "tml-b")
    RateLimiter.set_backoff(a, 5_000)
    assert RateLimiter.remaining_ms(b) > 4_000
    assert RateLimiter.remaining_ms(c) == 0
    RateLimiter.clear(b)
    assert RateLimiter.remaining_ms(a) == 0
  end

  test "wait returns no earlier than the deadline" do
    l = unique_limiter()

    for ms <- [5, 20, 60] do
      RateLimiter.set_backoff(l, ms)
      t0 = System.monotonic_time(:microsecond)
      :ok = RateLimiter.wait(l)
      waited = System.monotonic_time(:microsecond) - t0
      # The deadline was set just before t0, so the wait can be up to a few
      # µs shorter than `ms`, never a whole millisecond.
      assert waited >= ms * 1000 - 1000, "waited #{waited} µs for #{ms} ms"
      assert waited < ms * 1000 + 500_000
    end
  end

  test "wait returns at once without a backoff and early on clear" do
    l = unique_limiter()
    assert :ok = RateLimiter.wait(l)
    RateLimiter.set_backoff(l, 60_000)
    parent = self()
    pid = spawn(fn -> send(parent, {:woke, RateLimiter.wait(l)}) end)
    Process.sleep(20)
    assert Process.alive?(pid)
    RateLimiter.clear(l)
    assert_receive {:woke, :ok}, 1_000
  end

  test "a deadline moved later during the wait is honoured" do
    l = unique_limiter()
    RateLimiter.set_backoff(l, 30)
    spawn(fn -> Process.sleep(10) && RateLimiter.set_backoff(l, 80) end)
    t0 = System.monotonic_time(:millisecond)
    RateLimiter.wait(l)
    assert System.monotonic_time(:millisecond) - t0 >= 85
  end

  test "concurrent backoffs from 1000 processes keep the latest deadline" do
    l = unique_limiter()
    t0 = System.monotonic_time(:millisecond)

    # Each process sets i ms (1..1000, in random order) and reads the
    # backoff back at once: it must be at least its own (a backoff is never
    # shortened, not even by a concurrent shorter one) and at most the
    # longest set.
    1..1000
    |> Enum.shuffle()
    |> Enum.map(fn i ->
      Task.async(fn ->
        set_at = System.monotonic_time(:millisecond)
        RateLimiter.set_backoff(l, i)
        {i, RateLimiter.remaining_ms(l), System.monotonic_time(:millisecond) - set_at}
      end)
    end)
    |> Task.await_many()
    |> Enum.each(fn {i, remaining, took} ->
      assert remaining >= i - took - 1, "set #{i} ms, read #{remaining} ms"
      assert remaining <= 1000
    end)

    # The longest one is in force: 1000 ms from its setting, less the time
    # since.
    elapsed = System.monotonic_time(:millisecond) - t0
    remaining = RateLimiter.remaining_ms(l)
    assert remaining >= 1000 - elapsed - 1, "#{remaining} ms left after #{elapsed} ms"
    assert remaining <= 1000

    # Shorter backoffs never shorten a long one; a clear ends it.
    RateLimiter.set_backoff(l, 10_000)

    Enum.map(1..100, fn i -> Task.async(fn -> RateLimiter.set_backoff(l, i) end) end)
    |> Task.await_many()

    assert RateLimiter.remaining_ms(l) > 9_000
    RateLimiter.clear(l)
    assert RateLimiter.remaining_ms(l) == 0
  end

  test "the registry keeps a SHA-256 of the pair, not the API key" do
    url = "http://secret-#{System.unique_integer([:positive])}.test"
    key = "tml-super-secret-key-#{System.unique_integer([:positive])}"
    l = RateLimiter.for_key(url, key)
    refute inspect(l) =~ "secret"

    keys = TinkexNative.Native.test_rate_limiter_keys()
    assert :crypto.hash(:sha256, url <> <<0>> <> key) in keys

    for k <- keys do
      assert byte_size(k) == 32
      assert :binary.match(k, "secret") == :nomatch
      assert :binary.match(k, binary_part(key, 0, 8)) == :nomatch
    end

    # Held until here, so it was among the keys above.
    assert RateLimiter.remaining_ms(l) == 0
  end

  test "limiters nobody holds leave the registry: 10k keys come back to a small count" do
    before = RateLimiter.count()
    parent = self()

    {pid, mon} =
      spawn_monitor(fn ->
        held = for i <- 1..10_000, do: RateLimiter.for_key("http://many-#{i}.test", "tml-k")
        send(parent, {:held, RateLimiter.count()})
        # Keep them alive until counted.
        receive do
          :go -> length(held)
        end
      end)

    assert_receive {:held, held}, 10_000
    assert held >= 10_000
    send(pid, :go)
    assert_receive {:DOWN, ^mon, :process, ^pid, :normal}, 10_000

    # The process's heap (and the resources in it) is freed when it exits;
    # other tests running meanwhile may hold a few limiters of their own.
    wait_until(fn -> RateLimiter.count() < before + 100 end)
  end

  test "one exact wait, no polling: 737 ms is met on time with two timers" do
    l = unique_limiter()
    arms = TinkexNative.Native.test_rate_limiter_timer_arms(l.resource)
    RateLimiter.set_backoff(l, 737)
    t0 = System.monotonic_time(:microsecond)
    :ok = RateLimiter.wait(l)
    waited = System.monotonic_time(:microsecond) - t0
    # A 100 ms poller would wake at 800 ms and a 1 s one at 1000 ms; 737
    # is no multiple of any period.
    assert waited >= 736_000, "waited #{waited} µs"
    assert waited < 787_000, "waited #{waited} µs"
    # One coarse sleep to 20 ms before the deadline, one precise timer; a
    # 100 ms poller would arm eight.
    assert TinkexNative.Native.test_rate_limiter_timer_arms(l.resource) - arms == 2
  end

  test "bad arguments raise ArgumentError naming the field, never showing the key" do
    assert_raise ArgumentError, ~r/:base_url: expected a string, got: :nope/, fn ->
      RateLimiter.for_key(:nope, "tml-x")
    end

    e = assert_raise ArgumentError, fn -> RateLimiter.for_key("http://x", 123) end
    assert e.message =~ ":api_key"

    assert_raise ArgumentError, ~r/ms: expected a non-negative integer, got: -1/, fn ->
      RateLimiter.set_backoff(unique_limiter(), -1)
    end

    assert_raise ArgumentError, fn ->
      TinkexNative.Native.rate_limiter_set_backoff(make_ref(), 1)
    end

    assert_raise ArgumentError, fn -> TinkexNative.Native.rate_limiter_for_key(1, 2) end
  end
end
