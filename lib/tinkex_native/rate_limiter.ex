defmodule TinkexNative.RateLimiter do
  @moduledoc """
  The shared 429 backoff of one `{base_url, api_key}` pair.

  Every sampling client of the VM that talks to the same service with the
  same key shares one limiter, held natively: when any of them gets a 429
  on submit, all of them hold off until the deadline. The deadline is one
  atomic on the monotonic clock; `set_backoff/2` never shortens a later
  deadline, and `wait/1` is one exact timer (re-armed only if the deadline
  moves later) — not a polling loop.

  The registry key is a SHA-256 of the pair: the API key is not kept. The
  registry holds only the limiters in use.

  ## Examples

      iex> limiter = TinkexNative.RateLimiter.for_key("http://127.0.0.1:1", "tml-doc-example")
      iex> TinkexNative.RateLimiter.set_backoff(limiter, 50)
      iex> TinkexNative.RateLimiter.remaining_ms(limiter) > 0
      true
      iex> TinkexNative.RateLimiter.wait(limiter)
      :ok
      iex> TinkexNative.RateLimiter.remaining_ms(limiter)
      0
  """

  @enforce_keys [:resource]
  defstruct [:resource]

  @type t :: %__MODULE__{resource: reference()}

  alias TinkexNative.Error

  @max_u64 18_446_744_073_709_551_615

  @doc """
  The one limiter of the VM for `base_url` and `api_key` (a trailing `/`
  of the URL does not matter).

  ## Examples

      iex> a = TinkexNative.RateLimiter.for_key("http://x.test", "tml-1")
      iex> b = TinkexNative.RateLimiter.for_key("http://x.test/", "tml-1")
      iex> TinkexNative.RateLimiter.set_backoff(a, 1_000)
      iex> TinkexNative.RateLimiter.remaining_ms(b) > 0
      true
      iex> TinkexNative.RateLimiter.clear(a)
      :ok
  """
  @spec for_key(String.t(), String.t()) :: t()
  def for_key(base_url, api_key) when is_binary(base_url) and is_binary(api_key) do
    %__MODULE__{resource: TinkexNative.Native.rate_limiter_for_key(base_url, api_key)}
  end

  def for_key(base_url, api_key) do
    bad = if is_binary(base_url), do: {:api_key, redact(api_key)}, else: {:base_url, base_url}

    raise ArgumentError,
          "invalid value for #{inspect(elem(bad, 0))}: expected a string, got: #{inspect(elem(bad, 1))}"
  end

  defp redact(v) when is_binary(v), do: "[REDACTED]"
  defp redact(v), do: v

  @doc """
  Backs off for `ms` from now unless a later deadline is already set.
  Returns `:ok`.

  ## Examples

      iex> l = TinkexNative.RateLimiter.for_key("http://set.test", "tml-1")
      iex> TinkexNative.RateLimiter.set_backoff(l, 10_000)
      iex> TinkexNative.RateLimiter.set_backoff(l, 10)
      iex> TinkexNative.RateLimiter.remaining_ms(l) > 5_000
      true
      iex> TinkexNative.RateLimiter.clear(l)
      :ok
  """
  @spec set_backoff(t(), non_neg_integer()) :: :ok
  def set_backoff(%__MODULE__{resource: r}, ms) when is_integer(ms) and ms >= 0 do
    TinkexNative.Native.rate_limiter_set_backoff(r, min(ms, @max_u64))
    :ok
  end

  def set_backoff(%__MODULE__{}, ms) do
    raise ArgumentError,
          "invalid value for ms: expected a non-negative integer, got: #{inspect(ms)}"
  end

  @doc """
  Ends the backoff now; waiters wake at once.

  ## Examples

      iex> l = TinkexNative.RateLimiter.for_key("http://clear.test", "tml-1")
      iex> TinkexNative.RateLimiter.set_backoff(l, 10_000)
      iex> TinkexNative.RateLimiter.clear(l)
      :ok
      iex> TinkexNative.RateLimiter.remaining_ms(l)
      0
  """
  @spec clear(t()) :: :ok
  def clear(%__MODULE__{resource: r}), do: TinkexNative.Native.rate_limiter_clear(r)

  @doc """
  Milliseconds left (rounded up); 0 when there is no backoff.

  ## Examples

      iex> TinkexNative.RateLimiter.remaining_ms(TinkexNative.RateLimiter.for_key("http://none.test", "tml-1"))
      0
  """
  @spec remaining_ms(t()) :: non_neg_integer()
  def remaining_ms(%__MODULE__{resource: r}), do: TinkexNative.Native.rate_limiter_remaining_ms(r)

  @doc """
  Waits out the backoff: returns at once when there is none, otherwise
  when the deadline passes (or the backoff is cleared). The wait is a
  `receive` on a native timer's message, so no scheduler is blocked.
  Raises `TinkexNative.Error` (type `:internal`) should the native wait
  fail, rather than waiting for ever.

  ## Examples

      iex> l = TinkexNative.RateLimiter.for_key("http://wait.test", "tml-1")
      iex> TinkexNative.RateLimiter.set_backoff(l, 20)
      iex> t0 = System.monotonic_time(:millisecond)
      iex> TinkexNative.RateLimiter.wait(l)
      iex> System.monotonic_time(:millisecond) - t0 >= 19
      true
  """
  @spec wait(t()) :: :ok
  def wait(%__MODULE__{resource: r}) do
    ref = make_ref()

    case TinkexNative.Native.rate_limiter_wait(r, ref) do
      :ok ->
        :ok

      :wait ->
        receive do
          {:tinkex_backoff_over, ^ref, :ok} -> :ok
          {:tinkex_backoff_over, ^ref, {:error, native}} -> raise Error.from_native(native)
        end
    end
  end

  @doc """
  How many limiters are in use in the VM: one per `{base_url, api_key}`
  that some client or `t:t/0` still holds. A limiter nobody holds is
  freed; the next `for_key/2` of its pair starts with no backoff.

  ## Examples

      iex> is_integer(TinkexNative.RateLimiter.count())
      true
  """
  @spec count() :: non_neg_integer()
  def count, do: TinkexNative.Native.rate_limiter_count()

  defimpl Inspect do
    def inspect(_limiter, _opts), do: "#TinkexNative.RateLimiter<>"
  end
end
