# A tour of tinkex_native against the bundled simulator: a plain sample,
# a 429 storm with Retry-After, an expired future, a fan-out, a stuck
# server and the watchdog. Run with `demo/run`.

alias TinkexNative.SamplingClient
alias TinkexNative.Types.{ModelInput, SamplingParams}

profile = System.get_env("TINKEX_NIF_PROFILE", "release")
sim_bin = Path.join(["target", profile, "tinker_sim"])

port =
  Port.open({:spawn_executable, sim_bin}, [:binary, {:line, 4096}, args: ["--port", "0", "--hold-ms", "1000"]])

base_url =
  receive do
    {^port, {:data, {:eol, "listening on " <> addr}}} -> "http://" <> addr
  after
    10_000 -> raise "tinker_sim did not start"
  end

:inets.start()

scenario = fn json ->
  {:ok, {{_, 200, _}, _, _}} =
    :httpc.request(:post, {~c"#{base_url}/_sim/scenario", [], ~c"application/json", json}, [], [])
end

say = fn text -> IO.puts("\n== " <> text) end
IO.puts("tinker_sim listening at #{base_url}")

{:ok, client} =
  SamplingClient.start_link(
    base_url: base_url,
    api_key: "tml-demo",
    base_model: "Qwen/Qwen3-8B",
    retry_config: [max_connections: 64, base_delay_ms: 100, max_delay_ms: 1_000, progress_timeout_ms: 1_500]
  )

IO.puts("sampling session: #{SamplingClient.session(client).sampling_session_id}")
prompt = ModelInput.from_ints([101, 2023, 2003, 1037, 3231])
params = %SamplingParams{max_tokens: 8, temperature: 0.7}
await = fn {:ok, task} -> Task.await(task, 60_000) end

say.("one sample, two sequences")
{:ok, resp} = await.(SamplingClient.sample(client, prompt, params, num_samples: 2))
for s <- resp.sequences, do: IO.puts("  #{s.sequence_id}: #{inspect(s.tokens)} (#{s.stop_reason})")

say.("prompt logprobs")
{:ok, lps} = await.(SamplingClient.compute_logprobs(client, prompt))
IO.puts("  #{inspect(lps)}")

say.("429 storm on submit: shared backoff, server's retry-after-ms: 300, same seq_id resent")
scenario.(~s({"rules":[{"endpoint":"asample","match":{"first":3},"action":{"status":429,"headers":{"retry-after-ms":"300"}}}]}))
{us, {:ok, _}} = :timer.tc(fn -> await.(SamplingClient.sample(client, prompt, params)) end)
IO.puts("  succeeded after #{div(us, 1000)} ms (3 × 300 ms of backoff)")

say.("an expired future (410): a new attempt with a new seq_id")
scenario.(~s({"rules":[{"endpoint":"retrieve_future","match":{"first":1},"action":{"status":410}}]}))
{:ok, _} = await.(SamplingClient.sample(client, prompt, params))
IO.puts("  ok; retries so far: #{SamplingClient.stats(client).retries}")

say.("fan-out: 2000 samples with sample_async, 20% of polls answer 503")
scenario.(~s({"seed":1,"rules":[{"endpoint":"retrieve_future","match":{"rate":0.2},"action":{"status":503}}]}))
t0 = System.monotonic_time(:millisecond)

refs =
  for _ <- 1..2000 do
    {:ok, ref} = SamplingClient.sample_async(client, prompt, params)
    ref
  end

ok = Enum.count(refs, fn ref -> match?({:ok, _}, receive(do: ({:tinkex_sample, ^ref, r} -> r))) end)
IO.puts("  #{ok}/2000 ok in #{System.monotonic_time(:millisecond) - t0} ms")

say.("a stuck server: the watchdog fails in-flight samples after progress_timeout (1.5 s)")
scenario.(~s({"rules":[],"stuck":true}))
tasks = for _ <- 1..3, do: elem(SamplingClient.sample(client, prompt, params), 1)

for t <- tasks do
  {:error, e} = Task.await(t, 10_000)
  IO.puts("  #{e.type}: #{e.message}")
end

scenario.(~s({"stuck":false}))
{:ok, _} = await.(SamplingClient.sample(client, prompt, params))
IO.puts("  server recovered: new samples succeed")

say.("stats")
IO.inspect(SamplingClient.stats(client))
Port.close(port)
