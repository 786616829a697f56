defmodule TinkexNative.Test.ClusterNode do
  @moduledoc """
  Runs on each `:peer` node of the cluster tests: starts the application,
  holds the node's sampling clients, and drives load through them.

  A load keeps `:concurrency` samples outstanding through
  `TinkexNative.SamplingClient.sample_async/4` (one process, no task per
  sample) until `:total` samples are done or it is stopped. Each sample
  has a prompt of its own (`[tag, i rem 30_000, div(i, 30_000)]`), and,
  with `record: true`, the load keeps `{prompt, request_id, tokens}` of
  every result so the test can check each one against the simulator.
  """
  use GenServer

  alias TinkexNative.SamplingClient
  alias TinkexNative.Types.{ModelInput, SamplingParams}

  @doc "Starts the application and this server on the peer (from `:peer.call`)."
  def boot do
    Application.put_env(:tinkex_native, :tokio_worker_threads, 1)
    Application.put_env(:logger, :level, :error)
    {:ok, _} = Application.ensure_all_started(:tinkex_native)
    Logger.configure(level: :error)
    {:ok, _} = GenServer.start(__MODULE__, nil, name: __MODULE__)
    :ok
  end

  @doc "Starts a sampling client held by this server."
  def start_client(opts), do: GenServer.call(__MODULE__, {:start_client, opts}, 60_000)

  @doc "Stops a client."
  def stop_client(client), do: GenServer.call(__MODULE__, {:stop_client, client}, 60_000)

  @doc """
  Starts a load; returns its pid. Options: `:concurrency`, `:total`
  (`:infinity` until `stop_load/1`), `:tag` (first prompt token),
  `:record`, `:max_tokens`.
  """
  def start_load(client, opts), do: GenServer.call(__MODULE__, {:start_load, client, opts})

  @doc "`%{done:, errors:, outstanding:}` of a load."
  def load_status(load), do: GenServer.call(load, :status)

  @doc """
  Stops starting samples, waits for the outstanding ones (at most
  `timeout`), and returns `%{done:, errors:, outstanding:, records:,
  seconds:}` (`seconds`: from the load's start to its last result).
  """
  def stop_load(load, timeout \\ 60_000),
    do: GenServer.call(load, {:stop, timeout}, timeout + 5_000)

  @doc "Waits until the load finished its `:total`; returns like `stop_load/2`."
  def await_load(load, timeout \\ 120_000),
    do: GenServer.call(load, {:await, timeout}, timeout + 5_000)

  @doc "Sets the shared backoff of `{base_url, api_key}` here, as a 429 would."
  def set_backoff(base_url, api_key, ms) do
    TinkexNative.RateLimiter.set_backoff(TinkexNative.RateLimiter.for_key(base_url, api_key), ms)
  end

  @doc "The backoff of `{base_url, api_key}` left here, in ms."
  def backoff_left(base_url, api_key) do
    TinkexNative.RateLimiter.remaining_ms(TinkexNative.RateLimiter.for_key(base_url, api_key))
  end

  @impl true
  def init(nil) do
    Process.flag(:trap_exit, true)
    {:ok, %{}}
  end

  @impl true
  def handle_call({:start_client, opts}, _from, s) do
    {:reply, SamplingClient.start_link(opts), s}
  end

  def handle_call({:stop_client, client}, _from, s) do
    {:reply, GenServer.stop(client), s}
  end

  def handle_call({:start_load, client, opts}, _from, s) do
    {:ok, pid} = GenServer.start(__MODULE__.Load, {client, Map.new(opts)})
    {:reply, pid, s}
  end

  @impl true
  def handle_info(_msg, s), do: {:noreply, s}

  defmodule Load do
    @moduledoc false
    use GenServer

    @impl true
    def init({client, opts}) do
      s = %{
        client: client,
        concurrency: Map.fetch!(opts, :concurrency),
        total: Map.get(opts, :total, :infinity),
        tag: Map.get(opts, :tag, 1),
        record: Map.get(opts, :record, false),
        max_tokens: Map.get(opts, :max_tokens, 4),
        started: 0,
        done: 0,
        errors: [],
        records: [],
        pending: %{},
        stopping: false,
        waiters: [],
        t0: System.monotonic_time(:microsecond),
        t1: nil
      }

      {:ok, fill(s)}
    end

    defp fill(s) do
      cond do
        s.stopping -> s
        map_size(s.pending) >= s.concurrency -> s
        s.total != :infinity and s.started >= s.total -> s
        true -> s |> start_one() |> fill()
      end
    end

    defp start_one(s) do
      i = s.started
      prompt = [s.tag, rem(i, 30_000), div(i, 30_000)]
      params = %SamplingParams{max_tokens: s.max_tokens}

      case SamplingClient.sample_async(s.client, ModelInput.from_ints(prompt), params) do
        {:ok, ref} ->
          %{s | started: i + 1, pending: Map.put(s.pending, ref, prompt)}

        {:error, e} ->
          %{s | started: i + 1, errors: [e | s.errors]}
      end
    end

    @impl true
    def handle_info({:tinkex_sample, ref, result}, s) do
      {prompt, pending} = Map.pop(s.pending, ref)
      s = %{s | pending: pending, done: s.done + 1}

      s =
        case result do
          {:ok, r} when s.record ->
            tokens = Enum.map(r.sequences, & &1.tokens)
            %{s | records: [{prompt, r.request_id, tokens} | s.records]}

          {:ok, _} ->
            s

          {:error, e} ->
            %{s | errors: [e | s.errors]}
        end

      s = fill(s)

      s =
        if finished?(s) and s.t1 == nil,
          do: %{s | t1: System.monotonic_time(:microsecond)},
          else: s

      {:noreply, answer_waiters(s)}
    end

    def handle_info({:deadline, from}, s) do
      if Enum.any?(s.waiters, &(&1 == from)) do
        GenServer.reply(from, summary(s))
        {:noreply, %{s | waiters: List.delete(s.waiters, from)}}
      else
        {:noreply, s}
      end
    end

    def handle_info(_msg, s), do: {:noreply, s}

    @impl true
    def handle_call(:status, _from, s) do
      {:reply, %{done: s.done, errors: length(s.errors), outstanding: map_size(s.pending)}, s}
    end

    def handle_call({:stop, timeout}, from, s) do
      wait(%{s | stopping: true}, from, timeout)
    end

    def handle_call({:await, timeout}, from, s), do: wait(s, from, timeout)

    defp wait(s, from, timeout) do
      if finished?(s) do
        {:reply, summary(s), s}
      else
        Process.send_after(self(), {:deadline, from}, timeout)
        {:noreply, %{s | waiters: [from | s.waiters]}}
      end
    end

    defp finished?(s) do
      map_size(s.pending) == 0 and (s.stopping or (s.total != :infinity and s.started >= s.total))
    end

    defp answer_waiters(s) do
      if finished?(s) and s.waiters != [] do
        for w <- s.waiters, do: GenServer.reply(w, summary(s))
        %{s | waiters: []}
      else
        s
      end
    end

    defp summary(s) do
      %{
        done: s.done,
        errors: Enum.reverse(s.errors),
        outstanding: map_size(s.pending),
        records: Enum.reverse(s.records),
        seconds: ((s.t1 || System.monotonic_time(:microsecond)) - s.t0) / 1_000_000
      }
    end
  end
end
