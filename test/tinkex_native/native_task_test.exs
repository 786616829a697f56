defmodule TinkexNative.NativeTaskTest do
  # Every native task ends in a message to its caller, even one that
  # panics: all of them start through one spawn helper, which the hidden
  # `test_spawn_job/2` NIF drives with an injected panic.
  use ExUnit.Case, async: true

  alias TinkexNative.Native

  test "a task that panics answers an :internal error instead of leaving its caller waiting" do
    ref = make_ref()
    assert :ok = Native.test_spawn_job("injected panic", ref)

    assert_receive {:tinkex_test_job, ^ref, {:error, %TinkexNative.Error{} = e}}, 5_000
    assert e.type == :internal
    assert e.retryable? == false
    assert e.message =~ "panic in the native code: injected panic"
  end

  test "a task that does not panic answers its result" do
    ref = make_ref()
    assert :ok = Native.test_spawn_job("", ref)
    assert_receive {:tinkex_test_job, ^ref, {:ok, :ok}}, 5_000
  end

  test "the native side keeps serving after a panic" do
    for _ <- 1..3 do
      ref = make_ref()
      Native.test_spawn_job("again", ref)

      assert_receive {:tinkex_test_job, ^ref, {:error, %TinkexNative.Error{type: :internal}}},
                     5_000
    end

    handler = TinkexNative.RetryHandler.get!("after-panics-#{System.unique_integer()}")
    assert {:ok, 1} = TinkexNative.RetryHandler.execute(handler, fn -> {:ok, 1} end)
  end
end
