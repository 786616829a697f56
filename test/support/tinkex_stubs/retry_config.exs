# Test-only stand-in of tinkex 0.4.0's Tinkex.RetryConfig (see README.md):
# its seven fields, without defaults (tinkex's new/1 fills them; a struct
# literal leaves the others nil).
defmodule Tinkex.RetryConfig do
  @moduledoc false

  @enforce_keys []
  defstruct [
    :max_retries,
    :base_delay_ms,
    :max_delay_ms,
    :jitter_pct,
    :progress_timeout_ms,
    :max_connections,
    :enable_retry_logic
  ]
end
