defmodule TinkexNative.NamespaceTest do
  # tinkex depends on this app: anything it names globally (modules,
  # registered processes, ETS tables, persistent_term keys, telemetry
  # events) must be ours, or the two apps clash in one VM or release.
  use ExUnit.Case, async: false

  alias TinkexNative.Test.TinkerSim

  defp ours?(atom) when is_atom(atom) do
    name = Atom.to_string(atom)
    name == "Elixir.TinkexNative" or String.starts_with?(name, "Elixir.TinkexNative.")
  end

  defp app_pid?(pid), do: :application.get_application(pid) == {:ok, :tinkex_native}

  # `Inspect.TinkexNative.Handle` and the like: Elixir names a protocol
  # implementation after the protocol and the struct, so it is ours when
  # its struct is.
  defp our_impl?(module) do
    Code.ensure_loaded!(module)
    function_exported?(module, :__impl__, 1) and ours?(module.__impl__(:for))
  end

  test "every module of the app is under TinkexNative" do
    {:ok, modules} = :application.get_key(:tinkex_native, :modules)
    assert modules != []
    assert Enum.reject(modules, &(ours?(&1) or our_impl?(&1))) == []
  end

  test "registered names, ETS tables and persistent_term keys of the app are ours" do
    # A live client makes the app register and publish what it uses.
    sim = TinkerSim.start(hold_ms: 200)
    on_exit(fn -> TinkerSim.stop(sim) end)

    {:ok, client} =
      TinkexNative.SamplingClient.start_link(
        base_url: sim.base_url,
        api_key: "tml-namespace-test",
        base_model: "m"
      )

    {:ok, task} =
      TinkexNative.SamplingClient.sample(
        client,
        TinkexNative.Types.ModelInput.from_ints([1, 2]),
        %TinkexNative.Types.SamplingParams{max_tokens: 2}
      )

    assert {:ok, _} = Task.await(task, 30_000)

    registered =
      for name <- Process.registered(),
          pid = Process.whereis(name),
          pid && app_pid?(pid),
          do: name

    assert TinkexNative.Supervisor in registered
    assert Enum.reject(registered, &ours?/1) == []

    named_tables =
      for t <- :ets.all(),
          is_atom(t),
          owner = :ets.info(t, :owner),
          is_pid(owner),
          app_pid?(owner),
          do: t

    assert TinkexNative.ClientTable in named_tables
    assert Enum.reject(named_tables, &ours?/1) == []

    # A key of ours is a module atom or a tuple led by one; nothing may
    # be keyed by a module of tinkex's namespace.
    tinkex_keys =
      for {key, _} <- :persistent_term.get(),
          lead = if(is_tuple(key) and tuple_size(key) > 0, do: elem(key, 0), else: key),
          is_atom(lead),
          String.starts_with?(Atom.to_string(lead), "Elixir.Tinkex."),
          do: key

    assert tinkex_keys == []
  end

  test "the app's env is its own, and its telemetry events start with :tinkex_native" do
    assert Keyword.has_key?(Application.get_all_env(:tinkex_native), :tokio_worker_threads)
    {:docs_v1, _, _, _, %{"en" => doc}, _, _} = Code.fetch_docs(TinkexNative.Telemetry)
    events = Regex.scan(~r/`\[:(\w+),/, doc) |> Enum.map(fn [_, prefix] -> prefix end)
    assert events != []
    assert Enum.uniq(events) == ["tinkex_native"]
  end

  test "a NIF that cannot load stops the app's start with the fix in the message" do
    # A copy of the app's ebin without priv/: the on_load fails as it would
    # on a machine where the crate was never built.
    dir =
      Path.join(System.tmp_dir!(), "tinkex_native_noload_#{System.unique_integer([:positive])}")

    on_exit(fn -> File.rm_rf!(dir) end)
    ebin = Path.join(dir, "tinkex_native/ebin")
    File.mkdir_p!(ebin)
    File.cp_r!(Path.join(to_string(:code.lib_dir(:tinkex_native)), "ebin"), ebin)

    {out, 0} =
      System.cmd(
        "elixir",
        ["-pa", ebin, "-e", "IO.inspect(Application.ensure_all_started(:tinkex_native))"],
        stderr_to_stdout: true
      )

    assert out =~ "{:error,"
    assert out =~ ":native_not_loaded"
    assert out =~ "could not be loaded from"
    assert out =~ "mix compile"
  end
end
