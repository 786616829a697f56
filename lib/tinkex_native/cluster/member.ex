defmodule TinkexNative.Cluster.Member do
  @moduledoc false
  # One per `{base_url, api_key}` per node, shared by every client of the
  # key on the node (they are linked to it: if it dies, they do). It:
  #
  # - is in the key's `:pg` group, so the other nodes' members find it;
  # - relays the shared 429 backoff (`Member.Backoff`);
  # - with a budget (`max_in_flight`), holds the node's native budget and
  #   its lease: registers with the key's coordinator (electing one when
  #   there is none), renews every ttl/4, and reports level changes of the
  #   budget (starved, surplus, shrink done) as they happen. Samples take
  #   permits from the native budget; no message per sample.
  use GenServer, restart: :temporary

  require Logger

  alias TinkexNative.Cluster.{Coordinator, Options}
  alias TinkexNative.Cluster.Member.Backoff
  alias TinkexNative.Native

  @scope TinkexNative.Cluster.PG
  @join_timeout 2_000
  # A member that only answered checks (its client never came) stops.
  @idle_ms 10_000
  # Least time between two reports nobody asked for.
  @report_gap_us 5_000

  @doc false
  def scope, do: @scope
  @doc false
  def group(key), do: {:tinkex_native_cluster, key}
  @doc false
  def via(key), do: {:via, Registry, {TinkexNative.Cluster.Registry, key}}

  @doc false
  def start_link(args), do: GenServer.start_link(__MODULE__, args, name: via(args.key))

  @impl true
  def init(%{key: key, limiter: limiter, config: config}) do
    Process.flag(:trap_exit, true)
    # Little work, all of it urgent (a backoff must reach the other nodes
    # within milliseconds): ahead of the node's sampling processes.
    Process.flag(:priority, :high)
    :ok = :pg.join(@scope, group(key), self())
    :ok = :net_kernel.monitor_nodes(true)
    Native.limiter_watch(limiter, self())

    budget =
      if config.max_in_flight do
        b = Native.budget_new()
        Native.budget_watch(b, self())
        b
      end

    s = %{
      key: key,
      config: config,
      limiter: limiter,
      budget: budget,
      clients: MapSet.new(),
      pending: [],
      checked: false,
      coordinator: nil,
      coord_mon: nil,
      view: [],
      req: 0,
      asked: %{},
      last_report: nil,
      report_timer: nil,
      probe: Backoff.idle(),
      sent: 0,
      backoffs_applied: 0,
      last_backoff_delay_us: nil,
      native_events: 0
    }

    Process.send_after(self(), :join_timeout, @join_timeout)
    {:ok, s, {:continue, :elect}}
  end

  @impl true
  def handle_continue(:elect, s), do: {:noreply, elect(s)}

  ## Clients

  @impl true
  # `pid` nil: only a check of the config, for `start_link` before its
  # client process exists.
  def handle_call({:join, pid, config}, from, s) do
    case Options.mismatch(config, s.config) do
      nil ->
        s = if pid, do: link_client(s, pid), else: idle_later(s)

        if s.checked,
          do: {:reply, {:ok, %{budget: s.budget}}, s},
          else: {:noreply, %{s | pending: [{from, pid} | s.pending]}}

      message ->
        {:reply, {:error, ArgumentError.exception("invalid :cluster: " <> message)}, s}
    end
  end

  def handle_call(:stats, _from, s), do: {:reply, stats(s), s}

  @impl true
  def handle_info({:EXIT, pid, reason}, s) do
    cond do
      MapSet.member?(s.clients, pid) ->
        s = %{s | clients: MapSet.delete(s.clients, pid)}
        if MapSet.size(s.clients) == 0, do: {:stop, :normal, s}, else: {:noreply, s}

      reason == :normal ->
        {:noreply, s}

      true ->
        {:stop, reason, s}
    end
  end

  def handle_info(:idle, s) do
    if MapSet.size(s.clients) == 0 and s.pending == [],
      do: {:stop, :normal, s},
      else: {:noreply, s}
  end

  def handle_info(:join_timeout, %{checked: false} = s) do
    Logger.warning(
      "tinkex_native cluster: no coordinator answered within #{@join_timeout} ms; the :cluster option could not be checked against other nodes"
    )

    {:noreply, answer_joins(s, {:ok, %{budget: s.budget}})}
  end

  ## Coordinator

  def handle_info(:elect, s), do: {:noreply, elect(s)}

  def handle_info({:registered, coord, result}, %{coordinator: coord} = s) do
    case {result, s.checked} do
      {:ok, false} ->
        {:noreply, s |> answer_joins({:ok, %{budget: s.budget}}) |> schedule_renew()}

      {:ok, true} ->
        {:noreply, s}

      {{:error, message}, false} ->
        s = answer_joins(s, {:error, ArgumentError.exception("invalid :cluster: " <> message)})
        if MapSet.size(s.clients) == 0, do: {:stop, :normal, s}, else: {:noreply, s}

      {{:error, message}, true} ->
        Logger.error("tinkex_native cluster: the coordinator refused this node: #{message}")
        {:noreply, s}
    end
  end

  def handle_info({:lease, coord, req, capacity, valid_us, seq, view}, %{coordinator: coord} = s) do
    # The validity runs from when the renewal was sent, on this node's
    # clock: never later than the coordinator's own view of the lease.
    remaining =
      case s.asked do
        %{^req => sent_at} when valid_us > 0 -> max(valid_us - (now() - sent_at), 0)
        _ -> 0
      end

    Native.budget_set_lease(s.budget, capacity, remaining, seq)

    {:noreply, %{s | view: view, asked: Map.reject(s.asked, fn {r, _} -> r <= req end)}}
  end

  def handle_info({:lease_update, coord, capacity, seq}, %{coordinator: coord} = s) do
    Native.budget_set_lease(s.budget, capacity, 0, seq)
    {:noreply, s}
  end

  def handle_info({:reregister, coord}, %{coordinator: coord} = s), do: {:noreply, register(s)}

  # Another coordinator of the key (a netsplit healed and `:global` did
  # not resolve it): the one on the smaller node stays, the other is told
  # to stop (it waits out no recovery: the winner does).
  def handle_info({:coordinator_hello, other}, s) do
    cond do
      other == s.coordinator ->
        {:noreply, s}

      s.coordinator == nil ->
        {:noreply, attach(s, other)}

      node(other) < node(s.coordinator) ->
        send(s.coordinator, {:coordinator_conflict, other})
        send(other, {:coordinator_conflict, s.coordinator})
        Process.demonitor(s.coord_mon, [:flush])
        {:noreply, attach(%{s | sent: s.sent + 2}, other)}

      true ->
        {:noreply, tell(s, other, {:coordinator_conflict, s.coordinator})}
    end
  end

  def handle_info({:DOWN, ref, :process, _pid, reason}, %{coord_mon: ref} = s) do
    # Lost the coordinator (its node died, or a netsplit): elect another.
    # The lease in force runs on until its end meanwhile. A coordinator
    # that was already gone may still be in `:global`'s table for a moment.
    s = %{s | coordinator: nil, coord_mon: nil}

    if reason == :noproc do
      Process.send_after(self(), :elect, 10)
      {:noreply, s}
    else
      {:noreply, elect(s)}
    end
  end

  def handle_info(:renew, s) do
    s = schedule_renew(s)

    cond do
      s.coordinator == nil -> {:noreply, elect(s)}
      s.budget -> {:noreply, renew(s)}
      true -> {:noreply, s}
    end
  end

  def handle_info({:tinkex_budget, _snap}, s) do
    s = %{s | native_events: s.native_events + 1}
    {:noreply, report_soon(s)}
  end

  def handle_info(:report, s), do: {:noreply, renew(%{s | report_timer: nil})}

  ## Shared backoff (see `TinkexNative.Cluster.Member.Backoff`)

  def handle_info({:tinkex_limiter, _} = msg, s), do: {:noreply, Backoff.handle(msg, s)}
  def handle_info({:cluster_backoff, _, _, _, _} = msg, s), do: {:noreply, Backoff.handle(msg, s)}
  def handle_info({:cluster_probe_passed, _, _} = msg, s), do: {:noreply, Backoff.handle(msg, s)}
  def handle_info({:cluster_probe_yield, _, _} = msg, s), do: {:noreply, Backoff.handle(msg, s)}
  def handle_info({:probe_idle_check, _} = msg, s), do: {:noreply, Backoff.handle(msg, s)}
  def handle_info({:probe_fallback, _} = msg, s), do: {:noreply, Backoff.handle(msg, s)}
  def handle_info({:nodedown, _} = msg, s), do: {:noreply, Backoff.handle(msg, s)}

  def handle_info(_other, s), do: {:noreply, s}

  @impl true
  def terminate(_reason, s) do
    if s.coordinator do
      {report, _} = report(s)
      send(s.coordinator, {:leave, self(), report})
    end

    if s.budget, do: Native.budget_close(s.budget)
    Native.limiter_unwatch(s.limiter)
    :ok
  end

  ## Helpers

  defp now, do: System.monotonic_time(:microsecond)

  defp link_client(s, pid) do
    Process.link(pid)
    %{s | clients: MapSet.put(s.clients, pid)}
  end

  defp idle_later(s) do
    Process.send_after(self(), :idle, @idle_ms)
    s
  end

  defp answer_joins(s, reply) do
    for {from, pid} <- s.pending do
      if pid && match?({:error, _}, reply), do: Process.unlink(pid)
      GenServer.reply(from, reply)
    end

    clients =
      case reply do
        {:error, _} -> Enum.reduce(s.pending, s.clients, fn {_, p}, c -> MapSet.delete(c, p) end)
        _ -> s.clients
      end

    %{s | pending: [], checked: true, clients: clients}
  end

  defp elect(%{coordinator: c} = s) when is_pid(c), do: s

  defp elect(s) do
    name = Coordinator.name(s.key)

    pid =
      case whereis_synced(name) do
        :undefined ->
          args = %{key: s.key, config: s.config, view: s.view}

          case DynamicSupervisor.start_child(
                 TinkexNative.Cluster.Coordinators,
                 {Coordinator, args}
               ) do
            {:ok, pid} -> pid
            # Another node registered first.
            _ -> :global.whereis_name(name)
          end

        pid ->
          pid
      end

    if is_pid(pid) do
      attach(s, pid)
    else
      Process.send_after(self(), :elect, 10)
      s
    end
  end

  # Names registered on nodes that connected a moment ago are not known
  # here until `:global` has synced with them: without the sync, a node
  # that just joined would elect a coordinator of its own.
  defp whereis_synced(name) do
    case :global.whereis_name(name) do
      :undefined ->
        :global.sync()
        :global.whereis_name(name)

      pid ->
        pid
    end
  end

  defp attach(s, pid), do: register(%{s | coordinator: pid, coord_mon: Process.monitor(pid)})

  defp register(s) do
    {report, s} = report(s)
    tell(s, s.coordinator, {:register, self(), node(), s.config, report})
  end

  defp renew(%{coordinator: nil} = s), do: s
  defp renew(%{budget: nil} = s), do: s

  defp renew(s) do
    {report, s} = report(s)
    tell(%{s | last_report: now()}, s.coordinator, {:renew, self(), report})
  end

  # A budget event: reported at once, or at most every @report_gap_us.
  defp report_soon(%{coordinator: nil} = s), do: s
  defp report_soon(%{report_timer: t} = s) when t != nil, do: s

  defp report_soon(s) do
    since = if s.last_report, do: now() - s.last_report, else: @report_gap_us

    if since >= @report_gap_us do
      renew(s)
    else
      ms = div(@report_gap_us - since, 1000) + 1
      %{s | report_timer: Process.send_after(self(), :report, ms)}
    end
  end

  defp schedule_renew(%{budget: nil} = s), do: s

  defp schedule_renew(s) do
    Process.send_after(self(), :renew, max(div(s.config.lease_ttl_ms, 4), 1))
    s
  end

  defp report(s) do
    snap =
      if s.budget,
        do: Native.budget_snapshot(s.budget),
        else: %{capacity: 0, used: 0, waiting: 0, lease_seq: 0, valid_us: 0, level: :idle}

    req = s.req + 1

    report = %{
      req: req,
      capacity: snap.capacity,
      used: snap.used,
      waiting: snap.waiting,
      lease_seq: snap.lease_seq,
      valid_us: snap.valid_us,
      level: snap.level,
      view: s.view
    }

    {report, %{s | req: req, asked: Map.put(s.asked, req, now())}}
  end

  defp peers(s) do
    for pid <- :pg.get_members(@scope, group(s.key)), node(pid) != node(), do: pid
  end

  @doc false
  def broadcast(s, msg), do: Enum.reduce(peers(s), s, &tell(&2, &1, msg))

  @doc false
  def tell(s, pid, msg) do
    send(pid, msg)
    %{s | sent: s.sent + 1}
  end

  defp stats(s) do
    snap = s.budget && Native.budget_snapshot(s.budget)
    ps = Native.limiter_probe_state(s.limiter)

    budget =
      if snap do
        %{
          in_flight: snap.used,
          leased: snap.capacity,
          waiting: snap.waiting,
          lease_valid_ms: div(snap.valid_us, 1000),
          lease_expired: snap.expired,
          level: snap.level,
          revoked: snap.revoked_total,
          acquired: snap.acquired_total
        }
      else
        %{in_flight: nil, leased: nil, waiting: nil}
      end

    Map.merge(budget, %{
      node: node(),
      clients: MapSet.size(s.clients),
      coordinator: s.coordinator && node(s.coordinator),
      view: s.view,
      backoff_ms: div(ps.remaining_us + 999, 1000),
      probe: Map.take(ps, [:tripped, :probing, :deferring]),
      messages_sent: s.sent,
      backoffs_applied: s.backoffs_applied,
      last_backoff_delay_us: s.last_backoff_delay_us,
      native_events: s.native_events
    })
  end
end
