defmodule TinkexNative.RetryHandlerCacheTest do
  # Not async: it counts the VM's live handlers, which other tests change.
  use ExUnit.Case, async: false

  import TinkexNative.Test.Wait

  alias TinkexNative.RetryHandler

  test "a handler nobody holds is freed; one in use is kept" do
    before = RetryHandler.live_count()
    parent = self()

    holder =
      spawn(fn ->
        h = RetryHandler.get!("cache-#{System.unique_integer([:positive])}", max_connections: 3)
        send(parent, {:got, h.name})
        receive do: (:stop -> :ok)
      end)

    assert_receive {:got, name}
    :erlang.garbage_collect()
    assert RetryHandler.live_count() == before + 1

    # Same name and config while held: the same handler, not a new one.
    # Asked from a process of its own, so that no reference to it stays
    # on this test's stack (where a newer compiler may keep it alive).
    again =
      Task.async(fn ->
        _ = RetryHandler.get!(name, max_connections: 3)
        RetryHandler.live_count()
      end)

    assert Task.await(again) == before + 1
    send(holder, :stop)

    wait_until(fn ->
      Enum.each(Process.list(), &:erlang.garbage_collect/1) && RetryHandler.live_count() == before
    end)
  end
end
