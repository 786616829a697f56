defmodule TinkexNative.Types.ImageChunk do
  @moduledoc """
  An image sent inside the prompt, as the Python SDK's `tinker.types.ImageChunk`.

  Fields:

    * `:data` - the encoded image file (raw PNG or JPEG bytes, not base64;
      it is base64-encoded on the wire). A non-empty binary.
    * `:format` - `:png` or `:jpeg` (the strings `"png"`, `"jpeg"` too).
    * `:expected_tokens` - `nil` or a non-negative integer: the tokens you
      expect the image to take. Advisory: the service computes the real
      count and may fail the request early when they differ. Needed only
      by `TinkexNative.Types.ModelInput.length/1`.

  On the wire: `{"type":"image","data":"<base64>","format":"png","expected_tokens":N}`
  (`expected_tokens` left out when `nil`). For the 429 backoff and the
  dispatch budget an image counts its raw byte size, as in the SDK.

  ## Examples

      iex> chunk = %TinkexNative.Types.ImageChunk{data: <<137, 80, 78, 71>>, format: :png, expected_tokens: 4}
      iex> TinkexNative.Types.ModelInput.length(%TinkexNative.Types.ModelInput{chunks: [chunk]})
      4
  """

  @enforce_keys [:data, :format]
  defstruct [:data, :format, expected_tokens: nil]

  @type format :: :png | :jpeg
  @type t :: %__MODULE__{
          data: binary(),
          format: format() | String.t(),
          expected_tokens: non_neg_integer() | nil
        }
end
