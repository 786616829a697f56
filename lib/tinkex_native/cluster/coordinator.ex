defmodule TinkexNative.Cluster.Coordinator do
  @moduledoc false
  # The one process per `{base_url, api_key}` (registered with `:global`)
  # that leases the cluster budget to the nodes' members. See
  # `docs/cluster.md` for the protocol; in short:
  #
  # - members register (reporting the lease they hold, if any) and renew
  #   every ttl/4 with their demand; each renewal is answered with a lease:
  #   a capacity and a validity in µs (remaining time, never a clock
  #   reading), which the member counts from the moment it *sent* the
  #   renewal, so its end of the lease is never later than ours;
  # - the validity is bounded by the quorum (`Quorum`): a coordinator cut
  #   off from the majority grants nothing that outlives the cut by more
  #   than a ttl;
  # - a lease's permits count as held here until the member acknowledges a
  #   shrink, or until the lease's end plus a margin (clock drift, timer
  #   lateness, and the withdrawal of revoked requests) has passed: only
  #   then are they given to others;
  # - two coordinators of one key (a netsplit that healed) are resolved by
  #   `:global` (`resolve/3`) and, should its name tables not catch it,
  #   here: each coordinator greets the key's `:pg` members registered
  #   elsewhere, and the members tell the coordinator on the larger node
  #   to stop;
  # - a new coordinator (after the old one's node died, or a netsplit)
  #   knows only the leases members report, so for one ttl plus the margin
  #   it renews and shrinks leases but grows none (the recovery). The
  #   recovery ends at once when every member of the key's `:pg` group
  #   has registered and none of them was ever part of a cluster (a fresh
  #   start: no lease can exist anywhere), and starts again when a member
  #   arrives holding a lease granted by another coordinator.
  use GenServer, restart: :temporary

  require Logger

  alias TinkexNative.Cluster.{Allocation, Options, Quorum}

  # Two monotonic clocks may run at rates up to 1 % apart each way.
  @drift 0.02
  # Covers message delay, timer lateness and the withdrawal of a revoked
  # lease's requests (two requests of at most 200 ms each).
  @margin_us 600_000

  @doc false
  def name(key), do: {__MODULE__, key}

  @doc false
  def margin_us, do: @margin_us

  @doc false
  def drift, do: @drift

  @doc false
  def start_link(args), do: GenServer.start_link(__MODULE__, args)

  @doc false
  # Two coordinators of one key met (a netsplit healed): the one on the
  # smaller node keeps the name; both are told, so the loser stops and the
  # winner waits out a recovery before growing any lease (the loser's
  # leases reach it only as its members re-register).
  def resolve(_name, pid1, pid2) do
    [winner, loser] = Enum.sort_by([pid1, pid2], &node/1)
    send(winner, {:coordinator_conflict, loser})
    send(loser, {:coordinator_conflict, winner})
    winner
  end

  @impl true
  def init(%{key: key, config: config, view: view}) do
    case :global.register_name(name(key), self(), &__MODULE__.resolve/3) do
      :yes ->
        now = now()
        ttl_us = config.lease_ttl_ms * 1000

        s = %{
          key: key,
          config: config,
          ttl_us: ttl_us,
          started: now,
          recovery_until: now + recovery_us(ttl_us),
          members: %{},
          fresh: true,
          last_scan: now,
          forgotten: MapSet.new(),
          view: MapSet.new(view),
          sent: 0,
          timer: nil
        }

        {:ok, schedule(s, now)}

      :no ->
        :ignore
    end
  end

  defp recovery_us(ttl_us), do: round(ttl_us * (1 + @drift)) + @margin_us

  defp now, do: System.monotonic_time(:microsecond)

  ## Members

  @impl true
  def handle_info({:register, pid, node, config, report}, s) do
    case Options.mismatch(config, s.config) do
      nil ->
        s = s |> recover_on_foreign(pid, report) |> upsert(pid, node, report)
        s = tell(s, pid, {:registered, self(), :ok})
        {:noreply, rebalance(s, {pid, report.req})}

      message ->
        {:noreply, tell(s, pid, {:registered, self(), {:error, message}})}
    end
  end

  def handle_info({:renew, pid, report}, s) do
    case s.members do
      %{^pid => e} ->
        now = now()
        s = put_in(s.members[pid], heard(e, report, now))
        {:noreply, s |> greet_strangers(now) |> rebalance({pid, report.req})}

      _ ->
        {:noreply, tell(s, pid, {:reregister, self()})}
    end
  end

  def handle_info({:leave, pid, report}, s) do
    case s.members do
      %{^pid => e} ->
        Process.demonitor(e.mon, [:flush])

        s =
          if report.used == 0 do
            # Nothing in flight: the share is free at once, and the node
            # no longer votes.
            %{s | members: Map.delete(s.members, pid), view: drop_node(s, e.node, pid)}
          else
            put_in(s.members[pid], %{e | alive: false, holding: report.used, demand: 0})
          end

        settle(rebalance(s, nil))

      _ ->
        {:noreply, s}
    end
  end

  def handle_info({:DOWN, _ref, :process, pid, _reason}, s) do
    case s.members do
      %{^pid => e} ->
        s = put_in(s.members[pid], %{e | alive: false, demand: 0})
        settle(rebalance(s, nil))

      _ ->
        {:noreply, s}
    end
  end

  def handle_info(:tick, s), do: settle(rebalance(%{s | timer: nil}, nil))

  def handle_info({:coordinator_conflict, other}, s) do
    if node(other) < node() do
      {:stop, :normal, s}
    else
      now = now()
      Logger.info("tinkex_native cluster: absorbed a second coordinator from #{node(other)}")
      {:noreply, schedule(%{s | recovery_until: now + recovery_us(s.ttl_us)}, now)}
    end
  end

  def handle_info(_other, s), do: {:noreply, s}

  # No member left, not even a lease still running out: the key is no
  # longer used from here, and a coordinator elected later starts afresh.
  defp settle(%{members: m} = s) when map_size(m) == 0, do: {:stop, :normal, s}
  defp settle(s), do: {:noreply, s}

  @impl true
  # An operator's word that `node` is gone for good: it stops voting (its
  # lease, if any, still runs out before its share is reused), and the
  # views members report do not bring it back until it registers again.
  def handle_call({:forget, node}, _from, s) do
    s = %{s | view: MapSet.delete(s.view, node), forgotten: MapSet.put(s.forgotten, node)}
    {:reply, :ok, rebalance(s, nil)}
  end

  def handle_call(:stats, _from, s) do
    now = now()

    members =
      Map.new(s.members, fn {pid, e} ->
        {pid,
         Map.take(e, [:node, :alive, :granted, :holding, :demand, :level])
         |> Map.put(:expires_in_ms, div(max(e.expires - now, 0), 1000))}
      end)

    {:reply,
     %{
       node: node(),
       max_in_flight: s.config.max_in_flight,
       view: Enum.sort(s.view),
       members: members,
       recovering_ms: div(max(s.recovery_until - now, 0), 1000),
       validity_ms: div(validity(s, now), 1000),
       messages_sent: s.sent
     }, s}
  end

  # A member arriving with a lease this coordinator did not grant (one
  # from another coordinator, since it registered before: a netsplit that
  # healed): other members of that coordinator may hold leases not
  # reported yet.
  defp recover_on_foreign(s, pid, report) do
    known? = match?(%{^pid => %{seq: seq}} when seq == report.lease_seq, s.members)
    fresh? = report.lease_seq == 0 and report.view == []
    s = %{s | fresh: s.fresh and fresh?}

    if not known? and report.valid_us > 0 do
      %{s | recovery_until: max(s.recovery_until, now() + recovery_us(s.ttl_us))}
    else
      s
    end
  end

  # A fresh start needs no recovery once every member has said so.
  defp end_fresh_recovery(%{fresh: true} = s, now) when s.recovery_until > now do
    group =
      :pg.get_members(
        TinkexNative.Cluster.Member.scope(),
        TinkexNative.Cluster.Member.group(s.key)
      )

    if group != [] and Enum.all?(group, &Map.has_key?(s.members, &1)),
      do: %{s | recovery_until: now},
      else: s
  end

  defp end_fresh_recovery(s, _now), do: s

  # A registration replaces what was known of the member: it holds what
  # it reports (a lease of ours it had is superseded by anything it got
  # since, e.g. from the other side of a netsplit).
  defp upsert(s, pid, node, report) do
    now = now()

    e =
      case s.members do
        %{^pid => %{seq: seq, alive: true} = e} when seq == report.lease_seq ->
          e

        members ->
          with %{^pid => old} <- members, do: Process.demonitor(old.mon, [:flush])
          # A lease reported by a member that held it before (from an
          # earlier coordinator): trusted, and held until its end.
          held = if report.valid_us > 0, do: max(report.capacity, report.used), else: report.used

          %{
            pid: pid,
            node: node,
            mon: Process.monitor(pid),
            alive: true,
            granted: held,
            holding: held,
            seq: report.lease_seq,
            expires: now + grace(report.valid_us),
            heard: now,
            demand: 0,
            level: :idle
          }
      end

    forgotten = MapSet.delete(s.forgotten, node)
    reported = report.view |> MapSet.new() |> MapSet.difference(forgotten)
    view = s.view |> MapSet.union(reported) |> MapSet.put(node)
    members = Map.put(s.members, pid, heard(e, report, now))
    %{s | members: members, view: view, forgotten: forgotten}
  end

  # A member's report: its demand, and (when it acknowledges our latest
  # lease) what it really holds, which ends a shrink.
  defp heard(e, report, now) do
    e = %{
      e
      | heard: now,
        alive: true,
        demand: report.used + report.waiting,
        level: report.level
    }

    if report.lease_seq == e.seq,
      do: %{e | holding: max(e.granted, report.used)},
      else: e
  end

  # When permits granted for `valid_us` are certainly given back here: the
  # member's end, measured on a clock that may run 2 % slow, plus the margin.
  defp grace(valid_us), do: round(valid_us * (1 + @drift)) + @margin_us

  defp drop_node(s, node, pid) do
    others? = Enum.any?(s.members, fn {p, e} -> p != pid and e.node == node and e.alive end)
    if others?, do: s.view, else: MapSet.delete(s.view, node)
  end

  ## Leases

  # Members of the key attached to another coordinator: told about this
  # one (see the moduledoc), at most every ttl/4.
  defp greet_strangers(s, now) do
    if now - s.last_scan < div(s.ttl_us, 4) do
      s
    else
      connected = [node() | Node.list()]

      group =
        :pg.get_members(
          TinkexNative.Cluster.Member.scope(),
          TinkexNative.Cluster.Member.group(s.key)
        )

      strangers =
        for pid <- group, not Map.has_key?(s.members, pid), node(pid) in connected, do: pid

      s = Enum.reduce(strangers, s, &tell(&2, &1, {:coordinator_hello, self()}))
      %{s | last_scan: now}
    end
  end

  defp validity(s, now) do
    heard =
      Enum.reduce(s.members, %{}, fn {_, e}, acc ->
        if e.alive, do: Map.update(acc, e.node, e.heard, &max(&1, e.heard)), else: acc
      end)

    Quorum.validity(Enum.to_list(s.view), heard, now, s.ttl_us)
  end

  # Frees what expired, recomputes every member's share, and sends the
  # leases that changed (and the one asked for by `reply`, `{pid, req}`).
  defp rebalance(%{config: %{max_in_flight: nil}} = s, _reply) do
    # No budget: members are known only to check their config.
    %{s | members: Map.filter(s.members, fn {_, e} -> e.alive end)}
  end

  defp rebalance(s, reply) do
    now = now()
    s = s |> expire(now) |> end_fresh_recovery(now)
    valid = validity(s, now)
    s = forget_absent(s, valid)
    n = s.config.max_in_flight
    live = for {pid, e} <- s.members, e.alive, do: {pid, e.demand}
    targets = Allocation.targets(n, live)
    grow? = valid > 0 and now >= s.recovery_until

    free = n - Enum.sum(Enum.map(s.members, fn {_, e} -> e.holding end))

    {s, _free} =
      s.members
      |> Enum.filter(fn {_, e} -> e.alive end)
      |> Enum.sort_by(fn {pid, e} -> {e.granted - targets[pid], e.node} end)
      |> Enum.reduce({s, free}, fn {pid, e}, {s, free} ->
        t = targets[pid]
        # A shrink takes effect here only once acknowledged (`holding`).
        grow = if t > e.granted and grow?, do: min(t - e.granted, max(free, 0)), else: 0
        granted = if t < e.granted, do: t, else: e.granted + grow
        e = %{e | granted: granted, holding: max(e.holding, granted)}
        {send_lease(s, e, granted != s.members[pid].granted, reply, valid, now), free - grow}
      end)

    schedule(s, now)
  end

  defp send_lease(s, e, changed?, reply, valid, now) do
    case reply do
      {pid, req} when pid == e.pid ->
        e = %{e | seq: e.seq + 1}
        e = if valid > 0, do: %{e | expires: max(e.expires, now + grace(valid))}, else: e
        msg = {:lease, self(), req, e.granted, valid, e.seq, Enum.sort(s.view)}
        tell(put_in(s.members[e.pid], e), e.pid, msg)

      _ when changed? ->
        # Unasked: a new capacity within the lease's current end.
        e = %{e | seq: e.seq + 1}
        tell(put_in(s.members[e.pid], e), e.pid, {:lease_update, self(), e.granted, e.seq})

      _ ->
        put_in(s.members[e.pid], e)
    end
  end

  # A lease past its end (plus the margin) is back: its member's requests
  # have been withdrawn (it was alive) or its node is gone.
  defp expire(s, now) do
    members =
      Enum.reduce(s.members, %{}, fn {pid, e}, acc ->
        cond do
          now < e.expires -> Map.put(acc, pid, e)
          e.alive -> Map.put(acc, pid, %{e | granted: 0, holding: 0})
          true -> acc
        end
      end)

    %{s | members: members}
  end

  # With a quorum, nodes that have no member any more stop voting.
  defp forget_absent(s, valid) when valid > 0 do
    present = MapSet.new(s.members, fn {_, e} -> e.node end)
    %{s | view: MapSet.intersection(s.view, present)}
  end

  defp forget_absent(s, _valid), do: s

  defp tell(s, pid, msg) do
    send(pid, msg)
    %{s | sent: s.sent + 1}
  end

  # Wakes at the next lease end or the end of the recovery.
  defp schedule(s, now) do
    if s.timer, do: Process.cancel_timer(s.timer)

    ends = for {_, e} <- s.members, e.holding > 0 or not e.alive, do: e.expires
    ends = if s.recovery_until > now, do: [s.recovery_until | ends], else: ends

    case ends do
      [] ->
        %{s | timer: nil}

      _ ->
        %{
          s
          | timer: Process.send_after(self(), :tick, div(max(Enum.min(ends) - now, 0), 1000) + 1)
        }
    end
  end
end
