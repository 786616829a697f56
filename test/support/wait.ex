defmodule TinkexNative.Test.Wait do
  @moduledoc """
  Waiting for a condition in tests without sleep-and-hope: the condition is
  checked every 2 ms until it holds, and the test fails if it has not held
  within the time limit.

      import TinkexNative.Test.Wait
      wait_until(fn -> TinkexNative.RetryHandler.stats(h).in_flight == 0 end)
  """

  import ExUnit.Assertions, only: [flunk: 1]

  @doc "Returns `:ok` once `fun.()` is truthy; flunks after `ms` (5 s)."
  @spec wait_until((() -> as_boolean(term())), pos_integer()) :: :ok
  def wait_until(fun, ms \\ 5_000) do
    poll(fun, System.monotonic_time(:millisecond) + ms)
  end

  defp poll(fun, deadline) do
    cond do
      fun.() ->
        :ok

      System.monotonic_time(:millisecond) > deadline ->
        flunk("condition never held")

      true ->
        Process.sleep(2)
        poll(fun, deadline)
    end
  end
end
