defmodule TinkexNative.Test.TinkerSimTest do
  use ExUnit.Case, async: true

  alias TinkexNative.Test.{JSON, TinkerSim}

  defp sample_body(ssid, seq_id, opts \\ []) do
    %{
      "type" => "sample",
      "sampling_session_id" => ssid,
      "seq_id" => seq_id,
      "num_samples" => Keyword.get(opts, :num_samples, 1),
      "prompt" => %{"chunks" => [%{"type" => "encoded_text", "tokens" => [1, 2, 3]}]},
      "sampling_params" => %{
        "max_tokens" => 4,
        "temperature" => 1.0,
        "top_k" => -1,
        "top_p" => 1.0
      },
      "prompt_logprobs" => Keyword.get(opts, :prompt_logprobs, false),
      "topk_prompt_logprobs" => 0
    }
  end

  describe "JSON" do
    test "round-trips nested values, escapes and unicode" do
      value = %{
        "s" => "quote \" backslash \\ newline \n tab \t nul \u0000 é ü 😀",
        "n" => [0, -12, 3.5, -0.25, 1.0e-7, 12_345_678_901_234_567_890],
        "nested" => %{"a" => [true, false, nil, %{}, []]}
      }

      assert value |> JSON.encode!() |> JSON.decode!() == value
      assert JSON.encode!(%{b: 1, a: "x"}) == ~s({"a":"x","b":1})
      assert JSON.encode!("\u0001") == ~s("\\u0001")
    end

    test "decodes escapes, surrogate pairs and numbers" do
      assert JSON.decode!(~s(["\\u00e9\\ud83d\\ude00\\/", 1e2, 2.5E-1, -0, 10])) ==
               ["é😀/", 100.0, 0.25, 0, 10]

      assert JSON.decode!(~s( { "a" : { "b" : [ ] } } )) == %{"a" => %{"b" => []}}
    end

    test "rejects invalid documents" do
      for bad <- [
            "",
            "{",
            "[1,]",
            "01",
            "1.",
            "NaN",
            ~s("\\ud800"),
            ~s({"a" 1}),
            "[1] x",
            <<34, 255, 34>>
          ] do
        assert {:error, _} = JSON.decode(bad), "accepted #{inspect(bad)}"
      end

      assert {:error, _} = JSON.encode(<<255>>)
      assert {:error, _} = JSON.encode({:tuple})
    end
  end

  describe "simulator" do
    setup do
      sim = TinkerSim.start(hold_ms: 300)
      on_exit(fn -> TinkerSim.stop(sim) end)
      %{sim: sim}
    end

    test "happy path: session set-up, asample, poll; result matches /_sim/expected", %{sim: sim} do
      assert {:ok, 200, %{}} =
               TinkerSim.request(sim, :post, "/api/v1/client/config", %{"sdk_version" => "t"})

      {:ok, 200, %{"session_id" => session_id}} =
        TinkerSim.request(sim, :post, "/api/v1/create_session", %{
          "type" => "create_session",
          "tags" => []
        })

      {:ok, 200, %{"sampling_session_id" => ssid}} =
        TinkerSim.request(sim, :post, "/api/v1/create_sampling_session", %{
          "session_id" => session_id,
          "sampling_session_seq_id" => 0,
          "base_model" => "Qwen/Qwen3-8B"
        })

      body = sample_body(ssid, 0, num_samples: 2, prompt_logprobs: true)

      {:ok, 200, %{"request_id" => rid, "sample_sequence_ids" => ids}} =
        TinkerSim.request(sim, :post, "/api/v1/asample", body)

      assert length(ids) == 2

      {:ok, 200, result} =
        TinkerSim.request(sim, :post, "/api/v1/retrieve_future", %{
          "request_id" => rid,
          "allow_metadata_only" => true
        })

      expected = TinkerSim.expected(sim, body)
      assert result["type"] == "sample"
      assert result["sequences"] == expected["sequences"]
      assert [nil | _] = result["prompt_logprobs"]
      assert expected["request_id"] == rid
      assert expected["sample_sequence_ids"] == ids

      stats = TinkerSim.stats(sim)
      assert stats["futures_created"] == 1
      assert stats["futures_completed"] == 1
      assert stats["endpoints"]["asample"] == %{"200" => 1}
    end

    test "scripted 429 on the first asample, visible in the log", %{sim: sim} do
      {:ok, doc} =
        TinkerSim.set_scenario(sim, %{
          "rules" => [
            %{
              "endpoint" => "asample",
              "match" => %{"first" => 1},
              "action" => %{"status" => 429, "headers" => %{"retry-after-ms" => "300"}}
            }
          ]
        })

      assert length(doc["rules"]) == 1
      body = sample_body("s:sample:0", 5)

      assert {:ok, 429, %{"category" => "user"}} =
               TinkerSim.request(sim, :post, "/api/v1/asample", body)

      assert {:ok, 200, %{"request_id" => _}} =
               TinkerSim.request(sim, :post, "/api/v1/asample", body)

      assert {:ok, 200, _} = TinkerSim.request(sim, :post, "/api/v1/asample", body)

      entries = TinkerSim.log(sim, endpoint: "asample")
      assert Enum.map(entries, & &1["status"]) == [429, 200, 200]
      assert Enum.map(entries, & &1["seq_id"]) == [5, 5, 5]
      assert Enum.map(entries, & &1["outcome"]) == ["rule", "created", "duplicate"]
      assert hd(entries)["headers"]["x-api-key"] =~ "<redacted>"
      assert TinkerSim.stats(sim)["duplicate_submissions"] == 1

      assert {:error, message} =
               TinkerSim.set_scenario(sim, %{"rules" => [%{"endpoint" => "nope"}]})

      assert message =~ "rules[0]"
    end

    test "stuck switch: polls are held then answered try_again; reset clears", %{sim: sim} do
      {:ok, %{"stuck" => true}} = TinkerSim.set_scenario(sim, %{"stuck" => true})

      {:ok, 200, %{"request_id" => rid}} =
        TinkerSim.request(sim, :post, "/api/v1/asample", sample_body("s:sample:0", 0))

      {micros, {:ok, 200, answer}} =
        :timer.tc(fn ->
          TinkerSim.request(sim, :post, "/api/v1/retrieve_future", %{"request_id" => rid})
        end)

      assert answer["type"] == "try_again"
      assert micros >= 250_000

      {:ok, _} = TinkerSim.set_scenario(sim, %{"stuck" => false})

      assert {:ok, 200, %{"type" => "sample"}} =
               TinkerSim.request(sim, :post, "/api/v1/retrieve_future", %{"request_id" => rid})

      assert :ok = TinkerSim.reset(sim)
      assert TinkerSim.log(sim) == []
      assert TinkerSim.stats(sim)["requests_total"] == 0
    end

    test "unauthorized and unknown paths answer JSON errors", %{sim: sim} do
      assert {:ok, 401, %{"detail" => _}} =
               TinkerSim.request(sim, :post, "/api/v1/asample", %{}, api_key: "sk-wrong")

      assert {:ok, 404, %{"detail" => "Not Found"}} =
               TinkerSim.request(sim, :post, "/api/v1/nope", %{})

      assert {:ok, 422, %{"field" => "seq_id"}} =
               TinkerSim.request(
                 sim,
                 :post,
                 "/api/v1/asample",
                 Map.delete(sample_body("s", 0), "seq_id")
               )
    end
  end

  test "the simulator exits when its owner closes the port" do
    sim = TinkerSim.start()
    {:os_pid, os_pid} = Port.info(sim.os_port, :os_pid)
    TinkerSim.stop(sim)

    gone =
      Enum.any?(1..50, fn _ ->
        Process.sleep(50)

        {_, status} =
          System.cmd("kill", ["-0", Integer.to_string(os_pid)], stderr_to_stdout: true)

        status != 0
      end)

    assert gone
  end
end
