# tinkex with TinkexNative.Tinkex.SamplingClient as its sampling client:
# 200 samples through a 429 storm of the bundled simulator, tinker_sim.
#
# Run it inside a tinkex project that depends on tinkex_native (see
# README.md next to this file):
#
#     mix run path/to/examples/tinkex/sample_through_429_storm.exs
#
# It starts tinker_sim itself (TINKER_SIM_BIN, else tinkex_native's
# target/release/tinker_sim, built with cargo when missing), then a
# Tinkex.ServiceClient against it, whose session tinkex creates and
# heartbeats, and a sampling client with %Tinkex.RetryConfig{max_connections: 4}.

Logger.configure(level: :warning)

defmodule Example.Sim do
  @moduledoc false
  # tinker_sim as a port: it exits when the port (its stdin) closes.

  def start(scenario) do
    path = scenario_file(scenario)
    bin = binary()

    port =
      Port.open({:spawn_executable, bin}, [
        :binary,
        :exit_status,
        {:line, 4096},
        args: ["--port", "0", "--scenario", path]
      ])

    receive do
      {^port, {:data, {:eol, "listening on " <> addr}}} -> {port, "http://" <> addr}
      {^port, {:exit_status, s}} -> raise "tinker_sim exited with status #{s}"
    after
      15_000 -> raise "tinker_sim did not start within 15 s"
    end
  end

  defp scenario_file(scenario) do
    path =
      Path.join(
        System.tmp_dir!(),
        "tinkex_native_example_#{System.unique_integer([:positive])}.json"
      )

    File.write!(path, Jason.encode!(scenario))
    path
  end

  defp binary do
    dep =
      Mix.Project.deps_paths()[:tinkex_native] ||
        raise "this project does not depend on tinkex_native"

    built = Path.join([dep, "target", "release", "tinker_sim"])

    cond do
      bin = System.get_env("TINKER_SIM_BIN") ->
        bin

      File.exists?(built) ->
        built

      true ->
        IO.puts("building tinker_sim (once): cargo build --release -p tinker_sim in #{dep}")

        {_, 0} =
          System.cmd("cargo", ~w(build --release --locked -p tinker_sim),
            cd: dep,
            into: IO.stream()
          )

        built
    end
  end

  def get(base_url, path) do
    {:ok, {{_, 200, _}, _, body}} =
      :httpc.request(:get, {~c"#{base_url}#{path}", []}, [], body_format: :binary)

    Jason.decode!(body)
  end

  def post(base_url, path, body) do
    req = {~c"#{base_url}#{path}", [], ~c"application/json", Jason.encode!(body)}
    {:ok, {{_, 200, _}, _, resp}} = :httpc.request(:post, req, [], body_format: :binary)
    Jason.decode!(resp)
  end
end

# The storm: the first 120 asample calls answer 429 (retry-after-ms: 20),
# then one in four at random; results are ready 5-25 ms after submission.
scenario = %{
  "seed" => 7,
  "latency_ms" => "5..25",
  "rules" => [
    %{
      "name" => "storm",
      "endpoint" => "asample",
      "match" => %{"first" => 120},
      "action" => %{"status" => 429, "headers" => %{"retry-after-ms" => "20"}}
    },
    %{
      "name" => "gusts",
      "endpoint" => "asample",
      "match" => %{"rate" => 0.25},
      "action" => %{"status" => 429, "headers" => %{"retry-after-ms" => "20"}}
    }
  ]
}

{:ok, _} = Application.ensure_all_started(:inets)
{sim_port, base_url} = Example.Sim.start(scenario)
IO.puts("tinker_sim at #{base_url}")

{:ok, _} = Application.ensure_all_started(:tinkex)
# tinkex falls back to this pool; an application of its own may start none.
if Process.whereis(Tinkex.HTTP.Pool) == nil,
  do: {:ok, _} = Finch.start_link(name: Tinkex.HTTP.Pool)

config = Tinkex.Config.new(base_url: base_url, api_key: "tml-example-key")

{:ok, service} =
  Tinkex.ServiceClient.start_link(
    config: config,
    sampling_client_module: TinkexNative.Tinkex.SamplingClient
  )

{:ok, client} =
  Tinkex.ServiceClient.create_sampling_client(service,
    base_model: "Qwen/Qwen3-8B",
    retry_config: %Tinkex.RetryConfig{max_connections: 4}
  )

%{session_id: session_id, sampling_session_id: ssid} = TinkexNative.SamplingClient.session(client)
IO.puts("tinkex session #{session_id}, sampling session #{ssid}")

IO.puts(
  "max_connections in force: #{TinkexNative.SamplingClient.retry_config(client).max_connections}"
)

