defmodule TinkexNative.ChaosTest do
  # Fault injection against `tinker_sim`: nothing lost, nothing duplicated,
  # nothing leaked (issue 7).
  #
  # How to run:
  #
  #   * SHORT version (what CI's plain `mix test` / `.ci/run` runs): 1 500
  #     samples in the fault mix (+ 50 from killed callers), 4 kills at
  #     each of 5 points, 40 stuck requests (progress_timeout 2 s), 300
  #     samples across a simulator restart; about 20 s in all.
  #
  #         TINKEX_NIF_PROFILE=debug mix test               # everything, chaos short
  #         TINKEX_NIF_PROFILE=debug mix test test/chaos    # only chaos, short
  #
  #   * LONG version: 10 000 samples in the fault mix (+ 200 killed), 25
  #     kills at each point, 200 stuck requests (progress_timeout 10 s),
  #     2 000 samples across the restart; about 1.5-2 minutes. Asked for
  #     by including the `:chaos_long` (or `:chaos`) tag:
  #
  #         TINKEX_NIF_PROFILE=debug mix test --only chaos_long
  #         TINKEX_NIF_PROFILE=debug mix test --include chaos_long   # + all other tests
  #         TINKEX_NIF_PROFILE=debug mix test --only chaos
  #
  #     `TINKEX_CHAOS=long|short` overrides the choice either way;
  #     `TINKEX_CHAOS_SEED=<int>` changes the fault mix's seed (default 7);
  #     `TINKEX_CHAOS_VERBOSE=1` (implied by the long run) prints the
  #     measured figures.
  #
  # Every test carries both tags (`@moduletag :chaos`, `@moduletag
  # :chaos_long`), so `--only` either of them selects them; the size is
  # read at run time from ExUnit's `:include` configuration.
  #
  # The module is `async: false`: it compares `Process.list/0`,
  # `TinkexNative.RetryHandler.live_count/0` and `TinkexNative.RateLimiter.count/0`
  # before and after, which only means something when no other test runs.
  use ExUnit.Case, async: false

  import TinkexNative.Test.Wait

  alias TinkexNative.{Error, RateLimiter, RetryHandler, SamplingClient}
  alias TinkexNative.Test.TinkerSim
  alias TinkexNative.Types.{ModelInput, SampleResponse, SamplingParams}

  @moduletag :chaos
  @moduletag :chaos_long
  @moduletag timeout: 1_800_000

  @key "tml-chaos-shared-key"

  # The protocol's delays, shrunk so that every fault costs milliseconds.
  # The HTTP timeouts (1 s) are shorter than the delayed answers the
  # scenario scripts (1.2 s) and longer than the simulator's hold (200 ms),
  # with room for a debug-build simulator on a busy 2-core machine.
  @timings [
    submit_timeout: 1_000,
    submit_backoff_base: 5,
    submit_backoff_cap: 20,
    rate_limit_small: 20,
    rate_limit_large: 40,
    poll_timeout: 1_000,
    poll_5xx_initial: 1,
    poll_5xx_cap: 10,
    poll_backoff_base: 5,
    poll_backoff_cap: 20,
    pause_log_interval: 200,
    dispatch_recent_window: 50
  ]

  ## Sizes

  defp long? do
    case System.get_env("TINKEX_CHAOS") do
      "long" ->
        true

      "short" ->
        false

      _ ->
        include = ExUnit.configuration()[:include] || []

        Enum.any?(include, fn
          tag when tag in [:chaos, :chaos_long] -> true
          {tag, _} when tag in [:chaos, :chaos_long] -> true
          _ -> false
        end)
    end
  end

  defp size(short, long), do: if(long?(), do: long, else: short)

  defp verbose?, do: long?() or System.get_env("TINKEX_CHAOS_VERBOSE") in ["1", "true"]

  defp report(line), do: if(verbose?(), do: IO.puts("\n[chaos] " <> line))

  defp chaos_seed do
    case Integer.parse(System.get_env("TINKEX_CHAOS_SEED", "7")) do
      {s, ""} -> s
      _ -> 7
    end
  end

  ## The fault mix

  # Fates by seq_id, the same for every client (each client counts its
  # seq_ids from 0). Disjoint, so the error a call must end with follows
  # from its last attempt's seq_id alone.
  defp fates(max_seq) do
    for s <- 0..max_seq, into: %{} do
      r = :rand.uniform()

      fate =
        cond do
          r < 0.005 -> :submit_400
          r < 0.010 -> :poll_404
          r < 0.040 -> :expired
          r < 0.050 -> {:failed, :user}
          r < 0.060 -> {:failed, :server}
          r < 0.070 -> {:failed, :unknown}
          true -> :ok
        end

      {s, fate}
    end
  end

  defp seqs_with(fates, fate), do: for({s, ^fate} <- fates, do: s) |> Enum.sort()

  defp rule(endpoint, match, action, name) do
    %{"endpoint" => endpoint, "match" => match, "action" => action, "name" => name}
  end

  defp fault_rules(fates) do
    fail = fn cat ->
      rule(
        "future",
        %{"seq_id" => seqs_with(fates, {:failed, cat})},
        %{"fail" => %{"category" => Atom.to_string(cat), "error" => "chaos #{cat}"}},
        "fail #{cat}"
      )
    end

    [
      # Deterministic, by seq_id: these decide how a call ends.
      rule("asample", %{"seq_id" => seqs_with(fates, :submit_400)}, %{"status" => 400}, "400"),
      rule(
        "retrieve_future",
        %{"seq_id" => seqs_with(fates, :poll_404)},
        %{"status" => 404},
        "404"
      ),
      rule(
        "retrieve_future",
        %{"seq_id" => seqs_with(fates, :expired), "poll" => 1},
        %{"status" => 410},
        "410"
      ),
      # Seeded noise on submit: ridden out, same seq_id.
      rule(
        "asample",
        %{"rate" => 0.004},
        %{"status" => 429, "headers" => %{"retry-after-ms" => "25"}},
        "429 ms"
      ),
      rule(
        "asample",
        %{"rate" => 0.002},
        %{"status" => 429, "headers" => %{"retry-after" => "0.03"}},
        "429 s"
      ),
      rule("asample", %{"rate" => 0.004}, %{"status" => 429}, "429 bare"),
      rule("asample", %{"rate" => 0.02}, %{"status" => 503}, "submit 503"),
      rule("asample", %{"rate" => 0.01}, %{"status" => 500}, "submit 500"),
      rule("asample", %{"rate" => 0.02}, %{"status" => 408}, "submit 408"),
      rule("asample", %{"rate" => 0.01}, %{"drop" => true}, "submit drop"),
      rule("asample", %{"rate" => 0.005}, %{"delay_ms" => 1_200}, "submit late"),
      # Seeded noise on poll.
      rule("retrieve_future", %{"rate" => 0.03}, %{"status" => 503}, "poll 503"),
      rule("retrieve_future", %{"rate" => 0.01}, %{"status" => 502}, "poll 502"),
      rule("retrieve_future", %{"rate" => 0.03}, %{"status" => 408}, "poll 408"),
      rule(
        "retrieve_future",
        %{"rate" => 0.01},
        %{"status" => 429, "headers" => %{"retry-after-ms" => "10"}},
        "poll 429 ms"
      ),
      rule("retrieve_future", %{"rate" => 0.01}, %{"status" => 429}, "poll 429 bare"),
      rule("retrieve_future", %{"rate" => 0.01}, %{"drop" => true}, "poll drop"),
      rule("retrieve_future", %{"rate" => 0.005}, %{"delay_ms" => 1_200}, "poll late"),
      rule("session_heartbeat", %{"rate" => 0.3}, %{"status" => 503}, "heartbeat 503"),
      # Fates of futures.
      fail.(:user),
      fail.(:server),
      fail.(:unknown),
      rule(
        "future",
        %{"rate" => 0.05},
        %{"try_again" => %{"count" => 2, "queue_state" => "paused_capacity"}},
        "try_again"
      ),
      rule("future", %{"rate" => 0.05}, %{"complete_metadata" => true}, "metadata")
    ]
  end

  test "fault mix: every call resolves exactly once with the right tokens or the right error" do
    n = size(1_500, 10_000)
    n_victims = size(10, 40)
    per_victim = 5
    n_clients = 4
    seed = chaos_seed()
    :rand.seed(:exsss, {seed, seed + 1, seed + 2})

    sim = start_sim(hold_ms: 200, latency_ms: "0..20", args: ["--log-capacity", "1000000"])
    fates = fates(div(n, n_clients) * 3 + 200)

    before = baseline()

    clients =
      for _ <- 1..n_clients do
        start_client(sim,
          heartbeat_interval_ms: 300,
          retry_config: [
            base_delay_ms: 5,
            max_delay_ms: 20,
            max_connections: 32,
            progress_timeout_ms: 15_000
          ]
        )
      end

    # Callers of this client are killed at random points (waiting for one
    # of its 3 permits, submitting, polling, backing off). Its futures take
    # 5 s and it is spared the faults that end a call, so none of its
    # calls can finish before its caller is killed: any that survived the
    # kill would hold a permit, poll on, or finish and be counted.
    victim_client =
      start_client(sim, retry_config: [base_delay_ms: 5, max_delay_ms: 20, max_connections: 3])

    victim_ssid = SamplingClient.session(victim_client).sampling_session_id

    spare = fn endpoint, fate ->
      %{"sampling_session_id" => victim_ssid, "seq_id" => seqs_with(fates, fate)}
      |> then(&rule(endpoint, &1, %{"delay_ms" => 1}, "spare #{fate}"))
    end

    victim_rules = [
      rule("future", %{"sampling_session_id" => victim_ssid}, %{"latency_ms" => 5_000}, "slow"),
      spare.("asample", :submit_400),
      spare.("retrieve_future", :poll_404)
    ]

    {:ok, _} =
      TinkerSim.set_scenario(sim, %{
        "seed" => seed,
        "rules" => victim_rules ++ fault_rules(fates)
      })

    all_clients = List.to_tuple(clients ++ [victim_client])
    calls = for id <- 0..(n - 1), do: new_call(id, rem(id, n_clients))

    victim_calls =
      for v <- 0..(n_victims - 1) do
        for j <- 0..(per_victim - 1), do: new_call(n + v * per_victim + j, n_clients)
      end

    offset = sim_clock_offset(sim)
    parent = self()
    t0 = System.monotonic_time(:millisecond)

    workers =
      calls
      |> Enum.group_by(&rem(div(&1.id, n_clients), 8))
      |> Map.new(fn {w, cs} ->
        {pid, mref} = spawn_monitor(fn -> run_worker(parent, w, cs, all_clients) end)
        {mref, {w, pid}}
      end)

    # Victims start one every 50 ms; a stuck window (300 ms, far below
    # progress_timeout) opens after 400 ms.
    for v <- 0..(n_victims - 1), do: Process.send_after(self(), {:start_victim, v}, v * 50)
    Process.send_after(self(), :stuck_on, 400)

    state = %{
      sim: sim,
      workers: workers,
      results: %{},
      dups: [],
      victims: %{},
      kills: %{},
      victim_calls: List.to_tuple(victim_calls),
      clients: all_clients,
      stuck: nil
    }

    state = drive(state, System.monotonic_time(:millisecond) + size(120_000, 900_000))
    elapsed = System.monotonic_time(:millisecond) - t0

    # Exactly once.
    assert state.dups == [], "duplicate or unexpected messages: #{inspect(state.dups, limit: 5)}"
    assert map_size(state.results) == n
    assert Map.keys(state.results) |> Enum.sort() == Enum.to_list(0..(n - 1))
    assert map_size(state.kills) == n_victims
    # The stuck window opened and closed while calls were running, and
    # lasted its 300 ms (far below progress_timeout: nothing may fail as
    # stuck, which check_outcomes/6 checks call by call).
    assert {on, off} = state.stuck

    assert is_integer(on) and is_integer(off),
           "the stuck window never closed: #{inspect(state.stuck)}"

    assert off - on >= 300

    # Let every victim's in-flight request land before reading the log.
    Process.sleep(300)
    {log, dropped} = fetch_log(sim)
    assert dropped == 0
    attempts = attempts_by_call(log)
    expected_cache = check_outcomes(sim, calls, state.results, fates, attempts, log)

    # Killed callers: nothing for their futures long after the kill. The
    # simulator is saturated here (a request sent just before the kill can
    # sit in queues before it is stamped), hence the 500 ms; a caller
    # whose sample were not stopped would keep polling every <= 200 ms
    # until its future is ready, 5 s after it was made. The precise
    # version of this check is the "callers killed" test.
    victim_ids =
      for v <- 0..(n_victims - 1), j <- 0..(per_victim - 1), into: %{} do
        {n + v * per_victim + j, v}
      end

    late =
      for e <- log,
          e["endpoint"] in ["asample", "retrieve_future"],
          call = call_of(e, attempts.by_request),
          v = Map.get(victim_ids, call),
          v != nil,
          e["t_us"] > state.kills[v] - offset + 500_000,
          do: {v, call, e["endpoint"], e["t_us"] - (state.kills[v] - offset)}

    assert late == [], "requests for killed callers' futures after the kill: #{inspect(late)}"

    for c <- Tuple.to_list(all_clients) do
      stats = SamplingClient.stats(c)
      assert %{waiting: 0, in_flight: 0} = stats
      assert stats.available_permits == stats.max_connections
    end

    # No killed caller's call went on to finish.
    assert %{processed: 0, failed: 0} = SamplingClient.stats(victim_client)

    sim_stats = TinkerSim.stats(sim)
    fired = for r <- sim_stats["rules"], r["fired"] > 0, do: r["name"]

    # The mix was really applied: every kind of fault fired at least once.
    for name <-
          ["400", "404", "410", "429 ms", "429 bare", "submit 503", "submit 408"] ++
            ["submit drop", "submit late", "poll 503", "poll 408", "poll drop", "poll late"] ++
            ["fail user", "fail server", "fail unknown", "try_again", "metadata"] do
      assert name in fired, "fault #{name} never fired: #{inspect(sim_stats["rules"])}"
    end

    Enum.each(Tuple.to_list(all_clients), &GenServer.stop/1)
    assert_no_leftovers(before, 1)

    outcome_counts =
      state.results
      |> Map.values()
      |> Enum.frequencies_by(fn
        {:ok, _} -> :ok
        {:error, %Error{type: t, status: s, category: c}} -> {t, s || c}
      end)

    report(
      "fault mix: #{n} samples + #{n_victims * per_victim} killed, #{elapsed} ms; " <>
        "outcomes #{inspect(outcome_counts)}; #{length(log)} requests; " <>
        "#{map_size(expected_cache)} results checked against /_sim/expected; " <>
        "rules fired #{inspect(for r <- sim_stats["rules"], do: {r["name"], r["fired"]})}"
    )
  end

  defp new_call(id, client) do
    kind =
      case :rand.uniform(20) do
        1 -> :logprobs
        k when k <= 3 -> :task
        _ -> :async
      end

    params = %SamplingParams{
      max_tokens: :rand.uniform(6),
      temperature: Enum.random([0.0, 0.5, 0.7, 1.0]),
      seed: if(:rand.uniform(4) == 1, do: :rand.uniform(1_000_000)),
      top_k: Enum.random([-1, 5])
    }

    # The first token names the call, so the simulator's log maps every
    # attempt back to it.
    tokens = [1_000_000 + id | for(_ <- 1..:rand.uniform(3), do: :rand.uniform(50_000))]
    num = if kind == :logprobs, do: 1, else: :rand.uniform(3)
    %{id: id, client: client, kind: kind, tokens: tokens, params: params, num_samples: num}
  end

  defp issue(call, clients) do
    client = elem(clients, call.client)
    prompt = ModelInput.from_ints(call.tokens)

    case call.kind do
      :async ->
        {:ok, ref} =
          SamplingClient.sample_async(client, prompt, call.params, num_samples: call.num_samples)

        ref

      :task ->
        {:ok, task} =
          SamplingClient.sample(client, prompt, call.params, num_samples: call.num_samples)

        task.ref

      :logprobs ->
        {:ok, task} = SamplingClient.compute_logprobs(client, prompt)
        task.ref
    end
  end

  defp run_worker(parent, w, calls, clients) do
    pending = Map.new(calls, fn call -> {issue(call, clients), call.id} end)
    {results, dups} = collect(pending, %{}, [])
    # Anything arriving after every call resolved is a second answer.
    extras = drain([], 100)
    send(parent, {:worker_done, w, results, dups ++ extras})
  end

  defp collect(pending, results, dups) when map_size(pending) == 0, do: {results, dups}

  defp collect(pending, results, dups) do
    receive do
      {:tinkex_sample, ref, result} ->
        resolve(pending, results, dups, ref, result)

      {ref, result} when is_reference(ref) ->
        Process.demonitor(ref, [:flush])
        resolve(pending, results, dups, ref, result)

      {:DOWN, ref, :process, _, reason} ->
        resolve(pending, results, dups, ref, {:task_down, reason})
    end
  end

  defp resolve(pending, results, dups, ref, result) do
    case Map.pop(pending, ref) do
      {nil, _} -> collect(pending, results, [{:unexpected, ref, result} | dups])
      {id, rest} -> collect(rest, Map.put(results, id, result), dups)
    end
  end

  defp drain(acc, wait) do
    receive do
      msg -> drain([{:extra, msg} | acc], wait)
    after
      wait -> Enum.reverse(acc)
    end
  end

  defp drive(s, deadline) do
    if finished?(s), do: s, else: drive_step(s, deadline)
  end

  defp finished?(s) do
    map_size(s.workers) == 0 and map_size(s.kills) == tuple_size(s.victim_calls) and
      match?({_, off} when off != nil, s.stuck)
  end

  defp drive_step(s, deadline) do
    timeout = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {:worker_done, _w, results, dups} ->
        overlap = Map.take(s.results, Map.keys(results))
        assert overlap == %{}
        drive(%{s | results: Map.merge(s.results, results), dups: s.dups ++ dups}, deadline)

      {:DOWN, mref, :process, _pid, reason} when is_map_key(s.workers, mref) ->
        if reason != :normal, do: flunk("worker crashed: #{inspect(reason)}")
        drive(%{s | workers: Map.delete(s.workers, mref)}, deadline)

      {:start_victim, v} ->
        parent = self()
        calls = elem(s.victim_calls, v)
        clients = s.clients

        pid =
          spawn(fn ->
            Enum.each(calls, &issue(&1, clients))
            send(parent, {:victim_ready, v, self()})
            Process.sleep(:infinity)
          end)

        drive(%{s | victims: Map.put(s.victims, v, pid)}, deadline)

      {:victim_ready, v, pid} ->
        Process.send_after(self(), {:kill, v, pid}, :rand.uniform(150))
        drive(s, deadline)

      {:kill, v, pid} ->
        Process.exit(pid, :kill)
        drive(%{s | kills: Map.put(s.kills, v, System.monotonic_time(:microsecond))}, deadline)

      :stuck_on ->
        {:ok, _} = TinkerSim.set_scenario(s.sim, %{"stuck" => true})
        Process.send_after(self(), :stuck_off, 300)
        drive(%{s | stuck: {System.monotonic_time(:millisecond), nil}}, deadline)

      :stuck_off ->
        {:ok, _} = TinkerSim.set_scenario(s.sim, %{"stuck" => false})
        {on, nil} = s.stuck
        drive(%{s | stuck: {on, System.monotonic_time(:millisecond)}}, deadline)
    after
      timeout ->
        flunk(
          "chaos run did not finish: #{map_size(s.results)} results, " <>
            "#{map_size(s.workers)} workers left, #{map_size(s.kills)} kills"
        )
    end
  end

  ## Checking outcomes against the simulator's log

  # Every asample of the run, by attempt ({ssid, seq_id}) and by call.
  defp attempts_by_call(log) do
    asamples = for e <- log, e["endpoint"] == "asample", is_map(e["body"]), do: e

    by_attempt =
      Enum.reduce(asamples, %{}, fn e, acc ->
        b = e["body"]
        attempt = {b["sampling_session_id"], b["seq_id"]}
        [first | _] = hd(b["prompt"]["chunks"])["tokens"]
        call = first - 1_000_000
        key = e["headers"]["x-idempotency-key"]

        Map.update(acc, attempt, %{call: call, keys: MapSet.new([key]), body: b, entries: [e]}, fn
          a ->
            assert a.call == call,
                   "seq_id #{inspect(attempt)} was used by calls #{a.call} and #{call}"

            %{a | keys: MapSet.put(a.keys, key), entries: [e | a.entries]}
        end)
      end)

    # One idempotency key = one attempt = one seq_id, and the other way round.
    keys =
      Enum.reduce(asamples, %{}, fn e, acc ->
        b = e["body"]
        attempt = {b["sampling_session_id"], b["seq_id"]}

        Map.update(acc, e["headers"]["x-idempotency-key"], MapSet.new([attempt]), fn set ->
          MapSet.put(set, attempt)
        end)
      end)

    for {key, set} <- keys do
      assert MapSet.size(set) == 1,
             "attempt #{key} was submitted under several seq_ids: #{inspect(MapSet.to_list(set))}"
    end

    for {attempt, a} <- by_attempt do
      assert MapSet.size(a.keys) == 1,
             "seq_id #{inspect(attempt)} was submitted by several attempts"
    end

    by_call =
      Enum.group_by(by_attempt, fn {_, a} -> a.call end, fn {{ssid, seq}, _} -> {ssid, seq} end)
      |> Map.new(fn {call, atts} -> {call, Enum.sort_by(atts, &elem(&1, 1))} end)

    by_request = Map.new(by_attempt, fn {{ssid, seq}, a} -> {"req:#{ssid}:#{seq}", a.call} end)

    %{by_attempt: by_attempt, by_call: by_call, by_request: by_request}
  end

  defp call_of(%{"endpoint" => "asample", "body" => %{"prompt" => p}}, _) do
    [first | _] = hd(p["chunks"])["tokens"]
    first - 1_000_000
  end

  defp call_of(%{"endpoint" => "retrieve_future", "request_id" => rid}, by_request),
    do: Map.get(by_request, rid)

  defp call_of(_, _), do: nil

  defp check_outcomes(sim, calls, results, fates, attempts, log) do
    # The statuses of every poll, by request id.
    polls =
      Enum.group_by(
        for(e <- log, e["endpoint"] == "retrieve_future", do: e),
        & &1["request_id"],
        & &1["status"]
      )

    checks =
      for call <- calls do
        atts = Map.fetch!(attempts.by_call, call.id)
        {earlier, [{ssid, last}]} = Enum.split(atts, -1)
        req = "req:#{ssid}:#{last}"

        # Every earlier attempt expired (410 on its first poll).
        for {s, seq} <- earlier do
          assert Map.get(fates, seq) == :expired,
                 "call #{call.id}: attempt #{seq} was followed by another though its fate is #{inspect(Map.get(fates, seq))}"

          # Its first poll was answered 410 and none a result: the attempt
          # ended there. (A 410 lost to the client's timeout under load is
          # followed by more polls, answered 410 since an expired future
          # stays expired, or by a noise rule.)
          old = "req:#{s}:#{seq}"
          statuses = Map.get(polls, old, [])

          assert 410 in statuses,
                 "expired attempt #{old}: polls answered #{inspect(statuses)}"

          refute 200 in statuses, "expired attempt #{old}: polls answered #{inspect(statuses)}"
        end

        result = Map.fetch!(results, call.id)
        fate = Map.get(fates, last, :ok)
        check_fate(call, fate, result, req, polls)
        {call, result, attempts.by_attempt[{ssid, last}].body}
      end

    successes = for {call, {:ok, _} = r, body} <- checks, do: {call, r, body}

    successes
    |> Task.async_stream(
      fn {call, {:ok, got}, body} -> {call.id, check_tokens(sim, call, got, body)} end,
      max_concurrency: 4,
      timeout: 60_000
    )
    |> Map.new(fn {:ok, pair} -> pair end)
  end

  defp check_fate(call, :ok, result, req, _polls) do
    case {call.kind, result} do
      {:logprobs, {:ok, [nil | _]}} ->
        :ok

      {_, {:ok, %SampleResponse{request_id: ^req, sequences: seqs}}} ->
        assert length(seqs) == call.num_samples

        for {s, i} <- Enum.with_index(seqs) do
          assert s.sequence_id == "#{req}:#{i}"
        end

      other ->
        flunk("call #{call.id} (#{req}, fate ok) ended with #{inspect(other)}")
    end
  end

  defp check_fate(call, :submit_400, result, req, _polls) do
    assert {:error, %Error{type: :http, status: 400, retryable?: false}} = result,
           "call #{call.id} (#{req}, 400 on submit): #{inspect(result)}"
  end

  defp check_fate(call, :poll_404, result, req, polls) do
    assert {:error, %Error{type: :http, status: 404, retryable?: false, request_id: ^req}} =
             result,
           "call #{call.id} (#{req}, 404 on poll): #{inspect(result)}"

    # Only a 404 lost to the client's timeout is followed by another poll.
    statuses = Map.get(polls, req, [])
    assert statuses != [] and Enum.all?(statuses, &(&1 == 404))
  end

  defp check_fate(call, {:failed, cat}, result, req, _polls) do
    assert {:error,
            %Error{type: :request_failed, category: ^cat, retryable?: false, request_id: ^req} = e} =
             result,
           "call #{call.id} (#{req}, failed #{cat}): #{inspect(result)}"

    assert e.message =~ "chaos #{cat}"
  end

  defp check_fate(call, fate, result, req, _polls) do
    flunk("call #{call.id} ended on #{req} whose fate is #{inspect(fate)}: #{inspect(result)}")
  end

  defp check_tokens(sim, call, got, body) do
    want = TinkerSim.expected(sim, body)

    case call.kind do
      :logprobs ->
        assert got == want["prompt_logprobs"], "call #{call.id}: prompt logprobs differ"

      _ ->
        assert got.request_id == want["request_id"]

        for {s, w} <- Enum.zip(got.sequences, want["sequences"]) do
          assert s.tokens == w["tokens"], "call #{call.id}: tokens differ"
          assert s.logprobs == w["logprobs"], "call #{call.id}: logprobs differ"
        end
    end

    :checked
  end

  ## Callers killed at random points

  test "callers killed at random points: permits back within 10 ms, no further requests" do
    rounds = size(4, 25)
    :rand.seed(:exsss, {chaos_seed(), 11, 12})
    # Everything that could free a permit other than the kill's abort —
    # a held poll answered, a retry timer — takes >= 2 s here, so a late
    # permit would stand out by orders of magnitude.
    sim = start_sim(hold_ms: 2_000)
    before = baseline()
    base_retry = [base_delay_ms: 5, max_delay_ms: 20]
    # Polls wait out the 2 s hold; submits time out after 10 s.
    timings = Keyword.merge(@timings, poll_timeout: 5_000, submit_timeout: 10_000)

    # One client per kill point, each with the scenario rule that parks its
    # requests at that point.
    waiter = start_client(sim, timings: timings, retry_config: base_retry ++ [max_connections: 2])
    submit = start_client(sim, timings: timings, retry_config: base_retry ++ [max_connections: 4])

    resend =
      start_client(sim,
        retry_config: base_retry ++ [max_connections: 4],
        timings: Keyword.merge(timings, submit_backoff_base: 30_000, submit_backoff_cap: 30_000)
      )

    backoff =
      start_client(sim,
        timings: timings,
        retry_config:
          [base_delay_ms: 30_000, max_delay_ms: 30_000, jitter_pct: 0] ++
            [max_connections: 4]
      )

    poll = start_client(sim, timings: timings, retry_config: base_retry ++ [max_connections: 4])
    ssid = fn c -> SamplingClient.session(c).sampling_session_id end

    {:ok, _} =
      TinkerSim.set_scenario(sim, %{
        "rules" => [
          rule("future", %{"sampling_session_id" => ssid.(waiter)}, %{"stuck" => true}, "w"),
          rule(
            "asample",
            %{"sampling_session_id" => ssid.(submit)},
            %{"delay_ms" => 60_000},
            "s"
          ),
          rule("asample", %{"sampling_session_id" => ssid.(resend)}, %{"status" => 503}, "r"),
          rule(
            "retrieve_future",
            %{"sampling_session_id" => ssid.(backoff)},
            %{"status" => 410},
            "b"
          ),
          rule("future", %{"sampling_session_id" => ssid.(poll)}, %{"stuck" => true}, "p")
        ]
      })

    parent = self()
    next_id = :counters.new(1, [])

    spawn_caller = fn client ->
      :counters.add(next_id, 1, 1)
      id = :counters.get(next_id, 1)
      tokens = [2_000_000 + id, 7]

      pid =
        spawn(fn ->
          {:ok, _ref} =
            SamplingClient.sample_async(
              client,
              ModelInput.from_ints(tokens),
              %SamplingParams{max_tokens: 2}
            )

          send(parent, {:issued, self()})
          Process.sleep(:infinity)
        end)

      assert_receive {:issued, ^pid}, 5_000
      {id, pid}
    end

    # Two holders take both permits of `waiter` (their futures never
    # complete, so they stay polling).
    holders = for _ <- 1..2, do: spawn_caller.(waiter)
    wait_until(fn -> SamplingClient.stats(waiter).in_flight == 2 end)

    kill_at = fn pid, done? ->
      # A random point inside the phase.
      Process.sleep(:rand.uniform(15) - 1)
      t0 = System.monotonic_time(:microsecond)
      Process.exit(pid, :kill)
      us = spin_until(done?, t0)
      {us, TinkerSim.stats(sim)["uptime_us"]}
    end

    kills =
      for round <- 1..rounds, phase <- [:permit, :submit, :submit_backoff, :backoff, :poll] do
        case phase do
          :permit ->
            {id, pid} = spawn_caller.(waiter)
            wait_until(fn -> SamplingClient.stats(waiter).waiting == 1 end)
            {us, at} = kill_at.(pid, fn -> SamplingClient.stats(waiter).waiting == 0 end)
            %{phase: phase, id: id, us: us, at: at, client: waiter}

          :submit ->
            {id, pid} = spawn_caller.(submit)
            wait_until(fn -> SamplingClient.stats(submit).in_flight == 1 end)
            {us, at} = kill_at.(pid, fn -> idle?(submit) end)
            %{phase: phase, id: id, us: us, at: at, client: submit}

          :submit_backoff ->
            {id, pid} = spawn_caller.(resend)
            wait_for_log(sim, &(&1["endpoint"] == "asample" and prompt_id(&1) == id))
            {us, at} = kill_at.(pid, fn -> idle?(resend) end)
            %{phase: phase, id: id, us: us, at: at, client: resend}

          :backoff ->
            retries = SamplingClient.stats(backoff).retries
            {id, pid} = spawn_caller.(backoff)
            wait_until(fn -> SamplingClient.stats(backoff).retries == retries + 1 end)
            seq = SamplingClient.stats(backoff).next_seq_id
            {us, at} = kill_at.(pid, fn -> idle?(backoff) end)
            %{phase: phase, id: id, us: us, at: at, client: backoff, next_seq: seq}

          :poll ->
            {id, pid} = spawn_caller.(poll)
            # Submitted; a few ms later its poll is held by the simulator.
            wait_for_log(
              sim,
              &(&1["endpoint"] == "asample" and prompt_id(&1) == id and &1["status"] == 200)
            )

            Process.sleep(:rand.uniform(40))
            {us, at} = kill_at.(pid, fn -> idle?(poll) end)
            %{phase: phase, id: id, us: us, at: at, client: poll, round: round}
        end
      end

    # The holders go last (killed while polling), freeing `waiter`.
    holder_kills =
      for {id, pid} <- holders do
        free = SamplingClient.stats(waiter).available_permits

        {us, at} =
          kill_at.(pid, fn -> SamplingClient.stats(waiter).available_permits == free + 1 end)

        %{phase: :holder, id: id, us: us, at: at, client: waiter}
      end

    kills = kills ++ holder_kills

    # Longer than the hold (2 s): a poll loop that survived its caller
    # would have polled again by now. (The 503/410 clients park for 30 s
    # by design; their sample would resend or retry only after that.)
    Process.sleep(2_300)
    {log, 0} = fetch_log(sim)
    requests = requests_by_prompt(log)

    for k <- kills do
      entries = Map.get(requests, k.id, [])
      # Nothing for the caller's futures arrived after its permit was back
      # (`at`), beyond 250 ms: a request already handed to its connection
      # when the caller died may still reach the server a few ms later,
      # but any further one would come >= 2 s later (hold, retry delays).
      after_kill =
        for e <- entries, e["t_us"] > k.at + 250_000, do: {e["endpoint"], e["t_us"] - k.at}

      assert after_kill == [],
             "#{k.phase} kill of #{k.id}: requests after: #{inspect(after_kill)}"

      asamples = for e <- entries, e["endpoint"] == "asample", do: e
      polls = for e <- entries, e["endpoint"] == "retrieve_future", do: e

      # And no request beyond the one in flight at the kill.
      case k.phase do
        :permit ->
          assert entries == [], "a caller killed while waiting for a permit was submitted"

        :submit ->
          assert length(asamples) <= 1 and polls == []

        :submit_backoff ->
          assert [%{"status" => 503}] = asamples
          assert polls == []

        :backoff ->
          # One attempt: no new seq_id after the 410.
          assert [%{"status" => 200}] = asamples
          assert [%{"status" => 410}] = polls

        :poll ->
          assert length(asamples) == 1 and length(polls) <= 1

        :holder ->
          assert length(asamples) == 1
      end
    end

    for c <- [waiter, submit, resend, backoff, poll] do
      assert idle?(c), inspect(SamplingClient.stats(c))
    end

    latencies = kills |> Enum.map(& &1.us) |> Enum.sort()
    by_phase = Enum.group_by(kills, & &1.phase, & &1.us)

    report(
      "kills: #{length(kills)}; permit/waiter back after kill (µs): " <>
        "median #{median(latencies)}, p90 #{pct(latencies, 0.9)}, max #{List.last(latencies)}; " <>
        "by phase max #{inspect(Map.new(by_phase, fn {p, l} -> {p, Enum.max(l)} end))}"
    )

    # The permit is back within 10 ms of the kill. On an idle machine it
    # takes ~0.5 ms (the caller's death runs the native job's monitor,
    # which aborts the tokio task; dropping it drops the permit). This
    # 2-core machine is shared with the simulator, the VM's own schedulers
    # and parallel cargo builds, and a runnable thread can wait several ms
    # for a core, so the bound is asserted on the median, and every kill
    # must stay far below the >= 2 s that any other way of freeing the
    # permit would take.
    assert median(latencies) <= 10_000, "median permit return #{median(latencies)} µs"
    slow = for k <- kills, k.us > 100_000, do: {k.phase, k.us}
    assert slow == [], "permits back later than 100 ms: #{inspect(slow)}"

    Enum.each([waiter, submit, resend, backoff, poll], &GenServer.stop/1)
    assert_no_leftovers(before, 1)
  end

  defp idle?(client) do
    s = SamplingClient.stats(client)
    s.in_flight == 0 and s.waiting == 0 and s.available_permits == s.max_connections
  end

  defp prompt_id(%{"body" => %{"prompt" => %{"chunks" => [%{"tokens" => [first | _]} | _]}}}),
    do: first - 2_000_000

  defp prompt_id(_), do: nil

  # Requests (asample and the polls of its futures) by prompt id.
  defp requests_by_prompt(log) do
    by_req =
      for e <- log, e["endpoint"] == "asample", id = prompt_id(e), id != nil, into: %{} do
        {e["request_id"] || "req:#{e["body"]["sampling_session_id"]}:#{e["body"]["seq_id"]}", id}
      end

    Enum.group_by(
      for(e <- log, e["endpoint"] in ["asample", "retrieve_future"], do: e),
      fn
        %{"endpoint" => "asample"} = e -> prompt_id(e)
        e -> Map.get(by_req, e["request_id"])
      end
    )
  end

  ## Stuck server

  test "stuck server: every in-flight request fails with the stuck error on time, then recovery" do
    m = size(40, 200)
    timeout_ms = size(2_000, 10_000)
    # Allowed lateness: the spec's 1% of progress_timeout, plus 50 ms for
    # scheduling: the watchdog's tokio timer, then `m` sample tasks that
    # each drop their in-flight HTTP request before they reply (slow in a
    # debug build: 200 held polls take 20-90 ms to unwind on 2 tokio
    # threads, 200 sleeping retries 5-10 ms), and this process's receive
    # loop, on a 2-core machine shared with the simulator and cargo.
    # Measured: +5..15 ms for 40 requests, +30..90 ms for 200.
    slack_us = div(timeout_ms * 1000, 100) + 50_000

    # Held polls are held for longer than the test: the machine stays quiet.
    sim = start_sim(hold_ms: 60_000)
    before = baseline()

    client =
      start_client(sim,
        retry_config: [
          progress_timeout_ms: timeout_ms,
          max_connections: m,
          base_delay_ms: 30_000,
          max_delay_ms: 30_000
        ],
        timings: Keyword.merge(@timings, poll_timeout: 120_000, submit_backoff_base: 30_000)
      )

    # Requests caught in every phase: submit never answered, submit
    # resending after a 503, handler backoff after a 410, and held polls of
    # futures that never complete (the global `stuck` switch).
    {:ok, _} =
      TinkerSim.set_scenario(sim, %{
        "stuck" => true,
        "rules" => [
          rule(
            "asample",
            %{"seq_id" => for(s <- 0..(m - 1), rem(s, 5) == 0, do: s)},
            %{
              "delay_ms" => 60_000
            },
            "late"
          ),
          rule(
            "asample",
            %{"seq_id" => for(s <- 0..(m - 1), rem(s, 5) == 1, do: s)},
            %{
              "status" => 503
            },
            "503"
          ),
          rule(
            "retrieve_future",
            %{"seq_id" => for(s <- 0..(m - 1), rem(s, 5) == 2, do: s)},
            %{"status" => 410},
            "410"
          )
        ]
      })

    prompt = ModelInput.from_ints([5, 6, 7])
    params = %SamplingParams{max_tokens: 3}
    t0 = System.monotonic_time(:microsecond)

    refs =
      for _ <- 1..m do
        {:ok, ref} = SamplingClient.sample_async(client, prompt, params)
        ref
      end

    arrivals =
      for ref <- refs do
        receive do
          {:tinkex_sample, ^ref, result} -> {System.monotonic_time(:microsecond) - t0, result}
        after
          timeout_ms * 4 -> flunk("a request was not failed by the watchdog")
        end
      end

    message = "No progress made in #{div(timeout_ms, 1000)}.0s. Requests appear to be stuck."

    for {_us, result} <- arrivals do
      assert {:error, %Error{type: :stuck, retryable?: false, message: ^message}} = result
    end

    times = arrivals |> Enum.map(&elem(&1, 0)) |> Enum.sort()

    report(
      "stuck: #{m} requests failed #{hd(times)}..#{List.last(times)} µs after the first call (progress_timeout #{timeout_ms} ms, bound #{timeout_ms * 1000 + slack_us} µs)"
    )

    assert hd(times) >= timeout_ms * 1000
    assert List.last(times) <= timeout_ms * 1000 + slack_us

    stats = SamplingClient.stats(client)
    assert %{in_flight: 0, waiting: 0, stuck_events: 1} = stats
    assert stats.available_permits == m

    # The server recovers: new requests succeed.
    {:ok, _} = TinkerSim.set_scenario(sim, %{"stuck" => false, "rules" => []})
    {:ok, task} = SamplingClient.sample(client, prompt, params)
    assert {:ok, %SampleResponse{request_id: rid, sequences: [seq]}} = Task.await(task, 10_000)
    [entry] = for e <- TinkerSim.log(sim, endpoint: "asample"), e["request_id"] == rid, do: e
    assert seq.tokens == hd(TinkerSim.expected(sim, entry["body"])["sequences"])["tokens"]
    assert %{in_flight: 0, stuck_events: 1, processed: 1} = SamplingClient.stats(client)

    GenServer.stop(client)
    assert_no_leftovers(before, 1)
  end

  ## Simulator killed and restarted

  test "simulator killed and restarted on the same port: requests retry and complete" do
    n = size(300, 2_000)
    :rand.seed(:exsss, {chaos_seed(), 21, 22})
    sim1 = start_sim(hold_ms: 100, latency_ms: "5..30")
    before = baseline()

    # The simulator keeps no state across a restart: polls of futures made
    # by the first instance get 404 from the second, and the Python SDK
    # fails such a poll for good (whatever the retry rule says of 404:
    # listing it below must not turn it into a new attempt). Only the
    # futures the first instance held can be lost: at most
    # `max_connections` of them.
    max_connections = 32

    client =
      start_client(sim1,
        retry_config: [
          base_delay_ms: 5,
          max_delay_ms: 20,
          max_connections: max_connections,
          retry_statuses: [404, 408, 409, 429, 500..599]
        ]
      )

    ssid = SamplingClient.session(client).sampling_session_id

    calls =
      for id <- 0..(n - 1) do
        %{new_call(id, 0) | kind: :async}
      end

    refs = Map.new(calls, fn call -> {issue(call, {client}), call} end)

    # Kill the simulator (SIGKILL: no goodbye) once a third has resolved.
    {done, refs} = await_results(refs, div(n, 3), %{})
    os_pid = Port.info(sim1.os_port, :os_pid) |> elem(1)
    {_, 0} = System.cmd("kill", ["-9", Integer.to_string(os_pid)])
    assert_receive {_, {:exit_status, _}}, 5_000
    down_at = System.monotonic_time(:millisecond)
    Process.sleep(200)
    sim2 = restart_sim(sim1.port)
    up_after = System.monotonic_time(:millisecond) - down_at
    {done, refs} = await_results(refs, map_size(refs), done)
    assert refs == %{}
    assert map_size(done) == n

    log2 = TinkerSim.log(sim2)
    created2 = for e <- log2, e["endpoint"] == "asample", into: MapSet.new(), do: e["request_id"]

    lost =
      for {call, result} <- done, reduce: 0 do
        lost ->
          case result do
            {:ok, %SampleResponse{request_id: "req:" <> _ = rid, sequences: seqs}} ->
              seq_id = rid |> String.split(":") |> List.last() |> String.to_integer()
              want = TinkerSim.expected(sim2, asample_body(ssid, seq_id, call))
              assert rid == want["request_id"]
              assert Enum.map(seqs, & &1.tokens) == Enum.map(want["sequences"], & &1["tokens"])
              lost

            {:error, %Error{type: :http, status: 404, retryable?: false, request_id: rid}} ->
              refute MapSet.member?(created2, rid), "call #{call.id}: #{rid} was not lost"
              lost + 1

            other ->
              flunk("call #{call.id}: #{inspect(other)}")
          end
      end

    assert lost <= max_connections, "#{lost} futures lost"

    # Some requests really crossed the outage: resent submits, or polls of
    # lost futures.
    assert Enum.any?(log2, &(&1["endpoint"] in ["asample", "retrieve_future"]))

    # Something crossed the outage: a future of the first instance polled
    # (and lost) at the second, a new attempt, or a resent submit.
    assert lost > 0 or SamplingClient.stats(client).retries > 0 or
             Enum.any?(log2, &(&1["headers"]["x-stainless-retry-count"] not in [nil, "0"]))

    assert idle?(client)

    report(
      "restart: #{n} samples, simulator down #{up_after} ms, #{lost} futures lost, " <>
        "#{SamplingClient.stats(client).retries} retries, #{length(log2)} requests to the 2nd instance"
    )

    GenServer.stop(client)
    TinkerSim.stop(sim2)
    assert_no_leftovers(before, 1)
  end

  defp await_results(refs, 0, done), do: {done, refs}

  defp await_results(refs, k, done) do
    receive do
      {:tinkex_sample, ref, result} when is_map_key(refs, ref) ->
        {call, refs} = Map.pop(refs, ref)
        await_results(refs, k - 1, Map.put(done, call, result))
    after
      60_000 -> flunk("#{map_size(refs)} samples never resolved")
    end
  end

  defp restart_sim(port, tries \\ 50) do
    TinkerSim.start(hold_ms: 100, latency_ms: "5..30", args: ["--port", Integer.to_string(port)])
  rescue
    e in RuntimeError ->
      # The old socket may linger a moment after the kill.
      if tries == 0, do: reraise(e, __STACKTRACE__)
      Process.sleep(20)
      restart_sim(port, tries - 1)
  end

  defp asample_body(ssid, seq_id, call) do
    p = call.params

    %{
      "type" => "sample",
      "sampling_session_id" => ssid,
      "seq_id" => seq_id,
      "num_samples" => call.num_samples,
      "prompt" => %{"chunks" => [%{"type" => "encoded_text", "tokens" => call.tokens}]},
      "sampling_params" =>
        %{
          "max_tokens" => p.max_tokens,
          "temperature" => p.temperature / 1,
          "top_k" => p.top_k,
          "top_p" => p.top_p / 1
        }
        |> then(&if(p.seed, do: Map.put(&1, "seed", p.seed), else: &1)),
      "prompt_logprobs" => false,
      "topk_prompt_logprobs" => 0
    }
  end

  ## Helpers

  defp start_sim(opts) do
    sim = TinkerSim.start(opts)
    on_exit(fn -> TinkerSim.stop(sim) end)
    sim
  end

  defp start_client(sim, opts) do
    defaults = [
      base_url: sim.base_url,
      api_key: @key,
      base_model: "Qwen/Qwen3-8B",
      timings: @timings
    ]

    {:ok, client} = SamplingClient.start_link(Keyword.merge(defaults, opts))
    client
  end

  # The simulator's clock (µs since its start) is this VM's monotonic
  # clock minus the offset returned.
  defp sim_clock_offset(sim) do
    t1 = System.monotonic_time(:microsecond)
    up = TinkerSim.stats(sim)["uptime_us"]
    t2 = System.monotonic_time(:microsecond)
    div(t1 + t2, 2) - up
  end

  defp fetch_log(sim, since \\ 0, acc \\ []) do
    {:ok, 200, %{"entries" => entries, "next" => next, "dropped" => dropped}} =
      TinkerSim.request(sim, :get, "/_sim/log?since=#{since}&limit=5000", nil, api_key: nil)

    case entries do
      [] -> {acc |> Enum.reverse() |> Enum.concat(), dropped}
      _ -> fetch_log(sim, next, [entries | acc])
    end
  end

  defp wait_for_log(sim, pred, deadline \\ nil) do
    deadline = deadline || System.monotonic_time(:millisecond) + 5_000
    {log, _} = fetch_log(sim)

    cond do
      Enum.any?(log, pred) ->
        :ok

      System.monotonic_time(:millisecond) > deadline ->
        flunk("the expected request never reached the simulator")

      true ->
        Process.sleep(5)
        wait_for_log(sim, pred, deadline)
    end
  end

  # Polls `fun` in a tight loop; the µs from `t0` until it holds.
  defp spin_until(fun, t0) do
    cond do
      fun.() ->
        System.monotonic_time(:microsecond) - t0

      System.monotonic_time(:microsecond) - t0 > 5_000_000 ->
        flunk("the permit never came back")

      true ->
        spin_until(fun, t0)
    end
  end

  defp median(sorted), do: Enum.at(sorted, div(length(sorted), 2))
  defp pct(sorted, p), do: Enum.at(sorted, min(length(sorted) - 1, trunc(length(sorted) * p)))

  defp baseline do
    gc_all()

    %{
      procs: Process.list(),
      handlers: RetryHandler.live_count(),
      limiters: RateLimiter.count()
    }
  end

  defp gc_all, do: Enum.each(Process.list(), &:erlang.garbage_collect/1)

  # No process, handler or limiter left beyond what the test made (one
  # limiter per {base_url, api_key} is kept for the VM's life by design).
  defp assert_no_leftovers(before, new_limiters) do
    wait_until(
      fn ->
        gc_all()

        leftovers(before.procs) == [] and
          RetryHandler.live_count() <= before.handlers
      end,
      10_000
    )

    assert RateLimiter.count() <= before.limiters + new_limiters
  rescue
    e in ExUnit.AssertionError ->
      info = for p <- leftovers(before.procs), do: Process.info(p, [:initial_call, :dictionary])

      flunk(
        "#{Exception.message(e)}: leftover processes #{inspect(info, limit: 20)}, " <>
          "handlers #{RetryHandler.live_count()} (before #{before.handlers})"
      )
  end

  # New processes, not counting those of :inets and of the kernel's
  # on-demand services (the simulator helper talks to /_sim/* through
  # :httpc, which keeps connection handlers and may start the native
  # resolver, `inet_gethost_native`).
  defp leftovers(before) do
    (Process.list() -- before)
    |> Enum.filter(&Process.alive?/1)
    |> Enum.reject(&(:application.get_application(&1) == {:ok, :inets}))
    |> Enum.reject(&kernel_service?/1)
  end

  defp kernel_service?(pid) do
    case Process.info(pid, :dictionary) do
      {:dictionary, d} ->
        match?({:inet_gethost_native, _, _}, d[:"$initial_call"]) or
          :kernel_safe_sup in (d[:"$ancestors"] || []) or
          Keyword.has_key?(d, :rid)

      nil ->
        true
    end
  end
end
