defmodule TinkexNative.RetryConfigTest do
  use ExUnit.Case, async: true
  doctest TinkexNative.RetryConfig

  alias TinkexNative.RetryConfig

  test "defaults match the official Python SDK" do
    c = RetryConfig.new!()
    assert c.max_retries == :infinity
    assert {c.base_delay_ms, c.max_delay_ms, c.jitter_pct} == {500, 10_000, 0.25}
    assert c.progress_timeout_ms == 7_200_000
    assert c.max_connections == 1000
    assert c.enable_retry_logic and c.enable_stuck_detection
  end

  test "accepts maps, keyword lists, structs and whole floats" do
    assert {:ok, %{base_delay_ms: 250}} = RetryConfig.new(%{base_delay_ms: 250})
    assert {:ok, %{base_delay_ms: 250}} = RetryConfig.new(base_delay_ms: 250.0)
    assert {:ok, %{max_connections: nil}} = RetryConfig.new(%RetryConfig{max_connections: nil})
    assert {:ok, %{jitter_pct: jitter}} = RetryConfig.new(jitter_pct: 0)
    assert jitter === 0.0
    assert {:ok, %{jitter_pct: 1.0}} = RetryConfig.new(jitter_pct: 1)
  end

  @invalid [
    {[max_retries: -1], ":max_retries: expected a non-negative integer or :infinity, got: -1"},
    {[max_retries: :forever], "got: :forever"},
    {[max_retries: 1.5], "got: 1.5"},
    {[base_delay_ms: -5],
     ":base_delay_ms: expected a non-negative integer (milliseconds), got: -5"},
    {[base_delay_ms: "500"], ~s(got: "500")},
    {[max_delay_ms: 10 ** 30], ":max_delay_ms"},
    {[jitter_pct: 1.5],
     ":jitter_pct: expected a number between 0 and 1 (0.25 means ±25%), got: 1.5"},
    {[jitter_pct: -0.1], "got: -0.1"},
    {[jitter_pct: nil], "got: nil"},
    {[progress_timeout_ms: 0],
     ":progress_timeout_ms: expected a positive integer (milliseconds), got: 0"},
    {[max_connections: 0], ":max_connections: expected a positive integer or nil, got: 0"},
    {[max_connections: -3], "got: -3"},
    {[max_connections: :unbounded], "got: :unbounded"},
    {[enable_retry_logic: "yes"], ":enable_retry_logic: expected a boolean, got: \"yes\""},
    {[enable_stuck_detection: 1], ":enable_stuck_detection: expected a boolean, got: 1"},
    {[retry_statuses: [700]], ":retry_statuses"},
    {[retry_statuses: [599..500//-1]], ":retry_statuses"},
    {[retry_statuses: :all], ":retry_statuses"},
    {[retry_types: [:stuck]], ":retry_types"},
    {[base_delay_ms: 20_000],
     ":base_delay_ms: expected at most :max_delay_ms (10000), got: 20000"},
    {[max_retry: 3], "unknown option :max_retry. Did you mean :max_retries?"},
    {[jiter: 0.1], "unknown option :jiter. Did you mean :jitter_pct?"},
    {[zzz: 1], "unknown option :zzz. Known options: :max_retries"},
    {%{"max_retries" => 3}, ~s(retry_config keys must be atoms, got: "max_retries")},
    {[1, 2], "expected retry_config options as a keyword list, got: [1, 2]"},
    {:fast,
     "expected retry_config to be a %TinkexNative.RetryConfig{}, a keyword list or a map, got: :fast"}
  ]

  test "every invalid option is rejected with a message naming field and value" do
    for {opts, fragment} <- @invalid do
      assert {:error, %ArgumentError{message: msg}} = RetryConfig.new(opts), inspect(opts)
      assert msg =~ fragment, "#{inspect(opts)}: #{msg}"
      assert_raise ArgumentError, fn -> RetryConfig.new!(opts) end
    end
  end

  test "equal configs are equal terms and hash equal" do
    a = RetryConfig.new!(jitter_pct: 0, base_delay_ms: 100.0)
    b = RetryConfig.new!(%{jitter_pct: 0.0, base_delay_ms: 100})
    assert a == b
    assert :erlang.phash2(a) == :erlang.phash2(b)
    assert %{a => 1}[b] == 1
  end

  test "retryable? follows statuses and types" do
    c = RetryConfig.new!(retry_statuses: [418], retry_types: [:decode])
    assert RetryConfig.retryable?(c, %TinkexNative.Error{type: :http, status: 418})
    refute RetryConfig.retryable?(c, %TinkexNative.Error{type: :http, status: 503})
    assert RetryConfig.retryable?(c, %TinkexNative.Error{type: :decode})
    refute RetryConfig.retryable?(c, %TinkexNative.Error{type: :transport})
    refute RetryConfig.retryable?(c, :exception)
    assert RetryConfig.retryable?(RetryConfig.new!(retry_types: [:exception]), :exception)
  end
end
