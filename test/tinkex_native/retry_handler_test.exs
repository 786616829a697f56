defmodule TinkexNative.RetryHandlerTest do
  use ExUnit.Case, async: true

  import TinkexNative.Test.Wait
  doctest TinkexNative.RetryHandler

  alias TinkexNative.{Error, RetryHandler}

  defp handler(opts \\ []) do
    name = "test-#{System.unique_integer([:positive])}"
    RetryHandler.get!(name, Keyword.merge([base_delay_ms: 1, max_delay_ms: 4], opts))
  end

  defp http(status), do: %Error{type: :http, status: status, message: "status #{status}"}

  defp counter do
    {:ok, agent} = Agent.start_link(fn -> 0 end)
    fn -> Agent.get_and_update(agent, &{&1 + 1, &1 + 1}) end
  end

  describe "get/2" do
    test "same name and equal config share the handler; other configs do not" do
      name = "shared-#{System.unique_integer([:positive])}"
      a = RetryHandler.get!(name, max_connections: 1)
      b = RetryHandler.get!(name, max_connections: 1)
      c = RetryHandler.get!(name, max_connections: 2)
      parent = self()

      spawn_link(fn ->
        RetryHandler.execute(a, fn ->
          send(parent, :holding)
          Process.sleep(200)
          {:ok, 1}
        end)
      end)

      assert_receive :holding
      assert RetryHandler.stats(b).available_permits == 0
      assert RetryHandler.stats(c).available_permits == 2
    end

    test "an invalid config is an error from get/2 and raises from get!/2" do
      assert {:error, %ArgumentError{message: msg}} = RetryHandler.get("x", max_connections: 0)
      assert msg =~ ":max_connections" and msg =~ "0"

      assert {:error, %ArgumentError{message: msg}} = RetryHandler.get(:x, [])
      assert msg =~ "name: expected a string" and msg =~ ":x"

      assert_raise ArgumentError, ~r/:max_connections/, fn ->
        RetryHandler.get!("x", max_connections: 0)
      end

      assert_raise ArgumentError, ~r/name: expected a string/, fn -> RetryHandler.get!(:x, []) end
    end
  end

  describe "execute/3 retry loop" do
    test "retries retryable errors and counts retries" do
      h = handler()
      next = counter()

      log =
        ExUnit.CaptureLog.capture_log([level: :debug], fn ->
          assert {:ok, 3} =
                   RetryHandler.execute(h, fn ->
                     if (n = next.()) < 3, do: {:error, http(503)}, else: {:ok, n}
                   end)
        end)

      stats = RetryHandler.stats(h)
      assert {stats.retries, stats.processed, stats.in_flight} == {2, 1, 0}
      # Errors are counted until a progress line reports (and clears) them.
      assert log =~ ~s|[#{h.name}]: 2 total retries, errors since last log: [("http 503", 2)]|
      assert stats.errors == []
    end

    test "does not retry non-retryable errors" do
      h = handler()
      next = counter()

      assert {:error, %Error{status: 422, retryable?: false}} =
               RetryHandler.execute(h, fn -> next.() && {:error, http(422)} end)

      assert next.() == 2
    end

    test "failed futures are never retried, even of category server" do
      h = handler()
      next = counter()
      failed = %Error{type: :request_failed, category: :server, message: "failed"}

      assert {:error, %Error{type: :request_failed}} =
               RetryHandler.execute(h, fn -> next.() && {:error, failed} end)

      assert next.() == 2
    end

    test "max_retries bounds the attempts" do
      h = handler(max_retries: 2)
      next = counter()

      assert {:error, %Error{status: 503, retryable?: true}} =
               RetryHandler.execute(h, fn -> next.() && {:error, http(503)} end)

      assert next.() == 4
    end

    test "enable_retry_logic: false makes one attempt, still under the semaphore" do
      h = handler(enable_retry_logic: false, max_connections: 1)
      next = counter()
      parent = self()

      assert {:error, _} =
               RetryHandler.execute(h, fn ->
                 send(parent, {:permits, RetryHandler.stats(h).available_permits})
                 next.() && {:error, http(503)}
               end)

      assert_received {:permits, 0}
      assert next.() == 2
    end

    test "raises are returned, retried only when the config says so" do
      next = counter()

      assert {:error, %RuntimeError{message: "boom"}} =
               RetryHandler.execute(handler(), fn -> next.() && raise("boom") end)

      assert next.() == 2

      next = counter()
      h = handler(retry_types: [:exception])

      assert {:ok, :ok} =
               RetryHandler.execute(h, fn ->
                 if next.() < 3, do: raise("boom"), else: {:ok, :ok}
               end)
    end

    test "throws, exits and bad returns are errors" do
      h = handler()
      assert {:error, {:throw, :ball}} = RetryHandler.execute(h, fn -> throw(:ball) end)
      assert {:error, {:exit, :bye}} = RetryHandler.execute(h, fn -> exit(:bye) end)

      assert {:error, %Error{type: :validation, message: msg}} =
               RetryHandler.execute(h, fn -> :oops end)

      assert msg =~ "got: :oops"
      assert RetryHandler.stats(h).in_flight == 0
      assert RetryHandler.stats(h).available_permits == 1000
    end

    test "the :retryable? option replaces the rule" do
      next = counter()
      h = handler()

      assert {:ok, 2} =
               RetryHandler.execute(
                 h,
                 fn -> if (n = next.()) < 2, do: {:error, :flaky}, else: {:ok, n} end,
                 retryable?: &(&1 == :flaky)
               )
    end

    test "bad options raise" do
      h = handler()

      assert_raise ArgumentError, ~r/unknown option :retryable. Did you mean :retryable\?/, fn ->
        RetryHandler.execute(h, fn -> {:ok, 1} end, retryable: true)
      end

      assert_raise ArgumentError, ~r/:metadata: expected a map/, fn ->
        RetryHandler.execute(h, fn -> {:ok, 1} end, metadata: 1)
      end
    end

    test "telemetry reports each failed attempt with severity" do
      TinkexNative.Telemetry.attach_sink(self())
      # on_exit runs in another process: detach this test's pid, not that one.
      test_pid = self()
      on_exit(fn -> TinkexNative.Telemetry.detach_sink(test_pid) end)
      h = handler(max_retries: 1)
      RetryHandler.execute(h, fn -> {:error, http(503)} end)
      name = h.name

      assert_receive {:tinkex_telemetry, [:tinkex_native, :retry_handler, :attempt_failed],
                      %{attempt: 1, delay_ms: d},
                      %{handler: ^name, retry?: true, severity: :warning}}
                     when is_integer(d)

      assert_receive {:tinkex_telemetry, [:tinkex_native, :retry_handler, :attempt_failed],
                      %{attempt: 2, delay_ms: nil},
                      %{handler: ^name, retry?: false, severity: :error}}
    end
  end

  describe "semaphore and permits" do
    test "max_connections bounds concurrency; waiters are counted" do
      h = handler(max_connections: 2)
      parent = self()

      tasks =
        for i <- 1..6 do
          Task.async(fn ->
            RetryHandler.execute(h, fn ->
              send(parent, {:in, i, self()})
              receive do: (:go -> {:ok, i})
            end)
          end)
        end

      assert_receive {:in, _, first}
      assert_receive {:in, _, second}
      refute_receive {:in, _, _}, 50
      assert %{in_flight: 2, waiting: 4, available_permits: 0} = RetryHandler.stats(h)
      send(first, :go)
      send(second, :go)

      for _ <- 1..4 do
        assert_receive {:in, _, pid}
        send(pid, :go)
      end

      results = Task.await_many(tasks, 5000)
      assert Enum.sort(Enum.map(results, fn {:ok, i} -> i end)) == Enum.to_list(1..6)
      assert %{in_flight: 0, waiting: 0, available_permits: 2} = RetryHandler.stats(h)
    end

    test "a killed caller holding a permit gives it back" do
      h = handler(max_connections: 1)
      parent = self()

      pid =
        spawn(fn ->
          RetryHandler.execute(h, fn ->
            send(parent, :holding)
            Process.sleep(:infinity)
          end)
        end)

      assert_receive :holding
      assert RetryHandler.stats(h).available_permits == 0
      Process.exit(pid, :kill)
      wait_until(fn -> RetryHandler.stats(h).available_permits == 1 end)
      assert RetryHandler.stats(h).in_flight == 0
      assert {:ok, 1} = RetryHandler.execute(h, fn -> {:ok, 1} end)
    end

    test "a killed waiter leaves the queue" do
      h = handler(max_connections: 1)
      parent = self()

      holder =
        spawn(fn ->
          RetryHandler.execute(h, fn -> send(parent, :holding) && Process.sleep(:infinity) end)
        end)

      assert_receive :holding
      waiter = spawn(fn -> RetryHandler.execute(h, fn -> {:ok, :never} end) end)
      wait_until(fn -> RetryHandler.stats(h).waiting == 1 end)
      Process.exit(waiter, :kill)
      wait_until(fn -> RetryHandler.stats(h).waiting == 0 end)
      Process.exit(holder, :kill)
      wait_until(fn -> RetryHandler.stats(h).available_permits == 1 end)
    end

    test "permits come back after returns, raises, throws and exits" do
      h = handler(max_connections: 1)

      for fun <- [
            fn -> {:ok, 1} end,
            fn -> {:error, :x} end,
            fn -> raise "r" end,
            fn -> throw(:t) end,
            fn -> exit(:e) end
          ] do
        RetryHandler.execute(h, fun)
        assert RetryHandler.stats(h).available_permits == 1
      end

      assert RetryHandler.stats(h).in_flight == 0
    end
  end

  describe "watchdog" do
    test "fails every in-flight execution with the stuck error, then keeps serving" do
      h = handler(progress_timeout_ms: 100)
      t0 = System.monotonic_time(:millisecond)

      results =
        1..3
        |> Enum.map(fn _ ->
          Task.async(fn -> RetryHandler.execute(h, fn -> Process.sleep(:infinity) end) end)
        end)
        |> Task.await_many(5_000)

      elapsed = System.monotonic_time(:millisecond) - t0

      for r <- results do
        assert {:error, %Error{type: :stuck, retryable?: false, message: msg}} = r
        assert msg == "No progress made in 0.1s. Requests appear to be stuck."
      end

      assert elapsed >= 95 and elapsed < 2_000
      assert %{in_flight: 0, stuck_events: 1} = RetryHandler.stats(h)
      assert {:ok, :fine} = RetryHandler.execute(h, fn -> {:ok, :fine} end)
    end

    test "interrupts a backoff sleep too" do
      h = handler(progress_timeout_ms: 80, base_delay_ms: 10_000, max_delay_ms: 10_000)

      assert {:error, %Error{type: :stuck}} =
               RetryHandler.execute(h, fn -> {:error, http(503)} end)
    end

    test "progress anywhere in the handler pushes the deadline" do
      # The slow execution outlives three progress timeouts; quick
      # successes next to it keep pushing the handler's deadline, so it is
      # never stuck. Without them it would fail after 300 ms.
      h = handler(progress_timeout_ms: 300)
      parent = self()

      slow =
        Task.async(fn ->
          RetryHandler.execute(h, fn ->
            send(parent, {:slow_running, self()})
            receive do: (:finish -> {:ok, :slow})
          end)
        end)

      assert_receive {:slow_running, runner}
      keep_progressing(h, System.monotonic_time(:millisecond) + 900)
      send(runner, :finish)
      assert {:ok, :slow} = Task.await(slow, 10_000)
      assert RetryHandler.stats(h).stuck_events == 0
    end

    test "enable_stuck_detection: false disables it" do
      h = handler(progress_timeout_ms: 20, enable_stuck_detection: false)
      assert {:ok, :late} = RetryHandler.execute(h, fn -> Process.sleep(100) && {:ok, :late} end)
    end

    test "leaves no stray messages in the caller's mailbox" do
      h = handler(progress_timeout_ms: 50)

      assert {:error, %Error{type: :stuck}} =
               RetryHandler.execute(h, fn -> Process.sleep(:infinity) end)

      assert {:ok, 1} = RetryHandler.execute(h, fn -> {:ok, 1} end)
      # One more watchdog cycle: a late message of the first stuck run
      # (from the same watchdog) would arrive before this one ends.
      assert {:error, %Error{type: :stuck}} =
               RetryHandler.execute(h, fn -> Process.sleep(:infinity) end)

      assert {:messages, []} = Process.info(self(), :messages)
    end

    test "the message format matches Python for whole and fractional seconds" do
      assert RetryHandler.stuck_message(7_200_000) ==
               "No progress made in 7200.0s. Requests appear to be stuck."

      assert RetryHandler.stuck_message(2_000) ==
               "No progress made in 2.0s. Requests appear to be stuck."

      assert RetryHandler.stuck_message(20) ==
               "No progress made in 0.02s. Requests appear to be stuck."
    end
  end

  test "logs the Python SDK's progress lines at debug level on falling idle" do
    h = handler()

    log =
      ExUnit.CaptureLog.capture_log([level: :debug], fn ->
        RetryHandler.execute(h, fn -> {:ok, 1} end)
      end)

    assert log =~ "[#{h.name}]: 0 waiting, 0 in progress, 1 completed"
  end

  test "NIFs reject wrong types with ArgumentError" do
    assert_raise ArgumentError, fn -> TinkexNative.Native.handler_get("x", %{}) end
    assert_raise ArgumentError, fn -> TinkexNative.Native.handler_stats(make_ref()) end
    assert_raise ArgumentError, fn -> TinkexNative.Native.handler_acquire(:nope, make_ref()) end
    assert_raise ArgumentError, fn -> TinkexNative.Native.lease_release(make_ref(), true) end
    native = TinkexNative.RetryConfig.to_native(TinkexNative.RetryConfig.new!())
    assert {:error, msg} = TinkexNative.Native.handler_get("x", %{native | jitter_pct: 3.0})
    assert msg =~ "jitter_pct"
  end

  # Quick successes on `h` until `until` (monotonic ms), each well within
  # the handler's progress timeout of the one before.
  defp keep_progressing(h, until) do
    if System.monotonic_time(:millisecond) < until do
      assert {:ok, :quick} = RetryHandler.execute(h, fn -> {:ok, :quick} end)
      receive after: (50 -> :ok)
      keep_progressing(h, until)
    end
  end
end
