defmodule TinkexNative.SamplingClient.Run do
  @moduledoc false
  # One sample in the caller's process: starts it on the native side,
  # waits for its one reply, and emits its telemetry events (the native
  # side sends them here as messages, so handlers run in the caller, as
  # `:telemetry` expects).

  alias TinkexNative.{Error, Native, Telemetry}

  @doc false
  @spec run(%TinkexNative.SamplingClient.Handle{}, map()) ::
          {:ok, TinkexNative.Types.SampleResponse.t()} | {:error, Error.t()}
  def run(handle, spec) do
    start = System.monotonic_time(:millisecond)
    ref = Native.client_sample(handle.client, spec)
    result = await(ref, handle, spec.events, 1)

    if spec.events do
      {status, err, attempts} = result_meta(result)
      if match?(%Error{type: :stuck}, err), do: emit_stuck(handle)

      Telemetry.execute(
        [:tinkex_native, :sample, :stop],
        %{duration_ms: System.monotonic_time(:millisecond) - start, attempts: attempts},
        %{session: handle.sampling_session_id, result: status, error: err}
      )
    end

    elem(result, 0)
  end

  defp await(ref, handle, events?, attempts) do
    receive do
      {:tinkex_sample, ^ref, {:ok, response}} ->
        {{:ok, response}, attempts}

      {:tinkex_sample, ^ref, {:error, native}} ->
        {{:error, Error.from_native(native)}, attempts}

      {:tinkex_event, ^ref, {:attempt_failed, measurements, native}} ->
        if events?, do: emit_attempt_failed(handle, measurements, Error.from_native(native))
        await(ref, handle, events?, attempts + 1)

      {:tinkex_event, ^ref, {:backoff, measurements}} ->
        if events? do
          # The limiter is the `{base_url, api_key}`'s: the URL names it
          # (the key never goes into metadata).
          Telemetry.execute([:tinkex_native, :rate_limiter, :backoff], measurements, %{
            session: handle.sampling_session_id,
            base_url: handle.base_url
          })
        end

        await(ref, handle, events?, attempts)
    end
  end

  defp emit_stuck(handle) do
    Telemetry.execute(
      [:tinkex_native, :retry_handler, :stuck],
      %{progress_timeout_ms: handle.config.progress_timeout_ms},
      # The handler's own name, as `TinkexNative.RetryHandler` reports it:
      # `"<sampling session>@<base_url>"`.
      %{handler: handle.handler.name}
    )
  end

  defp result_meta({{:ok, _}, attempts}), do: {:ok, nil, attempts}
  defp result_meta({{:error, e}, attempts}), do: {:error, e, attempts}

  defp emit_attempt_failed(handle, m, error) do
    retry? = m.delay_ms != nil
    user? = Error.user_error?(error)

    Telemetry.execute([:tinkex_native, :retry_handler, :attempt_failed], m, %{
      handler: handle.handler.name,
      error: error,
      retry?: retry?,
      user_error?: user?,
      severity: if(retry? or user?, do: :warning, else: :error)
    })
  end
end
