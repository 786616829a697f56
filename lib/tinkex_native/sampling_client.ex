defmodule TinkexNative.SamplingClient do
  @moduledoc """
  Samples from a Tinker model with the official Python SDK's retry
  behaviour, run natively: a retry handler (semaphore, corrected backoff,
  watchdog) per sampling session, a shared 429 backoff per
  `{base_url, api_key}`, and the Tinker poll protocol on tokio.

  The client process owns only lifecycle work (session creation,
  heartbeats every 10 s, native log lines). Samples never go through it:
  `sample/4` reads the client's published native handles and starts the
  request on the native side directly.

  ## Options of `start_link/1`

    * `:base_url` - the service; default `TINKER_BASE_URL`, else
      `#{TinkexNative.SamplingClient.Options.production_url()}`. Plain `http://` is
      accepted only for loopback hosts, or with `allow_insecure: true`.
      TLS certificates are always verified.
    * `:api_key` - default `TINKER_API_KEY`. Never logged or inspected.
    * one of `:sampling_session_id` (an existing sampling session),
      `:base_model` or `:model_path` (`"tinker://..."`; these create a
      session and a sampling session). A client of an existing sampling
      session numbers its `seq_id`s as a clone does, from the server's
      `join_sampling_session` counter when the server offers it, else
      from a random multiple of 10^9, so it never collides with the
      session's other clients (e.g. on other nodes, see
      `TinkexNative.Cluster.session_opts/1`).
    * `:retry_config` - a `%TinkexNative.RetryConfig{}` or its options. When
      given, it wins over the server's `client/config` flags; when not,
      the server's `sample_max_concurrent_requests`,
      `sample_enable_stuck_detection` and `sample_no_retries` complete the
      defaults.
    * `:cluster` - `false` (default), `true` (share the 429 backoff of
      `{base_url, api_key}` with every connected node running a client of
      it with `cluster:` set) or `[max_in_flight: n]` (also one budget of
      `n` in-flight samples for the key across those nodes); see
      `TinkexNative.Cluster`.
    * `:name` - a `GenServer` name.
    * `:tokens` - `:list` (default) or `:binary` (little-endian int32)
      for result token arrays; a per-call option too.
    * `:heartbeat_interval_ms` (10_000), `:init_timeout_ms` (120_000).
    * `:timings` - overrides of the protocol's delays in ms (advanced;
      tests use it): #{Enum.map_join(TinkexNative.SamplingClient.Options.timing_keys(), ", ", &"`#{&1}`")}.

  ## Example

      {:ok, client} =
        TinkexNative.SamplingClient.start_link(
          base_url: "http://127.0.0.1:8080",
          api_key: "tml-...",
          base_model: "Qwen/Qwen3-8B",
          retry_config: [max_connections: 64]
        )

      prompt = TinkexNative.Types.ModelInput.from_ints([1, 2, 3])
      params = %TinkexNative.Types.SamplingParams{max_tokens: 32, temperature: 0.7}
      {:ok, task} = TinkexNative.SamplingClient.sample(client, prompt, params, num_samples: 4)
      {:ok, %TinkexNative.Types.SampleResponse{sequences: seqs}} = Task.await(task, :infinity)
  """

  use GenServer
  require Logger

  alias TinkexNative.{ClientTable, Error, Native, RetryConfig, RetryHandler, Telemetry}
  alias TinkexNative.SamplingClient.{Options, Request}
  alias TinkexNative.Types.SampleResponse

  @version Mix.Project.config()[:version]

  defmodule Handle do
    @moduledoc false
    # What a client publishes for the hot path.
    defstruct [:client, :handler, :sampling_session_id, :session_id, :config, :tokens, :base_url]

    defimpl Inspect do
      def inspect(h, _opts), do: "#TinkexNative.SamplingClient.Handle<#{h.sampling_session_id}>"
    end
  end

  @type client :: GenServer.server()

  ## Public API

  @doc """
  Starts a client: validates the options, reads the server's flags,
  creates the session (unless given `:sampling_session_id`) and publishes
  the native handles. Returns `{:ok, pid}`, or `{:error, %ArgumentError{}}`
  for a bad option and `{:error, %TinkexNative.Error{}}` when the service
  refused; in both cases no process is left behind.

  ## Examples

      iex> TinkexNative.SamplingClient.start_link(base_model: "m", api_key: "tml-x", base_url: "http://example.com")
      {:error, %ArgumentError{message: ~s|invalid value for :base_url: expected an https URL (plain http is allowed only for loopback hosts, or with allow_insecure: true), got: "http://example.com"|}}
  """
  @spec start_link(keyword()) :: GenServer.on_start() | {:error, ArgumentError.t() | Error.t()}
  def start_link(opts) do
    with {:ok, o} <- Options.validate(opts),
         :ok <- check_cluster(o) do
      key = o.api_key
      init = %{o | api_key: fn -> key end}
      gen_opts = if o.name, do: [name: o.name], else: []

      case GenServer.start_link(
             __MODULE__,
             init,
             [timeout: o.init_timeout_ms + 1_000] ++ gen_opts
           ) do
        {:error, {:tinkex, reason}} -> {:error, reason}
        other -> other
      end
    end
  end

  @doc false
  def child_spec(opts) do
    %{id: Keyword.get(opts, :name, __MODULE__), start: {__MODULE__, :start_link, [opts]}}
  end

  @doc """
  Starts one sample and returns `{:ok, task}`; `Task.await(task)` gives
  `{:ok, %TinkexNative.Types.SampleResponse{}}` or `{:error, %TinkexNative.Error{}}`.
  Invalid arguments return `{:error, %TinkexNative.Error{type: :validation}}` at
  once and send nothing.

  Options: `:num_samples` (1), `:include_prompt_logprobs` (false),
  `:topk_prompt_logprobs` (0), `:tokens` (`:list` | `:binary`),
  `:telemetry` (true: the task emits `[:tinkex_native, :retry_handler,
  :attempt_failed]` and `[:tinkex_native, :sample, :stop]`).

  Shutting the task down (or its owner dying) cancels the sample and
  returns its permit.
  """
  @spec sample(
          client(),
          TinkexNative.Types.ModelInput.t(),
          TinkexNative.Types.SamplingParams.t(),
          keyword()
        ) ::
          {:ok, Task.t()} | {:error, Error.t()}
  def sample(client, prompt, params, opts \\ []) do
    with {:ok, handle} <- handle(client),
         {:ok, spec} <- Request.sample_spec(prompt, params, opts, handle) do
      {:ok, Task.async(fn -> run(handle, spec) end)}
    end
  end

  @doc """
  Starts one sample without a process: returns `{:ok, ref}` at once, and
  the caller later receives exactly one message
  `{:tinkex_sample, ref, {:ok, %SampleResponse{}} | {:error, %TinkexNative.Error{}}}`.
  The path for large fan-out. If the caller dies, the sample is cancelled.
  Takes the options of `sample/4` (`:telemetry` is off here: no other
  message is sent).
  """
  @spec sample_async(
          client(),
          TinkexNative.Types.ModelInput.t(),
          TinkexNative.Types.SamplingParams.t(),
          keyword()
        ) ::
          {:ok, reference()} | {:error, Error.t()}
  def sample_async(client, prompt, params, opts \\ []) do
    with {:ok, handle} <- handle(client),
         {:ok, spec} <- Request.sample_spec(prompt, params, opts, handle) do
      # The native job's term is the reference: unique, and nothing is kept
      # per pending sample to remember it.
      {:ok, Native.client_sample(handle.client, %{spec | events: false})}
    end
  end

  @doc """
  The prompt's logprobs (a sample of one token with prompt logprobs), as a
  task of `{:ok, [nil | float]}`; the first entry is `nil`.
  """
  @spec compute_logprobs(client(), TinkexNative.Types.ModelInput.t(), keyword()) ::
          {:ok, Task.t()} | {:error, Error.t()}
  def compute_logprobs(client, prompt, opts \\ []) do
    with {:ok, handle} <- handle(client),
         {:ok, spec} <- Request.logprobs_spec(prompt, opts, handle) do
      {:ok,
       Task.async(fn ->
         with {:ok, %SampleResponse{prompt_logprobs: lps}} <- run(handle, spec),
              do: {:ok, lps || []}
       end)}
    end
  end

  @doc """
  The live counters of the client's retry handler (`:waiting`,
  `:in_flight`, `:processed`, `:retries`, `:available_permits`, …, see
  `TinkexNative.RetryHandler.stats/1`) plus `:backoff_ms` (the shared 429
  backoff left), `:queue_state` (last reported by the server) and
  `:next_seq_id`.
  """
  @spec stats(client()) :: map()
  def stats(client) do
    h = handle!(client)
    native = Native.client_stats(h.client)

    h.handler
    |> RetryHandler.stats()
    |> Map.merge(native)
    |> Map.update!(:queue_state, &queue_state/1)
  end

  defp queue_state("active"), do: :active
  defp queue_state("paused_capacity"), do: :paused_capacity
  defp queue_state("paused_rate_limit"), do: :paused_rate_limit
  defp queue_state(_), do: :unknown

  @doc """
  The sampling session id and (when this client created it) the session
  id.
  """
  @spec session(client()) :: %{sampling_session_id: String.t(), session_id: String.t() | nil}
  def session(client) do
    h = handle!(client)
    %{sampling_session_id: h.sampling_session_id, session_id: h.session_id}
  end

  @doc false
  # The service, for `TinkexNative.Cluster.session_opts/1`.
  @spec base_url(client()) :: String.t()
  def base_url(client), do: handle!(client).base_url

  @doc """
  The retry config in force (the explicit one, or the defaults completed
  by the server's flags).
  """
  @spec retry_config(client()) :: RetryConfig.t()
  def retry_config(client) do
    h = handle!(client)
    h.config
  end

  ## Hot path

  defp handle(client) do
    pid = if is_pid(client), do: client, else: GenServer.whereis(client)

    with pid when is_pid(pid) <- pid,
         {:ok, handle} <- ClientTable.fetch(pid),
         true <- Process.alive?(pid) do
      {:ok, handle}
    else
      _ ->
        {:error,
         %Error{
           type: :validation,
           category: :user,
           message: "no running TinkexNative.SamplingClient: #{inspect(client)}"
         }}
    end
  end

  defp handle!(client) do
    case handle(client) do
      {:ok, h} -> h
      {:error, %Error{message: message}} -> raise ArgumentError, message
    end
  end

  defp run(handle, spec) do
    start = System.monotonic_time(:millisecond)
    ref = Native.client_sample(handle.client, spec)
    result = await(ref, handle, spec.events, 1)

    if spec.events do
      {status, err, attempts} = result_meta(result)

      Telemetry.execute(
        [:tinkex_native, :sample, :stop],
        %{duration_ms: System.monotonic_time(:millisecond) - start, attempts: attempts},
        %{session: handle.sampling_session_id, result: status, error: err}
      )
    end

    elem(result, 0)
  end

  defp await(ref, handle, events?, attempts) do
    receive do
      {:tinkex_sample, ^ref, {:ok, response}} ->
        {{:ok, response}, attempts}

      {:tinkex_sample, ^ref, {:error, native}} ->
        {{:error, Error.from_native(native)}, attempts}

      {:tinkex_event, ^ref, {:attempt_failed, measurements, native}} ->
        if events?, do: emit_attempt_failed(handle, measurements, Error.from_native(native))
        await(ref, handle, events?, attempts + 1)
    end
  end

  defp result_meta({{:ok, _}, attempts}), do: {:ok, nil, attempts}
  defp result_meta({{:error, e}, attempts}), do: {:error, e, attempts}

  defp emit_attempt_failed(handle, m, error) do
    retry? = m.delay_ms != nil
    user? = Error.user_error?(error)

    Telemetry.execute([:tinkex_native, :retry_handler, :attempt_failed], m, %{
      handler: handle.sampling_session_id,
      error: error,
      retry?: retry?,
      user_error?: user?,
      severity: if(retry? or user?, do: :warning, else: :error)
    })
  end

  ## Lifecycle (the client process)

  @impl true
  def init(o) do
    case join_cluster(o) do
      {:ok, budget} -> open_session(Map.put(o, :budget, budget))
      {:error, error} -> {:stop, {:tinkex, error}}
    end
  end

  # Before the client process exists: a `:cluster` option the cluster
  # disagrees with is an error of `start_link`, not an exit.
  defp check_cluster(%{cluster: false}), do: :ok
  defp check_cluster(o), do: TinkexNative.Cluster.check(o.base_url, o.api_key, o.cluster)

  defp join_cluster(%{cluster: false}), do: {:ok, nil}

  defp join_cluster(o) do
    with {:ok, %{budget: budget}} <-
           TinkexNative.Cluster.join(o.base_url, o.api_key.(), o.cluster),
         do: {:ok, budget}
  end

  defp open_session(o) do
    ref = make_ref()

    case Native.session_open(o.base_url, o.api_key.(), @version, o.model, ref) do
      :ok ->
        await_session(o, ref)

      {:error, message} ->
        {:stop, {:tinkex, ArgumentError.exception("invalid value for :base_url: #{message}")}}
    end
  end

  defp await_session(o, ref) do
    receive do
      {:tinkex_session, ^ref, {:ok, opened}} -> publish(o, opened)
      {:tinkex_session, ^ref, {:error, native}} -> {:stop, {:tinkex, Error.from_native(native)}}
    after
      o.init_timeout_ms ->
        {:stop,
         {:tinkex,
          %Error{
            type: :timeout,
            message: "session set-up took longer than #{o.init_timeout_ms} ms"
          }}}
    end
  end

  defp publish(o, opened) do
    config = o.retry_config || config_from_flags(opened.flags)
    # One handler per sampling session of a service, as in the Python SDK
    # (whose handler cache is keyed by the session id); the URL keeps equal
    # session ids of different services apart.
    handler = RetryHandler.get!("#{opened.sampling_session_id}@#{o.base_url}", config)

    native_opts = %{
      base_url: o.base_url,
      api_key: o.api_key.(),
      version: @version,
      sampling_session_id: opened.sampling_session_id,
      dispatch_bytes: opened.flags.sample_dispatch_bytes_semaphore_size,
      timings: o.timings,
      log_to: self(),
      budget: o.budget,
      seq_base: opened.seq_base
    }

    case Native.client_new(native_opts, handler.resource) do
      {:ok, client} ->
        handle = %Handle{
          client: client,
          handler: handler,
          sampling_session_id: opened.sampling_session_id,
          session_id: opened.session_id,
          config: config,
          tokens: o.tokens,
          base_url: o.base_url
        }

        ClientTable.put(self(), handle)
        state = %{opts: o, handle: handle, heartbeat: nil, failing_since: nil}
        {:ok, schedule_heartbeat(state)}

      {:error, message} ->
        {:stop, {:tinkex, ArgumentError.exception(message)}}
    end
  end

  # No explicit config: the defaults, completed by what the server says.
  defp config_from_flags(flags) do
    %RetryConfig{
      max_connections: flags.sample_max_concurrent_requests,
      enable_stuck_detection: flags.sample_enable_stuck_detection,
      enable_retry_logic: not flags.sample_no_retries
    }
    |> RetryConfig.new!()
  end

  defp schedule_heartbeat(%{handle: %{session_id: nil}} = s), do: s

  defp schedule_heartbeat(s) do
    %{s | heartbeat: Process.send_after(self(), :heartbeat, s.opts.heartbeat_interval_ms)}
  end

  @impl true
  def handle_info(:heartbeat, s) do
    ref = make_ref()
    o = s.opts
    _ = Native.session_heartbeat(o.base_url, o.api_key.(), @version, s.handle.session_id, ref)
    {:noreply, %{s | heartbeat: {:pending, ref}}}
  end

  def handle_info({:tinkex_heartbeat, ref, result}, %{heartbeat: {:pending, ref}} = s) do
    now = System.monotonic_time(:millisecond)

    s =
      case result do
        {:ok, _} ->
          %{s | failing_since: nil}

        {:error, native} ->
          since = s.failing_since || now
          level = if now - since >= 120_000, do: :warning, else: :debug
          Logger.log(level, "session heartbeat failed: #{Error.from_native(native).message}")
          %{s | failing_since: since}
      end

    {:noreply, schedule_heartbeat(s)}
  end

  def handle_info({:tinkex_log, level, message}, s) do
    Logger.log(level, message)
    {:noreply, s}
  end

  def handle_info(_other, s), do: {:noreply, s}

  @impl true
  def terminate(_reason, _s) do
    ClientTable.delete(self())
  end

  @impl true
  def format_status(_reason, [_pdict, state]) do
    [data: [{~c"State", %{state | opts: Map.delete(state.opts, :api_key)}}]]
  end
end
