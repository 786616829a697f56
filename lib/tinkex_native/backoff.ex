defmodule TinkexNative.Backoff do
  @moduledoc """
  The corrected exponential backoff, computed by the native core.

  Retry `k` (0 for the first retry) waits
  `clamp(d + d · jitter · (2u − 1), 0, max)` with `d = min(base · 2^k, max)`
  and `u` uniform in [0, 1). No `k` overflows: a huge `k` gives `max`.

  ## Examples

      iex> config = TinkexNative.RetryConfig.new!()
      iex> for k <- 0..6, do: TinkexNative.Backoff.delay_ms(config, k, u: 0.5)
      [500, 1000, 2000, 4000, 8000, 10000, 10000]
      iex> TinkexNative.Backoff.schedule(config, 4, seed: 42) == TinkexNative.Backoff.schedule(config, 4, seed: 42)
      true
  """

  alias TinkexNative.RetryConfig

  @max_u64 18_446_744_073_709_551_615

  @doc """
  The delay of retry `attempt`, in ms.

  Options:

    * `:u` - the uniform draw in [0, 1) to use (a reproducible delay);
      otherwise a fresh random draw.

  ## Examples

      iex> TinkexNative.Backoff.delay_ms(TinkexNative.RetryConfig.new!(), 1, u: 0.0)
      750
      iex> TinkexNative.Backoff.delay_ms(TinkexNative.RetryConfig.new!(), 10 ** 40, u: 0.5)
      10000
  """
  @spec delay_ms(RetryConfig.t(), non_neg_integer(), keyword()) :: non_neg_integer()
  def delay_ms(%RetryConfig{} = c, attempt, opts \\ []) do
    attempt = check_attempt!(attempt)

    case Keyword.fetch(opts, :u) do
      {:ok, u} when is_number(u) and u >= 0 and u < 1 ->
        TinkexNative.Native.backoff_delay(
          c.base_delay_ms,
          c.max_delay_ms,
          c.jitter_pct,
          attempt,
          u / 1
        )

      {:ok, u} ->
        raise ArgumentError,
              "invalid value for :u: expected a number in [0, 1), got: #{inspect(u)}"

      :error ->
        TinkexNative.Native.backoff_random(c.base_delay_ms, c.max_delay_ms, c.jitter_pct, attempt)
    end
  end

  @doc """
  The delays of the first `count` retries, drawn from a generator seeded
  with `:seed` (required): the same seed always gives the same schedule.

  ## Examples

      iex> config = TinkexNative.RetryConfig.new!(jitter_pct: 0)
      iex> TinkexNative.Backoff.schedule(config, 3, seed: 1)
      [500, 1000, 2000]
  """
  @spec schedule(RetryConfig.t(), 0..10_000, keyword()) :: [non_neg_integer()]
  def schedule(%RetryConfig{} = c, count, opts) when is_integer(count) and count in 0..10_000 do
    seed =
      case Keyword.fetch(opts, :seed) do
        {:ok, s} when is_integer(s) and s >= 0 and s <= @max_u64 ->
          s

        other ->
          raise ArgumentError,
                "invalid value for :seed: expected a non-negative integer, got: #{inspect(other)}"
      end

    TinkexNative.Native.backoff_schedule(
      c.base_delay_ms,
      c.max_delay_ms,
      c.jitter_pct,
      count,
      seed
    )
  end

  def schedule(%RetryConfig{}, count, _opts) do
    raise ArgumentError,
          "invalid value for count: expected an integer in 0..10000, got: #{inspect(count)}"
  end

  defp check_attempt!(a) when is_integer(a) and a >= 0, do: min(a, @max_u64)

  defp check_attempt!(a) do
    raise ArgumentError,
          "invalid value for attempt: expected a non-negative integer, got: #{inspect(a)}"
  end
end
