defmodule TinkexNative.Tinkex.StartOptions do
  @moduledoc false
  # The child options tinkex passes to a `sampling_client_module`, turned
  # into `TinkexNative.SamplingClient.start_link/1` options. tinkex's own
  # keys it has no use for (`:telemetry`, `:telemetry_metadata`, and
  # whatever the user gave `create_sampling_client`) are ignored, as
  # tinkex's own client ignores keys it does not know.

  # `TinkexNative.SamplingClient` options a tinkex user may pass through
  # `create_sampling_client/2`: they are handed on as they are.
  @passed_on [:name, :allow_insecure, :init_timeout_ms, :timings]

  # The fields of tinkex 0.4's `%Tinkex.RetryConfig{}`, each the same
  # option of `TinkexNative.RetryConfig`.
  @retry_fields [
    :max_retries,
    :base_delay_ms,
    :max_delay_ms,
    :jitter_pct,
    :progress_timeout_ms,
    :max_connections,
    :enable_retry_logic
  ]

  @tinkex_retry_config Module.concat(["Tinkex", "RetryConfig"])

  @doc false
  @spec passed_on() :: [atom()]
  def passed_on, do: @passed_on

  @doc false
  @spec native(keyword()) :: {:ok, keyword()} | {:error, String.t()}
  def native(opts) when is_list(opts) do
    if Keyword.keyword?(opts), do: convert(opts), else: not_keyword(opts)
  end

  def native(other), do: not_keyword(other)

  defp not_keyword(other),
    do: {:error, "expected the child options as a keyword list, got: #{inspect(other)}"}

  defp convert(opts) do
    with {:ok, base_url, api_key} <- config(Keyword.get(opts, :config)),
         {:ok, retry_config} <- retry_config(Keyword.get(opts, :retry_config)) do
      {:ok,
       [base_url: base_url, api_key: api_key, retry_config: retry_config] ++
         session(opts) ++ model(opts) ++ Keyword.take(opts, @passed_on)}
    end
  end

  # Only the address and the key: the HTTP stack is this library's own.
  defp config(%{base_url: url, api_key: key}) when is_binary(url) and is_binary(key),
    do: {:ok, url, key}

  defp config(nil), do: {:error, "missing :config: expected a %Tinkex.Config{}"}

  # Never shown: a config holds the API key.
  defp config(other),
    do:
      {:error,
       "invalid value for :config: expected a %Tinkex.Config{} with a string :base_url and :api_key, got: #{describe(other)}"}

  defp describe(%{__struct__: s}), do: "a %#{inspect(s)}{} without them"
  defp describe(m) when is_map(m), do: "a map without them"
  defp describe(other) when is_atom(other) or is_number(other), do: inspect(other)
  defp describe(_), do: "another term (not shown)"

  # tinkex's session: created and heartbeaten by tinkex's SessionManager.
  # Without one, the native client creates (and keeps alive) its own.
  defp session(opts) do
    case Keyword.get(opts, :session_id) do
      nil -> []
      id -> [session_id: id]
    end
  end

  # As in tinkex: a given sampling session wins; otherwise one is created
  # for the weights (model_path), else for the base model. `sampling_client_id`
  # numbers it within the session.
  defp model(opts) do
    seq_id =
      case Keyword.get(opts, :sampling_client_id) do
        nil -> []
        n -> [sampling_session_seq_id: n]
      end

    cond do
      is_binary(opts[:sampling_session_id]) -> [sampling_session_id: opts[:sampling_session_id]]
      opts[:model_path] != nil -> [model_path: opts[:model_path]] ++ seq_id
      opts[:base_model] != nil -> [base_model: opts[:base_model]] ++ seq_id
      true -> Keyword.take(opts, [:sampling_session_id])
    end
  end

  # nil: the defaults, completed by the server's flags. A
  # %Tinkex.RetryConfig{} built as a literal has nil for every field not
  # given (the struct has no defaults; Tinkex.RetryConfig.new/1 fills
  # them): those take the defaults here, which are tinkex's too.
  defp retry_config(nil), do: {:ok, nil}

  defp retry_config(%{__struct__: @tinkex_retry_config} = config) do
    fields = for k <- @retry_fields, (v = Map.get(config, k)) != nil, do: {k, v}
    validated(fields)
  end

  defp retry_config(%TinkexNative.RetryConfig{} = config), do: validated(config)

  defp retry_config(config) when is_list(config) or (is_map(config) and not is_struct(config)),
    do: validated(config)

  defp retry_config(other),
    do:
      {:error,
       "invalid value for :retry_config: expected nil, a keyword list or a %Tinkex.RetryConfig{}, got: #{inspect(other)}"}

  defp validated(config) do
    case TinkexNative.RetryConfig.new(config) do
      {:ok, c} -> {:ok, c}
      {:error, %ArgumentError{message: m}} -> {:error, "invalid :retry_config: " <> m}
    end
  end
end
