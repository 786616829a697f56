defmodule TinkexNative.Tinkex.SamplingClient do
  @moduledoc """
  A sampling client for [tinkex](https://github.com/North-Shore-AI/tinkex)
  (the Elixir SDK, 0.4), backed by `TinkexNative.SamplingClient`: pass it
  as tinkex's `sampling_client_module:` and tinkex's `ServiceClient` (and
  `TrainingClient`) start it for you. Samples then get the official Python
  SDK's retry behaviour (shared 429 backoff, one semaphore per sampling
  session, the stuck watchdog), run natively, while taking and returning
  tinkex's own structs.

  ## Example

      config = Tinkex.Config.new(api_key: System.fetch_env!("TINKER_API_KEY"))

      {:ok, service} =
        Tinkex.ServiceClient.start_link(
          config: config,
          sampling_client_module: TinkexNative.Tinkex.SamplingClient
        )

      {:ok, client} =
        Tinkex.ServiceClient.create_sampling_client(service,
          base_model: "Qwen/Qwen3-8B",
          retry_config: %Tinkex.RetryConfig{max_connections: 64}
        )

      prompt = Tinkex.Types.ModelInput.from_ints([1, 2, 3])
      params = %Tinkex.Types.SamplingParams{max_tokens: 32, temperature: 0.7}

      {:ok, task} = TinkexNative.Tinkex.SamplingClient.sample(client, prompt, params, num_samples: 4)
      {:ok, %Tinkex.Types.SampleResponse{sequences: seqs}} = Task.await(task, :infinity)

  Call this module's `sample/4` and `compute_logprobs/3` (not
  `Tinkex.SamplingClient`'s) with the client it started. A complete
  program, against the bundled simulator: `examples/tinkex/`.

  ## What it takes from tinkex

    * `:config` - a `%Tinkex.Config{}`: its `base_url` and `api_key`.
      Its HTTP settings (pool, proxy, `default_headers`, Cloudflare
      access headers, `timeout`) are not used: requests go through this
      library's own HTTP stack. As with `TinkexNative.SamplingClient`,
      plain `http://` is accepted for loopback hosts only unless
      `allow_insecure: true` is given.
    * `:session_id` - tinkex's session. tinkex's `SessionManager` keeps it
      alive, so no session is created and no heartbeat is sent here.
      Without one, the native client creates and keeps alive its own.
    * `:sampling_client_id` - the `sampling_session_seq_id` of the
      sampling session created in that session.
    * `:sampling_session_id` (used as is, winning as in tinkex), else
      `:model_path`, else `:base_model`.
    * `:retry_config` - `nil`, a keyword list or a `%Tinkex.RetryConfig{}`.
      Its fields are `TinkexNative.RetryConfig`'s (`max_retries`,
      `base_delay_ms`, `max_delay_ms`, `jitter_pct`, `progress_timeout_ms`,
      `max_connections`, `enable_retry_logic`); a field left `nil` in the
      struct takes the default, which is tinkex's too. With `nil`, the
      server's `client/config` flags complete the defaults, as in the
      Python SDK. A bad value fails the start with a
      `%Tinkex.Error{type: :validation}` naming the field and the value.
    * `:name`, `:allow_insecure`, `:init_timeout_ms`, `:timings` - passed
      on to `TinkexNative.SamplingClient.start_link/1` when given to
      `create_sampling_client`.
    * Every other key (`:telemetry`, `:telemetry_metadata`, ...) is
      ignored.

  ## Errors

  Every error is a `%Tinkex.Error{}` made with `Tinkex.Error.new/3`, of the
  type tinkex gives the same failure; `data` holds `:request_id` and the
  original `%TinkexNative.Error{}` under `:tinkex_native`.

  | failure | `type` | `status`, `category`, `retry_after_ms` |
  |---|---|---|
  | connection failed or reset | `:api_connection` | — |
  | request timed out, stuck watchdog, `:timeout` deadline | `:api_timeout` | — |
  | HTTP error answer | `:api_status` | the status; `:server` for 429 and 5xx, `:user` for other 4xx; the server's `retry-after`, else 1000 |
  | future expired (410) | `:api_status` | 410, `:server` |
  | failed future | `:request_failed` | the server's category (`:user`, `:server`, `:unknown`) |
  | bad input, malformed answer | `:validation` | `:user` |
  | the client is not running | `:validation` (as tinkex's "not initialized") | — |
  | anything else | `:request_failed` | — |

  tinkex reads a `category` from an error answer's body; here the
  category follows the status alone.

  ## Differences from `Tinkex.SamplingClient`

  Retries follow the Python SDK rather than tinkex 0.4: a failed future is
  never retried (tinkex polls a failed future of category server again),
  a 429 on submit waits out one shared backoff and resends the same
  `seq_id`, and the semaphore is per sampling session (tinkex's is per
  session). `sample_stream/4` and `get_tokenizer/2` are not provided.
  """

  alias TinkexNative.SamplingClient, as: NativeClient
  alias TinkexNative.Tinkex.{Convert, StartOptions}
  alias TinkexNative.Types.SamplingParams

  @doc """
  The child spec tinkex's `DynamicSupervisor.start_child/2` uses:
  `restart: :temporary`, as tinkex's own client.

  ## Examples

      iex> TinkexNative.Tinkex.SamplingClient.child_spec(base_model: "m").restart
      :temporary
  """
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) do
    %{
      id: Keyword.get(opts, :name, __MODULE__),
      start: {__MODULE__, :start_link, [opts]},
      restart: :temporary,
      shutdown: 5_000,
      type: :worker
    }
  end

  @doc """
  Starts a `TinkexNative.SamplingClient` from tinkex's child options (see
  the moduledoc). Returns `{:ok, pid}`, or `{:error, %Tinkex.Error{}}` for
  a bad option (`:validation`, naming it) or a refusing service. Without
  tinkex loaded it returns `{:error, %RuntimeError{}}` saying so.

  ## Examples

  As tinkex's `ServiceClient` starts it:

      {:ok, pid} =
        DynamicSupervisor.start_child(supervisor, {TinkexNative.Tinkex.SamplingClient,
          config: %Tinkex.Config{base_url: "https://...", api_key: "tml-..."},
          session_id: "session-1",
          sampling_client_id: 0,
          base_model: "Qwen/Qwen3-8B",
          retry_config: %Tinkex.RetryConfig{max_connections: 64}})
  """
  @spec start_link(keyword()) :: {:ok, pid()} | {:error, struct() | RuntimeError.t()}
  def start_link(opts) do
    with :ok <- require_tinkex(),
         {:ok, native_opts} <- start_options(opts) do
      case NativeClient.start_link(native_opts) do
        {:ok, pid} -> {:ok, pid}
        {:error, %ArgumentError{message: m}} -> {:error, validation(m)}
        {:error, %TinkexNative.Error{} = e} -> {:error, Convert.error(e)}
        {:error, other} -> {:error, other}
      end
    end
  end

  defp require_tinkex do
    case Convert.tinkex_loaded() do
      :ok ->
        :ok

      {:error, missing} ->
        {:error,
         RuntimeError.exception(
           "#{inspect(__MODULE__)} needs tinkex (the Elixir SDK, ~> 0.4) loaded, and " <>
             "#{Enum.map_join(missing, ", ", &inspect/1)} is not available; " <>
             "without tinkex use TinkexNative.SamplingClient"
         )}
    end
  end

  defp start_options(opts) do
    case StartOptions.native(opts) do
      {:ok, native} -> {:ok, native}
      {:error, message} -> {:error, validation(message)}
    end
  end

  defp validation(message), do: Convert.error(:validation, message, category: :user)

  @doc """
  Starts one sample, as `Tinkex.SamplingClient.sample/4`: returns
  `{:ok, task}` at once, and `Task.await(task)` gives
  `{:ok, %Tinkex.Types.SampleResponse{}}` or `{:error, %Tinkex.Error{}}`
  (bad arguments included, as `:validation` errors; nothing is sent then).

  `prompt` is a `%Tinkex.Types.ModelInput{}` of
  `%Tinkex.Types.EncodedTextChunk{}`s; `params` a
  `%Tinkex.Types.SamplingParams{}`. Options, as tinkex's:

    * `:num_samples` (1), `:prompt_logprobs` (`nil`/`false`),
      `:topk_prompt_logprobs` (0);
    * `:timeout`, `:await_timeout` - ms or `:infinity`: the sample fails
      with `%Tinkex.Error{type: :api_timeout}` when the smaller one has
      passed, and is cancelled (its permit returned).

  Other options of tinkex's (`:telemetry_metadata`, ...) are ignored.
  Shutting the task down, or its owner dying, cancels the sample.

  ## Examples

      iex> {:ok, task} = TinkexNative.Tinkex.SamplingClient.sample(self(), :not_a_prompt, %{})
      iex> {:error, error} = Task.await(task)
      iex> {error.type, error.category, error.message}
      {:validation, :user, "invalid value for :prompt: expected a %Tinkex.Types.ModelInput{}, got: :not_a_prompt"}
  """
  @spec sample(pid() | GenServer.name(), struct(), struct() | map(), keyword()) ::
          {:ok, Task.t()}
  def sample(client, prompt, params, opts \\ []) do
    {:ok, Task.async(fn -> run_sample(client, prompt, params, opts) end)}
  end

  @doc """
  The prompt's logprobs, as `Tinkex.SamplingClient.compute_logprobs/3`:
  `{:ok, task}`, and the task gives `{:ok, [nil | float]}` or
  `{:error, %Tinkex.Error{}}`. Option: `:topk_prompt_logprobs` (0).

  ## Examples

      iex> {:ok, task} = TinkexNative.Tinkex.SamplingClient.compute_logprobs(self(), :not_a_prompt)
      iex> {:error, error} = Task.await(task)
      iex> error.type
      :validation
  """
  @spec compute_logprobs(pid() | GenServer.name(), struct(), keyword()) :: {:ok, Task.t()}
  def compute_logprobs(client, prompt, opts \\ []) do
    {:ok,
     Task.async(fn ->
       # As tinkex: one token, with the prompt's logprobs; options that are
       # no keyword list go on as they are, to fail as sample/4's would.
       opts =
         if is_list(opts) and Keyword.keyword?(opts),
           do: [
             num_samples: 1,
             prompt_logprobs: true,
             topk_prompt_logprobs: Keyword.get(opts, :topk_prompt_logprobs, 0)
           ],
           else: opts

       case run_sample(client, prompt, %SamplingParams{max_tokens: 1}, opts) do
         {:ok, response} -> {:ok, response.prompt_logprobs}
         {:error, _} = error -> error
       end
     end)}
  end

  # Runs in the task: the native sample is this process's, so it is
  # cancelled when this process ends, whether done or killed; its deadline
  # (tinkex's `:timeout`/`:await_timeout`) is enforced natively.
  defp run_sample(client, prompt, params, opts) do
    with {:ok, prompt} <- Convert.prompt(prompt),
         {:ok, params} <- Convert.params(params),
         {:ok, native_opts} <- sample_options(opts),
         {:ok, ref} <- NativeClient.sample_async(client, prompt, params, native_opts) do
      receive do
        {:tinkex_sample, ^ref, result} -> result
      end
    end
    |> case do
      {:ok, response} -> {:ok, Convert.response(response)}
      {:error, %TinkexNative.Error{} = e} -> {:error, Convert.error(e)}
    end
  end

  # tinkex's sample options as TinkexNative.SamplingClient.sample_async/4's.
  defp sample_options(opts) do
    with :ok <- keyword(opts),
         {:ok, logprobs?} <- prompt_logprobs(Keyword.get(opts, :prompt_logprobs)),
         {:ok, deadline} <- deadline(opts) do
      {:ok,
       [
         num_samples: Keyword.get(opts, :num_samples, 1),
         include_prompt_logprobs: logprobs?,
         topk_prompt_logprobs: Keyword.get(opts, :topk_prompt_logprobs, 0) || 0,
         tokens: :list,
         timeout: deadline
       ]}
    end
  end

  defp keyword(opts) do
    if is_list(opts) and Keyword.keyword?(opts),
      do: :ok,
      else: {:error, TinkexNative.Error.validation(:opts, opts, "a keyword list")}
  end

  defp prompt_logprobs(nil), do: {:ok, false}
  defp prompt_logprobs(b) when is_boolean(b), do: {:ok, b}

  defp prompt_logprobs(other),
    do: {:error, TinkexNative.Error.validation(:prompt_logprobs, other, "a boolean or nil")}

  # tinkex bounds the wait for a result with `:timeout` (polling the
  # future) and `:await_timeout` (awaiting the poll task); here the smaller
  # one is the whole sample's deadline (`timeout:` of
  # TinkexNative.SamplingClient.sample_async/4).
  defp deadline(opts) do
    Enum.reduce_while([:timeout, :await_timeout], {:ok, :infinity}, fn key, {:ok, acc} ->
      case Keyword.get(opts, key) do
        v when v in [nil, :infinity] ->
          {:cont, {:ok, acc}}

        ms when is_integer(ms) and ms >= 0 and ms <= 4_294_967_295 ->
          {:cont, {:ok, min(ms, acc)}}

        bad ->
          {:halt,
           {:error,
            TinkexNative.Error.validation(key, bad, "a non-negative integer (ms) or :infinity")}}
      end
    end)
  end
end
