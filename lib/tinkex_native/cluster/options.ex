defmodule TinkexNative.Cluster.Options do
  @moduledoc false
  # Validation of the `:cluster` option of `TinkexNative.SamplingClient.start_link/1`.
  # Every error names the option and shows the value.

  alias TinkexNative.RetryConfig

  @default_ttl_ms 3_000
  @keys [:max_in_flight, :lease_ttl_ms]

  @typedoc "A validated `:cluster` option: `false`, or what every member of the key must agree on."
  @type t :: false | %{max_in_flight: pos_integer() | nil, lease_ttl_ms: pos_integer()}

  def default_ttl_ms, do: @default_ttl_ms

  @spec validate(term()) :: {:ok, t()} | {:error, ArgumentError.t()}
  def validate(false), do: {:ok, false}
  def validate(nil), do: {:ok, false}
  def validate(true), do: {:ok, %{max_in_flight: nil, lease_ttl_ms: @default_ttl_ms}}

  def validate(opts) when is_list(opts) and opts != [] do
    with true <- Keyword.keyword?(opts) || shape_error(opts),
         :ok <- known(opts),
         {:ok, n} <- max_in_flight(Keyword.get(opts, :max_in_flight)),
         {:ok, ttl} <- ttl(Keyword.get(opts, :lease_ttl_ms, @default_ttl_ms)) do
      {:ok, %{max_in_flight: n, lease_ttl_ms: ttl}}
    end
  end

  def validate(other), do: shape_error(other)

  defp known(opts) do
    case Enum.find(Keyword.keys(opts), &(&1 not in @keys)) do
      nil -> :ok
      bad -> error("invalid :cluster: " <> RetryConfig.unknown_key_message(bad, @keys))
    end
  end

  defp max_in_flight(nil), do: {:ok, nil}
  defp max_in_flight(n) when is_integer(n) and n > 0 and n <= 1_000_000_000, do: {:ok, n}
  defp max_in_flight(n), do: invalid(:max_in_flight, n, "a positive integer")

  defp ttl(ms) when is_integer(ms) and ms >= 100 and ms <= 600_000, do: {:ok, ms}

  defp ttl(ms),
    do: invalid(:lease_ttl_ms, ms, "an integer of milliseconds from 100 to 600000")

  defp shape_error(v) do
    error(
      "invalid value for :cluster: expected true, false or a keyword list of :max_in_flight and :lease_ttl_ms, got: #{inspect(v)}"
    )
  end

  defp invalid(key, value, expected) do
    error(
      "invalid value for #{inspect({:cluster, key})}: expected #{expected}, got: #{inspect(value)}"
    )
  end

  defp error(message), do: {:error, ArgumentError.exception(message)}

  @doc false
  # Why two clients of one key cannot share a cluster, or nil.
  @spec mismatch(t(), t()) :: String.t() | nil
  def mismatch(mine, theirs) do
    cond do
      mine.max_in_flight != theirs.max_in_flight ->
        "max_in_flight #{describe(mine.max_in_flight)} disagrees with #{describe(theirs.max_in_flight)} already in force for this {base_url, api_key}"

      mine.lease_ttl_ms != theirs.lease_ttl_ms ->
        "lease_ttl_ms #{mine.lease_ttl_ms} disagrees with #{theirs.lease_ttl_ms} already in force for this {base_url, api_key}"

      true ->
        nil
    end
  end

  defp describe(nil), do: "nil (cluster: true, no shared budget)"
  defp describe(n), do: Integer.to_string(n)
end
