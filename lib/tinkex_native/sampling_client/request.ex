defmodule TinkexNative.SamplingClient.Request do
  @moduledoc false
  # Turns sample/compute_logprobs arguments into the map the NIF decodes,
  # validating everything first: a bad argument never reaches the network.

  alias TinkexNative.Error
  alias TinkexNative.Types.{ModelInput, SamplingParams}

  @sample_opts [
    :num_samples,
    :include_prompt_logprobs,
    :topk_prompt_logprobs,
    :tokens,
    :telemetry,
    :timeout
  ]

  # Deadlines beyond this many ms cannot be represented natively; they
  # are as good as none.
  @max_timeout 0xFFFF_FFFF_FFFF_FFFF

  def sample_spec(prompt, params, opts, defaults) do
    with :ok <- check_opts(opts, @sample_opts),
         {:ok, chunks} <- ModelInput.encode(prompt),
         {:ok, params} <- SamplingParams.validate(params),
         {:ok, n} <- int_opt(opts, :num_samples, 1, 1..1_000_000, "a positive integer"),
         {:ok, lp} <- bool_opt(opts, :include_prompt_logprobs, false),
         {:ok, topk} <-
           int_opt(opts, :topk_prompt_logprobs, 0, 0..1_000_000, "a non-negative integer"),
         {:ok, tokens} <- tokens_opt(opts, defaults.tokens),
         {:ok, telemetry} <- bool_opt(opts, :telemetry, true),
         {:ok, timeout} <- timeout_opt(opts) do
      {:ok,
       %{
         chunks: chunks,
         num_samples: n,
         max_tokens: params.max_tokens,
         seed: params.seed,
         stop: SamplingParams.native_stop(params.stop),
         temperature: params.temperature,
         top_k: params.top_k,
         top_p: params.top_p,
         prompt_logprobs: lp,
         topk_prompt_logprobs: topk,
         compute_logprobs: false,
         tokens_as_binary: tokens == :binary,
         events: telemetry,
         timeout_ms: timeout
       }}
    end
  end

  def logprobs_spec(prompt, opts, defaults) do
    with :ok <- check_opts(opts, [:telemetry, :timeout]),
         {:ok, spec} <-
           sample_spec(
             prompt,
             %SamplingParams{max_tokens: 1},
             [include_prompt_logprobs: true] ++ opts,
             defaults
           ) do
      {:ok, %{spec | compute_logprobs: true}}
    end
  end

  defp check_opts(opts, known) when is_list(opts) do
    if Keyword.keyword?(opts) do
      case Enum.find(Keyword.keys(opts), &(&1 not in known)) do
        nil ->
          :ok

        bad ->
          {:error,
           %Error{
             type: :validation,
             category: :user,
             message: TinkexNative.RetryConfig.unknown_key_message(bad, known)
           }}
      end
    else
      {:error, Error.validation(:opts, opts, "a keyword list")}
    end
  end

  defp check_opts(opts, _), do: {:error, Error.validation(:opts, opts, "a keyword list")}

  defp int_opt(opts, key, default, range, expected) do
    case Keyword.get(opts, key, default) do
      v when is_integer(v) ->
        if v in range, do: {:ok, v}, else: {:error, Error.validation(key, v, expected)}

      v ->
        {:error, Error.validation(key, v, expected)}
    end
  end

  defp bool_opt(opts, key, default) do
    case Keyword.get(opts, key, default) do
      v when is_boolean(v) -> {:ok, v}
      v -> {:error, Error.validation(key, v, "a boolean")}
    end
  end

  defp timeout_opt(opts) do
    case Keyword.get(opts, :timeout, :infinity) do
      :infinity ->
        {:ok, nil}

      ms when is_integer(ms) and ms > @max_timeout ->
        {:ok, nil}

      ms when is_integer(ms) and ms >= 0 ->
        {:ok, ms}

      v ->
        {:error,
         Error.validation(:timeout, v, "a non-negative integer (milliseconds) or :infinity")}
    end
  end

  defp tokens_opt(opts, default) do
    case Keyword.get(opts, :tokens, default) do
      t when t in [:list, :binary] -> {:ok, t}
      t -> {:error, Error.validation(:tokens, t, ":list or :binary")}
    end
  end
end
