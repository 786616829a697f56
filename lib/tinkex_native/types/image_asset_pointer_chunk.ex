defmodule TinkexNative.Types.ImageAssetPointerChunk do
  @moduledoc """
  An image the service reads from a location (a path or URL it can reach),
  as the Python SDK's `tinker.types.ImageAssetPointerChunk`.

  Fields:

    * `:location` - a non-empty string.
    * `:format` - `:png` or `:jpeg` (the strings `"png"`, `"jpeg"` too).
    * `:expected_tokens` - `nil` or a non-negative integer, advisory as for
      `TinkexNative.Types.ImageChunk`.

  On the wire: `{"type":"image_asset_pointer","format":"jpeg","location":"...","expected_tokens":N}`
  (`expected_tokens` left out when `nil`). For the 429 backoff and the
  dispatch budget it counts the location's byte length, as in the SDK.

  ## Examples

      iex> chunk = %TinkexNative.Types.ImageAssetPointerChunk{location: "s3://b/cat.jpg", format: :jpeg, expected_tokens: 256}
      iex> chunk.expected_tokens
      256
  """

  @enforce_keys [:location, :format]
  defstruct [:location, :format, expected_tokens: nil]

  @type t :: %__MODULE__{
          location: String.t(),
          format: TinkexNative.Types.ImageChunk.format() | String.t(),
          expected_tokens: non_neg_integer() | nil
        }
end
