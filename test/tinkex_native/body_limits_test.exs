defmodule TinkexNative.BodyLimitsTest do
  use ExUnit.Case, async: true

  alias TinkexNative.{Error, SamplingClient}
  alias TinkexNative.Test.TinkerSim
  alias TinkexNative.Types.{ModelInput, SamplingParams}

  @key "tml-body-limits-test"

  setup do
    # A failed start_link exits its linked caller.
    Process.flag(:trap_exit, true)
    sim = TinkerSim.start()
    on_exit(fn -> TinkerSim.stop(sim) end)
    %{sim: sim}
  end

  defp start_client(sim, opts) do
    SamplingClient.start_link(
      [
        base_url: sim.base_url,
        api_key: @key,
        base_model: "Qwen/Qwen3-8B",
        retry_config: [enable_retry_logic: false]
      ] ++ opts
    )
  end

  defp padded(endpoint, bytes, extra \\ %{}) do
    %{
      "endpoint" => endpoint,
      "action" => Map.merge(%{"status" => 200, "body_bytes" => bytes}, extra)
    }
  end

  defp sample(client, max_tokens) do
    {:ok, task} =
      SamplingClient.sample(client, ModelInput.from_ints([1, 2, 3]), %SamplingParams{
        max_tokens: max_tokens
      })

    Task.await(task, 30_000)
  end

  test ":max_body_bytes is validated, naming the key and the value", %{sim: sim} do
    for {value, message} <- [
          {[result: 0],
           "invalid value for {:max_body_bytes, :result}: expected a positive integer (bytes), got: 0"},
          {[control: "1MiB"],
           ~s|invalid value for {:max_body_bytes, :control}: expected a positive integer (bytes), got: "1MiB"|},
          {[control: 2 ** 64],
           "invalid value for {:max_body_bytes, :control}: expected a positive integer (bytes), got: 18446744073709551616"},
          {[reslt: 5], "invalid :max_body_bytes: unknown option :reslt. Did you mean :result?"},
          {1024,
           "invalid value for :max_body_bytes: expected a keyword list with :result and :control (bytes), got: 1024"},
          {[{"result", 5}],
           ~s|invalid value for :max_body_bytes: expected a keyword list with :result and :control, got: {"result", 5}|}
        ] do
      assert {:error, %ArgumentError{message: ^message}} =
               start_client(sim, max_body_bytes: value)
    end

    assert TinkerSim.log(sim) == []
  end

  test "a control answer over its limit fails the start with a clear error", %{sim: sim} do
    {:ok, _} = TinkerSim.set_scenario(sim, %{"rules" => [padded("client/config", 10_000)]})

    assert {:error, %Error{type: :decode, status: 200, retryable?: false, message: m}} =
             start_client(sim, max_body_bytes: [control: 4_096])

    assert m ==
             "the answer of /api/v1/client/config is too large: Content-Length is 10000 bytes, " <>
               "over the 4096-byte limit of control answers (raise it with max_body_bytes: [control: bytes])"

    # Under the default 1 MiB it is read (its unknown keys are ignored).
    assert {:ok, _client} = start_client(sim, [])
  end

  test "a chunked control answer is counted as it arrives", %{sim: sim} do
    rule = padded("create_session", 2 * 1024 * 1024, %{"chunked" => true})
    {:ok, _} = TinkerSim.set_scenario(sim, %{"rules" => [rule]})

    assert {:error, %Error{type: :decode, message: m}} = start_client(sim, [])
    assert m =~ "/api/v1/create_session is too large: more than 1048576 bytes arrived"
  end

  test "a result over 256 MiB fails the sample without being read", %{sim: sim} do
    {:ok, client} = start_client(sim, [])

    {:ok, _} =
      TinkerSim.set_scenario(sim, %{"rules" => [padded("retrieve_future", 300 * 1024 * 1024)]})

    assert {:error, %Error{type: :decode, retryable?: false, message: m}} = sample(client, 4)
    assert m =~ "/api/v1/retrieve_future is too large: Content-Length is 314572800 bytes"
    assert m =~ "over the 268435456-byte limit of result answers"
  end

  test "the result limit applies to real results, and raising it lets them through", %{sim: sim} do
    # 1000 tokens and their logprobs: about 8 KB of protobuf.
    {:ok, small} = start_client(sim, max_body_bytes: [result: 2_000])
    assert {:error, %Error{type: :decode, message: m}} = sample(small, 1_000)
    assert m =~ "over the 2000-byte limit of result answers"

    {:ok, large} = start_client(sim, max_body_bytes: [result: 20_000])
    assert {:ok, %{sequences: [%{tokens: tokens}]}} = sample(large, 1_000)
    assert length(tokens) == 1_000
  end
end
