defmodule TinkexNative.FuturesPollerTest do
  # A client whose server sets `sample_use_retrieve_futures`: results come
  # through one native `retrieve_futures` long poll per session, then one
  # `retrieve_future` fetch per sample.
  use ExUnit.Case, async: true

  import TinkexNative.Test.Wait

  alias TinkexNative.{Error, SamplingClient}
  alias TinkexNative.Test.TinkerSim
  alias TinkexNative.Types.{ModelInput, SampleResponse, SamplingParams}

  @flag %{"client_config" => %{"sample_use_retrieve_futures" => true}}
  @timings [futures_retry: 20, poll_5xx_initial: 1, poll_5xx_cap: 5]

  setup do
    # Short holds: a scenario change reaches the poller within 100 ms.
    sim = TinkerSim.start(hold_ms: 100, scenario: @flag)
    on_exit(fn -> TinkerSim.stop(sim) end)
    %{sim: sim}
  end

  defp start_client(sim, opts) do
    TinkerSim.start_client!(
      sim,
      Keyword.merge([api_key: "tml-futures-poller-test", timings: @timings], opts)
    )
  end

  defp prompt(n \\ 3), do: ModelInput.from_ints([11, 12, n])
  defp params, do: %SamplingParams{max_tokens: 5}

  defp sample!(client) do
    {:ok, task} = SamplingClient.sample(client, prompt(), params())
    Task.await(task, 10_000)
  end

  defp expected_tokens(sim, client, seq_id, n) do
    body = %{
      "type" => "sample",
      "sampling_session_id" => SamplingClient.session(client).sampling_session_id,
      "seq_id" => seq_id,
      "num_samples" => 1,
      "prompt" => %{"chunks" => [%{"type" => "encoded_text", "tokens" => [11, 12, n]}]},
      "sampling_params" => %{
        "max_tokens" => 5,
        "temperature" => 1.0,
        "top_k" => -1,
        "top_p" => 1.0
      }
    }

    hd(TinkerSim.expected(sim, body)["sequences"])["tokens"]
  end

  test "one asample and one retrieve_future per sample; the long polls are shared", %{sim: sim} do
    # Held results, released together once every sample waits on the poller.
    {:ok, _} = TinkerSim.set_scenario(sim, %{"stuck" => true})
    client = start_client(sim, retry_config: nil)
    n = 30

    tasks =
      for i <- 1..n do
        {:ok, task} = SamplingClient.sample(client, prompt(i), params())
        {i, task}
      end

    wait_until(fn -> SamplingClient.stats(client).futures_waiting == n end)
    seen = length(TinkerSim.log(sim))
    {:ok, _} = TinkerSim.set_scenario(sim, %{"stuck" => false})

    for {i, task} <- tasks do
      assert {:ok, %SampleResponse{request_id: rid, sequences: [seq]}} = Task.await(task, 10_000)
      seq_id = rid |> String.split(":") |> List.last() |> String.to_integer()
      assert seq.tokens == expected_tokens(sim, client, seq_id, i)
    end

    assert length(TinkerSim.log(sim, endpoint: "asample")) == n
    fetches = TinkerSim.log(sim, endpoint: "retrieve_future")
    assert length(fetches) == n
    # Each completion announced its size: the full result in one fetch.
    assert Enum.all?(fetches, &(&1["body"]["allow_metadata_only"] == false))

    polls = TinkerSim.log(sim, endpoint: "retrieve_futures")
    # One long poll brings all n completions; a few more carry the acks
    # (per-sample polling of the SDK's shape would take 3 per sample).
    released = Enum.count(polls, &(&1["seq"] >= seen))
    assert released in 1..div(n, 2), "#{released} retrieve_futures after the release"
    ssid = SamplingClient.session(client).sampling_session_id

    assert Enum.all?(
             polls,
             &(&1["body"]["target"] == %{
                 "type" => "sampling_session",
                 "sampling_session_id" => ssid,
                 "cloned_sampler_id" => 0
               })
           )

    # Every fetched result is acknowledged once.
    wait_until(fn ->
      acked =
        Enum.flat_map(
          TinkerSim.log(sim, endpoint: "retrieve_futures"),
          & &1["body"]["retrieved_request_ids"]
        )

      Enum.sort(acked) == Enum.sort(for f <- fetches, do: f["request_id"])
    end)

    assert SamplingClient.stats(client).futures_waiting == 0
  end

  test "without an explicit retry_config the semaphore is dropped; with one it is kept", %{
    sim: sim
  } do
    flagged = start_client(sim, retry_config: nil)
    assert %{max_connections: nil} = SamplingClient.retry_config(flagged)
    assert SamplingClient.stats(flagged).available_permits == nil
    assert {:ok, %SampleResponse{}} = sample!(flagged)

    explicit = start_client(sim, retry_config: [max_connections: 3])
    assert %{max_connections: 3} = SamplingClient.retry_config(explicit)
    assert SamplingClient.stats(explicit).available_permits == 3
    assert {:ok, %SampleResponse{}} = sample!(explicit)

    {:ok, _} = TinkerSim.set_scenario(sim, %{"client_config" => %{}})
    polling = start_client(sim, retry_config: nil)
    assert %{max_connections: 2000} = SamplingClient.retry_config(polling)
  end

  test "a failed completion gives the error with its category", %{sim: sim} do
    {:ok, _} =
      TinkerSim.set_scenario(sim, %{
        "rules" => [
          %{
            "endpoint" => "future",
            "action" => %{"fail" => %{"category" => "server", "error" => "boom"}}
          }
        ]
      })

    client = start_client(sim, retry_config: nil)

    assert {:error,
            %Error{type: :request_failed, category: :server, retryable?: false, message: msg}} =
             sample!(client)

    assert msg =~ "boom"
    assert length(TinkerSim.log(sim, endpoint: "asample")) == 1
    assert [fetch] = TinkerSim.log(sim, endpoint: "retrieve_future")
    assert fetch["outcome"] == "failed"
  end

  test "a terminal poller status fails every waiting sample at once; the next sample works", %{
    sim: sim
  } do
    {:ok, _} = TinkerSim.set_scenario(sim, %{"stuck" => true})
    client = start_client(sim, retry_config: [base_delay_ms: 1, max_delay_ms: 2])

    refs =
      for _ <- 1..4 do
        {:ok, ref} = SamplingClient.sample_async(client, prompt(), params())
        ref
      end

    wait_until(fn -> SamplingClient.stats(client).futures_waiting == 4 end)

    {:ok, _} =
      TinkerSim.set_scenario(sim, %{
        "rules" => [%{"endpoint" => "retrieve_futures", "action" => %{"status" => 404}}]
      })

    ssid = SamplingClient.session(client).sampling_session_id

    for ref <- refs do
      assert_receive {:tinkex_sample, ^ref, {:error, native}}, 5_000

      assert %Error{
               type: :http,
               status: 404,
               retryable?: false,
               message: msg,
               request_id: "req:" <> _
             } = Error.from_native(native)

      assert msg =~ "retrieve_futures polling failed for sampling session #{ssid} (clone 0)"
    end

    # One terminal answer failed all four, and none was resubmitted.
    assert [_] =
             Enum.filter(TinkerSim.log(sim, endpoint: "retrieve_futures"), &(&1["status"] == 404))

    assert length(TinkerSim.log(sim, endpoint: "asample")) == 4
    assert SamplingClient.stats(client).futures_waiting == 0

    {:ok, _} = TinkerSim.set_scenario(sim, %{"rules" => [], "stuck" => false})
    assert {:ok, %SampleResponse{}} = sample!(client)
  end

  test "a sample whose caller dies leaves its poller", %{sim: sim} do
    {:ok, _} = TinkerSim.set_scenario(sim, %{"stuck" => true})
    client = start_client(sim, retry_config: nil)
    parent = self()

    caller =
      spawn(fn ->
        {:ok, _ref} = SamplingClient.sample_async(client, prompt(), params())
        send(parent, :started)
        Process.sleep(:infinity)
      end)

    assert_receive :started
    wait_until(fn -> SamplingClient.stats(client).futures_waiting == 1 end)
    Process.exit(caller, :kill)
    wait_until(fn -> SamplingClient.stats(client).futures_waiting == 0 end)
    assert SamplingClient.stats(client).in_flight == 0
  end
end
