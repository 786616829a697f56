defmodule Mix.Tasks.Compile.TinkexNative do
  @moduledoc """
  Builds the Rust crates with cargo and places the NIF in `priv/native/`.

  Defined here, not under `lib/`, because Mix needs it before `lib/` is
  compiled. The profile is `release` unless `TINKEX_NIF_PROFILE=debug`
  (the test alias sets it, so `mix test` reuses `cargo test`'s artifacts).
  In the test environment it also builds the `tinker_sim` simulator.
  """
  use Mix.Task.Compiler

  @nif "tinkex_nif"

  @impl true
  def run(_args) do
    profile = profile()
    packages = if Mix.env() == :test, do: [@nif, "tinker_sim"], else: [@nif]
    args = ["build", "--locked"] ++ Enum.flat_map(packages, &["-p", &1])
    args = if profile == "release", do: args ++ ["--release"], else: args

    case System.cmd("cargo", args, stderr_to_stdout: true, into: IO.stream()) do
      {_, 0} -> install(profile)
      {_, code} -> Mix.raise("cargo build failed (exit #{code}); see the output above")
    end
  end

  @impl true
  def clean, do: File.rm_rf!("priv/native")

  def profile, do: System.get_env("TINKEX_NIF_PROFILE", "release")

  def target_dir, do: System.get_env("CARGO_TARGET_DIR", Path.expand("target"))

  defp install(profile) do
    ext = if match?({:unix, :darwin}, :os.type()), do: "dylib", else: "so"
    src = Path.join([target_dir(), profile, "lib#{@nif}.#{ext}"])
    # One file per profile: `_build/<env>/.../priv` links to the same
    # `priv/`, so a debug `mix test` must not replace a release build.
    dest_dir = Path.join("priv/native", profile)
    dest = Path.join(dest_dir, "#{@nif}.so")
    File.mkdir_p!(dest_dir)
    # Unlink first: a running VM may have the old file mapped.
    File.rm(dest)
    File.cp!(src, dest)
    Mix.Project.build_structure()
    {:ok, []}
  end
end

defmodule TinkexNative.MixProject do
  use Mix.Project

  @version "0.1.0"

  def project do
    [
      app: :tinkex_native,
      version: @version,
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      compilers: [:tinkex_native] ++ Mix.compilers(),
      elixirc_paths: elixirc_paths(Mix.env()),
      deps: [],
      aliases: aliases(),
      preferred_cli_env: [ci: :test],
      docs: [main: "readme", extras: ["README.md"]]
    ]
  end

  def application do
    [
      extra_applications: [:logger, :inets, :ssl],
      mod: {TinkexNative.Application, []},
      env: [tokio_worker_threads: nil]
    ]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]

  defp aliases, do: []
end
