defmodule TinkexNative.RetryHandlerCacheTest do
  # Not async: it counts the VM's live handlers, which other tests change.
  use ExUnit.Case, async: false

  import TinkexNative.Test.Wait

  alias TinkexNative.RetryHandler

  test "a handler nobody holds is freed; one in use is kept" do
    # Sampling clients of earlier tests may still be ending their sessions
    # (bounded by their :finish_timeout_ms); their handlers go when they do.
    wait_until(fn -> not Enum.any?(Process.list(), &sampling_client?/1) end, 10_000)
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

  defp sampling_client?(pid) do
    case Process.info(pid, :dictionary) do
      {:dictionary, d} -> d[:"$initial_call"] == {TinkexNative.SamplingClient, :init, 1}
      nil -> false
    end
  end
end
