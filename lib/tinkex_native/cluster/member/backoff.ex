defmodule TinkexNative.Cluster.Member.Backoff do
  @moduledoc false
  # The shared 429 backoff between the members of a key: the part of
  # `TinkexNative.Cluster.Member` that relays it. Functions take and
  # return the member's state.
  #
  # - A 429 here that moved the deadline (`{:tinkex_limiter, {:backoff,
  #   us}}` from the native limiter) goes to every other member as the
  #   remaining µs, stamped with the sender's OS time (for the delay
  #   statistic only: on one machine both ends share that clock).
  # - A backoff from another node is applied natively, never shortening.
  #   The probe after it is one node's for the whole cluster: the smallest
  #   node among those that saw a 429 here; the others defer to it.
  # - A deferring node stops deferring when that probe passed (released
  #   without a probe of its own), when the prober has nothing to send
  #   (it yields @idle_check_ms after its deadline), when the prober's
  #   node goes down, or @probe_fallback_ms after the deadline.

  alias TinkexNative.Cluster.Member
  alias TinkexNative.Native

  # How long after its backoff's end a node that saw the 429 waits for a
  # local request to probe before it lets the others probe.
  @idle_check_ms 50
  # How long after the end of a backoff a node waits for another node's
  # probe before it probes itself.
  @probe_fallback_ms 2_000

  @doc false
  # No backoff episode in progress.
  def idle, do: %{origin?: false, defer_to: nil, idle_ref: nil, fallback_ref: nil}

  @doc false
  def handle({:tinkex_limiter, {:backoff, us}}, s) do
    s = Member.broadcast(s, {:cluster_backoff, self(), node(), us, System.os_time(:microsecond)})
    ref = make_ref()
    Process.send_after(self(), {:probe_idle_check, ref}, div(us, 1000) + @idle_check_ms)
    put(s, origin?: true, idle_ref: ref)
  end

  def handle({:tinkex_limiter, :probe_passed}, s) do
    s = Member.broadcast(s, {:cluster_probe_passed, self(), node()})
    %{s | probe: idle()}
  end

  def handle({:cluster_backoff, _from, origin, us, sent_os_us}, s) do
    delay = System.os_time(:microsecond) - sent_os_us
    defer? = not (s.probe.origin? and node() < origin)
    remaining = Native.limiter_apply_remote(s.limiter, us, defer?)
    s = %{s | backoffs_applied: s.backoffs_applied + 1, last_backoff_delay_us: delay}

    if defer? do
      ref = make_ref()

      Process.send_after(
        self(),
        {:probe_fallback, ref},
        div(remaining, 1000) + @probe_fallback_ms
      )

      defer_to = if s.probe.defer_to, do: min(s.probe.defer_to, origin), else: origin
      put(s, defer_to: defer_to, fallback_ref: ref)
    else
      s
    end
  end

  def handle({:cluster_probe_passed, _from, _origin}, s) do
    Native.limiter_release_remote(s.limiter)
    %{s | probe: idle()}
  end

  def handle({:cluster_probe_yield, _from, origin}, s) do
    if s.probe.defer_to == origin, do: end_defer(s), else: s
  end

  def handle({:probe_idle_check, ref}, %{probe: %{idle_ref: ref}} = s) do
    ps = Native.limiter_probe_state(s.limiter)

    cond do
      ps.remaining_us > 0 ->
        # The deadline moved later meanwhile.
        wait = div(ps.remaining_us, 1000) + @idle_check_ms
        Process.send_after(self(), {:probe_idle_check, ref}, wait)
        s

      ps.tripped and not ps.probing and not ps.deferring ->
        # Nothing here to probe with: let the others go.
        s = Member.broadcast(s, {:cluster_probe_yield, self(), node()})
        put(s, origin?: false, idle_ref: nil)

      true ->
        s
    end
  end

  def handle({:probe_fallback, ref}, %{probe: %{fallback_ref: ref}} = s), do: end_defer(s)
  def handle({:nodedown, n}, %{probe: %{defer_to: n}} = s), do: end_defer(s)
  def handle(_stale, s), do: s

  defp put(s, kw), do: %{s | probe: Map.merge(s.probe, Map.new(kw))}

  defp end_defer(s) do
    Native.limiter_end_defer(s.limiter)
    put(s, defer_to: nil, fallback_ref: nil)
  end
end
