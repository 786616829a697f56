defmodule TinkexNative.Types.EncodedTextChunk do
  @moduledoc """
  A chunk of prompt token ids (`{"type":"encoded_text","tokens":[...]}` on
  the wire).

  ## Examples

      iex> %TinkexNative.Types.EncodedTextChunk{tokens: [1, 2, 3]}.tokens
      [1, 2, 3]
  """

  @enforce_keys [:tokens]
  defstruct [:tokens]

  @type t :: %__MODULE__{tokens: [integer()]}
end
