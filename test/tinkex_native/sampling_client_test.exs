defmodule TinkexNative.SamplingClientTest do
  use ExUnit.Case, async: true

  import TinkexNative.Test.Wait
  doctest TinkexNative.SamplingClient

  alias TinkexNative.{Error, SamplingClient}
  alias TinkexNative.Test.TinkerSim
  alias TinkexNative.Types.{ModelInput, SampledSequence, SampleResponse, SamplingParams}

  @key "tml-sampling-client-test"
  # Protocol delays shrunk so retries take milliseconds, not seconds.
  @timings [
    rate_limit_small: 40,
    rate_limit_large: 80,
    submit_backoff_base: 10,
    submit_backoff_cap: 40,
    poll_backoff_base: 10,
    poll_backoff_cap: 40,
    poll_5xx_initial: 1,
    poll_5xx_cap: 5
  ]

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

  defp prompt, do: ModelInput.from_ints([11, 12, 13])
  defp params, do: %SamplingParams{max_tokens: 6, temperature: 0.5}

  defp sample!(client, opts \\ []) do
    {:ok, task} = SamplingClient.sample(client, prompt(), params(), opts)
    Task.await(task, 10_000)
  end

  defp expected_tokens(sim, client, seq_id, opts \\ []) do
    body = %{
      "type" => "sample",
      "sampling_session_id" => SamplingClient.session(client).sampling_session_id,
      "seq_id" => seq_id,
      "num_samples" => Keyword.get(opts, :num_samples, 1),
      "prompt" => %{"chunks" => [%{"type" => "encoded_text", "tokens" => [11, 12, 13]}]},
      "sampling_params" => %{
        "max_tokens" => 6,
        "temperature" => 0.5,
        "top_k" => -1,
        "top_p" => 1.0
      },
      "prompt_logprobs" => false,
      "topk_prompt_logprobs" => 0
    }

    for s <- TinkerSim.expected(sim, body)["sequences"], do: s["tokens"]
  end

  defp asample_seq_ids(sim),
    do: for(e <- TinkerSim.log(sim, endpoint: "asample"), do: e["body"]["seq_id"])

  describe "start_link/1" do
    test "creates a session and a sampling session, heartbeats it", %{sim: sim} do
      client = start_client(sim, heartbeat_interval_ms: 30)
      %{session_id: sid, sampling_session_id: ssid} = SamplingClient.session(client)
      assert sid =~ "sim-session"
      assert ssid == "#{sid}:sample:0"
      wait_until(fn -> length(TinkerSim.log(sim, endpoint: "session_heartbeat")) >= 2 end)
      beats = TinkerSim.log(sim, endpoint: "session_heartbeat")
      assert Enum.all?(beats, &(&1["body"]["session_id"] == sid))
    end

    test "an existing sampling_session_id skips session creation", %{sim: sim} do
      {:ok, client} =
        SamplingClient.start_link(
          base_url: sim.base_url,
          api_key: @key,
          sampling_session_id: "given-ssid"
        )

      assert SamplingClient.session(client) == %{
               sampling_session_id: "given-ssid",
               session_id: nil
             }

      assert TinkerSim.log(sim, endpoint: "create_session") == []
      assert {:ok, %SampleResponse{}} = sample!(client)
    end

    test "a given session_id: only the sampling session is created, with the given seq id, and no heartbeats",
         %{sim: sim} do
      # A client that owns its session beats every 5 ms: by the time it has
      # beaten 3 times, the other would have too, if it beat at all.
      owner = start_client(sim, heartbeat_interval_ms: 5)

      given =
        start_client(sim,
          session_id: "their-session",
          sampling_session_seq_id: 4,
          heartbeat_interval_ms: 5
        )

      assert SamplingClient.session(given) == %{
               sampling_session_id: "their-session:sample:4",
               session_id: "their-session"
             }

      assert [_] = TinkerSim.log(sim, endpoint: "create_session")

      assert [_, %{"body" => %{"session_id" => "their-session", "sampling_session_seq_id" => 4}}] =
               TinkerSim.log(sim, endpoint: "create_sampling_session")

      assert {:ok, %SampleResponse{}} = sample!(given)
      owned = SamplingClient.session(owner).session_id

      wait_until(fn ->
        Enum.count(TinkerSim.log(sim, endpoint: "session_heartbeat")) >= 3
      end)

      beats = TinkerSim.log(sim, endpoint: "session_heartbeat")
      assert Enum.all?(beats, &(&1["body"]["session_id"] == owned))
    end

    test "an explicit retry_config wins over server flags; without one the flags apply", %{
      sim: sim
    } do
      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "client_config" => %{
            "sample_max_concurrent_requests" => 7,
            "sample_enable_stuck_detection" => false
          }
        })

      flagged = start_client(sim, retry_config: nil)

      assert %{max_connections: 7, enable_stuck_detection: false} =
               SamplingClient.retry_config(flagged)

      explicit = start_client(sim, retry_config: [max_connections: 3])

      assert %{max_connections: 3, enable_stuck_detection: true} =
               SamplingClient.retry_config(explicit)

      assert SamplingClient.stats(explicit).available_permits == 3
    end

    test "a refusing service gives {:error, %TinkexNative.Error{}} and no process", %{sim: sim} do
      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "rules" => [%{"endpoint" => "create_session", "action" => %{"status" => 403}}]
        })

      Process.flag(:trap_exit, true)

      assert {:error, %Error{type: :http, status: 403}} =
               SamplingClient.start_link(base_url: sim.base_url, api_key: @key, base_model: "m")

      # start_link returns once the refused client is gone; it exits
      # :normal.
      assert_received {:EXIT, _pid, :normal}
      assert my_clients() == []
    end

    test "a set-up that outlives init_timeout_ms is abandoned, and stops retrying", %{sim: sim} do
      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "rules" => [%{"endpoint" => "create_session", "action" => %{"status" => 503}}]
        })

      Process.flag(:trap_exit, true)

      assert {:error, %Error{type: :timeout}} =
               SamplingClient.start_link(
                 base_url: sim.base_url,
                 api_key: @key,
                 base_model: "m",
                 init_timeout_ms: 300
               )

      # The session calls retry 0.5, 1, 2 … s apart; none may follow now.
      sent = length(TinkerSim.log(sim, endpoint: "create_session"))
      Process.sleep(1_500)
      assert length(TinkerSim.log(sim, endpoint: "create_session")) == sent
    end

    test "a wrong API key is a 401 error", %{sim: sim} do
      Process.flag(:trap_exit, true)

      assert {:error, %Error{status: 401, message: msg}} =
               SamplingClient.start_link(
                 base_url: sim.base_url,
                 api_key: "bad-key-123",
                 base_model: "m"
               )

      refute msg =~ "bad-key-123"
    end
  end

  describe "sample/4" do
    test "an HTTP error carries the server's retry-after", %{sim: sim} do
      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "rules" => [
            %{
              "endpoint" => "asample",
              "match" => %{"first" => 1},
              "action" => %{"status" => 422, "headers" => %{"retry-after-ms" => "1234"}}
            },
            %{"endpoint" => "asample", "match" => %{"first" => 1}, "action" => %{"status" => 422}}
          ]
        })

      client = start_client(sim)
      assert {:error, %Error{type: :http, status: 422, retry_after_ms: 1234}} = sample!(client)
      assert {:error, %Error{type: :http, status: 422, retry_after_ms: nil}} = sample!(client)
    end

    test "returns the simulator's deterministic tokens for its request", %{sim: sim} do
      client = start_client(sim)
      assert {:ok, %SampleResponse{sequences: [seq]}} = sample!(client)
      assert %SampledSequence{stop_reason: :length, logprobs: lps, sequence_id: sid} = seq
      assert seq.tokens == hd(expected_tokens(sim, client, 0))
      assert length(lps) == 6
      assert sid =~ ":0"
      # The next sample is the next seq_id.
      assert {:ok, %SampleResponse{sequences: [seq1]}} = sample!(client)
      assert seq1.tokens == hd(expected_tokens(sim, client, 1))
    end

    test "num_samples, binary tokens and prompt logprobs", %{sim: sim} do
      client = start_client(sim)

      assert {:ok, %SampleResponse{sequences: seqs, prompt_logprobs: [nil, a, b]}} =
               sample!(client, num_samples: 3, include_prompt_logprobs: true, tokens: :binary)

      assert is_float(a) and is_float(b)
      assert length(seqs) == 3

      for s <- seqs do
        assert byte_size(s.tokens) == 6 * 4
      end

      tokens = for <<t::little-signed-32 <- hd(seqs).tokens>>, do: t
      assert length(tokens) == 6
    end

    test "compute_logprobs returns the prompt's logprobs, first nil", %{sim: sim} do
      client = start_client(sim)
      {:ok, task} = SamplingClient.compute_logprobs(client, prompt())
      assert {:ok, [nil, x, y]} = Task.await(task)
      assert is_float(x) and is_float(y)
      [entry] = TinkerSim.log(sim, endpoint: "asample")
      assert entry["body"]["prompt_logprobs"] == true
      assert entry["body"]["sampling_params"]["max_tokens"] == 1
      assert entry["headers"]["x-sdk-method"] == "SamplingClient.compute_logprobs"
    end

    test "bad arguments are rejected before anything is sent", %{sim: sim} do
      client = start_client(sim)
      before = TinkerSim.stats(sim)["requests_total"]

      for {prompt, params, opts, fragment} <- [
            {ModelInput.from_ints([]), params(), [], ":prompt"},
            {ModelInput.from_ints([1, :a]), params(), [], ":prompt"},
            {ModelInput.from_ints([2 ** 40]), params(), [], ":prompt"},
            {:not_a_prompt, params(), [], ":prompt"},
            {prompt(), %SamplingParams{max_tokens: 0}, [], ":max_tokens"},
            {prompt(), %SamplingParams{temperature: -1}, [], ":temperature"},
            {prompt(), %SamplingParams{top_p: 1.5}, [], ":top_p"},
            {prompt(), %SamplingParams{top_k: 0}, [], ":top_k"},
            {prompt(), %SamplingParams{stop: [1, "a"]}, [], ":stop"},
            {prompt(), %SamplingParams{seed: 2 ** 70}, [], ":seed"},
            {prompt(), %{max_tokens: 1}, [], ":sampling_params"},
            {prompt(), params(), [num_samples: 0], ":num_samples"},
            {prompt(), params(), [num_sample: 2],
             "unknown option :num_sample. Did you mean :num_samples?"},
            {prompt(), params(), [tokens: :tuple], ":tokens"},
            {prompt(), params(), [include_prompt_logprobs: "yes"], ":include_prompt_logprobs"}
          ] do
        assert {:error, %Error{type: :validation, message: msg}} =
                 SamplingClient.sample(client, prompt, params, opts)

        assert msg =~ fragment

        assert {:error, %Error{type: :validation}} =
                 SamplingClient.sample_async(client, prompt, params, opts)
      end

      assert TinkerSim.stats(sim)["requests_total"] == before
    end
  end

  describe "retries on the wire" do
    test "429 on submit: shared backoff from retry-after-ms, same seq_id resent", %{sim: sim} do
      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "rules" => [
            %{
              "endpoint" => "asample",
              "match" => %{"first" => 2},
              "action" => %{"status" => 429, "headers" => %{"retry-after-ms" => "150"}}
            }
          ]
        })

      client = start_client(sim)
      assert {:ok, %SampleResponse{sequences: [seq]}} = sample!(client)
      assert seq.tokens == hd(expected_tokens(sim, client, 0))
      log = TinkerSim.log(sim, endpoint: "asample") |> Enum.sort_by(& &1["t_us"])
      assert Enum.map(log, & &1["status"]) == [429, 429, 200]
      assert Enum.map(log, & &1["body"]["seq_id"]) == [0, 0, 0]
      [a, b, c] = Enum.map(log, & &1["t_us"])
      assert b - a >= 145_000 and c - b >= 145_000
      assert SamplingClient.stats(client).retries == 0
    end

    test "429 without Retry-After falls back to the configured small-prompt backoff", %{sim: sim} do
      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "rules" => [
            %{"endpoint" => "asample", "match" => %{"first" => 1}, "action" => %{"status" => 429}}
          ]
        })

      client = start_client(sim)
      assert {:ok, _} = sample!(client)
      [a, b] = TinkerSim.log(sim, endpoint: "asample") |> Enum.map(& &1["t_us"]) |> Enum.sort()
      assert b - a >= 38_000
    end

    test "410 while polling starts a new attempt with a new seq_id", %{sim: sim} do
      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "rules" => [
            %{
              "endpoint" => "retrieve_future",
              "match" => %{"seq_id" => 0},
              "action" => %{"status" => 410}
            }
          ]
        })

      client = start_client(sim)
      assert {:ok, %SampleResponse{sequences: [seq]}} = sample!(client)
      assert asample_seq_ids(sim) == [0, 1]
      assert seq.tokens == hd(expected_tokens(sim, client, 1))
      assert SamplingClient.stats(client).retries == 1
    end

    test "a failed future is returned with its category and never resubmitted", %{sim: sim} do
      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "rules" => [
            %{
              "endpoint" => "future",
              "action" => %{"fail" => %{"category" => "user", "error" => "bad prompt"}}
            }
          ]
        })

      client = start_client(sim)

      assert {:error,
              %Error{
                type: :request_failed,
                category: :user,
                retryable?: false,
                message: msg,
                request_id: rid
              }} = sample!(client)

      assert msg =~ "bad prompt"
      assert rid =~ "req:"
      assert asample_seq_ids(sim) == [0]
      assert length(TinkerSim.log(sim, endpoint: "retrieve_future")) == 1
    end

    test "5xx and try_again while polling are ridden out", %{sim: sim} do
      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "rules" => [
            %{
              "endpoint" => "retrieve_future",
              "match" => %{"poll" => [1, 2]},
              "action" => %{"status" => 503}
            },
            %{
              "endpoint" => "future",
              "action" => %{"try_again" => %{"count" => 2, "queue_state" => "paused_capacity"}}
            }
          ]
        })

      client = start_client(sim)
      assert {:ok, %SampleResponse{}} = sample!(client)
      assert asample_seq_ids(sim) == [0]
      assert SamplingClient.stats(client).queue_state in [:paused_capacity, :active]
    end

    test "a fatal poll status is not retried", %{sim: sim} do
      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "rules" => [%{"endpoint" => "retrieve_future", "action" => %{"status" => 422}}]
        })

      client = start_client(sim)
      assert {:error, %Error{status: 422, retryable?: false}} = sample!(client)
      assert asample_seq_ids(sim) == [0]
    end

    test "transport failures on submit are resent with the same seq_id", %{sim: sim} do
      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "rules" => [
            %{"endpoint" => "asample", "match" => %{"nth" => 1}, "action" => %{"drop" => true}},
            # Rules count only the requests that reach them: this is the 2nd asample.
            %{"endpoint" => "asample", "match" => %{"first" => 1}, "action" => %{"status" => 503}}
          ]
        })

      client = start_client(sim)
      assert {:ok, _} = sample!(client)
      assert asample_seq_ids(sim) == [0, 0, 0]
    end

    test "telemetry from the task: attempt failures and the stop event", %{sim: sim} do
      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "rules" => [
            %{
              "endpoint" => "retrieve_future",
              "match" => %{"seq_id" => 0},
              "action" => %{"status" => 410}
            }
          ]
        })

      TinkexNative.Telemetry.attach_sink(self())
      # on_exit runs in another process: detach this test's pid, not that one.
      test_pid = self()
      on_exit(fn -> TinkexNative.Telemetry.detach_sink(test_pid) end)
      client = start_client(sim)
      ssid = SamplingClient.session(client).sampling_session_id
      handler = "#{ssid}@#{sim.base_url}"
      assert {:ok, _} = sample!(client)

      assert_receive {:tinkex_telemetry, [:tinkex_native, :retry_handler, :attempt_failed],
                      %{attempt: 1},
                      %{handler: ^handler, retry?: true, error: %Error{type: :expired}}}

      assert_receive {:tinkex_telemetry, [:tinkex_native, :sample, :stop], %{attempts: 2},
                      %{session: ^ssid, result: :ok}}
    end
  end

  describe "watchdog" do
    test "a stuck server fails in-flight samples with the stuck error; new ones succeed after", %{
      sim: sim
    } do
      {:ok, _} = TinkerSim.set_scenario(sim, %{"stuck" => true})

      client =
        start_client(sim,
          retry_config: [progress_timeout_ms: 150],
          timings: [poll_timeout: 1_000] ++ @timings
        )

      tasks = for _ <- 1..3, do: elem(SamplingClient.sample(client, prompt(), params()), 1)
      t0 = System.monotonic_time(:millisecond)

      for t <- tasks do
        assert {:error,
                %Error{
                  type: :stuck,
                  retryable?: false,
                  message: "No progress made in 0.15s. Requests appear to be stuck."
                }} = Task.await(t, 5_000)
      end

      assert System.monotonic_time(:millisecond) - t0 < 2_000
      assert %{in_flight: 0, stuck_events: 1} = SamplingClient.stats(client)
      {:ok, _} = TinkerSim.set_scenario(sim, %{"stuck" => false})
      assert {:ok, _} = sample!(client)
    end
  end

  describe "sample_async/4 and cancellation" do
    test "one message per sample, nothing else", %{sim: sim} do
      client = start_client(sim)

      refs =
        for _ <- 1..50 do
          {:ok, ref} = SamplingClient.sample_async(client, prompt(), params())
          ref
        end

      for ref <- refs, do: assert_receive({:tinkex_sample, ^ref, {:ok, %SampleResponse{}}}, 5_000)
      refute_receive _, 50
      assert %{in_flight: 0, processed: 50} = SamplingClient.stats(client)
    end

    test "a killed caller cancels its sample and returns the permit", %{sim: sim} do
      {:ok, _} = TinkerSim.set_scenario(sim, %{"stuck" => true})
      client = start_client(sim, retry_config: [max_connections: 2])
      parent = self()

      callers =
        for _ <- 1..2 do
          spawn(fn ->
            {:ok, _ref} = SamplingClient.sample_async(client, prompt(), params())
            send(parent, :started)
            Process.sleep(:infinity)
          end)
        end

      for _ <- callers, do: assert_receive(:started)
      wait_until(fn -> SamplingClient.stats(client).available_permits == 0 end)
      Enum.each(callers, &Process.exit(&1, :kill))
      wait_until(fn -> SamplingClient.stats(client).available_permits == 2 end)
      assert SamplingClient.stats(client).in_flight == 0
    end

    test "shutting a task down cancels its sample", %{sim: sim} do
      {:ok, _} = TinkerSim.set_scenario(sim, %{"stuck" => true})
      client = start_client(sim, retry_config: [max_connections: 1])
      {:ok, task} = SamplingClient.sample(client, prompt(), params())
      wait_until(fn -> SamplingClient.stats(client).in_flight == 1 end)
      assert Task.shutdown(task, :brutal_kill) == nil
      wait_until(fn -> SamplingClient.stats(client).available_permits == 1 end)
    end
  end

  test "a stopped client gives clear errors", %{sim: sim} do
    client = start_client(sim)
    GenServer.stop(client)

    assert {:error,
            %Error{
              type: :client_not_running,
              message: "no running TinkexNative.SamplingClient: " <> _
            }} = SamplingClient.sample(client, prompt(), params())

    assert {:error, %Error{type: :client_not_running}} = SamplingClient.stats(client)
  end

  test "a killed client's published handle is removed", %{sim: sim} do
    client = start_client(sim)
    Process.unlink(client)
    assert {:ok, _} = TinkexNative.ClientTable.fetch(client)
    Process.exit(client, :kill)
    wait_until(fn -> TinkexNative.ClientTable.fetch(client) == :error end)
  end

  describe "secrets" do
    test "the API key shows in no inspect, state or error", %{sim: sim} do
      client = start_client(sim)
      refute inspect(:sys.get_state(client)) =~ @key
      refute inspect(:sys.get_status(client)) =~ @key
      refute inspect(SamplingClient.stats(client)) =~ @key
      refute inspect(:ets.tab2list(TinkexNative.ClientTable)) =~ @key
    end
  end

  # The clients this test process started that are still alive.
  defp my_clients do
    for p <- Process.list(),
        match?({SamplingClient.Server, :init, 1}, initial_call(p)),
        match?({:dictionary, %{"$ancestors": [me | _]}} when me == self(), dictionary(p)),
        do: p
  end

  defp dictionary(pid) do
    case Process.info(pid, :dictionary) do
      {:dictionary, d} -> {:dictionary, Map.new(d)}
      nil -> nil
    end
  end

  defp initial_call(pid) do
    case Process.info(pid, :dictionary) do
      {:dictionary, d} -> Keyword.get(d, :"$initial_call")
      nil -> nil
    end
  end
end
