defmodule TinkexNative.SamplingClient.Server do
  @moduledoc false
  # The client process of `TinkexNative.SamplingClient`: session set-up
  # (blocking in `init/1`, or after it with `async_setup`), publishing the
  # native handles, heartbeats, native log lines and the session's end.
  # Samples never pass through it (see `TinkexNative.SamplingClient`).

  use GenServer
  require Logger

  alias TinkexNative.{ClientTable, Error, Native, RetryConfig, RetryHandler}
  alias TinkexNative.SamplingClient.Handle

  @version Mix.Project.config()[:version]

  @impl true
  def init(o) do
    # Trapping exits makes a stop by the parent (a supervisor's shutdown,
    # the starter exiting) run terminate/2, which ends the session.
    Process.flag(:trap_exit, true)

    case join_cluster(o) do
      {:ok, budget} -> open_session(Map.put(o, :budget, budget))
      {:error, error} -> refuse(o, error)
    end
  end

  defp join_cluster(%{cluster: false}), do: {:ok, nil}

  defp join_cluster(o) do
    with {:ok, %{budget: budget}} <-
           TinkexNative.Cluster.join(o.base_url, o.api_key.(), o.cluster),
         do: {:ok, budget}
  end

  defp open_session(o) do
    ref = make_ref()

    case Native.session_open(
           o.base_url,
           o.api_key.(),
           @version,
           o.max_body_bytes,
           o.model,
           o.session_id,
           o.sampling_session_seq_id,
           ref
         ) do
      :ok when o.async_setup ->
        ClientTable.put(self(), :starting)
        timer = Process.send_after(self(), {:setup_timeout, ref}, o.init_timeout_ms)
        {:ok, %{state(o, nil, false) | setup: {ref, timer, []}}}

      :ok ->
        case await_session(o, ref) do
          {:ok, state} -> {:ok, state}
          {:error, reason} -> refuse(o, reason)
        end

      {:error, message} ->
        refuse(o, ArgumentError.exception("invalid value for :base_url: #{message}"))
    end
  end

  defp refuse(%{starter: {pid, ref}}, reason) do
    send(pid, {ref, self(), reason})
    :ignore
  end

  defp state(o, handle, owns_session?) do
    %{
      opts: o,
      handle: handle,
      owns_session?: owns_session?,
      setup: nil,
      heartbeat: nil,
      failing_since: nil
    }
  end

  defp await_session(o, ref) do
    {parent, _} = o.starter

    receive do
      {:tinkex_session, ^ref, {:ok, opened}} -> publish(o, opened)
      {:tinkex_session, ^ref, {:error, native}} -> {:error, Error.from_native(native)}
      # The starter is gone: nobody wants this client any more.
      {:EXIT, ^parent, reason} -> exit(reason)
    after
      o.init_timeout_ms -> {:error, setup_timeout(o)}
    end
  end

  defp setup_timeout(o) do
    %Error{type: :timeout, message: "session set-up took longer than #{o.init_timeout_ms} ms"}
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
      max_body_bytes: o.max_body_bytes,
      sampling_session_id: opened.sampling_session_id,
      first_seq_id: opened.first_seq_id,
      dispatch_bytes: opened.flags.sample_dispatch_bytes_semaphore_size,
      inflight_bytes: opened.flags.inflight_response_bytes_semaphore_size,
      retrieve_futures: opened.flags.sample_use_retrieve_futures,
      timings: o.timings,
      log_to: self(),
      dynamic_config: opened.dynamic_config,
      budget: o.budget
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
        {:ok, schedule_heartbeat(state(o, handle, opened.created_session))}

      {:error, message} ->
        {:error, ArgumentError.exception(message)}
    end
  end

  # No explicit config: the defaults, completed by what the server says.
  # With the session poller the SDK drops the semaphore (`max_connections`
  # None): in-flight samples then cost one registration each, not a poll
  # loop.
  defp config_from_flags(flags) do
    %RetryConfig{
      max_connections:
        if(flags.sample_use_retrieve_futures,
          do: nil,
          else: flags.sample_max_concurrent_requests
        ),
      enable_stuck_detection: flags.sample_enable_stuck_detection,
      enable_retry_logic: not flags.sample_no_retries
    }
    |> RetryConfig.new!()
  end

  # Only a session this client created is its to keep alive.
  defp schedule_heartbeat(%{owns_session?: false} = s), do: s

  defp schedule_heartbeat(s) do
    %{s | heartbeat: Process.send_after(self(), :heartbeat, s.opts.heartbeat_interval_ms)}
  end

  @impl true
  def handle_call(:await_handle, from, %{setup: {ref, timer, waiters}} = s),
    do: {:noreply, %{s | setup: {ref, timer, [from | waiters]}}}

  def handle_call(:await_handle, _from, s), do: {:reply, {:ok, s.handle}, s}

  # As a GenServer without handle_call/3 does: a call is a caller's bug.
  def handle_call(_msg, _from, _s),
    do: raise("attempted to call #{inspect(__MODULE__)} with a message it does not handle")

  @impl true
  def handle_info({:tinkex_session, ref, result}, %{setup: {ref, timer, waiters}} = s) do
    Process.cancel_timer(timer)

    outcome =
      case result do
        {:ok, opened} -> publish(s.opts, opened)
        {:error, native} -> {:error, Error.from_native(native)}
      end

    case outcome do
      {:ok, ready} ->
        Enum.each(waiters, &GenServer.reply(&1, {:ok, ready.handle}))
        {:noreply, ready}

      {:error, e} ->
        setup_failed(s, waiters, e)
    end
  end

  def handle_info({:setup_timeout, ref}, %{setup: {ref, _timer, waiters}} = s),
    do: setup_failed(s, waiters, setup_timeout(s.opts))

  def handle_info(:heartbeat, s) do
    ref = make_ref()
    o = s.opts

    _ =
      Native.session_heartbeat(
        o.base_url,
        o.api_key.(),
        @version,
        o.max_body_bytes,
        s.handle.session_id,
        ref
      )

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

  # An `async_setup` client whose set-up failed: the callers waiting get
  # the error, and the client stops with it (a `:shutdown` reason: no
  # crash report, a `:transient` child is restarted).
  defp setup_failed(s, waiters, error) do
    Enum.each(waiters, &GenServer.reply(&1, {:error, error}))
    Logger.error("TinkexNative.SamplingClient set-up failed: #{Exception.message(error)}")
    {:stop, {:shutdown, error}, %{s | setup: nil}}
  end

  @impl true
  def terminate(reason, s) do
    # Unpublished first: from here on callers see :client_not_running.
    ClientTable.delete(self())
    if s.owns_session?, do: finish_session(s, reason)
  end

  # Ends the session this client created, within :finish_timeout_ms: the
  # native call gives up then too, and dies with this process.
  defp finish_session(s, reason) do
    o = s.opts
    ref = make_ref()
    {kind, detail} = finish_reason(reason, o)
    id = s.handle.session_id
    ms = o.finish_timeout_ms

    with :ok <-
           Native.session_finish(
             o.base_url,
             o.api_key.(),
             @version,
             o.max_body_bytes,
             id,
             kind,
             detail,
             ms,
             ref
           ) do
      receive do
        {:tinkex_finish, ^ref, {:ok, _}} ->
          :ok

        {:tinkex_finish, ^ref, {:error, native}} ->
          Logger.warning("session finish failed: #{Error.from_native(native).message}")
      after
        ms -> Logger.warning("session finish took longer than #{ms} ms")
      end
    end
  end

  defp finish_reason(reason, _o) when reason in [:normal, :shutdown], do: {:success, nil}
  defp finish_reason({:shutdown, _}, _o), do: {:success, nil}

  defp finish_reason(reason, o) do
    detail =
      inspect(reason, limit: 8, printable_limit: 200)
      |> String.replace(o.api_key.(), "[REDACTED]")
      |> String.slice(0, 300)

    {:errored, "client stopped: " <> detail}
  end

  @impl true
  def format_status(_reason, [_pdict, state]) do
    [data: [{~c"State", %{state | opts: Map.delete(state.opts, :api_key)}}]]
  end
end
