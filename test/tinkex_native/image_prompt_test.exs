defmodule TinkexNative.ImagePromptTest do
  use ExUnit.Case, async: true

  doctest TinkexNative.Types.ModelInput
  doctest TinkexNative.Types.ImageChunk
  doctest TinkexNative.Types.ImageAssetPointerChunk

  alias TinkexNative.{Error, SamplingClient}
  alias TinkexNative.Test.TinkerSim

  alias TinkexNative.Types.{
    EncodedTextChunk,
    ImageAssetPointerChunk,
    ImageChunk,
    ModelInput,
    SamplingParams
  }

  @key "tml-image-prompt-test"
  # Bytes that make every base64 character class appear (+, /, padding).
  @png <<137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 251, 255, 254, 62, 63>>

  defp mixed_prompt do
    %ModelInput{
      chunks: [
        %EncodedTextChunk{tokens: [11, 12]},
        %ImageChunk{data: @png, format: :png, expected_tokens: 5},
        %EncodedTextChunk{tokens: [13]},
        %ImageAssetPointerChunk{
          location: "s3://bucket/cat.jpg",
          format: "jpeg",
          expected_tokens: 3
        },
        %ImageChunk{data: "jpeg-bytes", format: :jpeg}
      ]
    }
  end

  # The prompt as the Python SDK serialises it (`model_dump(exclude_none=True)`).
  defp mixed_prompt_json do
    %{
      "chunks" => [
        %{"type" => "encoded_text", "tokens" => [11, 12]},
        %{
          "type" => "image",
          "data" => Base.encode64(@png),
          "format" => "png",
          "expected_tokens" => 5
        },
        %{"type" => "encoded_text", "tokens" => [13]},
        %{
          "type" => "image_asset_pointer",
          "location" => "s3://bucket/cat.jpg",
          "format" => "jpeg",
          "expected_tokens" => 3
        },
        %{"type" => "image", "data" => Base.encode64("jpeg-bytes"), "format" => "jpeg"}
      ]
    }
  end

  describe "validation" do
    defp message(chunks) do
      {:error, %Error{type: :validation, category: :user, message: m}} =
        ModelInput.encode(%ModelInput{chunks: chunks})

      m
    end

    test "every bad image field is named with its value" do
      img = %ImageChunk{data: @png, format: :png}
      ptr = %ImageAssetPointerChunk{location: "s3://x", format: :png}
      text = %EncodedTextChunk{tokens: [1]}

      cases = [
        {[text, %{img | data: ""}],
         "chunks[1].data: expected a non-empty binary of PNG or JPEG bytes, got: \"\""},
        {[%{img | data: [1, 2]}],
         "chunks[0].data: expected a non-empty binary of PNG or JPEG bytes, got: [1, 2]"},
        {[%{img | format: :gif}], "chunks[0].format: expected :png or :jpeg, got: :gif"},
        {[%{img | format: "PNG"}], "chunks[0].format: expected :png or :jpeg, got: \"PNG\""},
        {[%{img | expected_tokens: -1}],
         "chunks[0].expected_tokens: expected nil or a non-negative 32-bit integer, got: -1"},
        {[%{img | expected_tokens: 2 ** 31}],
         "chunks[0].expected_tokens: expected nil or a non-negative 32-bit integer, got: 2147483648"},
        {[%{img | expected_tokens: 1.0}],
         "chunks[0].expected_tokens: expected nil or a non-negative 32-bit integer, got: 1.0"},
        {[text, text, %{ptr | location: ""}],
         "chunks[2].location: expected a non-empty string, got: \"\""},
        {[%{ptr | location: :cat}], "chunks[0].location: expected a non-empty string, got: :cat"},
        {[%{ptr | location: <<255>>}],
         "chunks[0].location: expected a UTF-8 string, got: <<255>>"},
        {[%{ptr | format: nil}], "chunks[0].format: expected :png or :jpeg, got: nil"},
        {[text, %EncodedTextChunk{tokens: [1, 2 ** 31]}],
         "chunks[1].tokens: expected token ids that are 32-bit integers, got: 2147483648"},
        {[text, %{type: "image"}], "chunks[1]: expected a %TinkexNative.Types.EncodedTextChunk{"}
      ]

      for {chunks, want} <- cases do
        got = message(chunks)
        assert String.starts_with?(got, "invalid value for :prompt at "), got
        assert got =~ want, "#{inspect(chunks, limit: 5)}: #{got}"
      end
    end

    test "a big bad image is not dumped into the message" do
      big = :binary.copy("x", 1_000_000)
      m = message([%ImageChunk{data: big, format: :bmp}])
      assert m =~ "chunks[0].format"
      assert byte_size(m) < 300
    end

    test "a prompt of one image and no token is valid; one of empty text chunks is not" do
      assert {:ok, [{:image, ref, :png, nil}]} =
               ModelInput.encode(%ModelInput{chunks: [%ImageChunk{data: @png, format: "png"}]})

      assert is_reference(ref)

      assert message([%EncodedTextChunk{tokens: []}]) ==
               "invalid value for :prompt: expected a prompt with at least one token or image, got: []"
    end

    test "sample/4 refuses a bad image before sending anything" do
      sim = TinkerSim.start()
      on_exit(fn -> TinkerSim.stop(sim) end)
      {:ok, client} = start_client(sim)
      bad = %ModelInput{chunks: [%ImageChunk{data: @png, format: :webp}]}

      assert {:error, %Error{type: :validation, message: m}} =
               SamplingClient.sample(client, bad, %SamplingParams{max_tokens: 2})

      assert m =~ "chunks[0].format: expected :png or :jpeg, got: :webp"

      assert {:error, %Error{type: :validation}} = SamplingClient.compute_logprobs(client, bad)
      assert TinkerSim.log(sim, endpoint: "asample") == []
    end
  end

  describe "length/1 and to_ints/1" do
    test "length/1 of an image without expected_tokens raises, as the SDK's length does" do
      assert_raise ArgumentError,
                   ~r/TinkexNative.Types.ImageChunk is known only when its :expected_tokens is set/,
                   fn -> ModelInput.length(mixed_prompt()) end
    end

    test "length of images with expected_tokens; to_ints refuses images" do
      prompt = %ModelInput{chunks: Enum.drop(mixed_prompt().chunks, -1)}
      assert ModelInput.length(prompt) == 11

      assert_raise ArgumentError, ~r/text chunks only, got a TinkexNative.Types.ImageChunk/, fn ->
        ModelInput.to_ints(prompt)
      end
    end
  end

  describe "against tinker_sim" do
    setup do
      sim = TinkerSim.start()
      on_exit(fn -> TinkerSim.stop(sim) end)
      {:ok, client} = start_client(sim)
      %{sim: sim, client: client}
    end

    test "a mixed text and image prompt is sent as the SDK sends it and its result comes back",
         %{sim: sim, client: client} do
      params = %SamplingParams{max_tokens: 4, temperature: 0.5}

      {:ok, task} =
        SamplingClient.sample(client, mixed_prompt(), params,
          num_samples: 2,
          include_prompt_logprobs: true
        )

      assert {:ok, response} = Task.await(task, 10_000)
      [asample] = TinkerSim.log(sim, endpoint: "asample")
      assert asample["status"] == 200
      assert asample["body"]["prompt"] == mixed_prompt_json()

      want = TinkerSim.expected(sim, asample["body"])

      for {got, exp} <- Enum.zip(response.sequences, want["sequences"]) do
        assert got.tokens == exp["tokens"]
      end

      # One prompt logprob per position: 3 text tokens and 5 + 3 + 0 image tokens.
      assert length(response.prompt_logprobs) == 11
      assert response.prompt_logprobs == want["prompt_logprobs"]
    end

    test "compute_logprobs of a mixed prompt", %{sim: sim, client: client} do
      prompt = %ModelInput{chunks: Enum.take(mixed_prompt().chunks, 2)}
      assert {:ok, task} = SamplingClient.compute_logprobs(client, prompt)
      assert {:ok, logprobs} = Task.await(task, 10_000)
      [asample] = TinkerSim.log(sim, endpoint: "asample")
      assert asample["body"]["prompt"]["chunks"] == Enum.take(mixed_prompt_json()["chunks"], 2)
      assert length(logprobs) == 7
      assert logprobs == TinkerSim.expected(sim, asample["body"])["prompt_logprobs"]
    end

    test "an image's bytes reach the wire unchanged, whatever they are", %{
      sim: sim,
      client: client
    } do
      data = :crypto.strong_rand_bytes(300_001)
      prompt = %ModelInput{chunks: [%ImageChunk{data: data, format: :jpeg, expected_tokens: 1}]}
      {:ok, task} = SamplingClient.sample(client, prompt, %SamplingParams{max_tokens: 1})
      assert {:ok, _} = Task.await(task, 10_000)
      [asample] = TinkerSim.log(sim, endpoint: "asample")
      [chunk] = asample["body"]["prompt"]["chunks"]
      assert Base.decode64!(chunk["data"]) == data
      assert Map.keys(chunk) |> Enum.sort() == ["data", "expected_tokens", "format", "type"]
    end
  end

  defp start_client(sim) do
    SamplingClient.start_link(
      base_url: sim.base_url,
      api_key: @key,
      base_model: "Qwen/Qwen3-8B",
      retry_config: [enable_retry_logic: false]
    )
  end
end
