defmodule TinkexNative.TinkexAdapter.WithoutTinkexTest do
  # Without tinkex loaded, the adapter refuses to start, saying why. The
  # stand-in of Tinkex.Error is unloaded for the test, so it is not async
  # (ExUnit runs the async modules first, then these one by one).
  use ExUnit.Case, async: false

  alias TinkexNative.Tinkex.SamplingClient, as: M

  test "start_link without tinkex loaded returns a clear error and starts nothing" do
    stub = Path.expand("../support/tinkex_stubs/error.exs", __DIR__)
    on_exit(fn -> Code.compile_file(stub) end)
    :code.delete(Tinkex.Error)
    :code.purge(Tinkex.Error)
    refute Code.ensure_loaded?(Tinkex.Error)

    sup = start_supervised!({DynamicSupervisor, strategy: :one_for_one})

    opts = [
      config: %Tinkex.Config{base_url: "http://127.0.0.1:1", api_key: "tml-x"},
      session_id: "s",
      sampling_client_id: 0,
      base_model: "m"
    ]

    assert {:error, %RuntimeError{message: msg}} = DynamicSupervisor.start_child(sup, {M, opts})
    assert msg =~ "needs tinkex"
    assert msg =~ "Tinkex.Error"
    assert msg =~ "TinkexNative.SamplingClient"
    assert DynamicSupervisor.count_children(sup).active == 0
  end
end
