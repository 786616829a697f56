defmodule TinkexNative.BadInputTest do
  # Bad input (issue 7): invalid configs and requests fail with an error
  # that names the field, before anything is sent; malformed server answers
  # are clear decode errors, never crashes, never retried.
  #
  # async: false because one case unsets TINKER_API_KEY.
  use ExUnit.Case, async: false

  alias TinkexNative.{Backoff, Error, RateLimiter, RetryConfig, RetryHandler, SamplingClient}
  alias TinkexNative.Test.TinkerSim
  alias TinkexNative.Types.{EncodedTextChunk, ModelInput, SamplingParams}

  @key "tml-bad-input-test-key"

  setup do
    sim = TinkerSim.start(hold_ms: 1_000)
    on_exit(fn -> TinkerSim.stop(sim) end)
    %{sim: sim}
  end

  defp start_opts(sim, overrides) do
    Keyword.merge(
      [
        base_url: sim.base_url,
        api_key: @key,
        base_model: "Qwen/Qwen3-8B",
        init_timeout_ms: 5_000
      ],
      overrides
    )
  end

  # Runs `fun`; the error it returns or raises.
  defp failure(fun) do
    case fun.() do
      {:error, %{__exception__: true} = e} -> {:returned, e}
      other -> {:no_error, other}
    end
  rescue
    e in ArgumentError -> {:raised, e}
  end

  defp prompt, do: ModelInput.from_ints([1, 2, 3])
  defp params, do: %SamplingParams{max_tokens: 4}

  # {description, field named in the message, fun}. Start options first.
  defp start_link_cases(sim) do
    s = fn overrides -> fn -> SamplingClient.start_link(start_opts(sim, overrides)) end end
    rc = fn retry -> s.(retry_config: retry) end

    [
      {"options not a keyword list", "keyword list", fn -> SamplingClient.start_link(:nope) end},
      {"options an improper list", "keyword list",
       fn -> SamplingClient.start_link([{:base_url, sim.base_url} | :x]) end},
      {"unknown option", ":retries", s.(retries: 3)},
      {"misspelled option", ":base_model", s.(base_modle: "m")},
      {"empty API key", ":api_key", s.(api_key: "")},
      {"API key of the wrong type", ":api_key", s.(api_key: 12_345)},
      {"API key with a newline", ":api_key", s.(api_key: "tml-abc\ndef")},
      {"API key with non-ASCII", ":api_key", s.(api_key: "tml-clé")},
      {"base_url of the wrong type", ":base_url", s.(base_url: :localhost)},
      {"base_url not a URL", ":base_url", s.(base_url: "not a url")},
      {"base_url with another scheme", ":base_url", s.(base_url: "ftp://127.0.0.1/x")},
      {"base_url without a host", ":base_url", s.(base_url: "https://")},
      {"base_url with an invalid port", ":base_url", s.(base_url: "http://127.0.0.1:99999")},
      {"plain http to a public host", ":base_url", s.(base_url: "http://example.com")},
      {"plain http to a private, non-loopback host", ":base_url",
       s.(base_url: "http://10.0.0.1:8000")},
      {"allow_insecure not a boolean", ":allow_insecure", s.(allow_insecure: "yes")},
      {"no model", ":base_model",
       fn -> SamplingClient.start_link(base_url: sim.base_url, api_key: @key) end},
      {"two models", ":model_path", s.(model_path: "tinker://x")},
      {"model_path of another scheme", ":model_path",
       fn ->
         SamplingClient.start_link(base_url: sim.base_url, api_key: @key, model_path: "s3://x")
       end},
      {"empty base_model", ":base_model", s.(base_model: "")},
      {"sampling_session_id not a string", ":sampling_session_id",
       fn ->
         SamplingClient.start_link(base_url: sim.base_url, api_key: @key, sampling_session_id: 42)
       end},
      {"zero max_connections", ":max_connections", rc.(max_connections: 0)},
      {"negative max_connections", ":max_connections", rc.(max_connections: -5)},
      {"negative base_delay_ms", ":base_delay_ms", rc.(base_delay_ms: -1)},
      {"base_delay_ms above max_delay_ms", ":base_delay_ms",
       rc.(base_delay_ms: 100, max_delay_ms: 10)},
      {"jitter_pct :nan", ":jitter_pct", rc.(jitter_pct: :nan)},
      {"jitter_pct a huge float", ":jitter_pct", rc.(jitter_pct: 1.0e308)},
      {"progress_timeout_ms :infinity", ":progress_timeout_ms",
       rc.(progress_timeout_ms: :infinity)},
      {"zero progress_timeout_ms", ":progress_timeout_ms", rc.(progress_timeout_ms: 0)},
      {"max_retries beyond 64 bits", ":max_retries", rc.(max_retries: 2 ** 64)},
      {"max_delay_ms a huge float", ":max_delay_ms", rc.(max_delay_ms: 1.0e300)},
      {"max_delay_ms a fractional float", ":max_delay_ms", rc.(max_delay_ms: 10.5)},
      {"misspelled retry option", ":max_retries", rc.(max_retry: 3)},
      {"retry status out of range", ":retry_statuses", rc.(retry_statuses: [700])},
      {"unknown retry type", ":retry_types", rc.(retry_types: [:bogus])},
      {"retry_config not a list", "retry_config", rc.("fast")},
      {"negative poll timeout", ":poll_timeout", s.(timings: [poll_timeout: -1])},
      {"huge poll timeout", ":poll_timeout", s.(timings: [poll_timeout: 10 ** 20])},
      {"unknown timing", ":bogus", s.(timings: [bogus: 1])},
      {"timings not a list", ":timings", s.(timings: "fast")},
      {"zero heartbeat interval", ":heartbeat_interval_ms", s.(heartbeat_interval_ms: 0)},
      {"init timeout :infinity", ":init_timeout_ms", s.(init_timeout_ms: :infinity)},
      {"unknown tokens format", ":tokens", s.(tokens: :tuple)},
      {"name a string", ":name", s.(name: "client")},
      {"empty session_id", ":session_id", s.(session_id: "")},
      {"session_id not a string", ":session_id", s.(session_id: 7)},
      {"negative sampling_session_seq_id", ":sampling_session_seq_id",
       s.(sampling_session_seq_id: -1)},
      {"sampling_session_seq_id not an integer", ":sampling_session_seq_id",
       s.(sampling_session_seq_id: "1")},
      {"sampling_session_seq_id with an existing sampling session", ":sampling_session_seq_id",
       fn ->
         SamplingClient.start_link(
           base_url: sim.base_url,
           api_key: @key,
           sampling_session_id: "ss",
           sampling_session_seq_id: 2
         )
       end}
    ]
  end

  defp sample_cases(client) do
    both = fn p, sp, opts ->
      [
        fn -> SamplingClient.sample(client, p, sp, opts) end,
        fn -> SamplingClient.sample_async(client, p, sp, opts) end
      ]
    end

    for {desc, field, funs} <- [
          {"empty prompt", ":prompt", both.(ModelInput.from_ints([]), params(), [])},
          {"prompt of empty chunks", ":prompt",
           both.(
             %ModelInput{chunks: [%EncodedTextChunk{tokens: []}, %EncodedTextChunk{tokens: []}]},
             params(),
             []
           )},
          {"token beyond int32", ":prompt", both.(ModelInput.from_ints([2 ** 31]), params(), [])},
          {"token a float", ":prompt", both.(ModelInput.from_ints([1.0]), params(), [])},
          {"prompt not a ModelInput", ":prompt", both.([1, 2, 3], params(), [])},
          {"zero max_tokens", ":max_tokens", both.(prompt(), %SamplingParams{max_tokens: 0}, [])},
          {"negative max_tokens", ":max_tokens",
           both.(prompt(), %SamplingParams{max_tokens: -1}, [])},
          {"huge max_tokens", ":max_tokens",
           both.(prompt(), %SamplingParams{max_tokens: 2 ** 40}, [])},
          {"temperature :infinity", ":temperature",
           both.(prompt(), %SamplingParams{temperature: :infinity}, [])},
          {"temperature :nan", ":temperature",
           both.(prompt(), %SamplingParams{temperature: :nan}, [])},
          {"negative temperature", ":temperature",
           both.(prompt(), %SamplingParams{temperature: -0.5}, [])},
          {"zero top_p", ":top_p", both.(prompt(), %SamplingParams{top_p: 0}, [])},
          {"top_p a huge float", ":top_p", both.(prompt(), %SamplingParams{top_p: 1.0e308}, [])},
          {"zero top_k", ":top_k", both.(prompt(), %SamplingParams{top_k: 0}, [])},
          {"seed beyond 64 bits", ":seed", both.(prompt(), %SamplingParams{seed: 2 ** 64}, [])},
          {"mixed stop list", ":stop", both.(prompt(), %SamplingParams{stop: [1, "a"]}, [])},
          {"params not a struct", ":sampling_params", both.(prompt(), %{max_tokens: 4}, [])},
          {"zero num_samples", ":num_samples", both.(prompt(), params(), num_samples: 0)},
          {"huge num_samples", ":num_samples", both.(prompt(), params(), num_samples: 10 ** 12)},
          {"negative topk_prompt_logprobs", ":topk_prompt_logprobs",
           both.(prompt(), params(), topk_prompt_logprobs: -1)},
          {"unknown sample option", ":seed", both.(prompt(), params(), seed: 3)},
          {"options not a keyword list", ":opts", both.(prompt(), params(), [:fast])},
          {"compute_logprobs of an empty prompt", ":prompt",
           [fn -> SamplingClient.compute_logprobs(client, ModelInput.from_ints([])) end]},
          {"compute_logprobs with a sample-only option", ":num_samples",
           [fn -> SamplingClient.compute_logprobs(client, prompt(), num_samples: 2) end]}
        ],
        fun <- funs,
        do: {desc, field, fun}
  end

  defp other_api_cases do
    config = RetryConfig.new!()
    handler = RetryHandler.get!("bad-input-#{System.unique_integer([:positive])}")
    limiter = RateLimiter.for_key("http://bad-input.test", "tml-bad-input")

    [
      {"handler name not a string", "name", fn -> RetryHandler.get(:name, []) end},
      {"handler with zero max_connections", ":max_connections",
       fn -> RetryHandler.get("x", max_connections: 0) end},
      {"execute with a bad :retryable?", ":retryable?",
       fn -> RetryHandler.execute(handler, fn -> {:ok, 1} end, retryable?: 1) end},
      {"execute with an unknown option", ":retries",
       fn -> RetryHandler.execute(handler, fn -> {:ok, 1} end, retries: 1) end},
      {"limiter URL not a string", ":base_url", fn -> RateLimiter.for_key(:x, "tml-k") end},
      {"limiter key not a string", ":api_key",
       fn -> RateLimiter.for_key("http://x.test", 12) end},
      {"negative backoff", "ms", fn -> RateLimiter.set_backoff(limiter, -1) end},
      {"backoff :infinity", "ms", fn -> RateLimiter.set_backoff(limiter, :infinity) end},
      {"negative attempt", "attempt", fn -> Backoff.delay_ms(config, -1) end},
      {"draw out of [0, 1)", ":u", fn -> Backoff.delay_ms(config, 1, u: 1.5) end},
      {"draw :nan", ":u", fn -> Backoff.delay_ms(config, 1, u: :nan) end},
      {"negative seed", ":seed", fn -> Backoff.schedule(config, 3, seed: -1) end},
      {"huge schedule", "count", fn -> Backoff.schedule(config, 10 ** 6, seed: 1) end},
      {"RetryConfig from a string", "retry_config", fn -> RetryConfig.new("x") end},
      {"RetryConfig with string keys", "atoms", fn -> RetryConfig.new(%{"max_retries" => 1}) end}
    ]
  end

  test "at least 30 invalid configs and requests: clear errors naming the field, nothing sent",
       %{sim: sim} do
    Process.flag(:trap_exit, true)
    client = start_client(sim)
    stats_before = TinkerSim.stats(sim)
    procs_before = Process.list()

    cases = start_link_cases(sim) ++ sample_cases(client) ++ other_api_cases()
    assert length(cases) >= 30

    for {desc, field, fun} <- cases do
      case failure(fun) do
        {how, %ArgumentError{message: msg}} when how in [:returned, :raised] ->
          assert msg =~ field, "#{desc}: #{inspect(msg)} does not name #{field}"
          refute msg =~ @key

        {:returned, %Error{type: :validation, category: :user, message: msg}} ->
          assert msg =~ field, "#{desc}: #{inspect(msg)} does not name #{field}"

        other ->
          flunk("#{desc}: expected a validation error, got #{inspect(other)}")
      end
    end

    # Nothing reached the simulator, and no process was left behind.
    stats_after = TinkerSim.stats(sim)
    assert stats_after["requests_total"] == stats_before["requests_total"]
    assert stats_after["endpoints"] == stats_before["endpoints"]

    assert Process.list()
           |> Kernel.--(procs_before)
           |> Enum.filter(&Process.alive?/1)
           |> Enum.reject(&(:application.get_application(&1) == {:ok, :inets})) == []

    assert SamplingClient.stats(client).processed == 0
  end

  test "a missing API key names TINKER_API_KEY and sends nothing", %{sim: sim} do
    saved = System.get_env("TINKER_API_KEY")
    System.delete_env("TINKER_API_KEY")
    on_exit(fn -> if saved, do: System.put_env("TINKER_API_KEY", saved) end)
    before = TinkerSim.stats(sim)["requests_total"]

    assert {:error, %ArgumentError{message: msg}} =
             SamplingClient.start_link(base_url: sim.base_url, base_model: "m")

    assert msg =~ ":api_key" and msg =~ "TINKER_API_KEY"
    assert TinkerSim.stats(sim)["requests_total"] == before
  end

  describe "malformed server answers" do
    # {rule action for retrieve_future (or asample), what the message says}
    @poll_answers [
      {"truncated JSON", %{"malformed" => true}, "Malformed JSON"},
      {"not JSON", %{"status" => 200, "body_raw" => "<html>oops</html>"}, "Malformed JSON"},
      {"missing fields", %{"status" => 200, "body" => %{}}, "no `sequences`"},
      {"an unknown type", %{"status" => 200, "body" => %{"type" => "banana"}}, "no `sequences`"},
      {"sequences of the wrong type",
       %{"status" => 200, "body" => %{"type" => "sample", "sequences" => "many"}},
       "invalid type"},
      {"tokens of the wrong type",
       %{
         "status" => 200,
         "body" => %{
           "type" => "sample",
           "sequences" => [%{"tokens" => [1.5], "stop_reason" => "length"}]
         }
       }, "invalid type"},
      {"an unknown stop reason",
       %{
         "status" => 200,
         "body" => %{
           "type" => "sample",
           "sequences" => [%{"tokens" => [1], "stop_reason" => "tired"}]
         }
       }, "stop_reason"},
      {"a huge garbage body (8 MB)",
       %{"status" => 200, "body_raw" => String.duplicate("x", 8_000_000)}, "Malformed JSON"},
      {"garbage protobuf",
       %{
         "status" => 200,
         "headers" => %{"content-type" => "application/x-protobuf"},
         "body_raw" => String.duplicate("\u00ff", 64)
       }, "failed to decode Protobuf message"}
    ]

    for {desc, action, fragment} <- @poll_answers do
      @action action
      @fragment fragment
      test "poll answered with #{desc}: a decode error, polled once", %{sim: sim} do
        post_scenario(sim, %{"rules" => [%{"endpoint" => "retrieve_future", "action" => @action}]})

        client = start_client(sim)
        {:ok, task} = SamplingClient.sample(client, prompt(), params())

        assert {:error, %Error{type: :decode, retryable?: false, request_id: "req:" <> _} = e} =
                 Task.await(task, 30_000)

        assert e.message =~ @fragment
        assert length(TinkerSim.log(sim, endpoint: "retrieve_future")) == 1
        assert length(TinkerSim.log(sim, endpoint: "asample")) == 1

        assert %{in_flight: 0, available_permits: n, max_connections: n} =
                 SamplingClient.stats(client)
      end
    end

    test "submit answered with malformed JSON: a decode error, submitted once", %{sim: sim} do
      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "rules" => [%{"endpoint" => "asample", "action" => %{"malformed" => true}}]
        })

      client = start_client(sim)
      {:ok, task} = SamplingClient.sample(client, prompt(), params())
      assert {:error, %Error{type: :decode, retryable?: false}} = Task.await(task, 30_000)
      assert length(TinkerSim.log(sim, endpoint: "asample")) == 1
      assert TinkerSim.log(sim, endpoint: "retrieve_future") == []
    end

    test "submit answered without a request id: a decode error, submitted once", %{sim: sim} do
      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "rules" => [
            %{"endpoint" => "asample", "action" => %{"status" => 200, "body" => %{"ok" => 1}}}
          ]
        })

      client = start_client(sim)
      {:ok, task} = SamplingClient.sample(client, prompt(), params())
      assert {:error, %Error{type: :decode, retryable?: false}} = Task.await(task, 30_000)
      assert length(TinkerSim.log(sim, endpoint: "asample")) == 1
    end

    test "session set-up answered with malformed JSON: start_link fails cleanly", %{sim: sim} do
      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "rules" => [%{"endpoint" => "create_session", "action" => %{"malformed" => true}}]
        })

      Process.flag(:trap_exit, true)

      assert {:error, %Error{type: :decode}} = SamplingClient.start_link(start_opts(sim, []))

      assert length(TinkerSim.log(sim, endpoint: "create_session")) == 1
    end
  end

  # `TinkerSim.set_scenario/2` decodes the scenario the simulator echoes
  # back, which takes seconds for a multi-megabyte body: post it raw.
  defp post_scenario(sim, scenario) do
    url = String.to_charlist(sim.base_url <> "/_sim/scenario")
    body = TinkexNative.Test.JSON.encode!(scenario)

    assert {:ok, {{_, 200, _}, _, _}} =
             :httpc.request(:post, {url, [], ~c"application/json", body}, [timeout: 60_000],
               body_format: :binary
             )
  end

  defp start_client(sim) do
    {:ok, client} =
      SamplingClient.start_link(
        start_opts(sim,
          retry_config: [base_delay_ms: 5, max_delay_ms: 20],
          heartbeat_interval_ms: 600_000,
          timings: [submit_backoff_base: 5, poll_backoff_base: 5, poll_5xx_initial: 1]
        )
      )

    client
  end
end
