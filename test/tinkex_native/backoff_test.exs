defmodule TinkexNative.BackoffTest do
  use ExUnit.Case, async: true
  doctest TinkexNative.Backoff

  alias TinkexNative.{Backoff, RetryConfig}

  test "the default schedule through the NIF" do
    c = RetryConfig.new!()

    assert Enum.map(0..6, &Backoff.delay_ms(c, &1, u: 0.5)) == [
             500,
             1000,
             2000,
             4000,
             8000,
             10_000,
             10_000
           ]

    assert Enum.map(0..5, &Backoff.delay_ms(c, &1, u: 0.0)) == [375, 750, 1500, 3000, 6000, 7500]
  end

  test "random delays stay within the jitter band and the cap" do
    c = RetryConfig.new!()

    for k <- 0..20, _ <- 1..50 do
      d = Backoff.delay_ms(c, k)
      nominal = min(500 * 2 ** k, 10_000)
      assert d >= floor(nominal * 0.75) and d <= min(ceil(nominal * 1.25), 10_000)
    end
  end

  test "huge attempts saturate instead of overflowing" do
    c = RetryConfig.new!()
    assert Backoff.delay_ms(c, 2 ** 64 + 5, u: 0.5) == 10_000
    assert Backoff.delay_ms(c, 10 ** 100, u: 0.5) == 10_000
  end

  test "a seed reproduces a schedule, another seed differs" do
    c = RetryConfig.new!()
    a = Backoff.schedule(c, 20, seed: 7)
    assert a == Backoff.schedule(c, 20, seed: 7)
    refute a == Backoff.schedule(c, 20, seed: 8)
    assert length(a) == 20
  end

  test "bad arguments raise ArgumentError naming the field" do
    c = RetryConfig.new!()

    assert_raise ArgumentError, ~r/attempt: expected a non-negative integer, got: -1/, fn ->
      Backoff.delay_ms(c, -1)
    end

    assert_raise ArgumentError, ~r/:u: expected a number in \[0, 1\), got: 1/, fn ->
      Backoff.delay_ms(c, 0, u: 1)
    end

    assert_raise ArgumentError, ~r/:seed/, fn -> Backoff.schedule(c, 3, seed: -1) end
    assert_raise ArgumentError, ~r/:seed/, fn -> Backoff.schedule(c, 3, []) end
    assert_raise ArgumentError, ~r/count/, fn -> Backoff.schedule(c, 10_001, seed: 1) end
  end

  test "the raw NIF rejects out-of-range values without crashing" do
    for args <- [
          [500, 100, 0.25, 0, 0.5],
          [500, 1000, 2.0, 0, 0.5],
          [500, 1000, 0.25, 0, 1.0],
          [-1, 1000, 0.25, 0, 0.5],
          [:a, 1000, 0.25, 0, 0.5]
        ] do
      assert_raise ArgumentError, fn -> apply(TinkexNative.Native, :backoff_delay, args) end
    end
  end
end
