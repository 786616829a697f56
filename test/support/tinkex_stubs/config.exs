# Test-only stand-in of tinkex 0.4.0's Tinkex.Config (see README.md): its
# fields and defaults. The adapter reads only :base_url and :api_key.
defmodule Tinkex.Config do
  @moduledoc false

  defstruct base_url: nil,
            api_key: nil,
            project_id: nil,
            http_pool: Tinkex.HTTP.Pool,
            http_client: Tinkex.API,
            timeout: nil,
            max_retries: nil,
            poll_backoff: nil,
            user_metadata: nil,
            tags: nil,
            feature_gates: nil,
            telemetry_enabled?: nil,
            log_level: nil,
            cf_access_client_id: nil,
            cf_access_client_secret: nil,
            dump_headers?: nil,
            proxy: nil,
            proxy_headers: [],
            default_headers: %{},
            default_query: %{},
            recovery: nil,
            otel_propagate: false
end
