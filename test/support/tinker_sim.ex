defmodule TinkexNative.Test.TinkerSim do
  @moduledoc """
  Starts the `tinker_sim` binary for a test and talks to its control
  endpoints (`/_sim/...`) over `:httpc`.

  The simulator is a port owned by the calling process: it exits when the
  port closes (its stdin reaches EOF), so a test that crashes never leaves it
  running. The scenario format is documented in `native/tinker_sim/README.md`.

  ## Binary

  `$TINKER_SIM_BIN` if set, else `target/<profile>/tinker_sim` under the
  current directory, where `<profile>` is `$TINKEX_NIF_PROFILE` (default
  `debug`). Build it with `cargo build -p tinker_sim`.

  ## Example

      sim = TinkerSim.start(hold_ms: 200)
      {:ok, _} = TinkerSim.set_scenario(sim, %{"rules" => [
        %{"endpoint" => "asample", "match" => %{"first" => 1},
          "action" => %{"status" => 429, "headers" => %{"retry-after-ms" => "300"}}}
      ]})
      # ... point the client at sim.base_url ...
      [%{"status" => 429} | _] = TinkerSim.log(sim, endpoint: "asample")
      TinkerSim.stop(sim)
  """

  alias TinkexNative.Test.JSON

  @typedoc "A running simulator."
  @type t :: %{port: pos_integer(), base_url: String.t(), os_port: port()}

  @default_key "tml-tinker-sim-test"

  @doc """
  Path of the simulator binary (see the moduledoc).
  """
  @spec binary_path() :: String.t()
  def binary_path do
    System.get_env("TINKER_SIM_BIN") ||
      Path.join([
        File.cwd!(),
        "target",
        System.get_env("TINKEX_NIF_PROFILE", "debug"),
        "tinker_sim"
      ])
  end

  @doc """
  Starts the simulator on an ephemeral port of 127.0.0.1 and waits for its
  `listening on 127.0.0.1:PORT` line.

  ## Options

    * `:latency_ms` - time from asample to result: an integer, or `"A..B"`
      for a uniform range. Defaults to `0`.
    * `:hold_ms` - how long a pending poll is held before `try_again`.
      Defaults to `30_000`.
    * `:api_key` - accept only this key. Defaults to any key starting with `tml-`.
    * `:scenario` - a scenario map applied right after start (via
      `set_scenario/2`; `reset/1` does not restore it).
    * `:log_file` - also write the request log to this JSON-lines file.
    * `:log` - `false` disables the request log. Defaults to `true`.
    * `:args` - extra command-line arguments. Defaults to `[]`.
    * `:timeout` - how long to wait for the first line, in ms. Defaults to `10_000`.
  """
  @spec start(keyword()) :: t()
  def start(opts \\ []) do
    {:ok, _} = Application.ensure_all_started(:inets)
    path = binary_path()

    unless File.exists?(path) do
      raise ArgumentError,
            "tinker_sim binary not found at #{path}; run `cargo build -p tinker_sim` or set TINKER_SIM_BIN"
    end

    port =
      Port.open({:spawn_executable, path}, [
        :binary,
        :exit_status,
        {:line, 4096},
        args: args(opts)
      ])

    sim_port = await_listening(port, Keyword.get(opts, :timeout, 10_000))
    sim = %{port: sim_port, base_url: "http://127.0.0.1:#{sim_port}", os_port: port}

    case Keyword.fetch(opts, :scenario) do
      {:ok, scenario} -> {:ok, _} = set_scenario(sim, scenario)
      :error -> :ok
    end

    sim
  end

  defp args(opts) do
    base = ["--port", "0"]

    flags =
      Enum.flat_map(opts, fn
        {:latency_ms, v} -> ["--latency-ms", to_string(v)]
        {:hold_ms, v} -> ["--hold-ms", to_string(v)]
        {:api_key, v} -> ["--api-key", v]
        {:log_file, v} -> ["--log", v]
        {:log, false} -> ["--no-log"]
        {:args, extra} -> extra
        {key, _} when key in [:log, :scenario, :timeout] -> []
        {key, _} -> raise ArgumentError, "unknown option #{inspect(key)} for TinkerSim.start/1"
      end)

    base ++ flags
  end

  defp await_listening(port, timeout) do
    receive do
      {^port, {:data, {:eol, "listening on 127.0.0.1:" <> p}}} ->
        String.to_integer(p)

      {^port, {:data, {_, other}}} ->
        Port.close(port)
        raise "tinker_sim printed #{inspect(other)} instead of its listening line"

      {^port, {:exit_status, status}} ->
        raise "tinker_sim exited with status #{status} before listening"
    after
      timeout ->
        Port.close(port)
        raise "tinker_sim did not print its listening line within #{timeout} ms"
    end
  end

  @doc """
  Starts a `TinkexNative.SamplingClient` against `sim` and returns its pid:
  `opts` over the defaults `base_url: sim.base_url`,
  `api_key: "tml-tinker-sim-test"` and `base_model: "Qwen/Qwen3-8B"`.
  """
  @spec start_client!(t(), keyword()) :: pid()
  def start_client!(sim, opts \\ []) do
    defaults = [base_url: sim.base_url, api_key: @default_key, base_model: "Qwen/Qwen3-8B"]
    {:ok, client} = TinkexNative.SamplingClient.start_link(Keyword.merge(defaults, opts))
    client
  end

  @doc """
  Stops the simulator: closes its stdin, on which it exits.
  """
  @spec stop(t()) :: :ok
  def stop(%{os_port: port}) do
    if Port.info(port) != nil do
      Port.close(port)
    end

    :ok
  rescue
    ArgumentError -> :ok
  end

  @doc """
  Applies a scenario patch (`POST /_sim/scenario`): the top-level keys given
  replace the current ones. Returns `{:ok, full_scenario}` or
  `{:error, message}`.
  """
  @spec set_scenario(t(), map()) :: {:ok, map()} | {:error, String.t()}
  def set_scenario(sim, scenario) when is_map(scenario) do
    case request(sim, :post, "/_sim/scenario", scenario, api_key: nil) do
      {:ok, 200, doc} -> {:ok, doc}
      {:ok, _, %{"detail" => detail}} -> {:error, detail}
      {:ok, status, body} -> {:error, "status #{status}: #{inspect(body)}"}
      {:error, reason} -> {:error, inspect(reason)}
    end
  end

  @doc """
  The request log (`GET /_sim/log`), oldest first, as maps with the keys
  `seq`, `t_us`, `t_done_us`, `method`, `path`, `endpoint`, `headers`,
  `body`, `status`, `outcome`, `rule`, `seq_id`, `request_id`.

  ## Options

    * `:since` - only entries with `seq >= since`. Defaults to `0`.
    * `:endpoint` - only entries of this endpoint (e.g. `"asample"`).
  """
  @spec log(t(), keyword()) :: [map()]
  def log(sim, opts \\ []) do
    since = Keyword.get(opts, :since, 0)

    {:ok, 200, %{"entries" => entries}} =
      request(sim, :get, "/_sim/log?since=#{since}", nil, api_key: nil)

    case Keyword.fetch(opts, :endpoint) do
      {:ok, endpoint} -> Enum.filter(entries, &(&1["endpoint"] == endpoint))
      :error -> entries
    end
  end

  @doc "The counters (`GET /_sim/stats`)."
  @spec stats(t()) :: map()
  def stats(sim) do
    {:ok, 200, stats} = request(sim, :get, "/_sim/stats", nil, api_key: nil)
    stats
  end

  @doc "Clears futures, log and stats and restores the start-up scenario (`POST /_sim/reset`)."
  @spec reset(t()) :: :ok
  def reset(sim) do
    {:ok, 200, _} = request(sim, :post, "/_sim/reset", %{}, api_key: nil)
    :ok
  end

  @doc """
  The result the simulator produces for an asample body
  (`POST /_sim/expected`): a JSON SampleResponse plus `request_id` and
  `sample_sequence_ids`.
  """
  @spec expected(t(), map()) :: map()
  def expected(sim, asample_body) do
    {:ok, 200, result} = request(sim, :post, "/_sim/expected", asample_body, api_key: nil)
    result
  end

  @doc """
  Sends one request to the simulator and decodes a JSON answer.

  `path` is absolute (`"/api/v1/asample"`). `body` is JSON-encoded unless
  `nil`. Returns `{:ok, status, decoded_body}` (the raw binary when the
  answer is not JSON) or `{:error, reason}`.

  ## Options

    * `:api_key` - sent as `X-API-Key`; `nil` sends none. Defaults to a `tml-` key.
    * `:headers` - extra headers as `{name, value}` string pairs.
    * `:timeout` - in ms. Defaults to `60_000`.
  """
  @spec request(t(), :get | :post, String.t(), term(), keyword()) ::
          {:ok, non_neg_integer(), term()} | {:error, term()}
  def request(sim, method, path, body \\ nil, opts \\ []) do
    url = String.to_charlist(sim.base_url <> path)

    headers =
      case Keyword.get(opts, :api_key, @default_key) do
        nil -> []
        key -> [{~c"x-api-key", String.to_charlist(key)}]
      end ++
        Enum.map(Keyword.get(opts, :headers, []), fn {k, v} ->
          {String.to_charlist(k), String.to_charlist(v)}
        end)

    req =
      case {method, body} do
        {:get, _} -> {url, headers}
        {:post, nil} -> {url, headers, ~c"application/json", ""}
        {:post, body} -> {url, headers, ~c"application/json", JSON.encode!(body)}
      end

    http_opts = [timeout: Keyword.get(opts, :timeout, 60_000), connect_timeout: 5_000]

    case :httpc.request(method, req, http_opts, body_format: :binary) do
      {:ok, {{_, status, _}, resp_headers, resp_body}} ->
        {:ok, status, decode_body(resp_headers, resp_body)}

      {:error, reason} ->
        {:error, reason}
    end
  end

  defp decode_body(headers, body) do
    json? =
      Enum.any?(headers, fn {k, v} ->
        :string.lowercase(k) == ~c"content-type" and :string.find(v, ~c"json") != :nomatch
      end)

    with true <- json? and body != "",
         {:ok, decoded} <- JSON.decode(body) do
      decoded
    else
      _ -> body
    end
  end
end
