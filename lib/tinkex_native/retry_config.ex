defmodule TinkexNative.RetryConfig do
  @moduledoc """
  How a sampling client (or any `TinkexNative.RetryHandler`) retries, limits its
  concurrency and detects stuck requests.

  The defaults are the official Python SDK's
  (`tinker.lib.retry_handler.RetryConfig`):

  | option | default | meaning | Python |
  |---|---|---|---|
  | `:max_retries` | `:infinity` | retries after the first attempt; the watchdog bounds the time | (none: unlimited) |
  | `:base_delay_ms` | `500` | delay before the first retry | `retry_delay_base` (0.5 s) |
  | `:max_delay_ms` | `10_000` | cap of every delay, jitter included | `retry_delay_max` (10 s) |
  | `:jitter_pct` | `0.25` | delay × (1 ± jitter), uniform | `jitter_factor` |
  | `:progress_timeout_ms` | `7_200_000` | no success in the handler for this long fails every in-flight request as stuck | `progress_timeout` (120 min) |
  | `:max_connections` | `1000` | permits of the handler's semaphore; `nil` for none | `max_connections` |
  | `:enable_retry_logic` | `true` | `false`: one attempt (still under the semaphore and watchdog) | `enable_retry_logic` |
  | `:enable_stuck_detection` | `true` | `false`: no watchdog | `enable_stuck_detection` |
  | `:retry_statuses` | `[408, 409, 429, 500..599]` | HTTP statuses retried (not a sample's poll that the Python SDK fails for good, e.g. a 409 or 404 from `retrieve_future`: that one is never resubmitted) | `is_retryable_status_code` |
  | `:retry_types` | `[:transport, :timeout, :expired]` | `TinkexNative.Error` types retried whatever their status; add `:exception` to retry functions that raise, throw or exit in `TinkexNative.RetryHandler.execute/3` | `retryable_exceptions` |

  ## Backoff

  Retry `k` (0 for the first retry) waits
  `d = min(base · 2^k, max)` (any overflow gives `max`), jittered to
  `clamp(d + d · jitter · (2u − 1), 0, max)` with `u` uniform in [0, 1).
  With the defaults:

  | retry | nominal | range |
  |---|---|---|
  | 1st | 0.5 s | 0.375 – 0.625 s |
  | 2nd | 1 s | 0.75 – 1.25 s |
  | 3rd | 2 s | 1.5 – 2.5 s |
  | 4th | 4 s | 3 – 5 s |
  | 5th | 8 s | 6 – 10 s |
  | 6th and later | 10 s | 7.5 – 10 s |

  See `delay_ms/3` and `TinkexNative.Backoff`.

  ## Examples

      iex> {:ok, config} = TinkexNative.RetryConfig.new(max_connections: 64, jitter_pct: 0)
      iex> {config.max_connections, config.jitter_pct, config.base_delay_ms}
      {64, 0.0, 500}

      iex> TinkexNative.RetryConfig.new(max_retry: 3)
      {:error, %ArgumentError{message: "unknown option :max_retry. Did you mean :max_retries?"}}

  Two configs with equal fields are equal terms, so a config can key a cache:

      iex> TinkexNative.RetryConfig.new!(jitter_pct: 0) == TinkexNative.RetryConfig.new!(jitter_pct: 0.0)
      true
  """

  @retry_types [:transport, :timeout, :expired, :http, :request_failed, :decode, :exception]

  @type t :: %__MODULE__{
          max_retries: non_neg_integer() | :infinity,
          base_delay_ms: non_neg_integer(),
          max_delay_ms: non_neg_integer(),
          jitter_pct: float(),
          progress_timeout_ms: pos_integer(),
          max_connections: pos_integer() | nil,
          enable_retry_logic: boolean(),
          enable_stuck_detection: boolean(),
          retry_statuses: [100..599 | Range.t()],
          retry_types: [atom()]
        }

  defstruct max_retries: :infinity,
            base_delay_ms: 500,
            max_delay_ms: 10_000,
            jitter_pct: 0.25,
            progress_timeout_ms: 7_200_000,
            max_connections: 1000,
            enable_retry_logic: true,
            enable_stuck_detection: true,
            retry_statuses: [408, 409, 429, 500..599],
            retry_types: [:transport, :timeout, :expired]

  @keys [
    :max_retries,
    :base_delay_ms,
    :max_delay_ms,
    :jitter_pct,
    :progress_timeout_ms,
    :max_connections,
    :enable_retry_logic,
    :enable_stuck_detection,
    :retry_statuses,
    :retry_types
  ]

  # Values above this do not fit the native side's unsigned 64-bit fields.
  @max_u64 18_446_744_073_709_551_615

  @doc """
  Builds a validated config from a keyword list, a map or an existing
  config (which is re-validated).

  Returns `{:ok, config}` or `{:error, %ArgumentError{}}` whose message
  names the field, the value and what is accepted.

  ## Examples

      iex> {:ok, c} = TinkexNative.RetryConfig.new(%{max_retries: 5})
      iex> c.max_retries
      5

      iex> {:error, e} = TinkexNative.RetryConfig.new(max_connections: 0)
      iex> e.message
      "invalid value for :max_connections: expected a positive integer or nil, got: 0"
  """
  @spec new(t() | keyword() | map()) :: {:ok, t()} | {:error, ArgumentError.t()}
  def new(opts \\ [])
  def new(%__MODULE__{} = config), do: config |> Map.from_struct() |> new()

  def new(opts) when is_list(opts) or is_map(opts) do
    with :ok <- check_shape(opts),
         {:ok, fields} <- validate_fields(Enum.to_list(opts)),
         config = struct(__MODULE__, fields),
         :ok <- check_delays(config) do
      {:ok, config}
    end
  end

  def new(other) do
    {:error,
     ArgumentError.exception(
       "expected retry_config to be a %TinkexNative.RetryConfig{}, a keyword list or a map, got: #{inspect(other)}"
     )}
  end

  @doc """
  Like `new/1` but raises `ArgumentError`.

  ## Examples

      iex> TinkexNative.RetryConfig.new!(base_delay_ms: 100).base_delay_ms
      100
  """
  @spec new!(t() | keyword() | map()) :: t()
  def new!(opts \\ []) do
    case new(opts) do
      {:ok, config} -> config
      {:error, e} -> raise e
    end
  end

  @doc """
  The delay before retry `attempt` (0 for the first retry), in ms,
  computed by the native core.

  Options:

    * `:u` - the uniform draw in [0, 1) to use, for a reproducible delay;
      without it a fresh random draw is made.

  ## Examples

      iex> config = TinkexNative.RetryConfig.new!()
      iex> TinkexNative.RetryConfig.delay_ms(config, 0, u: 0.5)
      500
      iex> TinkexNative.RetryConfig.delay_ms(config, 10, u: 0.999)
      10000
      iex> TinkexNative.RetryConfig.delay_ms(config, 2, u: 0.0)
      1500
  """
  @spec delay_ms(t(), non_neg_integer(), keyword()) :: non_neg_integer()
  def delay_ms(%__MODULE__{} = config, attempt, opts \\ []),
    do: TinkexNative.Backoff.delay_ms(config, attempt, opts)

  @doc """
  Whether this config's rule retries `error`.

  ## Examples

      iex> config = TinkexNative.RetryConfig.new!()
      iex> TinkexNative.RetryConfig.retryable?(config, %TinkexNative.Error{type: :http, status: 503})
      true
      iex> TinkexNative.RetryConfig.retryable?(config, %TinkexNative.Error{type: :http, status: 400})
      false
      iex> TinkexNative.RetryConfig.retryable?(config, %TinkexNative.Error{type: :request_failed, category: :server})
      false
  """
  @spec retryable?(t(), TinkexNative.Error.t() | :exception) :: boolean()
  def retryable?(%__MODULE__{retry_types: types}, :exception), do: :exception in types

  def retryable?(%__MODULE__{} = config, %TinkexNative.Error{type: type, status: status}) do
    type in config.retry_types or
      (type == :http and is_integer(status) and
         Enum.any?(config.retry_statuses, &status_in?(status, &1)))
  end

  defp status_in?(status, %Range{} = r), do: status in r
  defp status_in?(status, s), do: status == s

  @doc """
  The map the native side decodes (done once, when a handler is fetched).

  ## Examples

      iex> TinkexNative.RetryConfig.to_native(TinkexNative.RetryConfig.new!()).retry_statuses
      [{408, 408}, {409, 409}, {429, 429}, {500, 599}]
  """
  @spec to_native(t()) :: map()
  def to_native(%__MODULE__{} = c) do
    %{
      max_retries: if(c.max_retries == :infinity, do: nil, else: c.max_retries),
      base_delay_ms: c.base_delay_ms,
      max_delay_ms: c.max_delay_ms,
      jitter_pct: c.jitter_pct,
      progress_timeout_ms: c.progress_timeout_ms,
      max_connections: c.max_connections,
      enable_retry_logic: c.enable_retry_logic,
      enable_stuck_detection: c.enable_stuck_detection,
      retry_statuses:
        Enum.map(c.retry_statuses, fn
          %Range{first: a, last: b} -> {a, b}
          s -> {s, s}
        end),
      retry_kinds: for(t <- c.retry_types, t != :exception, do: Atom.to_string(t))
    }
  end

  ## Validation

  defp check_shape(opts) when is_list(opts) do
    if Keyword.keyword?(opts),
      do: check_keys(Keyword.keys(opts)),
      else:
        {:error,
         ArgumentError.exception(
           "expected retry_config options as a keyword list, got: #{inspect(opts)}"
         )}
  end

  defp check_shape(opts) when is_map(opts) do
    case Enum.reject(Map.keys(opts), &is_atom/1) do
      [] ->
        opts |> Map.delete(:__struct__) |> Map.keys() |> check_keys()

      [bad | _] ->
        {:error, ArgumentError.exception("retry_config keys must be atoms, got: #{inspect(bad)}")}
    end
  end

  defp check_keys(keys) do
    case Enum.find(keys, &(&1 not in @keys)) do
      nil -> :ok
      bad -> {:error, ArgumentError.exception(unknown_key_message(bad))}
    end
  end

  @doc false
  def unknown_key_message(bad, known \\ @keys) do
    guess =
      known
      |> Enum.map(&{&1, String.jaro_distance(Atom.to_string(bad), Atom.to_string(&1))})
      |> Enum.max_by(&elem(&1, 1))

    case guess do
      {key, score} when score > 0.8 ->
        "unknown option #{inspect(bad)}. Did you mean #{inspect(key)}?"

      _ ->
        "unknown option #{inspect(bad)}. Known options: #{Enum.map_join(known, ", ", &inspect/1)}"
    end
  end

  defp validate_fields(pairs) do
    Enum.reduce_while(pairs, {:ok, []}, fn
      {:__struct__, _}, acc ->
        {:cont, acc}

      {key, value}, {:ok, acc} ->
        case validate(key, value) do
          {:ok, v} -> {:cont, {:ok, [{key, v} | acc]}}
          {:error, expected} -> {:halt, {:error, invalid(key, value, expected)}}
        end
    end)
  end

  defp invalid(key, value, expected) do
    ArgumentError.exception(
      "invalid value for #{inspect(key)}: expected #{expected}, got: #{inspect(value)}"
    )
  end

  defp validate(:max_retries, :infinity), do: {:ok, :infinity}
  defp validate(:max_retries, v), do: non_neg_int(v, "a non-negative integer or :infinity")
  defp validate(:base_delay_ms, v), do: non_neg_int(v, "a non-negative integer (milliseconds)")
  defp validate(:max_delay_ms, v), do: non_neg_int(v, "a non-negative integer (milliseconds)")

  defp validate(:progress_timeout_ms, v) do
    case non_neg_int(v, "a positive integer (milliseconds)") do
      {:ok, 0} -> {:error, "a positive integer (milliseconds)"}
      other -> other
    end
  end

  defp validate(:max_connections, nil), do: {:ok, nil}

  defp validate(:max_connections, v) do
    case non_neg_int(v, "a positive integer or nil") do
      {:ok, 0} -> {:error, "a positive integer or nil"}
      other -> other
    end
  end

  defp validate(:jitter_pct, v) when is_number(v) and v >= 0 and v <= 1, do: {:ok, v / 1}
  defp validate(:jitter_pct, _), do: {:error, "a number between 0 and 1 (0.25 means ±25%)"}

  defp validate(key, v) when key in [:enable_retry_logic, :enable_stuck_detection] do
    if is_boolean(v), do: {:ok, v}, else: {:error, "a boolean"}
  end

  defp validate(:retry_statuses, v) when is_list(v) do
    if Enum.all?(v, &status_spec?/1),
      do: {:ok, v},
      else: {:error, "a list of HTTP statuses (100..599) or ascending ranges of them"}
  end

  defp validate(:retry_statuses, _),
    do: {:error, "a list of HTTP statuses (100..599) or ascending ranges of them"}

  defp validate(:retry_types, v) when is_list(v) do
    if Enum.all?(v, &(&1 in @retry_types)),
      do: {:ok, Enum.uniq(v)},
      else: {:error, "a list of error types among #{inspect(@retry_types)}"}
  end

  defp validate(:retry_types, _),
    do: {:error, "a list of error types among #{inspect(@retry_types)}"}

  defp status_spec?(s) when is_integer(s), do: s in 100..599

  defp status_spec?(%Range{first: a, last: b, step: 1}) when is_integer(a) and is_integer(b),
    do: a in 100..599 and b in 100..599 and a <= b

  defp status_spec?(_), do: false

  # Whole floats (500.0) are accepted as integers; anything else is not.
  defp non_neg_int(v, _expected) when is_integer(v) and v >= 0 and v <= @max_u64, do: {:ok, v}

  defp non_neg_int(v, _expected) when is_float(v) and v >= 0 and v <= @max_u64 and v == trunc(v),
    do: {:ok, trunc(v)}

  defp non_neg_int(_v, expected), do: {:error, expected}

  defp check_delays(%__MODULE__{base_delay_ms: b, max_delay_ms: m}) when b > m do
    {:error,
     ArgumentError.exception(
       "invalid value for :base_delay_ms: expected at most :max_delay_ms (#{m}), got: #{b}"
     )}
  end

  defp check_delays(_), do: :ok
end
