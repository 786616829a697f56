defmodule TinkexNative.RetryHandlerCacheTest do
  # Whether the cache kept or freed a handler is read from the handler
  # itself, not from the VM-wide live count, which handlers of other
  # tests' lingering clients change at any moment: a handler that ran one
  # execution says `processed: 1`; a fresh one for the same name and
  # config says 0.
  use ExUnit.Case, async: true

  import TinkexNative.Test.Wait

  alias TinkexNative.RetryHandler

  # Gets the handler for `name` in a process of its own (so no reference
  # to it stays on this test's stack, where a compiler may keep it alive)
  # and returns how many executions it has seen.
  defp processed_by_handler_of(name) do
    fn -> RetryHandler.stats(RetryHandler.get!(name, max_connections: 3)).processed end
    |> Task.async()
    |> Task.await()
  end

  test "a handler in use is kept; one nobody holds is freed" do
    name = "cache-#{System.unique_integer([:positive])}"
    parent = self()

    holder =
      spawn(fn ->
        h = RetryHandler.get!(name, max_connections: 3)
        {:ok, :ran} = RetryHandler.execute(h, fn -> {:ok, :ran} end)
        send(parent, :holding)
        # Returning `h` keeps it live until :stop.
        receive do: (:stop -> h)
      end)

    assert_receive :holding
    # Same name and config while held: the same handler, not a new one.
    assert processed_by_handler_of(name) == 1

    send(holder, :stop)

    # Once the holder is gone, the same name and config give a new one.
    wait_until(fn ->
      Enum.each(Process.list(), &:erlang.garbage_collect/1)
      processed_by_handler_of(name) == 0
    end)
  end
end
