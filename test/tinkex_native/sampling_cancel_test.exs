defmodule TinkexNative.SamplingCancelTest do
  # Cancellation, deadlines and the dynamic config of
  # TinkexNative.SamplingClient, with wire facts from the simulator's log.
  use ExUnit.Case, async: true

  import TinkexNative.Test.Wait

  alias TinkexNative.{Error, SamplingClient}
  alias TinkexNative.Test.TinkerSim
  alias TinkexNative.Types.{ModelInput, SampleResponse, SamplingParams}

  @key "tml-sampling-cancel-test"
  @timings [
    rate_limit_small: 40,
    submit_backoff_base: 10,
    submit_backoff_cap: 40,
    poll_backoff_base: 10,
    poll_backoff_cap: 40
  ]
  # The first poll of every future answers at once, so a future shows in
  # the log as soon as its sample is polling; the next poll is held.
  @first_poll_at_once %{
    "endpoint" => "retrieve_future",
    "match" => %{"poll" => 1},
    "action" => %{"try_again" => %{}}
  }
  @cancel_on %{"sample_cancel_enabled" => true}

  setup do
    sim = TinkerSim.start(hold_ms: 2_000)
    on_exit(fn -> TinkerSim.stop(sim) end)
    %{sim: sim}
  end

  defp start_client(sim, opts \\ []) do
    TinkerSim.start_client!(
      sim,
      Keyword.merge(
        [api_key: @key, timings: @timings, retry_config: [base_delay_ms: 5, max_delay_ms: 20]],
        opts
      )
    )
  end

  # Samples are held while polling, and announced when abandoned.
  defp polling_scenario(sim, dynamic_config \\ @cancel_on, rules \\ []) do
    {:ok, _} =
      TinkerSim.set_scenario(sim, %{
        "stuck" => true,
        "dynamic_config" => dynamic_config,
        "rules" => [@first_poll_at_once | rules]
      })
  end

  defp prompt, do: ModelInput.from_ints([11, 12, 13])
  defp params, do: %SamplingParams{max_tokens: 6}

  defp async!(client, opts \\ []) do
    {:ok, ref} = SamplingClient.sample_async(client, prompt(), params(), opts)
    ref
  end

  # Until n futures got their first poll (answered by rule 0; abandoned
  # polls log entries of their own, which must not count).
  defp wait_polling(sim, n) do
    wait_until(fn ->
      Enum.count(TinkerSim.log(sim, endpoint: "retrieve_future"), &(&1["rule"] == 0)) >= n
    end)
  end

  defp request_ids(sim) do
    for e <- TinkerSim.log(sim, endpoint: "asample"), e["status"] == 200, do: e["request_id"]
  end

  defp cancelled_ids(sim) do
    for e <- TinkerSim.log(sim, endpoint: "cancel_future"), do: e["body"]["request_id"]
  end

  defp wait_sent(client, n) do
    wait_until(fn -> SamplingClient.stats(client).cancels.sent >= n end)
  end

  # Exactly one message for `ref`, within `ms`; returns its result.
  defp one_message(ref, ms \\ 5_000) do
    assert_receive {:tinkex_sample, ^ref, result}, ms
    refute_receive {:tinkex_sample, ^ref, _}, 100
    result
  end

  defp elapsed_ms(t0), do: System.monotonic_time(:millisecond) - t0

  describe "dynamic config" do
    test "is read at start; a 404 means the defaults, and nothing is announced", %{sim: sim} do
      polling_scenario(sim, @cancel_on, [
        %{"endpoint" => "client/dynamic_config", "action" => %{"status" => 404}}
      ])

      client = start_client(sim)

      assert SamplingClient.stats(client).dynamic_config == %{
               refresh_interval_sec: 300,
               sample_cancel_enabled: false,
               sample_cancel_max_batch_size: 64
             }

      assert [%{"status" => 404, "method" => "POST"}] =
               TinkerSim.log(sim, endpoint: "client/dynamic_config")

      ref = async!(client)
      wait_polling(sim, 1)
      assert :ok = SamplingClient.cancel(client, ref)
      assert {:error, %Error{type: :cancelled}} = one_message(ref)
      assert SamplingClient.stats(client).cancels.announced == 0
    end

    test "nothing is announced while disabled; a refresh turns it on", %{sim: sim} do
      polling_scenario(sim, %{"refresh_interval_sec" => 0})
      client = start_client(sim, timings: [min_config_refresh: 50] ++ @timings)
      assert SamplingClient.stats(client).dynamic_config.sample_cancel_enabled == false

      # Every way to abandon a polling sample, while disabled.
      ref = async!(client)
      {:ok, task} = SamplingClient.sample(client, prompt(), params())
      parent = self()

      caller =
        spawn(fn ->
          {:ok, _} = SamplingClient.sample_async(client, prompt(), params())
          send(parent, :started)
          Process.sleep(:infinity)
        end)

      assert_receive :started
      wait_polling(sim, 3)
      assert :ok = SamplingClient.cancel(client, ref)
      assert {:error, %Error{type: :cancelled}} = one_message(ref)
      assert Task.shutdown(task, :brutal_kill) == nil
      Process.exit(caller, :kill)
      wait_until(fn -> SamplingClient.stats(client).in_flight == 0 end)

      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "dynamic_config" => %{
            "refresh_interval_sec" => 0,
            "sample_cancel_enabled" => true,
            "sample_cancel_max_batch_size" => 5
          }
        })

      wait_until(fn -> SamplingClient.stats(client).dynamic_config.sample_cancel_enabled end)
      assert SamplingClient.stats(client).dynamic_config.sample_cancel_max_batch_size == 5

      ref = async!(client)
      wait_polling(sim, 4)
      [last_rid] = request_ids(sim) -- Enum.take(request_ids(sim), 3)
      assert :ok = SamplingClient.cancel(client, ref)
      assert {:error, %Error{type: :cancelled}} = one_message(ref)
      wait_sent(client, 1)
      # The drain is FIFO: had a disabled cancel been queued, it would be here.
      assert cancelled_ids(sim) == [last_rid]
      assert %{announced: 1, sent: 1, failed: 0} = SamplingClient.stats(client).cancels
    end
  end

  describe "cancelling a polling sample (sample_cancel_enabled)" do
    test "cancel/2: one :cancelled message, the permit back, one cancel_future", %{sim: sim} do
      polling_scenario(sim)
      client = start_client(sim, retry_config: [max_connections: 2])
      ref = async!(client)
      wait_polling(sim, 1)
      assert SamplingClient.stats(client).available_permits == 1
      assert :ok = SamplingClient.cancel(client, ref)

      assert {:error, %Error{type: :cancelled, message: "the sample was cancelled"}} =
               one_message(ref)

      wait_until(fn -> SamplingClient.stats(client).available_permits == 2 end)
      wait_sent(client, 1)
      assert cancelled_ids(sim) == request_ids(sim)
      assert TinkerSim.stats(sim)["futures_cancelled"] == 1
      # A second cancel finds it finished, and sends nothing more.
      assert {:error, :finished} = SamplingClient.cancel(client, ref)
      refute_receive {:tinkex_sample, ^ref, _}, 50
    end

    test "cancel/2 after the result: {:error, :finished}, and only the result", %{sim: sim} do
      client = start_client(sim)
      ref = async!(client)
      assert {:ok, %SampleResponse{}} = one_message(ref)
      assert {:error, :finished} = SamplingClient.cancel(client, ref)
      refute_receive {:tinkex_sample, ^ref, _}, 50
    end

    test "cancel/2 of something else is a validation error", %{sim: sim} do
      client = start_client(sim)

      assert {:error, %Error{type: :validation, message: "invalid value for :ref: " <> _}} =
               SamplingClient.cancel(client, make_ref())
    end

    test "Task.shutdown/1 of sample/4", %{sim: sim} do
      polling_scenario(sim)
      client = start_client(sim, retry_config: [max_connections: 1])
      {:ok, task} = SamplingClient.sample(client, prompt(), params())
      wait_polling(sim, 1)
      assert Task.shutdown(task, :brutal_kill) == nil
      wait_until(fn -> SamplingClient.stats(client).available_permits == 1 end)
      wait_sent(client, 1)
      assert cancelled_ids(sim) == request_ids(sim)
    end

    test "the caller dying", %{sim: sim} do
      polling_scenario(sim)
      client = start_client(sim, retry_config: [max_connections: 1])
      parent = self()

      caller =
        spawn(fn ->
          {:ok, _} = SamplingClient.sample_async(client, prompt(), params())
          send(parent, :started)
          Process.sleep(:infinity)
        end)

      assert_receive :started
      wait_polling(sim, 1)
      Process.exit(caller, :kill)
      wait_until(fn -> SamplingClient.stats(client).available_permits == 1 end)
      wait_sent(client, 1)
      assert cancelled_ids(sim) == request_ids(sim)
    end

    test "a sample cancelled before it was submitted announces nothing", %{sim: sim} do
      polling_scenario(sim)
      client = start_client(sim, retry_config: [max_connections: 1])
      first = async!(client)
      wait_polling(sim, 1)
      waiting = async!(client)
      wait_until(fn -> SamplingClient.stats(client).waiting == 1 end)
      assert :ok = SamplingClient.cancel(client, waiting)
      assert {:error, %Error{type: :cancelled}} = one_message(waiting)
      assert SamplingClient.stats(client).waiting == 0
      assert :ok = SamplingClient.cancel(client, first)
      assert {:error, %Error{type: :cancelled}} = one_message(first)
      wait_sent(client, 1)
      # Only the submitted one has a future to cancel.
      assert [_] = request_ids(sim)
      assert cancelled_ids(sim) == request_ids(sim)
      assert SamplingClient.stats(client).cancels.announced == 1
    end

    test "N cancels go out in ceil(N / batch) rounds of one call per id", %{sim: sim} do
      # The first cancel_future is held 1.5 s: the 7 cancels made meanwhile
      # queue up behind it, so the rounds that follow are full.
      polling_scenario(sim, Map.put(@cancel_on, "sample_cancel_max_batch_size", 3), [
        %{
          "name" => "blocker",
          "endpoint" => "cancel_future",
          "match" => %{"first" => 1},
          "action" => %{"delay_ms" => 1_500}
        },
        %{"endpoint" => "cancel_future", "action" => %{"delay_ms" => 300}}
      ])

      client = start_client(sim)
      [blocker | rest] = refs = for _ <- 1..8, do: async!(client)
      wait_polling(sim, 8)
      assert :ok = SamplingClient.cancel(client, blocker)

      wait_until(fn ->
        Enum.any?(TinkerSim.stats(sim)["rules"], &(&1["name"] == "blocker" and &1["seen"] == 1))
      end)

      for ref <- rest, do: assert(:ok = SamplingClient.cancel(client, ref))
      for ref <- refs, do: assert({:error, %Error{type: :cancelled}} = one_message(ref))
      wait_sent(client, 8)

      calls = TinkerSim.log(sim, endpoint: "cancel_future") |> Enum.sort_by(& &1["t_us"])
      assert Enum.sort(Enum.map(calls, & &1["body"]["request_id"])) == Enum.sort(request_ids(sim))
      assert Enum.all?(calls, &(Map.keys(&1["body"]) == ["request_id"]))
      # A round starts once every call of the previous one was answered.
      assert calls |> rounds() |> Enum.map(&length/1) == [1, 3, 3, 1]
    end
  end

  defp rounds(calls) do
    calls
    |> Enum.reduce([], fn
      call, [round | done] = acc ->
        if call["t_us"] >= Enum.max(Enum.map(round, & &1["t_done_us"])),
          do: [[call] | acc],
          else: [[call | round] | done]

      call, [] ->
        [[call]]
    end)
    |> Enum.reverse()
  end

  describe "timeout:" do
    test "passes during a permit wait", %{sim: sim} do
      polling_scenario(sim)
      client = start_client(sim, retry_config: [max_connections: 1])
      holder = async!(client)
      wait_polling(sim, 1)
      t0 = System.monotonic_time(:millisecond)
      ref = async!(client, timeout: 300)

      assert {:error,
              %Error{
                type: :timeout,
                retryable?: false,
                message: "the sample did not finish within its timeout of 300 ms"
              }} = one_message(ref)

      assert elapsed_ms(t0) in 295..3_000
      assert %{waiting: 0, in_flight: 1} = SamplingClient.stats(client)
      assert length(request_ids(sim)) == 1
      assert SamplingClient.stats(client).cancels.announced == 0
      assert :ok = SamplingClient.cancel(client, holder)
    end

    test "passes during a 429 backoff", %{sim: sim} do
      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "dynamic_config" => @cancel_on,
          "rules" => [
            %{
              "endpoint" => "asample",
              "action" => %{"status" => 429, "headers" => %{"retry-after-ms" => "20000"}}
            }
          ]
        })

      client = start_client(sim, retry_config: [max_connections: 1])
      t0 = System.monotonic_time(:millisecond)
      ref = async!(client, timeout: 300)
      assert {:error, %Error{type: :timeout}} = one_message(ref)
      assert elapsed_ms(t0) in 295..3_000
      assert [%{"status" => 429}] = TinkerSim.log(sim, endpoint: "asample")
      assert SamplingClient.stats(client).backoff_ms > 10_000
      wait_until(fn -> SamplingClient.stats(client).available_permits == 1 end)
      # No future was handed out: nothing to cancel.
      assert SamplingClient.stats(client).cancels.announced == 0
    end

    test "passes during a stuck poll, and the future is announced", %{sim: sim} do
      {:ok, _} = TinkerSim.set_scenario(sim, %{"stuck" => true, "dynamic_config" => @cancel_on})
      client = start_client(sim)
      t0 = System.monotonic_time(:millisecond)
      ref = async!(client, timeout: 300)
      assert {:error, %Error{type: :timeout}} = one_message(ref)
      assert elapsed_ms(t0) in 295..3_000
      wait_sent(client, 1)
      assert [_] = cancelled_ids(sim)
      assert cancelled_ids(sim) == request_ids(sim)
      assert SamplingClient.stats(client).in_flight == 0
    end

    test "applies to sample/4 and compute_logprobs/3 tasks", %{sim: sim} do
      {:ok, _} = TinkerSim.set_scenario(sim, %{"stuck" => true})
      client = start_client(sim)
      {:ok, task} = SamplingClient.sample(client, prompt(), params(), timeout: 100)
      assert {:error, %Error{type: :timeout}} = Task.await(task, 5_000)
      {:ok, task} = SamplingClient.compute_logprobs(client, prompt(), timeout: 0)
      assert {:error, %Error{type: :timeout}} = Task.await(task, 5_000)
      # A deadline already over sends nothing.
      assert length(TinkerSim.log(sim, endpoint: "asample")) == 1
      {:ok, _} = TinkerSim.set_scenario(sim, %{"stuck" => false})
      {:ok, task} = SamplingClient.compute_logprobs(client, prompt(), timeout: :infinity)
      assert {:ok, [nil | _]} = Task.await(task, 5_000)
    end

    test "is validated", %{sim: sim} do
      client = start_client(sim)

      for bad <- [-1, 1.5, "100", :never, nil] do
        message =
          "invalid value for :timeout: expected a non-negative integer (milliseconds) or :infinity, got: #{inspect(bad)}"

        assert {:error, %Error{type: :validation, message: ^message}} =
                 SamplingClient.sample(client, prompt(), params(), timeout: bad)

        assert {:error, %Error{type: :validation, message: ^message}} =
                 SamplingClient.sample_async(client, prompt(), params(), timeout: bad)

        assert {:error, %Error{type: :validation, message: ^message}} =
                 SamplingClient.compute_logprobs(client, prompt(), timeout: bad)
      end

      assert TinkerSim.log(sim, endpoint: "asample") == []
    end
  end

  describe "telemetry" do
    setup do
      TinkexNative.Telemetry.attach_sink(self())
      # on_exit runs in another process: detach this test's pid.
      test_pid = self()
      on_exit(fn -> TinkexNative.Telemetry.detach_sink(test_pid) end)
    end

    test "[:tinkex_native, :retry_handler, :stuck] for each stuck sample, each announced", %{
      sim: sim
    } do
      {:ok, _} = TinkerSim.set_scenario(sim, %{"stuck" => true, "dynamic_config" => @cancel_on})
      client = start_client(sim, retry_config: [progress_timeout_ms: 150])
      # Unique in the VM: sampling session ids repeat across simulators.
      handler = "#{SamplingClient.session(client).sampling_session_id}@#{sim.base_url}"
      tasks = for _ <- 1..2, do: elem(SamplingClient.sample(client, prompt(), params()), 1)
      for t <- tasks, do: assert({:error, %Error{type: :stuck}} = Task.await(t, 5_000))

      for _ <- tasks do
        assert_receive {:tinkex_telemetry, [:tinkex_native, :retry_handler, :stuck],
                        %{progress_timeout_ms: 150}, %{handler: ^handler}}
      end

      refute_receive {:tinkex_telemetry, [:tinkex_native, :retry_handler, :stuck], _,
                      %{handler: ^handler}},
                     50

      # As in the Python SDK, the watchdog's victims are announced.
      wait_sent(client, 2)
      assert Enum.sort(cancelled_ids(sim)) == Enum.sort(request_ids(sim))
    end

    test "[:tinkex_native, :rate_limiter, :backoff] when a 429 sets the shared backoff", %{
      sim: sim
    } do
      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "rules" => [
            %{
              "endpoint" => "asample",
              "match" => %{"first" => 1},
              "action" => %{"status" => 429, "headers" => %{"retry-after-ms" => "150"}}
            }
          ]
        })

      client = start_client(sim)
      ssid = SamplingClient.session(client).sampling_session_id
      {:ok, task} = SamplingClient.sample(client, prompt(), params())
      assert {:ok, %SampleResponse{}} = Task.await(task, 5_000)

      # Sampling session ids repeat across simulators: with the URL the
      # event is this test's.
      url = sim.base_url

      assert_receive {:tinkex_telemetry, [:tinkex_native, :rate_limiter, :backoff],
                      %{backoff_ms: ms}, %{session: ^ssid, base_url: ^url}}

      assert ms in 100..150

      refute_receive {:tinkex_telemetry, [:tinkex_native, :rate_limiter, :backoff], _,
                      %{session: ^ssid, base_url: ^url}},
                     50
    end
  end
end
