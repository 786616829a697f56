defmodule TinkexNative.SamplingClient do
  @moduledoc """
  Samples from a Tinker model with the official Python SDK's retry
  behaviour, run natively: a retry handler (semaphore, corrected backoff,
  watchdog) per sampling session, a shared 429 backoff per
  `{base_url, api_key}`, and the Tinker poll protocol on tokio.

  The client process owns only lifecycle work (session creation,
  heartbeats every 10 s, native log lines). Samples never go through it:
  `sample/4` reads the client's published native handles and starts the
  request on the native side directly. The server's dynamic config
  (`client/dynamic_config`: whether and how abandoned samples are
  announced on `cancel_future`) is read at start and refreshed natively,
  every `max(refresh_interval_sec, 10)` s.

  ## Options of `start_link/1`

    * `:base_url` - the service; default `TINKER_BASE_URL`, else
      `#{TinkexNative.SamplingClient.Options.production_url()}`. Plain `http://` is
      accepted only for loopback hosts, or with `allow_insecure: true`.
      TLS certificates are always verified.
    * `:api_key` - default `TINKER_API_KEY`. Never logged or inspected.
    * one of `:sampling_session_id` (an existing sampling session: the
      client is a clone, see "Clones"; another node's sampling session
      too, see `TinkexNative.Cluster.session_opts/1`), `:base_model` or
      `:model_path`
      (`"tinker://..."`; these create a session and a sampling session).
    * `:session_id` - an existing session to create the sampling session
      in. Its owner keeps it alive and ends it: the client then creates no
      session, sends no heartbeats and does not finish it.
    * `:sampling_session_seq_id` - the number of the sampling session in
      its session (default 0; with `:base_model` or `:model_path` only).
    * `:retry_config` - a `%TinkexNative.RetryConfig{}` or its options. When
      given, it wins over the server's `client/config` flags; when not,
      the server's `sample_max_concurrent_requests`,
      `sample_enable_stuck_detection` and `sample_no_retries` complete the
      defaults (and `sample_use_retrieve_futures` drops the semaphore:
      `max_connections: nil`, as the Python SDK does in that mode).

  When the server's `client/config` sets `sample_use_retrieve_futures`,
  results are awaited through one native `retrieve_futures` long poll per
  sampling session (then one `retrieve_future` fetch per sample) instead
  of one poll loop per sample. Results whose size the server announces
  (`complete_metadata`, or a `retrieve_futures` completion) are fetched
  within an in-flight budget of `inflight_response_bytes_semaphore_size`
  bytes (50 MiB by default).
    * `:cluster` - `false` (default), `true` (share the 429 backoff of
      `{base_url, api_key}` with every connected node running a client of
      it with `cluster:` set) or `[max_in_flight: n]` (also one budget of
      `n` in-flight samples for the key across those nodes); see
      `TinkexNative.Cluster`.
    * `:name` - a `GenServer` name.
    * `:max_body_bytes` - the largest answer bodies read, in bytes:
      `[result: 268_435_456, control: 1_048_576]` (either key may be
      given). `result` applies to `retrieve_future(s)` answers, `control`
      to every other call. A successful answer over its limit fails with a
      `:decode` error (never retried) instead of being read into memory.
    * `:tokens` - `:list` (default) or `:binary` (little-endian int32)
      for result token arrays; a per-call option too.
    * `:heartbeat_interval_ms` (10_000), `:init_timeout_ms` (120_000: the
      bound of the whole set-up).
    * `:async_setup` (false) - `true`: `start_link/1` returns `{:ok, pid}`
      at once and the set-up runs in the client (see "Start-up").
    * `:finish_timeout_ms` (2_000) - the bound of ending the session when
      the client stops (see "Stopping").
    * `:timings` - overrides of the protocol's delays in ms (advanced;
      tests use it): #{Enum.map_join(TinkexNative.SamplingClient.Options.timing_keys(), ", ", &"`#{&1}`")}.

  ## Start-up

  By default `start_link/1` **blocks** until the session is set up: up to
  `:init_timeout_ms` of network I/O (reading `client/config`, creating the
  session and sampling session with the SDK's transport retries, joining a
  sampling session). This is the default because it is the contract a
  caller can act on: `{:ok, pid}` means ready, and a refusal (a bad key,
  an unknown model) comes back as `{:error, %TinkexNative.Error{}}` from
  `start_link/1` itself, with no process left behind and no exit signal
  sent to the caller, whether or not it traps exits.

  Under a supervisor this blocks the supervisor's start-up for as long.
  Pass `async_setup: true` to avoid it: `start_link/1` then returns
  `{:ok, pid}` once the options are valid, and the set-up runs inside the
  client, which stays responsive meanwhile (shutdown, `:sys`). A call of
  `sample/4`, `sample_async/4`, `compute_logprobs/3`, `stats/1`,
  `session/1` or `retry_config/1` made before the set-up finished waits for
  it, so `{:ok, pid} = start_link(...)` followed at once by `sample/4`
  works in both modes. If the set-up fails, the waiting calls return its
  `%TinkexNative.Error{}`, and the client stops with reason
  `{:shutdown, %TinkexNative.Error{}}`: a supervisor restarts it per its
  restart strategy; a linked caller that does not trap exits stops too,
  as with any linked process that stops abnormally.

  ## Clones

  The server deduplicates samples on `(sampling_session_id, seq_id)`, so
  two clients of one sampling session must never send the same seq_id,
  or the second gets the first's result for a different prompt. A client
  started with `:sampling_session_id` is therefore a *clone*, numbered as
  the Python SDK numbers its clones:

    * a client that created its sampling session starts at seq_id 0;
    * a clone, when the server's `client/config` has
      `sample_join_sampling_session: true`, asks
      `POST /api/v1/join_sampling_session` for its `client_counter` and
      starts at `1_000_000_000 * client_counter`;
    * a clone, without that flag, starts at `1_000_000_000 * r` with `r`
      uniform in `1..1_000_000_000`.

  In addition, the clients of one VM never share a range, whatever the
  flag: the native side remembers every range it handed out per
  `{base_url, sampling_session_id}` (for the VM's lifetime, since the
  server remembers the seq_ids of stopped clients too), draws again when a
  random `r` repeats, and joins again when a `client_counter`'s range is
  taken here. A clone joins during its set-up (the SDK joins before the
  clone's first sample). `session/1` gives the sampling session id to
  hand to another node or program.

  ## Stopping

  A client that created its session (`:base_model`, `:model_path`) ends
  it when it stops: `POST /api/v1/sessions/{id}/finish` with reason
  `success` when it stops with `:normal`, `:shutdown` or
  `{:shutdown, _}`, and `errored` otherwise. That call is bounded by
  `:finish_timeout_ms`, so a stop never hangs on an unreachable service;
  a failure is logged as a warning. A clone ends nothing: the session
  belongs to another client. A client killed with `:kill` cannot end its
  session (the service expires it once heartbeats stop).

  The client traps exits so that a stop by its parent runs this: like
  any `GenServer` that traps exits, it stops when the process that called
  `start_link/1` exits, whatever the reason (`:normal` too).

  ## Supervision

      children = [
        {TinkexNative.SamplingClient, base_model: "Qwen/Qwen3-8B", api_key: key},
        {TinkexNative.SamplingClient, base_model: "Qwen/Qwen3-32B", api_key: key}
      ]

  An unnamed client gets a child id of its own, so several sit in one
  supervisor; a named one has its name as id (override either with
  `Supervisor.child_spec/2`). The child's `:shutdown` is 5 s, or
  `:finish_timeout_ms` + 1 s when that is longer.

  ## A client that is not running

  Every function given a client that is not running (never started,
  stopped, stopping, or a name nobody has) returns
  `{:error, %TinkexNative.Error{type: :client_not_running}}`.

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

  require Logger

  alias TinkexNative.{ClientTable, Error, Native, RetryConfig, RetryHandler}
  alias TinkexNative.SamplingClient.{Options, Request, Run}
  alias TinkexNative.Types.SampleResponse

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
  creates the session (unless given `:session_id` or
  `:sampling_session_id`), claims the
  client's seq_id range and publishes the native handles. Returns
  `{:ok, pid}`, or `{:error, %ArgumentError{}}` for a bad option and
  `{:error, %TinkexNative.Error{}}` when the service refused; in both cases no
  process is left behind, and the caller is not sent an exit signal that
  would stop it (see "Start-up").

  ## Examples

      iex> TinkexNative.SamplingClient.start_link(base_model: "m", api_key: "tml-x", base_url: "http://example.com")
      {:error, %ArgumentError{message: ~s|invalid value for :base_url: expected an https URL (plain http is allowed only for loopback hosts, or with allow_insecure: true), got: "http://example.com"|}}
  """
  @spec start_link(keyword()) :: GenServer.on_start() | {:error, ArgumentError.t() | Error.t()}
  def start_link(opts) do
    with {:ok, o} <- Options.validate(opts),
         :ok <- check_cluster(o) do
      key = o.api_key
      ref = make_ref()
      init = Map.merge(o, %{api_key: fn -> key end, starter: {self(), ref}})
      gen_opts = if o.name, do: [name: o.name], else: []

      case GenServer.start_link(
             TinkexNative.SamplingClient.Server,
             init,
             [timeout: o.init_timeout_ms + 1_000] ++ gen_opts
           ) do
        :ignore -> refused(ref)
        other -> other
      end
    end
  end

  # A refused set-up sends its reason to the starter, then has `init/1`
  # return `:ignore`: the process exits `:normal`, which stops no linked
  # caller (`{:stop, reason}` would send it an exit signal of `reason`).
  # The reason was sent before the `:ignore` ack, so it is already here.
  defp refused(ref) do
    receive do
      {^ref, pid, reason} ->
        mref = Process.monitor(pid)

        receive do
          {:DOWN, ^mref, :process, _, _} -> {:error, reason}
        end
    after
      0 -> :ignore
    end
  end

  # Before the client process exists: a `:cluster` option the cluster
  # disagrees with is an error of `start_link`, not an exit.
  defp check_cluster(%{cluster: false}), do: :ok
  defp check_cluster(o), do: TinkexNative.Cluster.check(o.base_url, o.api_key, o.cluster)

  @doc false
  def child_spec(opts) do
    {id, finish_ms} =
      if Keyword.keyword?(opts),
        do: {opts[:name] || {__MODULE__, make_ref()}, opts[:finish_timeout_ms]},
        else: {__MODULE__, nil}

    # Unnamed clients get ids of their own, so one supervisor can hold
    # several; the shutdown leaves room for ending the session.
    shutdown = if is_integer(finish_ms), do: max(5_000, finish_ms + 1_000), else: 5_000
    %{id: id, start: {__MODULE__, :start_link, [opts]}, shutdown: shutdown}
  end

  @doc """
  Starts one sample and returns `{:ok, task}`; `Task.await(task)` gives
  `{:ok, %TinkexNative.Types.SampleResponse{}}` or `{:error, %TinkexNative.Error{}}`.
  Invalid arguments return `{:error, %TinkexNative.Error{type: :validation}}` at
  once and send nothing; a client that is not running gives
  `{:error, %TinkexNative.Error{type: :client_not_running}}`.

  Options: `:num_samples` (1), `:include_prompt_logprobs` (false),
  `:topk_prompt_logprobs` (0), `:tokens` (`:list` | `:binary`),
  `:timeout` (`:infinity`, or milliseconds), `:telemetry` (true: the task
  emits `[:tinkex_native, :retry_handler, :attempt_failed]`,
  `[:tinkex_native, :retry_handler, :stuck]`, `[:tinkex_native,
  :rate_limiter, :backoff]` and `[:tinkex_native, :sample, :stop]`).

  `:timeout` is a deadline for the whole call, counted from now: the wait
  for a permit, every attempt, backoff and poll. It is kept natively, so
  it holds whatever the caller does. When it passes, the sample resolves
  with `{:error, %TinkexNative.Error{type: :timeout}}` and is cancelled.

  Shutting the task down (or its owner dying) cancels the sample.
  A cancelled sample returns its permit at once; when the server's dynamic
  config has `sample_cancel_enabled` and the sample was waiting for its
  result, its request id is announced on `cancel_future` (in batches of
  at most `sample_cancel_max_batch_size` calls, by one announcer per
  client). The watchdog's stuck error cancels the same way.

  ## Example

      {:ok, task} = TinkexNative.SamplingClient.sample(client, prompt, params, timeout: 30_000)
      case Task.await(task, :infinity) do
        {:ok, %TinkexNative.Types.SampleResponse{}} -> :done
        {:error, %TinkexNative.Error{type: :timeout}} -> :too_slow
      end
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
      {:ok, Task.async(fn -> Run.run(handle, spec) end)}
    end
  end

  @doc """
  Starts one sample without a process: returns `{:ok, ref}` at once, and
  the caller later receives exactly one message
  `{:tinkex_sample, ref, {:ok, %SampleResponse{}} | {:error, %TinkexNative.Error{}}}`.
  The path for large fan-out. If the caller dies, the sample is cancelled;
  `cancel/2` cancels it too. Takes the options of `sample/4`, `:timeout`
  included (`:telemetry` is off here: no other message is sent).

  ## Example

      {:ok, ref} = TinkexNative.SamplingClient.sample_async(client, prompt, params, timeout: 60_000)
      receive do
        {:tinkex_sample, ^ref, {:ok, response}} -> response
        {:tinkex_sample, ^ref, {:error, %TinkexNative.Error{} = e}} -> raise e
      end
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
  Cancels a sample started by `sample_async/4` (`ref` is what it
  returned). Returns `:ok` when this call stopped it: its caller then
  receives `{:tinkex_sample, ref, {:error, %TinkexNative.Error{type:
  :cancelled}}}` and nothing else. Returns `{:error, :finished}` when the
  sample had already resolved: its own message is sent, or on its way.
  Either way the caller gets exactly one message for `ref`. Any process
  may cancel; the message always goes to the caller of `sample_async/4`.

  The stopped sample returns its permit at once and, as in `sample/4`, is
  announced on `cancel_future` when the server's dynamic config asks for
  it.

  ## Example

      {:ok, ref} = TinkexNative.SamplingClient.sample_async(client, prompt, params)
      :ok = TinkexNative.SamplingClient.cancel(client, ref)
      receive do
        {:tinkex_sample, ^ref, {:error, %TinkexNative.Error{type: :cancelled}}} -> :cancelled
      end
  """
  @spec cancel(client(), reference()) :: :ok | {:error, :finished | Error.t()}
  def cancel(_client, ref) do
    case Native.client_cancel(ref) do
      :ok -> :ok
      :finished -> {:error, :finished}
    end
  rescue
    ArgumentError ->
      {:error,
       Error.validation(
         :ref,
         ref,
         "a reference returned by TinkexNative.SamplingClient.sample_async/4"
       )}
  end

  @doc """
  The prompt's logprobs (a sample of one token with prompt logprobs), as a
  task of `{:ok, [nil | float]}`; the first entry is `nil`. Options:
  `:timeout` (as in `sample/4`) and `:telemetry`.

  ## Example

      {:ok, task} = TinkexNative.SamplingClient.compute_logprobs(client, prompt, timeout: 30_000)
      {:ok, [nil | _logprobs]} = Task.await(task, :infinity)
  """
  @spec compute_logprobs(client(), TinkexNative.Types.ModelInput.t(), keyword()) ::
          {:ok, Task.t()} | {:error, Error.t()}
  def compute_logprobs(client, prompt, opts \\ []) do
    with {:ok, handle} <- handle(client),
         {:ok, spec} <- Request.logprobs_spec(prompt, opts, handle) do
      {:ok,
       Task.async(fn ->
         with {:ok, %SampleResponse{prompt_logprobs: lps}} <- Run.run(handle, spec),
              do: {:ok, lps || []}
       end)}
    end
  end

  @doc """
  The live counters of the client's retry handler (`:waiting`,
  `:in_flight`, `:processed`, `:retries`, `:available_permits`, …, see
  `TinkexNative.RetryHandler.stats/1`) plus `:backoff_ms` (the shared 429
  backoff left), `:queue_state` (last reported by the server),
  `:next_seq_id`, `:futures_waiting` (samples waiting for their
  `retrieve_futures` completion; always 0 with per-request polling),
  `:dynamic_config` (the server's dynamic config in force:
  `refresh_interval_sec`, `sample_cancel_enabled`,
  `sample_cancel_max_batch_size`) and `:cancels` (`announced`, `sent`,
  `failed`: request ids of abandoned samples queued for, and sent to,
  `cancel_future`). `{:error, %TinkexNative.Error{type: :client_not_running}}`
  for a client that is not running.

  ## Examples

      TinkexNative.SamplingClient.stats(client)
      #=> %{waiting: 0, in_flight: 2, processed: 40, retries: 1, available_permits: 62,
      #     backoff_ms: 0, queue_state: :active, next_seq_id: 41, ...}
  """
  @spec stats(client()) :: map() | {:error, Error.t()}
  def stats(client) do
    with {:ok, h} <- handle(client) do
      native = Native.client_stats(h.client)

      h.handler
      |> RetryHandler.stats()
      |> Map.merge(native)
      |> Map.update!(:queue_state, &queue_state/1)
    end
  end

  defp queue_state("active"), do: :active
  defp queue_state("paused_capacity"), do: :paused_capacity
  defp queue_state("paused_rate_limit"), do: :paused_rate_limit
  defp queue_state(_), do: :unknown

  @doc """
  The sampling session id and the session id (the given `:session_id`,
  else the one this client created; `nil` for a given
  `:sampling_session_id` alone), or
  `{:error, %TinkexNative.Error{type: :client_not_running}}`.

  The sampling session id is all another client needs to sample from the
  same sampling session, in this VM, on another node or in another
  program: passed as `sampling_session_id:` to `start_link/1`, it starts a
  clone with a seq_id range of its own (see "Clones").

  ## Examples

      %{sampling_session_id: ssid} = TinkexNative.SamplingClient.session(client)
      # on any node:
      {:ok, clone} = TinkexNative.SamplingClient.start_link(sampling_session_id: ssid, api_key: key)
  """
  @spec session(client()) ::
          %{sampling_session_id: String.t(), session_id: String.t() | nil} | {:error, Error.t()}
  def session(client) do
    with {:ok, h} <- handle(client) do
      %{sampling_session_id: h.sampling_session_id, session_id: h.session_id}
    end
  end

  @doc false
  # The service, for `TinkexNative.Cluster.session_opts/1`.
  @spec base_url(client()) :: String.t() | {:error, Error.t()}
  def base_url(client) do
    with {:ok, h} <- handle(client), do: h.base_url
  end

  @doc """
  The retry config in force (the explicit one, or the defaults completed
  by the server's flags), or `{:error, %TinkexNative.Error{type: :client_not_running}}`.

  ## Examples

      %TinkexNative.RetryConfig{max_connections: 2000} = TinkexNative.SamplingClient.retry_config(client)
  """
  @spec retry_config(client()) :: RetryConfig.t() | {:error, Error.t()}
  def retry_config(client) do
    with {:ok, h} <- handle(client), do: h.config
  end

  ## Hot path

  defp handle(client) do
    pid = whereis(client)

    case pid && ClientTable.fetch(pid) do
      {:ok, :starting} -> await_setup(pid, client)
      {:ok, handle} -> if Process.alive?(pid), do: {:ok, handle}, else: not_running(client)
      _ -> not_running(client)
    end
  end

  defp whereis(pid) when is_pid(pid), do: pid

  defp whereis(name) when is_atom(name) or is_tuple(name) do
    case GenServer.whereis(name) do
      pid when is_pid(pid) -> pid
      _ -> nil
    end
  rescue
    _ -> nil
  end

  defp whereis(_), do: nil

  # Only while an `async_setup` client sets up: its answer comes once the
  # set-up ends (or the client stops, bounded by `:init_timeout_ms`).
  defp await_setup(pid, client) do
    GenServer.call(pid, :await_handle, :infinity)
  catch
    :exit, {{:shutdown, %Error{} = e}, _} -> {:error, e}
    :exit, _ -> not_running(client)
  end

  defp not_running(client) do
    {:error,
     %Error{
       type: :client_not_running,
       message: "no running TinkexNative.SamplingClient: #{inspect(client)}"
     }}
  end
end
