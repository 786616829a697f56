defmodule TinkexNative.Tinkex.Convert do
  @moduledoc false
  # tinkex's values to this library's and back: prompts and sampling
  # params in, `%Tinkex.Types.SampleResponse{}` and `%Tinkex.Error{}` out.
  #
  # tinkex is the dependent, never a dependency: its modules are named
  # here as atoms and reached only at run time (`struct/2`, `apply/3`), so
  # this library compiles, warning-free, without it.

  alias TinkexNative.Error
  alias TinkexNative.Types.{EncodedTextChunk, ModelInput, SampledSequence, SampleResponse}

  @error Module.concat(["Tinkex", "Error"])
  @sample_response Module.concat(["Tinkex", "Types", "SampleResponse"])
  @sampled_sequence Module.concat(["Tinkex", "Types", "SampledSequence"])
  @params_fields [:max_tokens, :seed, :stop, :temperature, :top_k, :top_p]

  @doc false
  @spec required_modules() :: [module()]
  def required_modules, do: [@error, @sample_response, @sampled_sequence]

  @doc false
  # :ok when tinkex is loaded (what the results are built from), else the
  # missing modules.
  @spec tinkex_loaded() :: :ok | {:error, [module()]}
  def tinkex_loaded do
    missing =
      Enum.reject(required_modules(), &Code.ensure_loaded?/1) ++
        if(Code.ensure_loaded?(@error) and not function_exported?(@error, :new, 3),
          do: [@error],
          else: []
        )

    if missing == [], do: :ok, else: {:error, Enum.uniq(missing)}
  end

  ## In

  @doc false
  @spec prompt(term()) :: {:ok, ModelInput.t()} | {:error, Error.t()}
  def prompt(%ModelInput{} = p), do: {:ok, p}

  def prompt(%{chunks: chunks}) when is_list(chunks) do
    chunks
    |> Enum.reduce_while({:ok, []}, fn chunk, {:ok, acc} ->
      case chunk do
        %{tokens: tokens} when is_list(tokens) ->
          if Map.get(chunk, :type, "encoded_text") == "encoded_text",
            do: {:cont, {:ok, [%EncodedTextChunk{tokens: tokens} | acc]}},
            else: {:halt, bad_chunk(chunk)}

        other ->
          {:halt, bad_chunk(other)}
      end
    end)
    |> case do
      {:ok, chunks} -> {:ok, %ModelInput{chunks: Enum.reverse(chunks)}}
      error -> error
    end
  end

  def prompt(other), do: {:error, invalid(:prompt, other, "a %Tinkex.Types.ModelInput{}")}

  defp bad_chunk(chunk) do
    {:error,
     invalid(
       :prompt,
       chunk,
       "chunks of %Tinkex.Types.EncodedTextChunk{tokens: [integer]} (image chunks are not supported)"
     )}
  end

  # Error.validation/3, showing only the start of the value: an image
  # chunk carries its whole image.
  defp invalid(field, value, expected) do
    %Error{
      type: :validation,
      category: :user,
      message:
        "invalid value for #{inspect(field)}: expected #{expected}, got: #{inspect(value, limit: 8, printable_limit: 64)}"
    }
  end

  @doc false
  @spec params(term()) :: {:ok, TinkexNative.Types.SamplingParams.t()} | {:error, Error.t()}
  def params(%TinkexNative.Types.SamplingParams{} = p), do: {:ok, p}

  def params(%{} = p) do
    {:ok, struct(TinkexNative.Types.SamplingParams, Map.take(p, @params_fields))}
  end

  def params(other),
    do: {:error, invalid(:sampling_params, other, "a %Tinkex.Types.SamplingParams{} or a map")}

  ## Out

  @doc false
  @spec response(SampleResponse.t()) :: struct()
  def response(%SampleResponse{} = r) do
    struct(@sample_response,
      sequences: Enum.map(r.sequences, &sequence/1),
      prompt_logprobs: r.prompt_logprobs,
      topk_prompt_logprobs: r.topk_prompt_logprobs,
      type: "sample"
    )
  end

  defp sequence(%SampledSequence{} = s) do
    struct(@sampled_sequence,
      tokens: s.tokens,
      logprobs: s.logprobs,
      stop_reason: stop_reason(s.stop_reason)
    )
  end

  # Tinkex.Types.StopReason.parse/1 on the wire names.
  defp stop_reason(:length), do: :length
  defp stop_reason(:stop), do: :stop
  defp stop_reason(_), do: nil

  @doc false
  # A `%Tinkex.Error{}` made with `Tinkex.Error.new/3`, typed the way
  # tinkex types the same failure; `data` keeps the request id and the
  # original `%TinkexNative.Error{}`.
  @spec error(Error.t()) :: struct()
  def error(%Error{} = e) do
    {type, opts} = kind(e)
    data = %{request_id: e.request_id, tinkex_native: e}
    apply(@error, :new, [type, e.message, opts ++ [data: data]])
  end

  @doc false
  # tinkex's own error for a failure that has no TinkexNative.Error.
  @spec error(atom(), String.t(), keyword()) :: struct()
  def error(type, message, opts), do: apply(@error, :new, [type, message, opts])

  defp kind(%Error{type: :transport}), do: {:api_connection, []}
  defp kind(%Error{type: :timeout}), do: {:api_timeout, []}
  # tinkex's own watchdog error ("Progress timeout exceeded") is a timeout.
  defp kind(%Error{type: :stuck}), do: {:api_timeout, []}

  defp kind(%Error{type: :http, status: s, retry_after_ms: after_ms}) do
    # tinkex reports 1 s when the server named no delay.
    {:api_status, status: s, category: http_category(s), retry_after_ms: after_ms || 1_000}
  end

  defp kind(%Error{type: :expired}), do: {:api_status, status: 410, category: :server}

  defp kind(%Error{type: :request_failed, category: c}),
    do: {:request_failed, category: c || :unknown}

  # tinkex reports a malformed answer as a validation error of the user.
  defp kind(%Error{type: t}) when t in [:decode, :validation], do: {:validation, category: :user}
  # As tinkex's "SamplingClient not initialized".
  defp kind(%Error{type: :client_not_running}), do: {:validation, []}
  defp kind(%Error{}), do: {:request_failed, []}

  # tinkex's rule for an error answer without a "category" in its body.
  defp http_category(429), do: :server
  defp http_category(s) when is_integer(s) and s in 400..499, do: :user
  defp http_category(s) when is_integer(s) and s in 500..599, do: :server
  defp http_category(_), do: :unknown
end
