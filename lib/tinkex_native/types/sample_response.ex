defmodule TinkexNative.Types.SampleResponse do
  @moduledoc """
  The result of a sample: one `TinkexNative.Types.SampledSequence` per requested
  sample, and the prompt's logprobs when asked for (`nil` at positions that
  have none, such as the first).

  ## Examples

      iex> %TinkexNative.Types.SampleResponse{sequences: []}.prompt_logprobs
      nil
  """

  defstruct sequences: [],
            prompt_logprobs: nil,
            topk_prompt_logprobs: nil,
            prompt_cache_hit_tokens: 0,
            request_id: nil

  @type t :: %__MODULE__{
          sequences: [TinkexNative.Types.SampledSequence.t()],
          prompt_logprobs: [float() | nil] | nil,
          topk_prompt_logprobs: [[{integer(), float()}] | nil] | nil,
          prompt_cache_hit_tokens: non_neg_integer(),
          request_id: String.t() | nil
        }
end