prompt = Tinkex.Types.ModelInput.from_ints([101, 102, 103, 104])
params = %Tinkex.Types.SamplingParams{max_tokens: 8, temperature: 0.7}
n = 200

started = System.monotonic_time(:millisecond)

results =
  for _ <- 1..n do
    {:ok, task} =
      TinkexNative.Tinkex.SamplingClient.sample(client, prompt, params, timeout: 120_000)

    task
  end
  |> Task.await_many(180_000)

elapsed = System.monotonic_time(:millisecond) - started

{oks, errors} = Enum.split_with(results, &match?({:ok, %Tinkex.Types.SampleResponse{}}, &1))
IO.puts("\n#{n} samples in #{elapsed} ms: #{length(oks)} ok, #{length(errors)} errors")

for {:error, %Tinkex.Error{} = e} <- Enum.take(errors, 5),
    do: IO.puts("  error: #{Tinkex.Error.format(e)}")

sequences = for {:ok, r} <- oks, s <- r.sequences, do: s

IO.puts(
  "sequences: #{length(sequences)}, stop reasons #{inspect(Enum.frequencies_by(sequences, & &1.stop_reason))}, " <>
    "tokens each #{inspect(sequences |> Enum.map(&length(&1.tokens)) |> Enum.uniq(), charlists: :as_lists)}"
)

[%Tinkex.Types.SampleResponse{sequences: [first | _]} | _] = for {:ok, r} <- oks, do: r

IO.puts(
  "first result: %Tinkex.Types.SampledSequence{tokens: #{inspect(first.tokens)}, stop_reason: #{inspect(first.stop_reason)}}"
)

# Each sample is the simulator's deterministic answer for one seq_id.
expected =
  for seq_id <- 0..(n - 1) do
    body = %{
      "type" => "sample",
      "sampling_session_id" => ssid,
      "seq_id" => seq_id,
      "num_samples" => 1,
      "prompt" => %{"chunks" => [%{"type" => "encoded_text", "tokens" => [101, 102, 103, 104]}]},
      "sampling_params" => %{
        "max_tokens" => 8,
        "temperature" => 0.7,
        "top_k" => -1,
        "top_p" => 1.0
      }
    }

    hd(Example.Sim.post(base_url, "/_sim/expected", body)["sequences"])["tokens"]
  end

IO.puts(
  "results equal to the simulator's answers for seq_ids 0..#{n - 1}: " <>
    "#{Enum.sort(Enum.map(sequences, & &1.tokens)) == Enum.sort(expected)}"
)

stats = Example.Sim.get(base_url, "/_sim/stats")
log = Example.Sim.get(base_url, "/_sim/log")["entries"]
asamples = Enum.filter(log, &(&1["endpoint"] == "asample"))

IO.puts("\nsimulator:")
IO.puts("  asample answers by status: #{inspect(stats["endpoints"]["asample"])}")
IO.puts("  retrieve_future answers by status: #{inspect(stats["endpoints"]["retrieve_future"])}")

IO.puts(
  "  distinct seq_ids submitted: #{asamples |> Enum.map(& &1["body"]["seq_id"]) |> Enum.uniq() |> length()} " <>
    "(a 429 resends the same seq_id), duplicate submissions: #{stats["duplicate_submissions"]}"
)

for r <- stats["rules"],
    do: IO.puts("  rule #{r["name"]}: seen #{r["seen"]}, fired #{r["fired"]}")

# A sample (one seq_id: a 429 resends the same one) is in flight from its
# first asample's arrival to its last poll's answer.
spans =
  log
  |> Enum.filter(&(&1["endpoint"] in ["asample", "retrieve_future"]))
  |> Enum.group_by(& &1["seq_id"])
  |> Enum.map(fn {_, es} ->
    {Enum.min(Enum.map(es, & &1["t_us"])), Enum.max(Enum.map(es, & &1["t_done_us"]))}
  end)

{most, _} =
  spans
  |> Enum.flat_map(fn {from, to} -> [{from, 1}, {to, -1}] end)
  |> Enum.sort()
  |> Enum.reduce({0, 0}, fn {_, d}, {m, k} -> {max(m, k + d), k + d} end)

IO.puts("  most samples in flight at once: #{most} (max_connections 4)")

IO.puts(
  "  sessions created: #{stats["endpoints"]["create_session"] |> Map.values() |> Enum.sum()} (by tinkex), " <>
    "sampling sessions created: #{stats["endpoints"]["create_sampling_session"] |> Map.values() |> Enum.sum()}"
)

IO.puts(
  "\nclient stats: #{inspect(Map.take(TinkexNative.SamplingClient.stats(client), [:processed, :in_flight, :available_permits, :retries, :backoff_ms]))}"
)

GenServer.stop(service)
Port.close(sim_port)
