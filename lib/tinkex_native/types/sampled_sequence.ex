defmodule TinkexNative.Types.SampledSequence do
  @moduledoc """
  One sampled sequence: its tokens (a list, or a little-endian int32
  binary with `tokens: :binary`), their logprobs, why it stopped, and the
  server's id for it.

  ## Examples

      iex> %TinkexNative.Types.SampledSequence{tokens: [1], stop_reason: :length}.stop_reason
      :length
  """

  defstruct tokens: [], logprobs: nil, stop_reason: nil, sequence_id: nil

  @type t :: %__MODULE__{
          tokens: [integer()] | binary(),
          logprobs: [float()] | nil,
          stop_reason: :stop | :length,
          sequence_id: String.t() | nil
        }
end
