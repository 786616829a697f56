defmodule TinkexNative.Native do
  @moduledoc false
  # NIF stubs only. The library is built by the `:tinkex_native` compiler in
  # mix.exs; every function here is replaced when it loads.

  @on_load :load_nif
  @compile {:autoload, false}

  # The cargo profile this module loads, chosen as the compiler task in
  # mix.exs chooses it (`debug` in the test env, else `release`, unless
  # TINKEX_NIF_PROFILE says otherwise): fixed at compile time, and a change
  # recompiles.
  @profile Mix.Tasks.Compile.TinkexNative.profile()

  @doc false
  def __mix_recompile__?, do: Mix.Tasks.Compile.TinkexNative.profile() != @profile

  @doc false
  def load_nif do
    path = nif_path()

    case :erlang.load_nif(path, worker_threads()) do
      :ok ->
        :persistent_term.erase({__MODULE__, :load_error})
        :ok

      {:error, reason} ->
        message = """
        tinkex_native: the native library could not be loaded from #{path}.so:
          #{inspect(reason)}
        Build it with `mix compile` (needs Rust and cargo on PATH), or set
        TINKEX_NIF_PROFILE=debug|release to match the profile you built.
        """

        # Kept so that the application's start can fail with this text:
        # a failed on_load is otherwise only a line in the log, and every
        # later call an UndefinedFunctionError.
        :persistent_term.put({__MODULE__, :load_error}, message)
        {:error, message}
    end
  end

  defp nif_path do
    priv =
      case :code.priv_dir(:tinkex_native) do
        {:error, _} -> ~c"priv"
        dir -> dir
      end

    :filename.join(priv, ~c"native/#{@profile}/tinkex_nif")
  end

  defp worker_threads do
    case Application.get_env(:tinkex_native, :tokio_worker_threads) do
      n when is_integer(n) and n > 0 -> n
      _ -> :erlang.system_info(:schedulers_online)
    end
  end

  defp err, do: :erlang.nif_error(:nif_not_loaded)

  # Backoff
  def backoff_delay(_base, _max, _jitter, _attempt, _u), do: err()
  def backoff_schedule(_base, _max, _jitter, _count, _seed), do: err()
  def backoff_random(_base, _max, _jitter, _attempt), do: err()

  # Rate limiter
  def rate_limiter_for_key(_base_url, _api_key), do: err()
  def rate_limiter_set_backoff(_limiter, _ms), do: err()
  def rate_limiter_clear(_limiter), do: err()
  def rate_limiter_remaining_ms(_limiter), do: err()
  def rate_limiter_wait(_limiter, _ref), do: err()
  def rate_limiter_count, do: err()

  # Retry handler
  def handler_get(_name, _config), do: err()
  def handler_stats(_handler), do: err()
  def handler_acquire(_handler, _ref), do: err()
  def lease_release(_lease, _success), do: err()
  def handler_record_failure(_handler, _label, _retried), do: err()
  def handler_live_count, do: err()
  def handler_progress(_handler), do: err()

  # Prompts
  def prompt_image(_data), do: err()

  # Sessions and sampling
  def session_open(_base_url, _api_key, _version, _limits, _model, _session_id, _seq_id, _ref),
    do: err()

  def session_heartbeat(_base_url, _api_key, _version, _limits, _session_id, _ref), do: err()

  def session_finish(
        _base_url,
        _api_key,
        _version,
        _limits,
        _session_id,
        _reason,
        _detail,
        _ms,
        _ref
      ),
      do: err()

  def client_new(_opts, _handler), do: err()
  def client_sample(_client, _spec), do: err()
  def client_cancel(_job), do: err()
  def client_stats(_client), do: err()

  # Tests only: look inside the native state, drive a panicking task
  def test_spawn_job(_panic_message, _ref), do: err()
  def test_rate_limiter_keys, do: err()
  def test_rate_limiter_timer_arms(_limiter), do: err()
  # Cluster
  def cluster_key(_base_url, _api_key), do: err()
  def budget_new, do: err()
  def budget_set_lease(_budget, _capacity, _valid_us, _seq), do: err()
  def budget_snapshot(_budget), do: err()
  def budget_watch(_budget, _pid), do: err()
  def budget_close(_budget), do: err()
  def limiter_watch(_limiter, _pid), do: err()
  def limiter_unwatch(_limiter), do: err()
  def limiter_apply_remote(_limiter, _us, _defer_probe), do: err()
  def limiter_release_remote(_limiter), do: err()
  def limiter_end_defer(_limiter), do: err()
  def limiter_probe_state(_limiter), do: err()
end
