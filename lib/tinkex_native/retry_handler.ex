defmodule TinkexNative.RetryHandler do
  @moduledoc """
  Runs work under a native retry handler: a FIFO semaphore of
  `max_connections` permits, the corrected backoff, live counters, and one
  watchdog per handler that fails every in-flight execution when nothing
  has succeeded for `progress_timeout_ms` — the official Python SDK's
  `RetryHandler`, without its flaws (permits cannot leak, the cache never
  evicts a handler in use).

  `get/2` (or `get!/2`) returns the handler for `{name, config}`: the same one (same
  semaphore) for an equal config, another for a different config. A
  handler lives while anyone holds it.

  ## Steps of `execute/3`

    1. Count as waiting and ask for a permit. The native side queues the
       caller and the grant arrives as a message: no scheduler is blocked.
    2. Enter the handler (an idle handler restarts its progress clock).
    3. Run the function in a linked task. A success advances the handler's
       progress clock.
    4. On failure, classify the error with the config's rule; retry after
       `TinkexNative.Backoff.delay_ms/3`, or return it. With
       `enable_retry_logic: false` there is one attempt only.
    5. Return the permit — on success, error, raise, throw, exit, and when
       the caller dies (the native lease monitors it).

  If the watchdog fires, the running attempt is killed and `execute/3`
  returns `{:error, %TinkexNative.Error{type: :stuck}}` with the message
  `"No progress made in <s>s. Requests appear to be stuck."` — never
  retried, and distinct from the caller's own timeout.

  ## Examples

      iex> handler = TinkexNative.RetryHandler.get!("doc-example", TinkexNative.RetryConfig.new!(base_delay_ms: 1, max_delay_ms: 5))
      iex> {:ok, counter} = Agent.start_link(fn -> 0 end)
      iex> TinkexNative.RetryHandler.execute(handler, fn ->
      ...>   case Agent.get_and_update(counter, &{&1, &1 + 1}) do
      ...>     0 -> {:error, %TinkexNative.Error{type: :http, status: 503, message: "busy"}}
      ...>     n -> {:ok, n}
      ...>   end
      ...> end)
      {:ok, 1}
      iex> TinkexNative.RetryHandler.stats(handler).retries
      1
  """

  require Logger

  alias TinkexNative.{Backoff, Error, Native, RetryConfig, Telemetry}

  @enforce_keys [:name, :config, :resource]
  defstruct [:name, :config, :resource]

  @type t :: %__MODULE__{name: String.t(), config: RetryConfig.t(), resource: reference()}

  @doc """
  The handler for `name` and `config` (a `%TinkexNative.RetryConfig{}` or
  options for `TinkexNative.RetryConfig.new/1`): `{:ok, handler}`, or
  `{:error, %ArgumentError{}}` naming the field and the value for an
  invalid name or config.

  ## Examples

      iex> {:ok, a} = TinkexNative.RetryHandler.get("same", max_connections: 4)
      iex> {:ok, b} = TinkexNative.RetryHandler.get("same", TinkexNative.RetryConfig.new!(max_connections: 4))
      iex> TinkexNative.RetryHandler.stats(a).available_permits == TinkexNative.RetryHandler.stats(b).available_permits
      true
      iex> {:error, %ArgumentError{message: message}} = TinkexNative.RetryHandler.get("same", max_connections: 0)
      iex> message =~ ":max_connections"
      true
  """
  @spec get(String.t(), RetryConfig.t() | keyword() | map()) ::
          {:ok, t()} | {:error, ArgumentError.t()}
  def get(name, config \\ %RetryConfig{})

  def get(name, config) when is_binary(name) do
    with {:ok, config} <- RetryConfig.new(config) do
      case Native.handler_get(name, RetryConfig.to_native(config)) do
        {:ok, resource} -> {:ok, %__MODULE__{name: name, config: config, resource: resource}}
        {:error, message} -> {:error, ArgumentError.exception(message)}
      end
    end
  end

  def get(name, _config) do
    {:error,
     ArgumentError.exception("invalid value for name: expected a string, got: #{inspect(name)}")}
  end

  @doc """
  Like `get/2`, but returns the handler and raises the `ArgumentError`.

  ## Examples

      iex> handler = TinkexNative.RetryHandler.get!("doc-get!", max_connections: 2)
      iex> TinkexNative.RetryHandler.stats(handler).max_connections
      2
  """
  @spec get!(String.t(), RetryConfig.t() | keyword() | map()) :: t()
  def get!(name, config \\ %RetryConfig{}) do
    case get(name, config) do
      {:ok, handler} -> handler
      {:error, error} -> raise error
    end
  end

  @doc """
  Runs the zero-arity `fun` under `handler` and returns its
  `{:ok, value}` or `{:error, reason}`.

  `fun` fails by returning `{:error, reason}`, or by raising, throwing or
  exiting (returned as `{:error, exception}`, `{:error, {:throw, value}}`
  or `{:error, {:exit, reason}}`). Any other return value is an error of
  type `:validation`. A `%TinkexNative.Error{}` is retried when the config's rule
  says so; a raise, throw or exit only when `:exception` is in the config's
  `:retry_types`; anything else never, unless `:retryable?` says so.

  Options:

    * `:retryable?` - a function of the failure reason returning a boolean;
      replaces the config's rule for this call.
    * `:metadata` - a map merged into telemetry metadata.

  The function runs in a task linked to the caller (so the watchdog can
  stop it): `self()` inside it is not the caller.

  ## Examples

      iex> handler = TinkexNative.RetryHandler.get!("doc-execute")
      iex> TinkexNative.RetryHandler.execute(handler, fn -> {:ok, :done} end)
      {:ok, :done}
      iex> {:error, %RuntimeError{message: "boom"}} =
      ...>   TinkexNative.RetryHandler.execute(handler, fn -> raise "boom" end)
      iex> TinkexNative.RetryHandler.stats(handler).in_flight
      0
  """
  @spec execute(t(), (() -> {:ok, term()} | {:error, term()}), keyword()) ::
          {:ok, term()} | {:error, term()}
  def execute(%__MODULE__{} = handler, fun, opts \\ []) when is_function(fun, 0) do
    opts = validate_opts!(opts)
    log_progress(handler)
    ref = make_ref()
    lease = Native.handler_acquire(handler.resource, ref)

    receive do
      {:tinkex_permit, ^ref, :ok} -> :ok
    end

    state = %{
      handler: handler,
      ref: ref,
      fun: fun,
      opts: opts,
      start: System.monotonic_time(:millisecond)
    }

    result =
      try do
        attempt(state, 0)
      catch
        kind, reason ->
          # e.g. a raising :retryable? function: free the permit now, not
          # at garbage collection. (If this process dies, the native lease
          # frees it on its own.)
          release(lease, ref, false, false)
          :erlang.raise(kind, reason, __STACKTRACE__)
      end

    release(lease, ref, match?({:ok, _}, result), match?({:error, %Error{type: :stuck}}, result))
    log_progress(handler)
    result
  end

  # The Python SDK's progress lines, at most every 2 s or on falling idle.
  defp log_progress(handler) do
    for line <- Native.handler_progress(handler.resource), do: Logger.debug(line)
    :ok
  end

  @doc """
  The handler's live counters:

    * `:waiting` - executions waiting for a permit;
    * `:in_flight` - executions holding a permit;
    * `:processed` / `:failed` - executions that succeeded / failed for good;
    * `:retries` - retries started;
    * `:stuck_events` - times the watchdog fired;
    * `:available_permits` / `:max_connections` - free and total permits
      (`nil` without a semaphore);
    * `:ms_since_progress` - time since the last success;
    * `:errors` - `[{label, count}]` since the last progress report.

  ## Examples

      iex> stats = TinkexNative.RetryHandler.stats(TinkexNative.RetryHandler.get!("doc-stats", max_connections: 3))
      iex> {stats.waiting, stats.in_flight, stats.available_permits}
      {0, 0, 3}
  """
  @spec stats(t()) :: map()
  def stats(%__MODULE__{resource: r}), do: Native.handler_stats(r)

  @doc """
  How many cached handlers are alive in the VM (held by someone).

  ## Examples

      iex> is_integer(TinkexNative.RetryHandler.live_count())
      true
  """
  @spec live_count() :: non_neg_integer()
  def live_count, do: Native.handler_live_count()

  ## The loop

  defp attempt(state, retries) do
    task = Task.async(fn -> run_safely(state.fun) end)
    %{ref: ref} = state
    task_ref = task.ref

    receive do
      {^task_ref, result} ->
        Process.demonitor(task_ref, [:flush])
        handle(result, state, retries)

      {:DOWN, ^task_ref, :process, _, reason} ->
        handle({:error, {:exit, reason}, :exception}, state, retries)

      {:tinkex_stuck, ^ref, :stuck} ->
        Task.shutdown(task, :brutal_kill)
        stuck(state)
    end
  end

  defp run_safely(fun) do
    case fun.() do
      {:ok, _} = ok -> ok
      {:error, reason} -> {:error, reason, :returned}
      other -> {:error, bad_return(other), :returned}
    end
  rescue
    e -> {:error, e, :exception}
  catch
    :throw, value -> {:error, {:throw, value}, :exception}
    :exit, reason -> {:error, {:exit, reason}, :exception}
  end

  defp bad_return(other) do
    %Error{
      type: :validation,
      category: :user,
      message:
        "expected the function given to execute/3 to return {:ok, value} or {:error, reason}, got: #{inspect(other)}"
    }
  end

  defp handle({:ok, _} = ok, _state, _retries), do: ok

  defp handle({:error, reason, how}, state, retries) do
    %{handler: %{config: config}} = state
    retryable = retryable?(reason, how, state)
    retry? = retryable and may_retry?(config, retries)
    delay = if retry?, do: Backoff.delay_ms(config, retries)
    reason = mark_retryable(reason, retryable)
    Native.handler_record_failure(state.handler.resource, label(reason), retry?)
    emit_failure(state, reason, retries + 1, delay, retry?)

    if retry? do
      receive do
        {:tinkex_stuck, ref, :stuck} when ref == state.ref -> stuck(state)
      after
        delay -> attempt(state, retries + 1)
      end
    else
      {:error, reason}
    end
  end

  defp retryable?(reason, how, %{opts: opts, handler: %{config: config}}) do
    case opts[:retryable?] do
      fun when is_function(fun, 1) -> fun.(reason) == true
      nil when how == :exception -> RetryConfig.retryable?(config, :exception)
      nil -> match?(%Error{}, reason) and RetryConfig.retryable?(config, reason)
    end
  end

  defp may_retry?(%RetryConfig{enable_retry_logic: false}, _), do: false
  defp may_retry?(%RetryConfig{max_retries: :infinity}, _), do: true
  defp may_retry?(%RetryConfig{max_retries: max}, retries), do: retries < max

  defp mark_retryable(%Error{} = e, retryable), do: %{e | retryable?: retryable}
  defp mark_retryable(reason, _), do: reason

  defp label(%Error{type: :http, status: s}) when is_integer(s), do: "http #{s}"
  defp label(%Error{type: t}), do: Atom.to_string(t)
  defp label(%{__exception__: true, __struct__: mod}), do: inspect(mod)
  defp label({kind, _}) when kind in [:throw, :exit], do: Atom.to_string(kind)
  defp label(_), do: "error"

  defp stuck(state) do
    %{handler: handler} = state

    error = %Error{
      type: :stuck,
      message: stuck_message(handler.config.progress_timeout_ms),
      retryable?: false
    }

    Native.handler_record_failure(handler.resource, "stuck", false)

    Telemetry.execute(
      [:tinkex_native, :retry_handler, :stuck],
      %{progress_timeout_ms: handler.config.progress_timeout_ms},
      Map.merge(state.opts[:metadata] || %{}, %{handler: handler.name})
    )

    {:error, error}
  end

  @doc false
  # The Python SDK's text: seconds printed as a float ("7200.0", "0.02").
  def stuck_message(ms) do
    seconds =
      if rem(ms, 1000) == 0,
        do: "#{div(ms, 1000)}.0",
        else: :erlang.float_to_binary(ms / 1000, [:short])

    "No progress made in #{seconds}s. Requests appear to be stuck."
  end

  defp emit_failure(state, reason, attempt, delay, retry?) do
    user_error? = match?(%Error{}, reason) and Error.user_error?(reason)

    Telemetry.execute(
      [:tinkex_native, :retry_handler, :attempt_failed],
      %{
        attempt: attempt,
        delay_ms: delay,
        elapsed_ms: System.monotonic_time(:millisecond) - state.start
      },
      Map.merge(state.opts[:metadata] || %{}, %{
        handler: state.handler.name,
        error: reason,
        retry?: retry?,
        user_error?: user_error?,
        severity: if(retry? or user_error?, do: :warning, else: :error)
      })
    )
  end

  defp release(lease, ref, success?, stuck_seen?) do
    case Native.lease_release(lease, success?) do
      :ok ->
        :ok

      :stuck_sent when stuck_seen? ->
        :ok

      :stuck_sent ->
        # The watchdog fired as we finished: its message is certain to
        # arrive, so take it rather than leave it in the mailbox.
        receive do
          {:tinkex_stuck, ^ref, :stuck} -> :ok
        end
    end
  end

  defp validate_opts!(opts) do
    Enum.each(opts, fn
      {:retryable?, f} when is_function(f, 1) ->
        :ok

      {:metadata, m} when is_map(m) ->
        :ok

      {key, value} when key in [:retryable?, :metadata] ->
        raise ArgumentError,
              "invalid value for #{inspect(key)}: expected #{if key == :metadata, do: "a map", else: "a function of arity 1"}, got: #{inspect(value)}"

      {key, _} ->
        raise ArgumentError, RetryConfig.unknown_key_message(key, [:retryable?, :metadata])

      other ->
        raise ArgumentError,
              "expected execute/3 options as a keyword list, got: #{inspect(other)}"
    end)

    opts
  end

  defimpl Inspect do
    import Inspect.Algebra

    def inspect(h, opts) do
      concat([
        "#TinkexNative.RetryHandler<",
        to_doc(h.name, opts),
        ", max_connections: ",
        to_doc(h.config.max_connections, opts),
        ">"
      ])
    end
  end
end
