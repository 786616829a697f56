defmodule TinkexNative.SamplingClientLifecycleTest do
  # The client's lifecycle: clones of a sampling session and their seq_id
  # ranges, start-up failures seen by a caller that does not trap exits,
  # async set-up, the error of a client that is not running, supervision,
  # and ending the session on stop.
  use ExUnit.Case, async: true

  import TinkexNative.Test.Wait

  alias TinkexNative.{Error, SamplingClient}
  alias TinkexNative.Test.TinkerSim
  alias TinkexNative.Types.{ModelInput, SampleResponse, SamplingParams}

  @key "tml-lifecycle-test"
  @stride 1_000_000_000
  @params %SamplingParams{max_tokens: 5, temperature: 0.7}

  setup do
    sim = TinkerSim.start(hold_ms: 2_000)
    on_exit(fn -> TinkerSim.stop(sim) end)
    %{sim: sim}
  end

  defp opts(sim, extra) do
    Keyword.merge(
      [
        base_url: sim.base_url,
        api_key: @key,
        retry_config: [base_delay_ms: 5, max_delay_ms: 20],
        heartbeat_interval_ms: 600_000,
        # Clients still running when a test ends (and its simulator with
        # it) give up ending their sessions sooner.
        finish_timeout_ms: 500
      ],
      extra
    )
  end

  defp start!(sim, extra) do
    {:ok, client} = SamplingClient.start_link(opts(sim, extra))
    client
  end

  defp original(sim, extra \\ []), do: start!(sim, [base_model: "Qwen/Qwen3-8B"] ++ extra)

  defp clone(sim, of, extra \\ []) do
    start!(sim, [sampling_session_id: SamplingClient.session(of).sampling_session_id] ++ extra)
  end

  defp sample!(client, tokens) do
    {:ok, task} = SamplingClient.sample(client, ModelInput.from_ints(tokens), @params)
    {:ok, %SampleResponse{} = r} = Task.await(task, 10_000)
    r
  end

  defp asamples(sim), do: TinkerSim.log(sim, endpoint: "asample")

  # What the simulator produces for this asample: checks that a result is
  # the one of its own prompt and seq_id.
  defp expected(sim, entry), do: hd(TinkerSim.expected(sim, entry["body"])["sequences"])["tokens"]

  defp finishes(sim), do: TinkerSim.log(sim, endpoint: "sessions/finish")

  defp set_flags(sim, flags),
    do: {:ok, _} = TinkerSim.set_scenario(sim, %{"client_config" => flags})

  # Samples `prompt_a` on `a` and `prompt_b` on `b`, then checks that no
  # asample was a duplicate and that each got the tokens of its own prompt.
  defp assert_independent(sim, {a, prompt_a}, {b, prompt_b}) do
    ra = sample!(a, prompt_a)
    rb = sample!(b, prompt_b)
    log = asamples(sim)
    assert Enum.map(log, & &1["outcome"]) == ["created", "created"]
    [ea, eb] = Enum.sort_by(log, & &1["t_us"])
    assert ea["body"]["prompt"]["chunks"] |> hd() |> Map.fetch!("tokens") == prompt_a
    assert eb["body"]["prompt"]["chunks"] |> hd() |> Map.fetch!("tokens") == prompt_b
    assert hd(ra.sequences).tokens == expected(sim, ea)
    assert hd(rb.sequences).tokens == expected(sim, eb)
    {ea["body"]["seq_id"], eb["body"]["seq_id"]}
  end

  describe "clones" do
    test "without sample_join_sampling_session a clone starts at 1e9 * r and gets its own results",
         %{sim: sim} do
      a = original(sim)
      b = clone(sim, a)
      assert {0, seq_b} = assert_independent(sim, {a, [1, 2, 3]}, {b, [9, 9, 9, 9]})
      assert rem(seq_b, @stride) == 0 and div(seq_b, @stride) in 1..1_000_000_000
      assert TinkerSim.log(sim, endpoint: "join_sampling_session") == []
      # The clone counts on from its base.
      sample!(b, [9])
      assert Enum.max(for e <- asamples(sim), do: e["body"]["seq_id"]) == seq_b + 1
    end

    test "with sample_join_sampling_session clones join and start at 1e9 * client_counter",
         %{sim: sim} do
      set_flags(sim, %{"sample_join_sampling_session" => true})
      a = original(sim)
      ssid = SamplingClient.session(a).sampling_session_id
      b = clone(sim, a)
      c = clone(sim, a)
      joins = TinkerSim.log(sim, endpoint: "join_sampling_session")

      assert for(j <- joins, do: j["body"]) == [
               %{"sampling_session_id" => ssid, "type" => "join_sampling_session"},
               %{"sampling_session_id" => ssid, "type" => "join_sampling_session"}
             ]

      assert {0, @stride} = assert_independent(sim, {a, [1, 2, 3]}, {b, [9, 9, 9, 9]})
      sample!(c, [5, 5])

      assert Enum.sort(for e <- asamples(sim), do: e["body"]["seq_id"]) == [
               0,
               @stride,
               2 * @stride
             ]

      # The original does not join.
      assert length(TinkerSim.log(sim, endpoint: "join_sampling_session")) == 2
    end

    test "a client_counter whose range a client here uses is asked for again", %{sim: sim} do
      set_flags(sim, %{"sample_join_sampling_session" => true})

      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "rules" => [
            # The first join answers 1 without counting it: the simulator's
            # own counter then answers 1 again to the next join.
            %{
              "endpoint" => "join_sampling_session",
              "match" => %{"first" => 1},
              "action" => %{
                "status" => 200,
                "body" => %{"type" => "join_sampling_session", "client_counter" => 1}
              }
            }
          ]
        })

      a = original(sim)
      b = clone(sim, a)
      c = clone(sim, a)
      assert length(TinkerSim.log(sim, endpoint: "join_sampling_session")) == 3
      assert SamplingClient.stats(b).next_seq_id == @stride
      assert SamplingClient.stats(c).next_seq_id == 2 * @stride
    end

    test "a service that only repeats a taken client_counter fails the clone's start", %{
      sim: sim
    } do
      set_flags(sim, %{"sample_join_sampling_session" => true})

      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "rules" => [
            %{
              "endpoint" => "join_sampling_session",
              "action" => %{
                "status" => 200,
                "body" => %{"type" => "join_sampling_session", "client_counter" => 0}
              }
            }
          ]
        })

      a = original(sim)

      assert {:error, %Error{type: :internal, message: msg}} =
               SamplingClient.start_link(
                 opts(sim, sampling_session_id: SamplingClient.session(a).sampling_session_id)
               )

      assert msg =~ "client_counter 0"
    end

    test "many clones in one VM never share a range", %{sim: sim} do
      a = original(sim)
      clones = for _ <- 1..20, do: clone(sim, a)

      bases = for c <- [a | clones], do: SamplingClient.stats(c).next_seq_id
      assert length(Enum.uniq(bases)) == 21
      assert Enum.all?(bases, &(rem(&1, @stride) == 0))
    end

    test "session/1 gives what a clone on another process needs", %{sim: sim} do
      a = original(sim)
      %{sampling_session_id: ssid} = SamplingClient.session(a)
      parent = self()

      # A process with no tie to `a` but the id (as another node would have).
      spawn_link(fn ->
        {:ok, b} = SamplingClient.start_link(opts(sim, sampling_session_id: ssid))
        send(parent, {:clone, SamplingClient.session(b), sample!(b, [4, 4])})
      end)

      assert_receive {:clone, %{sampling_session_id: ^ssid, session_id: nil}, _}, 10_000
      [entry] = asamples(sim)
      assert entry["body"]["sampling_session_id"] == ssid
      assert entry["body"]["seq_id"] >= @stride
    end
  end

  describe "start_link/1 from a caller that does not trap exits" do
    # Runs `fun` in a fresh process that does not trap exits; once `fun`
    # returned, waits until that process has no link left (an exit signal
    # on the way either removes the link or stops the process), then exits
    # :finished. Returns {fun's result, the process's exit reason}.
    defp in_plain_process(fun) do
      parent = self()

      {pid, ref} =
        spawn_monitor(fn ->
          false = Process.flag(:trap_exit, false)
          send(parent, {:result, self(), fun.()})
          wait_until(fn -> Process.info(self(), :links) == {:links, []} end)
          exit(:finished)
        end)

      assert_receive {:DOWN, ^ref, :process, ^pid, reason}, 20_000

      result =
        receive do
          {:result, ^pid, r} -> r
        after
          0 -> :no_result
        end

      {result, reason}
    end

    test "a refusing service: {:error, %Error{}}, and the caller lives on", %{sim: sim} do
      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "rules" => [%{"endpoint" => "create_session", "action" => %{"status" => 403}}]
        })

      assert {{:error, %Error{type: :http, status: 403}}, :finished} =
               in_plain_process(fn ->
                 SamplingClient.start_link(opts(sim, base_model: "m"))
               end)
    end

    test "a set-up timeout: {:error, %Error{type: :timeout}}, and the caller lives on", %{
      sim: sim
    } do
      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "rules" => [%{"endpoint" => "create_session", "action" => %{"delay_ms" => 5_000}}]
        })

      assert {{:error, %Error{type: :timeout}}, :finished} =
               in_plain_process(fn ->
                 SamplingClient.start_link(opts(sim, base_model: "m", init_timeout_ms: 200))
               end)
    end

    test "a clone whose join fails: the error, and the caller lives on", %{sim: sim} do
      set_flags(sim, %{"sample_join_sampling_session" => true})

      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "rules" => [%{"endpoint" => "join_sampling_session", "action" => %{"status" => 404}}]
        })

      assert {{:error, %Error{type: :http, status: 404}}, :finished} =
               in_plain_process(fn ->
                 SamplingClient.start_link(opts(sim, sampling_session_id: "s:sample:0"))
               end)
    end

    test "a name already taken: {:error, {:already_started, pid}}, and the caller lives on", %{
      sim: sim
    } do
      name = :"lifecycle_#{System.unique_integer([:positive])}"
      a = original(sim, name: name)

      assert {{:error, {:already_started, ^a}}, :finished} =
               in_plain_process(fn ->
                 SamplingClient.start_link(opts(sim, base_model: "m", name: name))
               end)
    end
  end

  describe "async_setup: true" do
    test "start_link returns before the set-up; a sample at once waits for it", %{sim: sim} do
      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "rules" => [%{"endpoint" => "create_session", "action" => %{"delay_ms" => 1_000}}]
        })

      t0 = System.monotonic_time(:millisecond)
      {:ok, client} = SamplingClient.start_link(opts(sim, base_model: "m", async_setup: true))
      assert System.monotonic_time(:millisecond) - t0 < 700
      assert TinkerSim.log(sim, endpoint: "create_sampling_session") == []
      # Responsive while it sets up.
      assert %{setup: {_, _, _}} = :sys.get_state(client)

      {:ok, task} = SamplingClient.sample(client, ModelInput.from_ints([1, 2]), @params)
      assert System.monotonic_time(:millisecond) - t0 >= 1_000
      assert {:ok, %SampleResponse{}} = Task.await(task, 10_000)
      assert %{session_id: "sim-session-" <> _} = SamplingClient.session(client)
    end

    test "a failed set-up: waiting callers get the error, the client stops with it", %{sim: sim} do
      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "rules" => [
            %{
              "endpoint" => "create_session",
              "action" => %{"status" => 403, "delay_ms" => 200}
            }
          ]
        })

      Process.flag(:trap_exit, true)
      {:ok, client} = SamplingClient.start_link(opts(sim, base_model: "m", async_setup: true))
      ref = Process.monitor(client)

      assert {:error, %Error{type: :http, status: 403}} =
               SamplingClient.sample(client, ModelInput.from_ints([1]), @params)

      assert_receive {:DOWN, ^ref, :process, ^client, {:shutdown, %Error{status: 403}}}

      assert {:error, %Error{type: :client_not_running}} =
               SamplingClient.sample(client, ModelInput.from_ints([1]), @params)
    end
  end

  describe "a client that is not running" do
    test "every function returns {:error, %Error{type: :client_not_running}}", %{sim: sim} do
      stopped = original(sim)
      GenServer.stop(stopped)
      prompt = ModelInput.from_ints([1])

      for client <- [stopped, :no_such_client, {:global, :no_such_client}] do
        for result <- [
              SamplingClient.sample(client, prompt, @params),
              SamplingClient.sample_async(client, prompt, @params),
              SamplingClient.compute_logprobs(client, prompt),
              SamplingClient.stats(client),
              SamplingClient.session(client),
              SamplingClient.retry_config(client)
            ] do
          assert {:error, %Error{type: :client_not_running, message: msg}} = result
          assert msg == "no running TinkexNative.SamplingClient: #{inspect(client)}"
        end
      end
    end
  end

  describe "supervision" do
    test "two unnamed clients in one supervisor; stopping it ends both sessions", %{sim: sim} do
      spec = {SamplingClient, opts(sim, base_model: "Qwen/Qwen3-8B")}
      {:ok, sup} = Supervisor.start_link([spec, spec], strategy: :one_for_one)
      children = Supervisor.which_children(sup)
      assert length(children) == 2
      assert [{_, pid1, :worker, _}, {_, pid2, :worker, _}] = children
      ids = for c <- [pid1, pid2], do: SamplingClient.session(c).session_id
      assert length(Enum.uniq(ids)) == 2

      Supervisor.stop(sup)
      log = finishes(sim)

      assert Enum.sort(for e <- log, do: e["path"]) ==
               Enum.sort(for id <- ids, do: "/api/v1/sessions/#{id}/finish")

      assert Enum.all?(
               log,
               &(&1["body"] == %{"reason" => %{"type" => "success"}, "detail" => nil})
             )
    end

    test "the child spec leaves room for the finish", %{sim: sim} do
      assert %{shutdown: 5_000} = SamplingClient.child_spec(opts(sim, base_model: "m"))

      assert %{shutdown: 9_000, id: :named} =
               SamplingClient.child_spec(opts(sim, name: :named, finish_timeout_ms: 8_000))
    end
  end

  describe "ending the session" do
    test "a normal stop sends one finish with reason success", %{sim: sim} do
      client = original(sim)
      %{session_id: id} = SamplingClient.session(client)
      :ok = GenServer.stop(client)

      assert [%{"path" => path, "status" => 200, "body" => body}] = finishes(sim)
      assert path == "/api/v1/sessions/#{id}/finish"
      assert body == %{"reason" => %{"type" => "success"}, "detail" => nil}
    end

    test "an abnormal stop sends errored", %{sim: sim} do
      client = original(sim)
      Process.unlink(client)
      :ok = GenServer.stop(client, {:boom, @key})

      assert [%{"body" => %{"reason" => %{"type" => "errored"}, "detail" => detail}}] =
               finishes(sim)

      assert detail =~ "boom"
      refute detail =~ @key
    end

    test "the parent exiting abnormally stops the client, which sends errored", %{sim: sim} do
      parent = self()

      starter =
        spawn(fn ->
          send(parent, {:client, original(sim)})
          receive do: (:crash -> exit(:crashed))
        end)

      assert_receive {:client, client}
      ref = Process.monitor(client)
      send(starter, :crash)
      assert_receive {:DOWN, ^ref, :process, ^client, :crashed}, 5_000
      assert [%{"body" => %{"reason" => %{"type" => "errored"}}}] = finishes(sim)
    end

    test "clients on an existing session end nothing", %{sim: sim} do
      a = original(sim)
      b = clone(sim, a)
      :ok = GenServer.stop(b)
      assert finishes(sim) == []
      :ok = GenServer.stop(a)
      assert length(finishes(sim)) == 1
    end

    test "a service that does not answer the finish delays the stop by finish_timeout_ms at most",
         %{sim: sim} do
      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "rules" => [%{"endpoint" => "sessions/finish", "action" => %{"delay_ms" => 1_500}}]
        })

      client = original(sim, finish_timeout_ms: 300)
      t0 = System.monotonic_time(:millisecond)
      :ok = GenServer.stop(client)
      took = System.monotonic_time(:millisecond) - t0
      assert took >= 250 and took < 1_200, "the stop took #{took} ms"
      # It was sent (the simulator logs it once its delay is over).
      wait_until(fn -> length(finishes(sim)) == 1 end)
    end

    test "a stopped service delays the stop by finish_timeout_ms at most", %{sim: sim} do
      client = original(sim, finish_timeout_ms: 300)
      TinkerSim.stop(sim)
      t0 = System.monotonic_time(:millisecond)
      :ok = GenServer.stop(client)
      took = System.monotonic_time(:millisecond) - t0
      assert took < 1_200, "the stop took #{took} ms"
    end
  end
end
