defmodule Mix.Tasks.Compile.TinkexNative do
  @moduledoc """
  Builds the Rust crates with cargo and places the NIF in `priv/native/`.

  Defined here, not under `lib/`, because Mix needs it before `lib/` is
  compiled (and a hex package has no `rustler` to lean on). See
  `profile/0` for the cargo profile. In the repository's test env it also
  builds the `tinker_sim` simulator, so a plain `mix test` finds it.
  """
  use Mix.Task.Compiler

  @nif "tinkex_nif"

  @impl true
  def run(_args) do
    profile = profile()

    case System.cmd("cargo", cargo_args(profile), stderr_to_stdout: true, into: IO.stream()) do
      {_, 0} -> install(profile)
      {_, code} -> Mix.raise("cargo build failed (exit #{code}); see the output above")
    end
  end

  # Only the NIF crate, unless this is the repository's own test build,
  # which also needs the simulator. A dependency's copy (the hex package)
  # has no simulator and no benchmark crates; its Cargo.lock is the
  # repository's, a superset, so it is not built `--locked`.
  defp cargo_args(profile) do
    repo? = File.dir?("native/tinker_sim")
    packages = if repo? and Mix.env() == :test, do: [@nif, "tinker_sim"], else: [@nif]
    args = ["build"] ++ if(repo?, do: ["--locked"], else: [])
    args = args ++ Enum.flat_map(packages, &["-p", &1])
    if profile == "release", do: args ++ ["--release"], else: args
  end

  @impl true
  def clean, do: File.rm_rf!("priv/native")

  @doc """
  The cargo profile: `TINKEX_NIF_PROFILE` when set, else `debug` in the
  test env (so `mix test` shares `cargo test`'s artifacts) and `release`
  everywhere else, a dependency's build included.
  """
  def profile do
    System.get_env("TINKEX_NIF_PROFILE") || if(Mix.env() == :test, do: "debug", else: "release")
  end

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
      description: description(),
      package: package(),
      docs: [main: "readme", extras: ["README.md", "docs/protocol.md", "docs/cluster.md"]]
    ]
  end

  defp description do
    "A Tinker sampling client for Elixir with the official Python SDK's retry behaviour, " <>
      "run natively (Rust NIF): corrected backoff, a concurrency limit, a shared 429 backoff " <>
      "and stuck detection. Plugs into tinkex as its sampling_client_module."
  end

  # Exactly what a dependency needs to build: the Elixir sources, the two
  # crates of the NIF (sources and manifests, no tests) and the workspace
  # files. test/package_test.exs builds a project from these files alone.
  def package do
    [
      name: "tinkex_native",
      files: [
        "lib",
        "mix.exs",
        ".formatter.exs",
        "README.md",
        "LICENSE",
        "docs/protocol.md",
        "docs/cluster.md",
        "Cargo.toml",
        "Cargo.lock",
        "native/tinkex_core/Cargo.toml",
        "native/tinkex_core/src",
        "native/tinkex_nif/Cargo.toml",
        "native/tinkex_nif/src"
      ],
      licenses: ["Apache-2.0"],
      # The project's own source repository is not published yet; these
      # are the projects it serves.
      links: %{"tinkex" => "https://github.com/North-Shore-AI/tinkex"}
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
