# Drives TinkexNative.SamplingClient through the cases of cases.json, the
# table conformance.py drives the official SDK through, so that the two wire
# logs can be compared. Run from the repository root in the test env (the
# debug NIF and the test helpers of test/support):
#
#   MIX_ENV=test mix run test/conformance/tinkex_native_driver.exs -- --case happy --setting poll
#   MIX_ENV=test mix run test/conformance/tinkex_native_driver.exs -- --serve
#
# One case: starts its own simulator unless `--base-url URL` names one,
# runs the case and prints its outcome as one JSON object, then the
# simulator's log of the case (`--log`). `--serve`: reads one request per
# line on stdin, `{"base_url": URL, "case": NAME, "setting": NAME}`, and
# answers each with one line `RESULT <json>` on stdout (everything else,
# log lines included, goes to stderr); it exits when stdin closes.
#
# For each case the driver resets the simulator, posts the case's scenario
# with the setting's client/config flags, marks the start of each step in
# the simulator's log (a POST of `healthz` with `{"conformance_step": i}`),
# starts a client, runs the steps and stops every client it started.

defmodule Conformance.NativeDriver do
  alias TinkexNative.SamplingClient, as: SC
  alias TinkexNative.Test.{JSON, TinkerSim}

  alias TinkexNative.Types.{
    EncodedTextChunk,
    ImageAssetPointerChunk,
    ImageChunk,
    ModelInput,
    SamplingParams
  }

  @key "tml-conformance"
  @model "Qwen/Qwen3-8B"
  @prompt [11, 12, 13, 14]
  @table Path.join(__DIR__, "cases.json")
  @await_ms 60_000

  def main(argv) do
    # Log lines must not mix with the results on stdout.
    Logger.configure_backend(:console, device: :standard_error)
    Logger.configure(level: :info)
    table = @table |> File.read!() |> JSON.decode!()

    argv = if match?(["--" | _], argv), do: tl(argv), else: argv

    case OptionParser.parse!(argv,
           strict: [
             serve: :boolean,
             case: :string,
             setting: :string,
             base_url: :string,
             log: :boolean
           ]
         ) do
      {[serve: true], []} ->
        serve(table)

      {opts, []} ->
        one(table, opts)
    end
  end

  defp serve(table) do
    case IO.read(:stdio, :line) do
      :eof ->
        :ok

      line ->
        req = JSON.decode!(String.trim(line))
        result = run_safely(table, req["base_url"], req["case"], req["setting"])
        IO.puts("RESULT " <> JSON.encode!(result))
        serve(table)
    end
  end

  defp one(table, opts) do
    {sim, base_url} =
      case opts[:base_url] do
        nil ->
          sim = TinkerSim.start(hold_ms: 500)
          {sim, sim.base_url}

        url ->
          {nil, url}
      end

    result = run_safely(table, base_url, opts[:case], opts[:setting] || "poll")
    IO.puts(JSON.encode!(result))

    if opts[:log] do
      for e <- Enum.sort_by(TinkerSim.log(%{base_url: base_url}), & &1["t_us"]) do
        IO.puts(
          Enum.join([e["t_us"], e["endpoint"], e["status"], e["outcome"], e["seq_id"]], " ") <>
            " " <> JSON.encode!(e["body"])
        )
      end
    end

    if sim, do: TinkerSim.stop(sim)
  end

  # A case that raises still answers, so one broken case does not stop
  # the others; the clients it started are stopped in every case.
  defp run_safely(table, base_url, name, setting) do
    case Enum.find(table["cases"], &(&1["name"] == name)) do
      nil ->
        %{"driver_error" => "no case named #{inspect(name)} in cases.json"}

      kase ->
        flags = Map.fetch!(table["settings"], setting)
        parent = self()

        {pid, mref} =
          spawn_monitor(fn ->
            send(parent, {:case_result, self(), run_case(kase, flags, %{base_url: base_url})})
          end)

        receive do
          {:case_result, ^pid, result} ->
            Process.demonitor(mref, [:flush])
            result

          {:DOWN, ^mref, :process, _, reason} ->
            %{"driver_error" => "case process died: #{inspect(reason, limit: 20)}"}
        end
    end
  end

  defp run_case(kase, flags, sim) do
    Process.flag(:trap_exit, true)
    TinkerSim.reset(sim)
    scenario = kase["scenario"] || %{}
    client_config = Map.merge(scenario["client_config"] || %{}, flags)
    {:ok, _} = TinkerSim.set_scenario(sim, Map.put(scenario, "client_config", client_config))

    state = %{sim: sim, case: kase, clients: %{}, order: []}
    mark(sim, 0, "start")
    {start, state} = timed(fn -> start_main(state) end)
    steps = kase["steps"] || []

    {results, state} =
      steps
      |> Enum.with_index(1)
      |> Enum.map_reduce(state, fn {step, i}, st ->
        mark(sim, i, step["op"])
        timed(fn -> step(step, st) end)
      end)

    mark(sim, length(steps) + 1, "end")
    # Anything still running is stopped after the end mark (a case that
    # compares the session's end has an explicit close step).
    stop_all(state)
    %{"steps" => [start | results]}
  end

  defp timed(fun) do
    t0 = System.monotonic_time(:microsecond)
    {result, state} = fun.()
    {Map.put(result, "elapsed_s", (System.monotonic_time(:microsecond) - t0) / 1.0e6), state}
  end

  defp mark(sim, i, op) do
    {:ok, 200, _} =
      TinkerSim.request(sim, :post, "/api/v1/healthz", %{"conformance_step" => i, "op" => op},
        api_key: @key
      )
  end

  ## Steps

  defp start_main(state) do
    opts = [base_model: @model] ++ retry_config(state.case)
    start_client(state, "main", opts)
  end

  defp start_client(state, name, opts) do
    opts = [base_url: state.sim.base_url, api_key: @key] ++ opts

    case SC.start_link(opts) do
      {:ok, pid} ->
        session = SC.session(pid)
        client = %{pid: pid, session: session}

        {%{
           "op" => "start_" <> name,
           "ok" => %{"sampling_session_id" => session.sampling_session_id}
         }, %{state | clients: Map.put(state.clients, name, client), order: [name | state.order]}}

      {:error, e} ->
        {%{"op" => "start_" <> name, "error" => error(e)}, state}
    end
  end

  defp retry_config(kase) do
    case kase["retry_config"] do
      nil ->
        []

      rc ->
        [
          retry_config:
            Enum.map(rc, fn
              {"progress_timeout_ms", v} -> {:progress_timeout_ms, v}
              {"max_connections", v} -> {:max_connections, v}
            end)
        ]
    end
  end

  defp step(%{"op" => "sample"} = s, state) do
    with_client(s, state, fn pid ->
      await(SC.sample(pid, prompt(s), params(s), sample_opts(s)), &sample_response/1)
    end)
  end

  # sample_async/4, then cancel/2 after `after_ms`: the one message the
  # caller gets is the outcome.
  defp step(%{"op" => "sample_then_cancel"} = s, state) do
    with_client(s, state, fn pid ->
      case SC.sample_async(pid, prompt(s), params(s), sample_opts(s)) do
        {:ok, ref} ->
          Process.sleep(Map.fetch!(s, "after_ms"))
          _ = SC.cancel(pid, ref)

          receive do
            {:tinkex_sample, ^ref, {:ok, r}} -> %{"ok" => sample_response(r)}
            {:tinkex_sample, ^ref, {:error, e}} -> %{"error" => error(e)}
          after
            @await_ms -> %{"error" => %{"kind" => "driver_timeout", "message" => "no message"}}
          end

        {:error, e} ->
          %{"error" => error(e)}
      end
    end)
  end

  defp step(%{"op" => "compute_logprobs"} = s, state) do
    with_client(s, state, fn pid ->
      opts = if t = s["timeout_ms"], do: [timeout: t], else: []
      await(SC.compute_logprobs(pid, prompt(s), opts), &%{"prompt_logprobs" => &1})
    end)
  end

  defp step(%{"op" => "clone"}, state) do
    %{session: %{sampling_session_id: ssid}} = Map.fetch!(state.clients, "main")
    {result, state} = start_client(state, "clone", sampling_session_id: ssid)
    {%{result | "op" => "clone"}, state}
  end

  defp step(%{"op" => "close"}, state) do
    # Clones first: the session belongs to the client that created it.
    {%{"op" => "close", "ok" => %{"stopped" => stop_all(state)}},
     %{state | clients: %{}, order: []}}
  end

  defp step(%{"op" => "sleep", "ms" => ms}, state) do
    Process.sleep(ms)
    {%{"op" => "sleep", "ok" => %{}}, state}
  end

  # The SDK's driver cancels here the futures it stopped waiting for; every
  # sample of this driver has ended (a `timeout:` cancels its own sample).
  defp step(%{"op" => "cancel_pending"}, state),
    do: {%{"op" => "cancel_pending", "ok" => %{"cancelled" => 0}}, state}

  defp step(%{"op" => "scenario", "patch" => patch}, state) do
    {:ok, _} = TinkerSim.set_scenario(state.sim, patch)
    {%{"op" => "scenario", "ok" => %{}}, state}
  end

  defp step(%{"op" => "wait_stat", "stat" => stat, "at_least" => n} = s, state) do
    deadline = System.monotonic_time(:millisecond) + Map.get(s, "timeout_ms", 5_000)
    value = wait_stat(state.sim, stat, n, deadline)
    {%{"op" => "wait_stat", "ok" => %{stat => value}}, state}
  end

  defp wait_stat(sim, stat, n, deadline) do
    value = TinkerSim.stats(sim)[stat]

    if value >= n or System.monotonic_time(:millisecond) > deadline do
      value
    else
      Process.sleep(20)
      wait_stat(sim, stat, n, deadline)
    end
  end

  defp params(s) do
    %SamplingParams{
      max_tokens: Map.get(s, "max_tokens", 5),
      temperature: Map.get(s, "temperature", 1.0),
      top_k: Map.get(s, "top_k", -1),
      top_p: Map.get(s, "top_p", 1.0),
      seed: s["seed"],
      stop: s["stop"]
    }
  end

  defp sample_opts(s) do
    [num_samples: Map.get(s, "num_samples", 2)] ++
      for {key, opt} <- [
            {"include_prompt_logprobs", :include_prompt_logprobs},
            {"topk_prompt_logprobs", :topk_prompt_logprobs},
            {"timeout_ms", :timeout}
          ],
          Map.has_key?(s, key),
          do: {opt, s[key]}
  end

  defp with_client(s, state, fun) do
    name = Map.get(s, "on", "main")

    result =
      case state.clients[name] do
        nil -> %{"error" => %{"kind" => "no_client", "message" => "no client #{name}"}}
        c -> fun.(c.pid)
      end

    {Map.put(result, "op", s["op"]), state}
  end

  # A list of token ids, or of chunks in the SDK's JSON form (images with
  # base64 `data`).
  defp prompt(s) do
    case Map.get(s, "prompt", @prompt) do
      [id | _] = ids when is_integer(id) -> ModelInput.from_ints(ids)
      chunks -> %ModelInput{chunks: Enum.map(chunks, &chunk/1)}
    end
  end

  defp chunk(%{"type" => "encoded_text", "tokens" => tokens}),
    do: %EncodedTextChunk{tokens: tokens}

  defp chunk(%{"type" => "image", "data" => data, "format" => format} = c),
    do: %ImageChunk{
      data: Base.decode64!(data),
      format: format,
      expected_tokens: c["expected_tokens"]
    }

  defp chunk(%{"type" => "image_asset_pointer", "location" => location, "format" => format} = c),
    do: %ImageAssetPointerChunk{
      location: location,
      format: format,
      expected_tokens: c["expected_tokens"]
    }

  defp await({:ok, task}, ok) do
    case Task.await(task, @await_ms) do
      {:ok, value} -> %{"ok" => ok.(value)}
      {:error, e} -> %{"error" => error(e)}
    end
  end

  defp await({:error, e}, _ok), do: %{"error" => error(e)}

  defp sample_response(r) do
    %{
      "sequences" =>
        Enum.map(r.sequences, fn s ->
          %{
            "tokens" => s.tokens,
            "logprobs" => s.logprobs,
            "stop_reason" => Atom.to_string(s.stop_reason),
            "sequence_id" => s.sequence_id
          }
        end),
      "prompt_logprobs" => r.prompt_logprobs,
      "topk_prompt_logprobs" =>
        r.topk_prompt_logprobs &&
          Enum.map(r.topk_prompt_logprobs, fn
            nil -> nil
            row -> Enum.map(row, fn {t, lp} -> [t, lp] end)
          end)
    }
  end

  # The kinds both drivers report (README.md, "Outcomes").
  defp error(%TinkexNative.Error{} = e) do
    %{
      "kind" => Atom.to_string(e.type),
      "category" => e.category && Atom.to_string(e.category),
      "status" => e.status,
      "message" => e.message
    }
  end

  defp error(%ArgumentError{message: m}), do: %{"kind" => "argument", "message" => m}

  defp stop_all(state) do
    for name <- state.order, c = state.clients[name] do
      :ok = GenServer.stop(c.pid, :normal, 10_000)
      name
    end
  end
end

Conformance.NativeDriver.main(System.argv())
