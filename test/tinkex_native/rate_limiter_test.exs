defmodule TinkexNative.RateLimiterTest do
  use ExUnit.Case, async: true
  doctest TinkexNative.RateLimiter

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

  test "concurrent set and clear from 1000 processes stay consistent" do
    l = unique_limiter()

    1..1000
    |> Enum.map(fn i ->
      Task.async(fn ->
        if rem(i, 10) == 0, do: RateLimiter.clear(l), else: RateLimiter.set_backoff(l, i)
        RateLimiter.remaining_ms(l)
      end)
    end)
    |> Task.await_many()
    |> Enum.each(&assert(&1 in 0..1000))

    # The last word: a long backoff is never shortened by shorter ones.
    RateLimiter.set_backoff(l, 10_000)

    Enum.map(1..1000, fn i -> Task.async(fn -> RateLimiter.set_backoff(l, i) end) end)
    |> Task.await_many()

    assert RateLimiter.remaining_ms(l) > 9_000
    RateLimiter.clear(l)
  end

  test "the registry does not keep the API key and inspect shows nothing" do
    l = RateLimiter.for_key("http://secret.test", "tml-super-secret-key")
    refute inspect(l) =~ "secret"
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
