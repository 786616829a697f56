defmodule TinkexNative.SamplingClient.Options do
  @moduledoc false
  # Validation of `TinkexNative.SamplingClient.start_link/1` options: every error
  # names the option and the value (never the API key's value).

  alias TinkexNative.RetryConfig

  @production "https://tinker.thinkingmachines.dev/services/tinker-prod"
  @keys [
    :base_url,
    :api_key,
    :sampling_session_id,
    :base_model,
    :model_path,
    :retry_config,
    :max_body_bytes,
    :name,
    :allow_insecure,
    :timings,
    :heartbeat_interval_ms,
    :init_timeout_ms,
    :async_setup,
    :finish_timeout_ms,
    :tokens,
    :session_id,
    :sampling_session_seq_id,
    :cluster
  ]
  @timings [
    :submit_timeout,
    :submit_backoff_base,
    :submit_backoff_cap,
    :submit_total,
    :rate_limit_small,
    :rate_limit_large,
    :billing_pause,
    :billing_max,
    :billing_reset,
    :poll_timeout,
    :poll_5xx_initial,
    :poll_5xx_cap,
    :poll_backoff_base,
    :poll_backoff_cap,
    :pause_log_interval,
    :dispatch_recent_window,
    :futures_poll_timeout,
    :futures_ack_timeout,
    :futures_retry,
    :cancel_timeout,
    :min_config_refresh,
    :probe_timeout
  ]

  # Largest answer bodies read, per kind of answer (see max_body_bytes/1).
  @max_body_bytes %{result: 256 * 1024 * 1024, control: 1024 * 1024}
  @u64 18_446_744_073_709_551_615

  def production_url, do: @production
  def timing_keys, do: @timings
  def default_max_body_bytes, do: @max_body_bytes

  @doc false
  def validate(opts) when is_list(opts) do
    with :ok <- keyword(opts),
         :ok <- known_keys(opts),
         {:ok, base_url} <- base_url(opts),
         {:ok, api_key} <- api_key(opts),
         {:ok, model} <- model(opts),
         {:ok, session_id} <- session_id(opts[:session_id]),
         {:ok, seq_id} <- seq_id(opts, model),
         {:ok, retry_config} <- retry_config(opts[:retry_config]),
         {:ok, max_body_bytes} <- max_body_bytes(Keyword.get(opts, :max_body_bytes, [])),
         {:ok, timings} <- timings(Keyword.get(opts, :timings, [])),
         {:ok, heartbeat} <- pos_int(opts, :heartbeat_interval_ms, 10_000),
         {:ok, init_timeout} <- pos_int(opts, :init_timeout_ms, 120_000, 86_400_000),
         {:ok, async_setup} <- boolean(opts, :async_setup, false),
         {:ok, finish_timeout} <- pos_int(opts, :finish_timeout_ms, 2_000, 60_000),
         {:ok, tokens} <- tokens(Keyword.get(opts, :tokens, :list)),
         {:ok, cluster} <- TinkexNative.Cluster.Options.validate(Keyword.get(opts, :cluster)),
         :ok <- name(opts[:name]) do
      {:ok,
       %{
         base_url: base_url,
         api_key: api_key,
         model: model,
         session_id: session_id,
         sampling_session_seq_id: seq_id,
         retry_config: retry_config,
         max_body_bytes: max_body_bytes,
         timings: timings,
         heartbeat_interval_ms: heartbeat,
         init_timeout_ms: init_timeout,
         async_setup: async_setup,
         finish_timeout_ms: finish_timeout,
         tokens: tokens,
         cluster: cluster,
         name: opts[:name]
       }}
    end
  end

  def validate(other),
    do: error("expected start_link options as a keyword list, got: #{inspect(other)}")

  defp keyword(opts) do
    if Keyword.keyword?(opts),
      do: :ok,
      else: error("expected start_link options as a keyword list, got: #{inspect(opts)}")
  end

  defp known_keys(opts) do
    case Enum.find(Keyword.keys(opts), &(&1 not in @keys)) do
      nil -> :ok
      bad -> {:error, ArgumentError.exception(RetryConfig.unknown_key_message(bad, @keys))}
    end
  end

  defp base_url(opts) do
    url =
      Keyword.get_lazy(opts, :base_url, fn -> System.get_env("TINKER_BASE_URL") || @production end)

    insecure = Keyword.get(opts, :allow_insecure, false)

    with :ok <-
           if(is_boolean(insecure), do: :ok, else: invalid(:allow_insecure, insecure, "a boolean")),
         true <- is_binary(url) || invalid(:base_url, url, "an http(s) URL string"),
         %URI{scheme: scheme, host: host}
         when scheme in ["http", "https"] and is_binary(host) and host != "" <-
           URI.parse(url) do
      cond do
        scheme == "https" or insecure or loopback?(host) ->
          {:ok, String.trim_trailing(url, "/")}

        true ->
          invalid(
            :base_url,
            url,
            "an https URL (plain http is allowed only for loopback hosts, or with allow_insecure: true)"
          )
      end
    else
      {:error, _} = e -> e
      _ -> invalid(:base_url, url, "an http(s) URL with a host")
    end
  end

  @doc false
  def loopback?(host) do
    host = host |> String.trim_leading("[") |> String.trim_trailing("]")

    host == "localhost" or
      case :inet.parse_address(String.to_charlist(host)) do
        {:ok, {127, _, _, _}} -> true
        {:ok, {0, 0, 0, 0, 0, 0, 0, 1}} -> true
        _ -> false
      end
  end

  defp api_key(opts) do
    case Keyword.get_lazy(opts, :api_key, fn -> System.get_env("TINKER_API_KEY") end) do
      nil ->
        error("missing :api_key: pass api_key: \"tml-...\" or set TINKER_API_KEY")

      "" ->
        error("invalid value for :api_key: expected a non-empty string, got: \"\"")

      key when is_binary(key) ->
        # It travels as a header: printable ASCII only (never echoed back).
        if key =~ ~r/\A[\x21-\x7e]+\z/,
          do: {:ok, key},
          else:
            error(
              "invalid value for :api_key: expected printable ASCII characters without spaces, got a string that has others (not shown)"
            )

      other ->
        invalid(:api_key, redact(other), "a string")
    end
  end

  # Only a string can be a key; anything else is shown as its type.
  defp redact(v) when is_atom(v) or is_number(v), do: v
  defp redact(_), do: :"[REDACTED]"

  defp model(opts) do
    given =
      for k <- [:sampling_session_id, :base_model, :model_path],
          Keyword.has_key?(opts, k),
          do: {k, opts[k]}

    case given do
      [] ->
        error("one of :sampling_session_id, :base_model or :model_path is required")

      [{:model_path, "tinker://" <> _ = path}] ->
        {:ok, {:model_path, path}}

      [{:model_path, path}] ->
        invalid(:model_path, path, "a string starting with \"tinker://\"")

      [{key, value}] when is_binary(value) and value != "" ->
        {:ok, {key, value}}

      [{key, value}] ->
        invalid(key, value, "a non-empty string")

      many ->
        error(
          "expected only one of :sampling_session_id, :base_model or :model_path, got: #{inspect(Keyword.keys(many))}"
        )
    end
  end

  # A session someone else owns (creates and heartbeats).
  defp session_id(nil), do: {:ok, nil}
  defp session_id(id) when is_binary(id) and id != "", do: {:ok, id}
  defp session_id(id), do: invalid(:session_id, id, "a non-empty string")

  @max_u64 18_446_744_073_709_551_615

  defp seq_id(opts, model) do
    case {Keyword.fetch(opts, :sampling_session_seq_id), model} do
      {:error, _} ->
        {:ok, 0}

      {{:ok, n}, {:sampling_session_id, _}} ->
        error(
          "invalid :sampling_session_seq_id: it numbers a sampling session this client creates, so it applies only with :base_model or :model_path, not with :sampling_session_id; got: #{inspect(n)}"
        )

      {{:ok, n}, _} when is_integer(n) and n >= 0 and n <= @max_u64 ->
        {:ok, n}

      {{:ok, n}, _} ->
        invalid(:sampling_session_seq_id, n, "a non-negative integer")
    end
  end

  defp retry_config(nil), do: {:ok, nil}

  defp retry_config(config) do
    case RetryConfig.new(config) do
      {:ok, c} -> {:ok, c}
      {:error, %ArgumentError{message: m}} -> error("invalid :retry_config: " <> m)
    end
  end

  # `[result: bytes, control: bytes]`, either key optional: answers of
  # retrieve_future(s) are read up to `result`, every other answer up to
  # `control`; a bigger success fails instead of being read into memory.
  defp max_body_bytes(limits) when is_list(limits) do
    Enum.reduce_while(limits, {:ok, @max_body_bytes}, fn
      {k, n}, {:ok, acc}
      when k in [:result, :control] and is_integer(n) and n > 0 and n <= @u64 ->
        {:cont, {:ok, Map.put(acc, k, n)}}

      {k, n}, _ when k in [:result, :control] ->
        {:halt, invalid({:max_body_bytes, k}, n, "a positive integer (bytes)")}

      {k, _}, _ when is_atom(k) ->
        {:halt,
         {:error,
          ArgumentError.exception(
            "invalid :max_body_bytes: " <> RetryConfig.unknown_key_message(k, [:result, :control])
          )}}

      other, _ ->
        {:halt, invalid(:max_body_bytes, other, "a keyword list with :result and :control")}
    end)
  end

  defp max_body_bytes(other),
    do: invalid(:max_body_bytes, other, "a keyword list with :result and :control (bytes)")

  defp timings(t) when is_list(t) do
    Enum.reduce_while(t, {:ok, []}, fn
      {k, ms}, {:ok, acc} when is_atom(k) ->
        cond do
          k not in @timings ->
            {:halt,
             {:error,
              ArgumentError.exception(
                "invalid :timings: " <> RetryConfig.unknown_key_message(k, @timings)
              )}}

          is_integer(ms) and ms >= 0 and ms < 86_400_000 * 365 ->
            {:cont, {:ok, [{Atom.to_string(k), ms} | acc]}}

          true ->
            {:halt, invalid({:timings, k}, ms, "a non-negative integer (milliseconds)")}
        end

      other, _ ->
        {:halt, invalid(:timings, other, "a keyword list of milliseconds")}
    end)
  end

  defp timings(other), do: invalid(:timings, other, "a keyword list of milliseconds")

  defp pos_int(opts, key, default) do
    case Keyword.get(opts, key, default) do
      v when is_integer(v) and v > 0 -> {:ok, v}
      v -> invalid(key, v, "a positive integer (milliseconds)")
    end
  end

  # Timeouts the client waits out in `receive ... after`, which takes at
  # most 2^32 - 1 ms: a sane ceiling below that.
  defp pos_int(opts, key, default, max) do
    case Keyword.get(opts, key, default) do
      v when is_integer(v) and v > 0 and v <= max -> {:ok, v}
      v -> invalid(key, v, "a positive integer of milliseconds, at most #{max}")
    end
  end

  defp boolean(opts, key, default) do
    case Keyword.get(opts, key, default) do
      v when is_boolean(v) -> {:ok, v}
      v -> invalid(key, v, "a boolean")
    end
  end

  defp tokens(t) when t in [:list, :binary], do: {:ok, t}
  defp tokens(t), do: invalid(:tokens, t, ":list or :binary")

  defp name(nil), do: :ok
  defp name(n) when is_atom(n), do: :ok
  defp name({:global, _}), do: :ok
  defp name({:via, m, _}) when is_atom(m), do: :ok
  defp name(n), do: invalid(:name, n, "an atom, {:global, term} or {:via, module, term}")

  defp invalid(key, value, expected),
    do: error("invalid value for #{inspect(key)}: expected #{expected}, got: #{inspect(value)}")

  defp error(message), do: {:error, ArgumentError.exception(message)}
end
