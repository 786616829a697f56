# Test-only stand-ins of tinkex 0.4.0's Tinkex.Types structs that the
# adapter takes and returns (see README.md): their fields, defaults and
# enforced keys.
defmodule Tinkex.Types.EncodedTextChunk do
  @moduledoc false
  @enforce_keys [:tokens]
  defstruct [:tokens, type: "encoded_text"]
end

defmodule Tinkex.Types.ModelInput do
  @moduledoc false
  defstruct chunks: []
end

defmodule Tinkex.Types.SamplingParams do
  @moduledoc false
  defstruct [:max_tokens, :seed, :stop, temperature: 1.0, top_k: -1, top_p: 1.0]
end

defmodule Tinkex.Types.SampledSequence do
  @moduledoc false
  @enforce_keys [:tokens]
  defstruct [:tokens, :logprobs, :stop_reason]
end

defmodule Tinkex.Types.SampleResponse do
  @moduledoc false
  defstruct [:sequences, :prompt_logprobs, :topk_prompt_logprobs, type: "sample"]
end
