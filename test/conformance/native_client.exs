# Drives this project's client (TinkexNative.SamplingClient) for
# conformance.py, so the same request can be sent by the official SDK and
# by this client and the two asample bodies compared in the simulator's log.
#
#   MIX_ENV=test mix run test/conformance/native_client.exs JOB.json RESULT.json
#
# JOB.json: {"base_url", "api_key", "base_model", "prompt": <the SDK's
# ModelInput JSON: chunks with "type" and base64 "data">, "num_samples",
# "max_tokens", "include_prompt_logprobs"}. RESULT.json gets
# {"sampling_session_id", "sequences": [{"tokens", "logprobs", "sequence_id"}],
# "prompt_logprobs"} or {"error": message}. (Results go to a file: mix
# prints build output on stdout.)

alias TinkexNative.SamplingClient
alias TinkexNative.Test.JSON

alias TinkexNative.Types.{
  EncodedTextChunk,
  ImageAssetPointerChunk,
  ImageChunk,
  ModelInput,
  SamplingParams
}

[job_path, result_path] = System.argv()
job = job_path |> File.read!() |> JSON.decode!()

chunk = fn
  %{"type" => "encoded_text", "tokens" => tokens} ->
    %EncodedTextChunk{tokens: tokens}

  %{"type" => "image", "data" => data, "format" => format} = c ->
    %ImageChunk{
      data: Base.decode64!(data),
      format: String.to_existing_atom(format),
      expected_tokens: c["expected_tokens"]
    }

  %{"type" => "image_asset_pointer", "location" => location, "format" => format} = c ->
    %ImageAssetPointerChunk{
      location: location,
      format: String.to_existing_atom(format),
      expected_tokens: c["expected_tokens"]
    }
end

prompt = %ModelInput{chunks: Enum.map(job["prompt"]["chunks"], chunk)}

result =
  with {:ok, client} <-
         SamplingClient.start_link(
           base_url: job["base_url"],
           api_key: job["api_key"],
           base_model: job["base_model"]
         ),
       {:ok, task} <-
         SamplingClient.sample(client, prompt, %SamplingParams{max_tokens: job["max_tokens"]},
           num_samples: job["num_samples"],
           include_prompt_logprobs: job["include_prompt_logprobs"]
         ),
       {:ok, response} <- Task.await(task, 60_000) do
    %{
      "sampling_session_id" => SamplingClient.session(client).sampling_session_id,
      "sequences" =>
        Enum.map(response.sequences, fn s ->
          %{"tokens" => s.tokens, "logprobs" => s.logprobs, "sequence_id" => s.sequence_id}
        end),
      "prompt_logprobs" => response.prompt_logprobs
    }
  else
    {:error, e} -> %{"error" => Exception.message(e)}
  end

File.write!(result_path, JSON.encode!(result))
