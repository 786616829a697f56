defmodule TinkexNative.Types.ModelInput do
  @moduledoc """
  A prompt: a list of chunks (today, `TinkexNative.Types.EncodedTextChunk`s of
  token ids).

  ## Examples

      iex> input = TinkexNative.Types.ModelInput.from_ints([1, 2, 3])
      iex> TinkexNative.Types.ModelInput.length(input)
      3
      iex> TinkexNative.Types.ModelInput.to_ints(input)
      [1, 2, 3]
  """

  alias TinkexNative.Types.EncodedTextChunk

  @enforce_keys [:chunks]
  defstruct chunks: []

  @type t :: %__MODULE__{chunks: [EncodedTextChunk.t()]}

  @int32 -2_147_483_648..2_147_483_647

  @doc """
  A prompt of one chunk of token ids.

  ## Examples

      iex> TinkexNative.Types.ModelInput.from_ints([5, 6])
      %TinkexNative.Types.ModelInput{chunks: [%TinkexNative.Types.EncodedTextChunk{tokens: [5, 6]}]}
  """
  @spec from_ints([integer()]) :: t()
  def from_ints(tokens) when is_list(tokens) do
    %__MODULE__{chunks: [%EncodedTextChunk{tokens: tokens}]}
  end

  @doc """
  All token ids, chunk after chunk.

  ## Examples

      iex> TinkexNative.Types.ModelInput.to_ints(%TinkexNative.Types.ModelInput{chunks: [
      ...>   %TinkexNative.Types.EncodedTextChunk{tokens: [1]}, %TinkexNative.Types.EncodedTextChunk{tokens: [2]}]})
      [1, 2]
  """
  @spec to_ints(t()) :: [integer()]
  def to_ints(%__MODULE__{chunks: chunks}), do: Enum.flat_map(chunks, & &1.tokens)

  @doc """
  The number of tokens.

  ## Examples

      iex> TinkexNative.Types.ModelInput.length(TinkexNative.Types.ModelInput.from_ints([1, 2]))
      2
  """
  @spec length(t()) :: non_neg_integer()
  def length(%__MODULE__{chunks: chunks}),
    do: Enum.reduce(chunks, 0, &(Kernel.length(&1.tokens) + &2))

  @doc """
  Checks the prompt and encodes each chunk as a little-endian int32
  binary, the form the native side reads without a per-token decode.
  Returns `{:ok, [binary]}` or `{:error, %TinkexNative.Error{type: :validation}}`.

  ## Examples

      iex> TinkexNative.Types.ModelInput.encode(TinkexNative.Types.ModelInput.from_ints([1, 256]))
      {:ok, [<<1, 0, 0, 0, 0, 1, 0, 0>>]}
      iex> {:error, e} = TinkexNative.Types.ModelInput.encode(TinkexNative.Types.ModelInput.from_ints([]))
      iex> e.message
      "invalid value for :prompt: expected a prompt with at least one token, got: []"
  """
  @spec encode(term()) :: {:ok, [binary()]} | {:error, TinkexNative.Error.t()}
  def encode(%__MODULE__{chunks: [_ | _] = chunks} = input) do
    Enum.reduce_while(chunks, {:ok, []}, fn
      %EncodedTextChunk{tokens: tokens}, {:ok, acc} when is_list(tokens) ->
        case encode_tokens(tokens, []) do
          {:ok, bin} ->
            {:cont, {:ok, [bin | acc]}}

          {:error, bad} ->
            {:halt,
             {:error,
              TinkexNative.Error.validation(:prompt, bad, "token ids that are 32-bit integers")}}
        end

      chunk, _ ->
        {:halt,
         {:error,
          TinkexNative.Error.validation(
            :prompt,
            chunk,
            "a list of %TinkexNative.Types.EncodedTextChunk{tokens: [integer]}"
          )}}
    end)
    |> case do
      {:ok, bins} ->
        if Enum.all?(bins, &(&1 == "")),
          do:
            {:error,
             TinkexNative.Error.validation(
               :prompt,
               to_ints(input),
               "a prompt with at least one token"
             )},
          else: {:ok, Enum.reverse(bins)}

      error ->
        error
    end
  end

  def encode(%__MODULE__{chunks: []}),
    do: {:error, TinkexNative.Error.validation(:prompt, [], "a prompt with at least one token")}

  def encode(other),
    do:
      {:error,
       TinkexNative.Error.validation(:prompt, other, "a %TinkexNative.Types.ModelInput{}")}

  defp encode_tokens([t | rest], acc) when is_integer(t) and t in @int32,
    do: encode_tokens(rest, [acc | <<t::little-signed-32>>])

  defp encode_tokens([bad | _], _acc), do: {:error, bad}
  defp encode_tokens([], acc), do: {:ok, IO.iodata_to_binary(acc)}
end
