defmodule TinkexNative.Telemetry do
  @moduledoc """
  Emits the library's events.

  Events go through `:telemetry.execute/3` when the `:telemetry` module is
  loaded (as it is inside `tinkex` and most applications). `:telemetry` is
  a hex package and this library ships without dependencies, so there is
  also a seam of its own: a process attached with `attach_sink/1` receives
  every event as `{:tinkex_telemetry, event, measurements, metadata}`.
  Handlers run in the process that emits: the caller of
  `TinkexNative.RetryHandler.execute/3`, or the task of
  `TinkexNative.SamplingClient.sample/4` and `compute_logprobs/3`
  (`sample_async/4` emits nothing).

  | event | measurements | metadata |
  |---|---|---|
  | `[:tinkex_native, :retry_handler, :attempt_failed]` | `attempt`, `delay_ms` (`nil` when final), `elapsed_ms` | `handler`, `error`, `retry?`, `user_error?`, `severity` (`:warning` or `:error`) |
  | `[:tinkex_native, :retry_handler, :stuck]` | `progress_timeout_ms` | `handler` (the handler's name; for samples `"<sampling session id>@<base_url>"`); once per execution the watchdog fails |
  | `[:tinkex_native, :sample, :stop]` | `duration_ms`, `attempts` | `session`, `result` (`:ok` / `:error`), `error` |
  | `[:tinkex_native, :rate_limiter, :backoff]` | `backoff_ms` (until the shared backoff in force ends) | `session`, `base_url` (the limiter's; never the key); each time a sample's 429 sets the shared backoff |

  ## Examples

      iex> TinkexNative.Telemetry.attach_sink(self())
      :ok
      iex> TinkexNative.Telemetry.execute([:tinkex_native, :doc], %{n: 1}, %{})
      :ok
      iex> receive do {:tinkex_telemetry, [:tinkex_native, :doc], %{n: 1}, %{}} -> :got end
      :got
      iex> TinkexNative.Telemetry.detach_sink(self())
      :ok
  """

  @sinks {__MODULE__, :sinks}

  @doc """
  Emits `event` to `:telemetry` (when loaded) and to every attached sink.

  ## Examples

      iex> TinkexNative.Telemetry.execute([:tinkex_native, :nobody_listens], %{}, %{})
      :ok
  """
  @spec execute([atom()], map(), map()) :: :ok
  def execute(event, measurements, metadata) do
    if telemetry?(), do: apply(:telemetry, :execute, [event, measurements, metadata])

    for pid <- :persistent_term.get(@sinks, []) do
      send(pid, {:tinkex_telemetry, event, measurements, metadata})
    end

    :ok
  end

  @doc """
  Sends every event to `pid` from now on (a test seam; rarely changed, so
  it lives in `:persistent_term`).

  ## Examples

      iex> TinkexNative.Telemetry.attach_sink(self())
      :ok
      iex> TinkexNative.Telemetry.detach_sink(self())
      :ok
  """
  @spec attach_sink(pid()) :: :ok
  def attach_sink(pid) when is_pid(pid) do
    :persistent_term.put(@sinks, Enum.uniq([pid | :persistent_term.get(@sinks, [])]))
  end

  @doc """
  Stops sending events to `pid`.

  ## Examples

      iex> TinkexNative.Telemetry.detach_sink(self())
      :ok
  """
  @spec detach_sink(pid()) :: :ok
  def detach_sink(pid) when is_pid(pid) do
    :persistent_term.put(@sinks, List.delete(:persistent_term.get(@sinks, []), pid))
  end

  defp telemetry? do
    case :persistent_term.get({__MODULE__, :telemetry?}, nil) do
      nil ->
        found = Code.ensure_loaded?(:telemetry) and function_exported?(:telemetry, :execute, 3)
        :persistent_term.put({__MODULE__, :telemetry?}, found)
        found

      found ->
        found
    end
  end
end
