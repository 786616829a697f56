defmodule TinkexNative.TinkexAdapter.SamplingClientTest do
  # The contract with tinkex 0.4.0: TinkexNative.Tinkex.SamplingClient
  # driven exactly as tinkex's ServiceClient drives a
  # `sampling_client_module` (`DynamicSupervisor.start_child(sup, {M,
  # child_opts})`, then `M.sample/4`), with tinkex's structs (the
  # stand-ins in test/support/tinkex_stubs/), against tinker_sim.
  use ExUnit.Case, async: true

  import TinkexNative.Test.Wait
  doctest TinkexNative.Tinkex.SamplingClient

  alias TinkexNative.Test.TinkerSim
  alias TinkexNative.Tinkex.SamplingClient, as: M

  alias Tinkex.Types.{EncodedTextChunk, ModelInput, SampledSequence, SampleResponse}

  @key "tml-tinkex-adapter-test"

  setup do
    sim = TinkerSim.start(hold_ms: 2_000)
    on_exit(fn -> TinkerSim.stop(sim) end)
    sup = start_supervised!({DynamicSupervisor, strategy: :one_for_one})
    # tinkex's SessionManager creates the session before any client.
    {:ok, 200, %{"session_id" => session_id}} =
      TinkerSim.request(
        sim,
        :post,
        "/api/v1/create_session",
        %{"type" => "create_session", "tags" => [], "sdk_version" => "0.4.0"},
        api_key: @key
      )

    %{sim: sim, sup: sup, session_id: session_id}
  end

  # What ServiceClient.handle_call({:create_sampling_client, opts}, ...)
  # passes: the user's opts plus these keys.
  defp child_opts(ctx, user_opts, seq \\ 0) do
    user_opts
    |> Keyword.put(:session_id, ctx.session_id)
    |> Keyword.put(:config, %Tinkex.Config{base_url: ctx.sim.base_url, api_key: @key})
    |> Keyword.put(:sampling_client_id, seq)
    |> Keyword.put(:telemetry, nil)
    |> Keyword.put(:telemetry_metadata, %{session_id: ctx.session_id})
  end

  defp start_client(ctx, user_opts \\ [], seq \\ 0) do
    opts =
      Keyword.merge(
        [
          base_model: "Qwen/Qwen3-8B",
          retry_config: %Tinkex.RetryConfig{base_delay_ms: 5, max_delay_ms: 20}
        ],
        user_opts
      )

    {:ok, pid} = DynamicSupervisor.start_child(ctx.sup, {M, child_opts(ctx, opts, seq)})
    pid
  end

  defp prompt(tokens \\ [11, 12, 13]),
    do: %ModelInput{chunks: [%EncodedTextChunk{tokens: tokens, type: "encoded_text"}]}

  defp params, do: %Tinkex.Types.SamplingParams{max_tokens: 6, temperature: 0.5}

  defp sample!(client, opts \\ []) do
    assert {:ok, %Task{} = task} = M.sample(client, prompt(), params(), opts)
    Task.await(task, 15_000)
  end

  defp expected_tokens(sim, ssid, seq_id, num_samples \\ 1) do
    body = %{
      "type" => "sample",
      "sampling_session_id" => ssid,
      "seq_id" => seq_id,
      "num_samples" => num_samples,
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

  defp ssid(client), do: TinkexNative.SamplingClient.session(client).sampling_session_id
  defp stats(client), do: TinkexNative.SamplingClient.stats(client)

  test "happy path: started as ServiceClient starts it, samples with tinkex's structs", ctx do
    client = start_client(ctx, [], 3)

    # Only the sampling session is created, in tinkex's session, numbered
    # by sampling_client_id; tinkex's session is not created again.
    assert [_] = TinkerSim.log(ctx.sim, endpoint: "create_session")

    assert [%{"body" => %{"session_id" => sid, "sampling_session_seq_id" => 3} = body}] =
             TinkerSim.log(ctx.sim, endpoint: "create_sampling_session")

    assert sid == ctx.session_id
    assert body["base_model"] == "Qwen/Qwen3-8B"
    assert ssid(client) == "#{sid}:sample:3"

    assert [{_, ^client, :worker, _}] = DynamicSupervisor.which_children(ctx.sup)

    assert {:ok, %SampleResponse{sequences: [seq], type: "sample", prompt_logprobs: nil}} =
             sample!(client)

    assert %SampledSequence{stop_reason: :length, tokens: tokens, logprobs: lps} = seq
    assert tokens == hd(expected_tokens(ctx.sim, ssid(client), 0))
    assert length(lps) == 6

    assert {:ok, %SampleResponse{sequences: [a, b], prompt_logprobs: [nil, p1, p2]}} =
             sample!(client, num_samples: 2, prompt_logprobs: true, topk_prompt_logprobs: 0)

    assert is_float(p1) and is_float(p2)
    assert [a.tokens, b.tokens] == expected_tokens(ctx.sim, ssid(client), 1, 2)

    assert {:ok, task} = M.compute_logprobs(client, prompt())
    assert {:ok, [nil, l1, l2]} = Task.await(task, 15_000)
    assert is_float(l1) and is_float(l2)

    # The options tinkex's CLI passes.
    assert {:ok, %SampleResponse{}} =
             sample!(client, num_samples: 1, prompt_logprobs: false, timeout: 120_000)
  end

  test "a 429 storm: every sample succeeds, each resent with the same seq_id", ctx do
    {:ok, _} =
      TinkerSim.set_scenario(ctx.sim, %{
        "rules" => [
          %{
            "endpoint" => "asample",
            "match" => %{"first" => 40},
            "action" => %{"status" => 429, "headers" => %{"retry-after-ms" => "20"}}
          }
        ]
      })

    client = start_client(ctx, retry_config: %Tinkex.RetryConfig{max_connections: 8})

    results =
      for(_ <- 1..24, do: elem(M.sample(client, prompt(), params()), 1))
      |> Task.await_many(30_000)

    assert Enum.all?(
             results,
             &match?({:ok, %SampleResponse{sequences: [%SampledSequence{}]}}, &1)
           )

    assert TinkerSim.stats(ctx.sim)["endpoints"]["asample"]["429"] == 40

    # A 429 is not a failed attempt: the same seq_id is sent again, so 24
    # samples are seq_ids 0..23 and each got its own result.
    asamples = TinkerSim.log(ctx.sim, endpoint: "asample")

    assert asamples |> Enum.map(& &1["body"]["seq_id"]) |> Enum.uniq() |> Enum.sort() ==
             Enum.to_list(0..23)

    tokens = for {:ok, r} <- results, do: hd(r.sequences).tokens

    assert Enum.sort(tokens) ==
             Enum.sort(for s <- 0..23, do: hd(expected_tokens(ctx.sim, ssid(client), s)))
  end

  test "a failed future is a :request_failed error with the server's category, not retried",
       ctx do
    {:ok, _} =
      TinkerSim.set_scenario(ctx.sim, %{
        "rules" => [
          %{
            "endpoint" => "future",
            "match" => %{"seq_id" => 0},
            "action" => %{"fail" => %{"category" => "user", "error" => "bad prompt"}}
          },
          %{
            "endpoint" => "future",
            "match" => %{"seq_id" => 1},
            "action" => %{"fail" => %{"category" => "server", "error" => "boom"}}
          }
        ]
      })

    client = start_client(ctx)

    assert {:error,
            %Tinkex.Error{
              type: :request_failed,
              category: :user,
              message: msg,
              status: nil,
              data: %{request_id: rid, tinkex_native: %TinkexNative.Error{}}
            }} = sample!(client)

    assert msg =~ "bad prompt"
    assert rid =~ ":0"

    assert {:error, %Tinkex.Error{type: :request_failed, category: :server, message: msg}} =
             sample!(client)

    assert msg =~ "boom"

    assert length(TinkerSim.log(ctx.sim, endpoint: "asample")) == 2
  end

  test "HTTP error answers are :api_status errors with status, category and retry_after_ms",
       ctx do
    {:ok, _} =
      TinkerSim.set_scenario(ctx.sim, %{
        "rules" => [
          %{
            "endpoint" => "asample",
            "match" => %{"first" => 1},
            "action" => %{"status" => 422, "headers" => %{"retry-after-ms" => "1234"}}
          },
          %{"endpoint" => "asample", "match" => %{"first" => 1}, "action" => %{"status" => 404}}
        ]
      })

    client = start_client(ctx)

    assert {:error,
            %Tinkex.Error{type: :api_status, status: 422, category: :user, retry_after_ms: 1234}} =
             sample!(client)

    # Without a retry-after, tinkex's 1 s.
    assert {:error,
            %Tinkex.Error{type: :api_status, status: 404, category: :user, retry_after_ms: 1000}} =
             sample!(client)
  end

  test "max_connections of a %Tinkex.RetryConfig{} bounds the samples in flight", ctx do
    {:ok, _} = TinkerSim.set_scenario(ctx.sim, %{"latency_ms" => 40})
    client = start_client(ctx, retry_config: %Tinkex.RetryConfig{max_connections: 3})
    assert TinkexNative.SamplingClient.retry_config(client).max_connections == 3

    results =
      for(_ <- 1..18, do: elem(M.sample(client, prompt(), params()), 1))
      |> Task.await_many(30_000)

    assert Enum.all?(results, &match?({:ok, %SampleResponse{}}, &1))

    # A sample is in flight from its asample's arrival to the answer of
    # its last poll: count the most that overlap.
    log = TinkerSim.log(ctx.sim)

    spans =
      log
      |> Enum.filter(&(&1["endpoint"] in ["asample", "retrieve_future"]))
      |> Enum.group_by(& &1["seq_id"])
      |> Enum.map(fn {_, entries} ->
        {entries |> Enum.map(& &1["t_us"]) |> Enum.min(),
         entries |> Enum.map(& &1["t_done_us"]) |> Enum.max()}
      end)

    assert length(spans) == 18

    events =
      Enum.flat_map(spans, fn {from, to} -> [{from, 1}, {to, -1}] end)
      # at equal times, an end before a start
      |> Enum.sort_by(fn {t, d} -> {t, d} end)

    {max, _} = Enum.reduce(events, {0, 0}, fn {_, d}, {max, n} -> {max(max, n + d), n + d} end)

    assert max == 3
    assert stats(client).available_permits == 3
  end

  test "a caller killed mid-sample gives its permit back", ctx do
    {:ok, _} =
      TinkerSim.set_scenario(ctx.sim, %{
        "rules" => [%{"endpoint" => "future", "action" => %{"stuck" => true}}]
      })

    client = start_client(ctx, retry_config: %Tinkex.RetryConfig{max_connections: 2})
    test = self()

    caller =
      spawn(fn ->
        {:ok, task} = M.sample(client, prompt(), params())
        send(test, :sampling)
        Task.await(task, :infinity)
      end)

    assert_receive :sampling
    wait_until(fn -> TinkerSim.log(ctx.sim, endpoint: "retrieve_future") != [] end)
    assert %{in_flight: 1, available_permits: 1} = stats(client)

    Process.exit(caller, :kill)
    wait_until(fn -> match?(%{in_flight: 0, available_permits: 2}, stats(client)) end)

    # The client still samples.
    {:ok, _} = TinkerSim.set_scenario(ctx.sim, %{"rules" => []})
    assert {:ok, %SampleResponse{}} = sample!(client)
  end

  test ":timeout and :await_timeout bound the sample: an :api_timeout error, the permit back",
       ctx do
    {:ok, _} =
      TinkerSim.set_scenario(ctx.sim, %{
        "rules" => [%{"endpoint" => "future", "action" => %{"stuck" => true}}]
      })

    client = start_client(ctx, retry_config: %Tinkex.RetryConfig{max_connections: 2})
    started = System.monotonic_time(:millisecond)

    # The smaller of the two is the native deadline of the whole sample.
    assert {:error,
            %Tinkex.Error{
              type: :api_timeout,
              message: msg,
              data: %{tinkex_native: %TinkexNative.Error{type: :timeout}}
            }} = sample!(client, timeout: 5_000, await_timeout: 150)

    assert System.monotonic_time(:millisecond) - started >= 150
    assert msg =~ "150"

    assert {:error, %Tinkex.Error{type: :api_timeout}} = sample!(client, timeout: 50)
    wait_until(fn -> match?(%{in_flight: 0, available_permits: 2}, stats(client)) end)
  end

  test "a sampling_session_id (as TrainingClient passes it) is used as is", ctx do
    client =
      start_client(ctx,
        model_path: "tinker://run/sampler_weights/1",
        sampling_session_id: "saved-ssid"
      )

    assert ssid(client) == "saved-ssid"
    assert TinkerSim.log(ctx.sim, endpoint: "create_sampling_session") == []
    assert {:ok, %SampleResponse{}} = sample!(client)

    assert [%{"body" => %{"sampling_session_id" => "saved-ssid"}}] =
             TinkerSim.log(ctx.sim, endpoint: "asample")
  end

  test "a bad retry_config or config: a :validation error naming field and value, no process",
       ctx do
    cases = [
      {[retry_config: %Tinkex.RetryConfig{max_connections: 0}], ":max_connections", "0"},
      {[retry_config: %Tinkex.RetryConfig{jitter_pct: 2.0}], ":jitter_pct", "2.0"},
      {[retry_config: %Tinkex.RetryConfig{base_delay_ms: 50, max_delay_ms: 10}], ":base_delay_ms",
       "50"},
      {[retry_config: [max_retries: -1]], ":max_retries", "-1"},
      {[retry_config: [max_retry: 3]], ":max_retry", "max_retries"},
      {[retry_config: "fast"], ":retry_config", ~s("fast")},
      {[retry_config: %URI{}], ":retry_config", "URI"}
    ]

    before = TinkerSim.stats(ctx.sim)["requests_total"]

    for {user_opts, field, value} <- cases do
      opts = child_opts(ctx, [base_model: "m"] ++ user_opts)

      assert {:error, %Tinkex.Error{type: :validation, category: :user, message: msg}} =
               DynamicSupervisor.start_child(ctx.sup, {M, opts})

      assert msg =~ field, "#{inspect(user_opts)}: #{msg}"
      assert msg =~ value, "#{inspect(user_opts)}: #{msg}"
    end

    # A config without a key, and no config: named, and the key never shown.
    bad_config = Keyword.put(child_opts(ctx, base_model: "m"), :config, %{base_url: "x"})

    assert {:error, %Tinkex.Error{type: :validation, message: msg}} =
             DynamicSupervisor.start_child(ctx.sup, {M, bad_config})

    assert msg =~ ":config"
    no_config = Keyword.delete(child_opts(ctx, base_model: "m"), :config)

    assert {:error, %Tinkex.Error{type: :validation, message: msg}} =
             DynamicSupervisor.start_child(ctx.sup, {M, no_config})

    assert msg =~ ":config"
    refute msg =~ @key

    assert DynamicSupervisor.count_children(ctx.sup).active == 0
    assert TinkerSim.stats(ctx.sim)["requests_total"] == before
  end

  test "a refusing service: {:error, %Tinkex.Error{}} from start_child", ctx do
    {:ok, _} =
      TinkerSim.set_scenario(ctx.sim, %{
        "rules" => [%{"endpoint" => "create_sampling_session", "action" => %{"status" => 403}}]
      })

    assert {:error, %Tinkex.Error{type: :api_status, status: 403, category: :user}} =
             DynamicSupervisor.start_child(ctx.sup, {M, child_opts(ctx, base_model: "m")})

    assert DynamicSupervisor.count_children(ctx.sup).active == 0
  end

  test "bad sample arguments: the task gives a :validation error, nothing is sent", ctx do
    client = start_client(ctx)

    image = %ModelInput{
      chunks: [%{__struct__: Tinkex.Types.ImageChunk, data: String.duplicate("x", 10_000)}]
    }

    cases = [
      {[prompt: image], ":prompt"},
      {[prompt: %ModelInput{chunks: [%EncodedTextChunk{tokens: [1, 2 ** 40]}]}], ":prompt"},
      {[params: %Tinkex.Types.SamplingParams{max_tokens: -1}], ":max_tokens"},
      {[params: :greedy], ":sampling_params"},
      {[opts: [num_samples: 0]], ":num_samples"},
      {[opts: [prompt_logprobs: "yes"]], ":prompt_logprobs"},
      {[opts: [timeout: -5]], ":timeout"},
      {[opts: [await_timeout: "soon"]], ":await_timeout"},
      {[opts: :fast], ":opts"}
    ]

    for {c, field} <- cases do
      {:ok, task} =
        M.sample(client, c[:prompt] || prompt(), c[:params] || params(), c[:opts] || [])

      assert {:error, %Tinkex.Error{type: :validation, category: :user, message: msg}} =
               Task.await(task)

      assert msg =~ field, "#{inspect(c)}: #{msg}"
      assert byte_size(msg) < 1_000
    end

    assert TinkerSim.log(ctx.sim, endpoint: "asample") == []

    # And a dead client, as tinkex's "not initialized".
    DynamicSupervisor.terminate_child(ctx.sup, client)

    assert {:error, %Tinkex.Error{type: :validation, category: nil, message: msg}} =
             sample!(client)

    assert msg =~ "no running TinkexNative.SamplingClient"
  end
end
