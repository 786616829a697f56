defmodule TinkexNative.Types.SamplingParams do
  @moduledoc """
  How to sample.

  | field | default | accepted |
  |---|---|---|
  | `:max_tokens` | `nil` | `nil` or a positive integer |
  | `:seed` | `nil` | `nil` or a 64-bit integer |
  | `:stop` | `nil` | `nil`, a string, a list of strings, or a list of token ids |
  | `:temperature` | `1.0` | a number ≥ 0 |
  | `:top_k` | `-1` | `-1` (off) or a positive integer |
  | `:top_p` | `1.0` | a number in (0, 1] |

  ## Examples

      iex> {:ok, p} = TinkexNative.Types.SamplingParams.validate(%TinkexNative.Types.SamplingParams{max_tokens: 8})
      iex> p.temperature
      1.0
      iex> {:error, e} = TinkexNative.Types.SamplingParams.validate(%TinkexNative.Types.SamplingParams{top_p: 0})
      iex> e.message
      "invalid value for :top_p: expected a number in (0, 1], got: 0"
  """

  defstruct max_tokens: nil, seed: nil, stop: nil, temperature: 1.0, top_k: -1, top_p: 1.0

  @type t :: %__MODULE__{
          max_tokens: pos_integer() | nil,
          seed: integer() | nil,
          stop: String.t() | [String.t()] | [integer()] | nil,
          temperature: number(),
          top_k: integer(),
          top_p: number()
        }

  @u32 4_294_967_295
  @i64 -9_223_372_036_854_775_808..9_223_372_036_854_775_807
  @i32 -2_147_483_648..2_147_483_647

  @doc """
  Checks every field; returns `{:ok, params}` (numbers normalised to
  floats where the wire wants floats) or `{:error, %TinkexNative.Error{}}`
  naming the field and the value.

  ## Examples

      iex> TinkexNative.Types.SamplingParams.validate(%TinkexNative.Types.SamplingParams{temperature: 0})
      {:ok, %TinkexNative.Types.SamplingParams{temperature: 0.0}}
  """
  @spec validate(term()) :: {:ok, t()} | {:error, TinkexNative.Error.t()}
  def validate(%__MODULE__{} = p) do
    with :ok <-
           check(
             :max_tokens,
             p.max_tokens,
             is_nil(p.max_tokens) or (is_integer(p.max_tokens) and p.max_tokens in 1..@u32),
             "nil or a positive integer"
           ),
         :ok <-
           check(
             :seed,
             p.seed,
             is_nil(p.seed) or (is_integer(p.seed) and p.seed in @i64),
             "nil or a 64-bit integer"
           ),
         :ok <-
           check(
             :stop,
             p.stop,
             stop?(p.stop),
             "nil, a string, a list of strings or a list of token ids"
           ),
         :ok <-
           check(
             :temperature,
             p.temperature,
             is_number(p.temperature) and p.temperature >= 0,
             "a number >= 0"
           ),
         :ok <-
           check(
             :top_k,
             p.top_k,
             p.top_k == -1 or (is_integer(p.top_k) and p.top_k in 1..2_147_483_647),
             "-1 or a positive integer"
           ),
         :ok <-
           check(
             :top_p,
             p.top_p,
             is_number(p.top_p) and p.top_p > 0 and p.top_p <= 1,
             "a number in (0, 1]"
           ) do
      {:ok, %{p | temperature: p.temperature / 1, top_p: p.top_p / 1}}
    end
  end

  def validate(other),
    do:
      {:error,
       TinkexNative.Error.validation(
         :sampling_params,
         other,
         "a %TinkexNative.Types.SamplingParams{}"
       )}

  defp check(_field, _value, true, _expected), do: :ok

  defp check(field, value, false, expected),
    do: {:error, TinkexNative.Error.validation(field, value, expected)}

  defp stop?(nil), do: true
  defp stop?(s) when is_binary(s), do: true

  defp stop?(l) when is_list(l),
    do: Enum.all?(l, &is_binary/1) or Enum.all?(l, &(is_integer(&1) and &1 in @i32))

  defp stop?(_), do: false

  @doc false
  # The tagged form the NIF decodes.
  def native_stop(nil), do: :none
  def native_stop(s) when is_binary(s), do: {:text, s}
  def native_stop([]), do: {:tokens, []}
  def native_stop([s | _] = l) when is_binary(s), do: {:texts, l}
  def native_stop(l) when is_list(l), do: {:tokens, l}
end
