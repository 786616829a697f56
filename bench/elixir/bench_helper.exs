# Shared helpers of the tinkex_native benches (loaded by the other scripts
# with Code.require_file). Not a bench itself.
#
# Env: SIM_URL (the simulator, e.g. http://127.0.0.1:PORT; required),
#      BENCH_OUT (a file to write the bench's JSON result to; optional).

defmodule Bench do
  @moduledoc false

  @api_key "tml-bench"
  @base_model "Qwen/Qwen3-8B"

  def sim_url do
    System.get_env("SIM_URL") ||
      raise "SIM_URL is not set: start target/release/tinker_sim and pass its URL"
  end

  def env_int(name, default) do
    v = System.get_env(name, to_string(default))

    case Integer.parse(v) do
      {i, ""} -> i
      _ -> raise ArgumentError, "#{name}: expected an integer, got #{inspect(v)}"
    end
  end

  def env_float(name, default) do
    v = System.get_env(name, to_string(default))

    case Float.parse(v) do
      {f, ""} when f > 0 ->
        f

      _ ->
        raise ArgumentError, "#{name}: expected a positive number of seconds, got #{inspect(v)}"
    end
  end

  def env_ints(name, default) do
    System.get_env(name, default)
    |> String.split(",", trim: true)
    |> Enum.map(&String.to_integer/1)
  end

  # ---- the client ----------------------------------------------------------

  def start_client(retry_config) do
    {:ok, client} =
      TinkexNative.SamplingClient.start_link(
        base_url: sim_url(),
        api_key: @api_key,
        base_model: @base_model,
        retry_config: retry_config
      )

    client
  end

  def prompt, do: TinkexNative.Types.ModelInput.from_ints([1, 2, 3])

  def params(max_tokens \\ 16),
    do: %TinkexNative.Types.SamplingParams{max_tokens: max_tokens, temperature: 0.7}

  def sample!(client, prompt, params) do
    {:ok, ref} = TinkexNative.SamplingClient.sample_async(client, prompt, params, num_samples: 1)
    ref
  end

  @doc "One sample, awaited (warm-up: session set-up and connections are not timed)."
  def warm_up(client, n \\ 8) do
    for _ <- 1..n, do: sample!(client, prompt(), params())
    {ok, err, _} = drain(n, fn -> :ok end, 0, 0, nil)
    if err > 0, do: raise("warm-up failed: #{ok} ok, #{err} errors")
    :ok
  end

  @doc """
  Runs samples keeping `window` outstanding (`sample_async`, a new one
  submitted as each result arrives) until `amount` is used up, then waits
  for the outstanding ones. `amount` is a sample count or `{:seconds, s}`
  (keep submitting for `s` seconds). Returns `%{ok:, errors:, seconds:,
  samples_per_s:, client_cpu_s:, sim_cpu_s:, first_error:}`.
  """
  def run_window(client, amount, window) do
    prompt = prompt()
    params = params()
    submit = fn -> sample!(client, prompt, params) end
    cpu0 = cpu_pair()
    t0 = System.monotonic_time(:microsecond)

    more? =
      case amount do
        {:seconds, s} ->
          deadline = t0 + round(s * 1.0e6)
          fn _sent -> System.monotonic_time(:microsecond) < deadline end

        total when is_integer(total) ->
          fn sent -> sent < total end
      end

    first =
      case amount do
        {:seconds, _} -> window
        total -> min(window, total)
      end

    for _ <- 1..first//1, do: submit.()
    {ok, errors, first_error} = drain_window(first, first, more?, submit, 0, 0, nil)
    seconds = (System.monotonic_time(:microsecond) - t0) / 1.0e6
    cpu = cpu_delta(cpu0, cpu_pair())

    %{
      client_cpu_s: cpu.client_cpu_s,
      sim_cpu_s: cpu.sim_cpu_s,
      ok: ok,
      errors: errors,
      seconds: seconds,
      samples_per_s: ok / seconds,
      first_error: first_error && inspect(first_error, limit: 20)
    }
  end

  defp drain_window(_sent, 0, _more?, _submit, ok, err, first), do: {ok, err, first}

  defp drain_window(sent, outstanding, more?, submit, ok, err, first) do
    receive do
      {:tinkex_sample, _ref, result} ->
        {ok, err, first} = count(result, ok, err, first)

        if more?.(sent) do
          submit.()
          drain_window(sent + 1, outstanding, more?, submit, ok, err, first)
        else
          drain_window(sent, outstanding - 1, more?, submit, ok, err, first)
        end
    end
  end

  @doc "Waits for `n` results; `on_each` runs after each one."
  def drain(0, _on_each, ok, err, first), do: {ok, err, first}

  def drain(n, on_each, ok, err, first) do
    receive do
      {:tinkex_sample, _ref, result} ->
        {ok, err, first} = count(result, ok, err, first)
        on_each.()
        drain(n - 1, on_each, ok, err, first)
    end
  end

  defp count({:ok, _}, ok, err, first), do: {ok + 1, err, first}
  defp count({:error, e}, ok, err, first), do: {ok, err + 1, first || e}

  # ---- the simulator's admin API ------------------------------------------

  def admin(path, body \\ nil) do
    url = String.to_charlist(sim_url() <> "/_sim/" <> path)

    request =
      case body do
        nil -> {:get, {url, []}}
        b -> {:post, {url, [], ~c"application/json", json(b)}}
      end

    {method, req} = request

    case :httpc.request(method, req, [timeout: 30_000], body_format: :binary) do
      {:ok, {{_, 200, _}, _headers, resp}} ->
        resp

      {:ok, {{_, status, _}, _headers, resp}} ->
        raise "tinker_sim /_sim/#{path} answered #{status}: #{resp}"

      {:error, reason} ->
        raise "tinker_sim /_sim/#{path} at #{sim_url()}: #{inspect(reason)}"
    end
  end

  def scenario(doc), do: admin("scenario", doc)
  def reset, do: admin("reset", %{})
  def stats, do: admin("stats")

  @doc """
  asample + retrieve_future + retrieve_futures requests answered, from a
  /_sim/stats body (retrieve_futures: the session poller a server turns on
  with `client_config.sample_use_retrieve_futures`).
  """
  def sample_requests(stats_body) do
    for name <- ["asample", "retrieve_future", "retrieve_futures"], reduce: 0 do
      acc ->
        case Regex.run(~r/"#{name}":\{([^}]*)\}/, stats_body) do
          [_, inner] ->
            acc +
              (Regex.scan(~r/":(\d+)/, inner)
               |> Enum.map(fn [_, n] -> String.to_integer(n) end)
               |> Enum.sum())

          nil ->
            acc
        end
    end
  end

  @doc "How many times `endpoint` answered `status`, from a /_sim/stats body."
  def status_count(stats_body, endpoint, status) do
    with [_, inner] <- Regex.run(~r/"#{endpoint}":\{([^}]*)\}/, stats_body),
         [_, n] <- Regex.run(~r/"#{status}":(\d+)/, inner) do
      String.to_integer(n)
    else
      _ -> 0
    end
  end

  # ---- measurements ---------------------------------------------------------

  @doc "Resident set size of this OS process, in bytes (VmRSS)."
  def rss_bytes do
    "/proc/self/status"
    |> File.read!()
    |> String.split("\n")
    |> Enum.find_value(fn
      "VmRSS:" <> rest -> rest |> String.trim() |> String.split() |> hd() |> String.to_integer()
      _ -> nil
    end)
    |> Kernel.*(1024)
  end

  @doc "User + system CPU seconds of an OS process (\"self\" or a pid), or nil."
  def cpu_seconds(pid) do
    case File.read("/proc/#{pid}/stat") do
      {:ok, stat} ->
        # Fields after the command name (which may hold spaces or parens):
        # utime and stime are fields 14 and 15, in clock ticks (100/s).
        [_, rest] = Regex.run(~r/^.*\) (.*)$/s, stat)
        f = String.split(rest)
        (String.to_integer(Enum.at(f, 11)) + String.to_integer(Enum.at(f, 12))) / 100

      _ ->
        nil
    end
  end

  @doc "CPU seconds of this VM and of the simulator (env SIM_PID), as a pair."
  def cpu_pair,
    do: {cpu_seconds("self"), System.get_env("SIM_PID") && cpu_seconds(System.get_env("SIM_PID"))}

  def cpu_delta({a0, b0}, {a1, b1}) do
    d = fn x, y -> if is_number(x) and is_number(y), do: Float.round(y - x, 2), else: nil end
    %{client_cpu_s: d.(a0, a1), sim_cpu_s: d.(b0, b1)}
  end

  def percentile(sorted, p) when sorted != [] do
    Enum.at(sorted, min(length(sorted) - 1, trunc(p * length(sorted))))
  end

  # ---- output ----------------------------------------------------------------

  def emit(result) do
    line = json(result)
    IO.puts(line)
    if path = System.get_env("BENCH_OUT"), do: File.write!(path, line <> "\n")
    :ok
  end

  @doc "JSON text of a term; `{:json, text}` is JSON already and goes in as is."
  def json({:json, text}) when is_binary(text), do: text
  def json(nil), do: "null"
  def json(true), do: "true"
  def json(false), do: "false"
  def json(a) when is_atom(a), do: json(Atom.to_string(a))
  def json(i) when is_integer(i), do: Integer.to_string(i)
  def json(f) when is_float(f), do: :erlang.float_to_binary(f, [:compact, decimals: 6])

  def json(s) when is_binary(s) do
    escaped =
      for <<c::utf8 <- s>>, into: "" do
        case c do
          ?" -> "\\\""
          ?\\ -> "\\\\"
          c when c < 0x20 -> "\\u" <> String.pad_leading(Integer.to_string(c, 16), 4, "0")
          c -> <<c::utf8>>
        end
      end

    "\"" <> escaped <> "\""
  end

  def json(m) when is_map(m),
    do: "{" <> Enum.map_join(m, ",", fn {k, v} -> json(to_string(k)) <> ":" <> json(v) end) <> "}"

  def json(l) when is_list(l), do: "[" <> Enum.map_join(l, ",", &json/1) <> "]"
end
