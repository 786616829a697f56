defmodule TinkexNative.Types.ModelInput do
  @moduledoc """
  A prompt: a list of chunks, each a `TinkexNative.Types.EncodedTextChunk`
  (token ids), a `TinkexNative.Types.ImageChunk` (image bytes) or a
  `TinkexNative.Types.ImageAssetPointerChunk` (an image the service reads
  from a location), in any order, as in the Python SDK's `ModelInput`.

  ## Examples

      iex> input = TinkexNative.Types.ModelInput.from_ints([1, 2, 3])
      iex> TinkexNative.Types.ModelInput.length(input)
      3
      iex> TinkexNative.Types.ModelInput.to_ints(input)
      [1, 2, 3]

      iex> alias TinkexNative.Types.{EncodedTextChunk, ImageChunk, ModelInput}
      iex> png = <<137, 80, 78, 71, 13, 10, 26, 10>> <> "...rest of the file"
      iex> input = %ModelInput{chunks: [
      ...>   %EncodedTextChunk{tokens: [1, 2]},
      ...>   %ImageChunk{data: png, format: :png, expected_tokens: 16},
      ...>   %EncodedTextChunk{tokens: [3]}]}
      iex> ModelInput.length(input)
      19
  """

  alias TinkexNative.Types.{EncodedTextChunk, ImageAssetPointerChunk, ImageChunk}

  @enforce_keys [:chunks]
  defstruct chunks: []

  @type chunk :: EncodedTextChunk.t() | ImageChunk.t() | ImageAssetPointerChunk.t()
  @type t :: %__MODULE__{chunks: [chunk()]}

  @int32 -2_147_483_648..2_147_483_647
  @expected_tokens 0..2_147_483_647

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
  All token ids, chunk after chunk. Raises `ArgumentError` for a prompt
  with image chunks (they have no token ids), as the SDK's `to_ints` does.

  ## Examples

      iex> TinkexNative.Types.ModelInput.to_ints(%TinkexNative.Types.ModelInput{chunks: [
      ...>   %TinkexNative.Types.EncodedTextChunk{tokens: [1]}, %TinkexNative.Types.EncodedTextChunk{tokens: [2]}]})
      [1, 2]
  """
  @spec to_ints(t()) :: [integer()]
  def to_ints(%__MODULE__{chunks: chunks}) do
    Enum.flat_map(chunks, fn
      %EncodedTextChunk{tokens: tokens} ->
        tokens

      other ->
        raise ArgumentError,
              "to_ints/1 needs a prompt of text chunks only, got a #{inspect(other.__struct__)}"
    end)
  end

  @doc """
  The prompt's length in tokens: the token ids of text chunks plus each
  image's `expected_tokens`. Raises `ArgumentError` when an image has no
  `expected_tokens` (its length is then known only to the service), as
  the SDK's `length` does.

  ## Examples

      iex> TinkexNative.Types.ModelInput.length(TinkexNative.Types.ModelInput.from_ints([1, 2]))
      2
  """
  @spec length(t()) :: non_neg_integer()
  def length(%__MODULE__{chunks: chunks}), do: Enum.reduce(chunks, 0, &(chunk_length(&1) + &2))

  defp chunk_length(%EncodedTextChunk{tokens: tokens}), do: Kernel.length(tokens)
  defp chunk_length(%{expected_tokens: n}) when is_integer(n), do: n

  defp chunk_length(%module{}) do
    raise ArgumentError,
          "the length of a #{inspect(module)} is known only when its :expected_tokens is set"
  end

  @doc """
  Checks the prompt and encodes each chunk into the form the native side
  reads without a per-token decode: a text chunk becomes a little-endian
  int32 binary; an image chunk a tuple whose bytes the native side already
  owns. Returns `{:ok, [chunk]}` or `{:error, %TinkexNative.Error{type: :validation}}`
  naming the chunk, the field and the value.

  A prompt needs at least one token or image.

  ## Examples

      iex> TinkexNative.Types.ModelInput.encode(TinkexNative.Types.ModelInput.from_ints([1, 256]))
      {:ok, [<<1, 0, 0, 0, 0, 1, 0, 0>>]}
      iex> {:error, e} = TinkexNative.Types.ModelInput.encode(TinkexNative.Types.ModelInput.from_ints([]))
      iex> e.message
      "invalid value for :prompt: expected a prompt with at least one token or image, got: []"
      iex> bad = %TinkexNative.Types.ImageChunk{data: <<1>>, format: :gif}
      iex> {:error, e} = TinkexNative.Types.ModelInput.encode(%TinkexNative.Types.ModelInput{chunks: [bad]})
      iex> e.message
      "invalid value for :prompt at chunks[0].format: expected :png or :jpeg, got: :gif"
  """
  @spec encode(term()) :: {:ok, [binary() | tuple()]} | {:error, TinkexNative.Error.t()}
  def encode(%__MODULE__{chunks: [_ | _] = chunks} = input) do
    chunks
    |> Enum.with_index()
    |> Enum.reduce_while({:ok, []}, fn {chunk, i}, {:ok, acc} ->
      case encode_chunk(chunk, i) do
        {:ok, encoded} -> {:cont, {:ok, [encoded | acc]}}
        {:error, _} = error -> {:halt, error}
      end
    end)
    |> case do
      {:ok, encoded} ->
        if Enum.all?(encoded, &(&1 == "")),
          do: {:error, empty_prompt(to_ints(input))},
          else: {:ok, Enum.reverse(encoded)}

      error ->
        error
    end
  end

  def encode(%__MODULE__{chunks: []}), do: {:error, empty_prompt([])}

  def encode(other),
    do:
      {:error,
       TinkexNative.Error.validation(:prompt, other, "a %TinkexNative.Types.ModelInput{}")}

  defp empty_prompt(value),
    do: TinkexNative.Error.validation(:prompt, value, "a prompt with at least one token or image")

  defp encode_chunk(%EncodedTextChunk{tokens: tokens}, i) when is_list(tokens) do
    case encode_tokens(tokens, []) do
      {:ok, bin} ->
        {:ok, bin}

      {:error, bad} ->
        {:error, chunk_error(i, :tokens, bad, "token ids that are 32-bit integers")}
    end
  end

  defp encode_chunk(%ImageChunk{data: data, format: format, expected_tokens: expected}, i) do
    with :ok <- check_data(data, i),
         {:ok, format} <- check_format(format, i),
         :ok <- check_expected_tokens(expected, i) do
      {:ok, {:image, TinkexNative.Native.prompt_image(data), format, expected}}
    end
  end

  defp encode_chunk(
         %ImageAssetPointerChunk{location: location, format: format, expected_tokens: expected},
         i
       ) do
    with :ok <- check_location(location, i),
         {:ok, format} <- check_format(format, i),
         :ok <- check_expected_tokens(expected, i) do
      {:ok, {:image_asset_pointer, location, format, expected}}
    end
  end

  defp encode_chunk(chunk, i) do
    {:error,
     chunk_error(
       i,
       nil,
       chunk,
       "a %TinkexNative.Types.EncodedTextChunk{tokens: [integer]}, %TinkexNative.Types.ImageChunk{} or %TinkexNative.Types.ImageAssetPointerChunk{}"
     )}
  end

  defp check_data(data, _i) when is_binary(data) and byte_size(data) > 0, do: :ok

  defp check_data(data, i),
    do: {:error, chunk_error(i, :data, data, "a non-empty binary of PNG or JPEG bytes")}

  defp check_format(f, _i) when f in [:png, :jpeg], do: {:ok, f}
  defp check_format("png", _i), do: {:ok, :png}
  defp check_format("jpeg", _i), do: {:ok, :jpeg}
  defp check_format(f, i), do: {:error, chunk_error(i, :format, f, ":png or :jpeg")}

  defp check_location(l, i) when is_binary(l) and byte_size(l) > 0 do
    if String.valid?(l),
      do: :ok,
      else: {:error, chunk_error(i, :location, l, "a UTF-8 string")}
  end

  defp check_location(l, i), do: {:error, chunk_error(i, :location, l, "a non-empty string")}

  defp check_expected_tokens(nil, _i), do: :ok
  defp check_expected_tokens(n, _i) when is_integer(n) and n in @expected_tokens, do: :ok

  defp check_expected_tokens(n, i),
    do: {:error, chunk_error(i, :expected_tokens, n, "nil or a non-negative 32-bit integer")}

  # Images are big: the value shown is the field's, never the whole chunk
  # with its bytes (inspect limits a binary's length anyway).
  defp chunk_error(i, field, value, expected) do
    where = if field, do: "chunks[#{i}].#{field}", else: "chunks[#{i}]"

    %TinkexNative.Error{
      type: :validation,
      category: :user,
      message:
        "invalid value for :prompt at #{where}: expected #{expected}, got: #{inspect(value, limit: 8, printable_limit: 64)}"
    }
  end

  defp encode_tokens([t | rest], acc) when is_integer(t) and t in @int32,
    do: encode_tokens(rest, [acc | <<t::little-signed-32>>])

  defp encode_tokens([bad | _], _acc), do: {:error, bad}
  defp encode_tokens([], acc), do: {:ok, IO.iodata_to_binary(acc)}
end
