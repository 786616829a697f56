defmodule TinkexNative.SecretsTest do
  # Secrets and transport (issue 7): the API key never shows in `inspect`
  # of a struct or of process state, in logs at any level, in telemetry
  # metadata, in error messages or in the crash report of a client; TLS
  # certificates are verified; plain http only for loopback hosts or with
  # `allow_insecure: true`.
  #
  # async: false: it raises the Logger level to :debug and adds a raw
  # `:logger` handler (which also sees the SASL-domain crash reports that
  # Elixir's Logger drops by default) for the whole VM.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  require Logger

  alias TinkexNative.{Error, RateLimiter, RetryHandler, SamplingClient, Telemetry}
  alias TinkexNative.Test.TinkerSim
  alias TinkexNative.Types.{ModelInput, SamplingParams}

  @key "tml-sEcReT-4f2d9c81b7e05a"
  @wrong_key "tml-WrOnG-93a1c7e2d4f60b"
  # The parts that identify the keys (the "tml-" prefix is public).
  @secrets ["sEcReT-4f2d9c81b7e05a", "WrOnG-93a1c7e2d4f60b"]

  defmodule Capture do
    @moduledoc false
    # A `:logger` handler forwarding every event, raw, to a test process.
    def log(event, %{config: %{pid: pid}}), do: send(pid, {:captured_log, event})
  end

  setup do
    sim = TinkerSim.start(hold_ms: 200, api_key: @key)
    level = Logger.level()
    Logger.configure(level: :debug)
    :ok = :logger.add_handler(:tinkex_secrets, Capture, %{config: %{pid: self()}, level: :all})
    Telemetry.attach_sink(self())

    test_pid = self()

    on_exit(fn ->
      Telemetry.detach_sink(test_pid)
      :logger.remove_handler(:tinkex_secrets)
      Logger.configure(level: level)
      TinkerSim.stop(sim)
    end)

    %{sim: sim}
  end

  @timings [
    submit_backoff_base: 5,
    poll_backoff_base: 5,
    poll_5xx_initial: 1,
    rate_limit_small: 20,
    pause_log_interval: 1
  ]

  defp start_client(sim, opts \\ []) do
    defaults = [
      base_url: sim.base_url,
      api_key: @key,
      base_model: "Qwen/Qwen3-8B",
      timings: @timings,
      heartbeat_interval_ms: 50,
      retry_config: [base_delay_ms: 5, max_delay_ms: 20]
    ]

    {:ok, client} = SamplingClient.start_link(Keyword.merge(defaults, opts))
    client
  end

  defp sample(client) do
    {:ok, task} = SamplingClient.sample(client, ModelInput.from_ints([1, 2]), %SamplingParams{})
    Task.await(task, 10_000)
  end

  # Everything, shown in full, without the structs' own Inspect.
  defp show(term) do
    inspect(term, limit: :infinity, printable_limit: :infinity, structs: false) <>
      inspect(term, limit: :infinity, printable_limit: :infinity)
  end

  defp refute_secret(text, what) do
    for s <- @secrets do
      refute text =~ s, "the API key shows in #{what}"
    end

    text
  end

  defp format(event) do
    :logger_formatter.format(event, %{
      single_line: false,
      depth: :unlimited,
      chars_limit: :unlimited,
      max_size: :unlimited
    })
  end

  # Every raw log event and telemetry event received so far, formatted.
  defp captured do
    receive do
      {:captured_log, event} ->
        [show(event), IO.iodata_to_binary(format(event)) | captured()]

      {:tinkex_telemetry, _, _, _} = t ->
        [show(t) | captured()]
    after
      0 -> []
    end
  end

  test "inspect of structs and process state never shows the key", %{sim: sim} do
    client = start_client(sim)
    assert {:ok, _} = sample(client)
    {:ok, handle} = TinkexNative.ClientTable.fetch(client)

    for {what, term} <- [
          {"the client state", :sys.get_state(client)},
          {"the client status", :sys.get_status(client)},
          {"the client's process info", Process.info(client)},
          {"the published handle", handle},
          {"the client table", :ets.tab2list(TinkexNative.ClientTable)},
          {"stats", SamplingClient.stats(client)},
          {"the retry config", SamplingClient.retry_config(client)},
          {"the session", SamplingClient.session(client)},
          {"the handler", handle.handler},
          {"the handler stats", RetryHandler.stats(handle.handler)},
          {"the rate limiter", RateLimiter.for_key(sim.base_url, @key)}
        ] do
      refute_secret(show(term), what)
    end
  end

  test "logs at every level, telemetry and errors never show the key", %{sim: sim} do
    {:ok, _} =
      TinkerSim.set_scenario(sim, %{
        "rules" => [
          %{"endpoint" => "session_heartbeat", "action" => %{"status" => 503}},
          %{"endpoint" => "asample", "match" => %{"first" => 1}, "action" => %{"status" => 429}},
          %{
            "endpoint" => "retrieve_future",
            "match" => %{"seq_id" => 0},
            "action" => %{"status" => 410}
          },
          %{
            "endpoint" => "future",
            "match" => %{"seq_id" => 2},
            "action" => %{"fail" => %{"category" => "user", "error" => "bad"}}
          },
          %{
            "endpoint" => "future",
            "action" => %{"try_again" => %{"count" => 3, "queue_state" => "paused_rate_limit"}}
          }
        ]
      })

    Process.flag(:trap_exit, true)

    log =
      capture_log([level: :debug], fn ->
        client = start_client(sim)
        # 429 then 410 then success; a failed future; pause logs.
        assert {:ok, _} = sample(client)
        assert {:error, %Error{type: :request_failed} = failed} = sample(client)
        refute_secret(show(failed), "a failed sample's error")

        # The server refuses the key mid-session (heartbeats still fail).
        {:ok, _} =
          TinkerSim.set_scenario(sim, %{
            "rules" => [
              %{"endpoint" => "session_heartbeat", "action" => %{"status" => 503}},
              %{"endpoint" => "asample", "action" => %{"status" => 401}}
            ]
          })

        assert {:error, %Error{status: 401} = e401} = sample(client)
        refute_secret(show(e401), "a 401 error")

        # Heartbeats failed all along (logged at debug).
        await_log("session heartbeat failed")

        # The wrong key at start: 401, and neither key in the error.
        assert {:error, %Error{status: 401} = wrong} =
                 SamplingClient.start_link(
                   base_url: sim.base_url,
                   api_key: @wrong_key,
                   base_model: "m"
                 )

        refute_secret(show(wrong), "the wrong key's error")

        # Bad options next to a real key.
        for opts <- [
              [base_url: "http://127.0.0.1:99999"],
              [base_url: "http://example.com"],
              [base_url: "not a url"],
              [api_key: "tml-sEcReT-4f2d9c81b7e05a\n"],
              [api_key: @key, retry_config: [max_connections: 0]],
              [api_key: @key, bogus: 1]
            ] do
          assert {:error, %ArgumentError{} = e} =
                   SamplingClient.start_link(
                     Keyword.merge([base_url: sim.base_url, api_key: @key, base_model: "m"], opts)
                   )

          refute_secret(show(e), "an option error")
        end

        # A connection error (the server hangs up), one attempt only.
        {:ok, _} =
          TinkerSim.set_scenario(sim, %{
            "rules" => [%{"endpoint" => "asample", "action" => %{"drop" => true}}]
          })

        dead =
          start_client(sim, retry_config: [enable_retry_logic: false], timings: [submit_total: 0])

        assert {:error, %Error{type: :transport} = conn} = sample(dead)
        refute_secret(show(conn), "a connection error")
        Logger.error("a test line at error level")
      end)

    assert log =~ "session heartbeat failed"
    assert log =~ "paused"
    assert log =~ "a test line at error level"
    refute_secret(log, "the captured log")

    events = captured()
    assert Enum.any?(events, &(&1 =~ "attempt_failed"))
    assert Enum.any?(events, &(&1 =~ "session heartbeat failed"))
    refute_secret(Enum.join(events, "\n"), "raw log events or telemetry metadata")
  end

  # Waits until the capture handler has seen a log line containing
  # `fragment`, and puts every event it took on the way back in the
  # mailbox, in order (`captured/0` reads them later).
  defp await_log(fragment, seen \\ []) do
    receive do
      {:captured_log, event} = e ->
        if IO.iodata_to_binary(format(event)) =~ fragment,
          do: Enum.each(Enum.reverse([e | seen]), &send(self(), &1)),
          else: await_log(fragment, [e | seen])
    after
      5_000 -> flunk("no log line with #{inspect(fragment)} reached the capture handler")
    end
  end

  # Elixir 1.15+ drops SASL reports (the proc_lib crash report among
  # them) in a primary `:logger` filter, before any handler sees them,
  # unless `handle_sasl_reports` was configured at boot. Turn them on for
  # one test, so that it checks the crash report on every Elixir version.
  defp with_sasl_reports(fun) do
    %{filters: filters} = :logger.get_primary_config()

    enabled =
      Enum.map(filters, fn
        {id, {f, %{sasl: false} = config}} -> {id, {f, %{config | sasl: true}}}
        other -> other
      end)

    :ok = :logger.update_primary_config(%{filters: enabled})

    try do
      fun.()
    after
      :ok = :logger.update_primary_config(%{filters: filters})
    end
  end

  test "killing or crashing a client reports no key", %{sim: sim} do
    Process.flag(:trap_exit, true)
    with_sasl_reports(fn -> crash_clients(sim) end)
  end

  defp crash_clients(sim) do
    log =
      capture_log([level: :debug], fn ->
        # Killed outright.
        killed = start_client(sim)
        Process.exit(killed, :kill)
        assert_receive {:EXIT, ^killed, :killed}, 5_000

        # An exit signal with an unexpected reason.
        exited = start_client(sim)
        Process.exit(exited, {:unexpected, :reason})
        assert_receive {:EXIT, ^exited, {:unexpected, :reason}}, 5_000

        # Terminated with an unexpected reason: terminate/2 runs and the
        # GenServer logs its state (through format_status/2).
        terminated = start_client(sim)
        :ok = :sys.terminate(terminated, {:unexpected, :shutdown}, 5_000)
        assert_receive {:EXIT, ^terminated, {:unexpected, :shutdown}}, 5_000

        # A crash inside the client: a call it does not handle.
        crashed = start_client(sim)
        catch_exit(GenServer.call(crashed, {:no_such_call, :x}))
        assert_receive {:EXIT, ^crashed, {%RuntimeError{}, _}}, 5_000

        # A crash while it holds a pending heartbeat reply and a sample
        # in its mailbox.
        busy = start_client(sim, heartbeat_interval_ms: 1)
        :sys.suspend(busy)
        send(busy, {:tinkex_log, :info, "queued"})
        :sys.resume(busy)
        catch_exit(GenServer.call(busy, :boom))
        assert_receive {:EXIT, ^busy, _}, 5_000
        # Logging is asynchronous: a marker logged after the crash, seen
        # by the capture handler, means the crash's reports came first.
        Logger.error("crash marker")
        await_log("crash marker")
      end)

    assert log =~ "terminating"
    refute_secret(log, "crash logs")
    events = captured()
    # The SASL-style crash report and the GenServer error report.
    assert Enum.any?(events, &(&1 =~ "crash_report"))
    # A report with `last_message` (Elixir 1.14), or the text Elixir 1.15+
    # translates it to before any handler sees it.
    assert Enum.any?(events, &(&1 =~ ~r/last_message|Last message/))
    refute_secret(Enum.join(events, "\n"), "crash reports")
  end

  describe "transport" do
    test "TLS is attempted for https: a plain-HTTP server fails the handshake", %{sim: sim} do
      before = TinkerSim.stats(sim)["requests_total"]
      url = "https://127.0.0.1:#{sim.port}"

      # One request, no retry (a heartbeat): the raw transport error.
      ref = make_ref()
      assert :ok = TinkexNative.Native.session_heartbeat(url, @key, "0.0.0", "s", ref)
      assert_receive {:tinkex_heartbeat, ^ref, {:error, %Error{type: :transport} = e}}, 10_000
      refute_secret(show(e), "a TLS error")

      # Through the public API: set-up never succeeds.
      Process.flag(:trap_exit, true)

      assert {:error, %Error{}} =
               SamplingClient.start_link(
                 base_url: url,
                 api_key: @key,
                 base_model: "m",
                 init_timeout_ms: 1_000
               )

      # Nothing ever reached the server as plain HTTP (so neither did the key).
      assert TinkerSim.stats(sim)["requests_total"] == before
    end

    test "certificates are verified: a self-signed server is refused" do
      curve = [key: {:namedCurve, :secp256r1}, digest: :sha256]

      %{server_config: server} =
        :public_key.pkix_test_data(%{
          server_chain: %{root: curve, intermediates: [], peer: curve},
          client_chain: %{root: curve, intermediates: [], peer: curve}
        })

      {:ok, listen} =
        :ssl.listen(0, [:binary, active: false, reuseaddr: true, ip: {127, 0, 0, 1}] ++ server)

      {:ok, {_, port}} = :ssl.sockname(listen)
      parent = self()

      spawn_link(fn ->
        {:ok, socket} = :ssl.transport_accept(listen, 10_000)
        send(parent, {:server_handshake, :ssl.handshake(socket, 10_000)})
      end)

      ref = make_ref()
      url = "https://127.0.0.1:#{port}"
      assert :ok = TinkexNative.Native.session_heartbeat(url, @key, "0.0.0", "s", ref)

      assert_receive {:tinkex_heartbeat, ^ref, {:error, %Error{type: :transport} = e}}, 10_000
      assert e.message =~ ~r/certificate/i
      refute_secret(show(e), "a certificate error")
      # The client aborted the handshake on the certificate (unknown CA):
      # no request was ever sent.
      assert_receive {:server_handshake, {:error, {:tls_alert, {:unknown_ca, _}}}}, 10_000
      :ssl.close(listen)
    end

    test "plain http: refused for non-loopback hosts, accepted with allow_insecure", %{sim: sim} do
      for url <- ["http://example.com", "http://10.1.2.3:8000", "http://192.0.2.2"] do
        assert {:error, %ArgumentError{message: msg}} =
                 SamplingClient.start_link(base_url: url, api_key: @key, base_model: "m")

        assert msg =~ ":base_url" and msg =~ "allow_insecure"
      end

      for url <- [sim.base_url, "http://localhost:#{sim.port}", "http://[::1]:1"] do
        assert {:ok, _} =
                 TinkexNative.SamplingClient.Options.validate(
                   base_url: url,
                   api_key: @key,
                   base_model: "m"
                 )
      end

      case non_loopback_ipv4() do
        nil ->
          # No other interface here: the option is at least accepted.
          assert {:ok, _} =
                   TinkexNative.SamplingClient.Options.validate(
                     base_url: "http://192.0.2.2",
                     api_key: @key,
                     base_model: "m",
                     allow_insecure: true
                   )

        ip ->
          # A relay on a non-loopback address of this machine, to the simulator.
          port = relay(ip, sim.port)
          url = "http://#{:inet.ntoa(ip)}:#{port}"

          assert {:error, %ArgumentError{}} =
                   SamplingClient.start_link(base_url: url, api_key: @key, base_model: "m")

          client = start_client(sim, base_url: url, allow_insecure: true)
          assert {:ok, _} = sample(client)
      end
    end
  end

  defp non_loopback_ipv4 do
    {:ok, ifs} = :inet.getifaddrs()

    Enum.find_value(ifs, fn {_name, opts} ->
      if :up in Keyword.get(opts, :flags, []) and :loopback not in opts[:flags] do
        Enum.find(Keyword.get_values(opts, :addr), &match?({_, _, _, _}, &1))
      end
    end)
  end

  # Listens on `ip` and pipes every connection to 127.0.0.1:`to`.
  defp relay(ip, to) do
    {:ok, listen} = :gen_tcp.listen(0, [:binary, active: false, reuseaddr: true, ip: ip])
    {:ok, port} = :inet.port(listen)
    spawn_link(fn -> accept_loop(listen, to) end)
    port
  end

  defp accept_loop(listen, to) do
    {:ok, client} = :gen_tcp.accept(listen)
    {:ok, upstream} = :gen_tcp.connect({127, 0, 0, 1}, to, [:binary, active: false])
    spawn_link(fn -> pipe(client, upstream) end)
    spawn_link(fn -> pipe(upstream, client) end)
    accept_loop(listen, to)
  end

  defp pipe(from, to) do
    case :gen_tcp.recv(from, 0) do
      {:ok, data} ->
        case :gen_tcp.send(to, data) do
          :ok -> pipe(from, to)
          {:error, _} -> :gen_tcp.close(from)
        end

      {:error, _} ->
        :gen_tcp.close(to)
    end
  end
end
