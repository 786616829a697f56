defmodule TinkexNative.PackageTest do
  # Builds a fresh Mix project that depends on a copy of exactly the files
  # `mix.exs` ships in its hex package, as a user's project would, and
  # calls the NIF from it. Slow (a release build of the NIF crate), so it
  # is tagged and `.ci/run` includes it.
  use ExUnit.Case, async: false

  @moduletag :package
  @moduletag timeout: :timer.minutes(20)

  @root Path.expand("..", __DIR__)

  setup do
    dir =
      Path.join(System.tmp_dir!(), "tinkex_native_package_#{System.unique_integer([:positive])}")

    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)
    %{dir: dir}
  end

  test "a project builds from package[:files] alone and calls the NIF", %{dir: dir} do
    copied = copy_package(Path.join(dir, "tinkex_native"))
    # The package is what it says: no simulator, tests or benchmarks.
    refute Enum.any?(copied, &String.starts_with?(&1, "native/tinker_sim"))
    refute Enum.any?(copied, &String.contains?(&1, "/tests/"))
    refute Enum.any?(copied, &String.starts_with?(&1, "bench/"))

    app = Path.join(dir, "user_app")
    File.mkdir_p!(app)

    File.write!(Path.join(app, "mix.exs"), """
    defmodule UserApp.MixProject do
      use Mix.Project
      def project, do: [app: :user_app, version: "0.1.0", deps: [{:tinkex_native, path: "../tinkex_native"}]]
    end
    """)

    script =
      "config = TinkexNative.RetryConfig.new!(base_delay_ms: 500, jitter_pct: 0.25); " <>
        "IO.puts(\"delay=\#{TinkexNative.Backoff.delay_ms(config, 2, u: 0.5)}\")"

    {out, status} =
      System.cmd("mix", ["run", "-e", script],
        cd: app,
        stderr_to_stdout: true,
        env: [
          {"MIX_ENV", "dev"},
          # The user's build picks its own profile: release.
          {"TINKEX_NIF_PROFILE", nil},
          # Shared across runs so a rerun is incremental; never the
          # repository's own target dir, whose debug artifacts would hide
          # a package that does not build.
          {"CARGO_TARGET_DIR", Path.join(@root, "target/package_test")}
        ]
      )

    assert status == 0, out
    # min(500 · 2^2, 10_000) = 2000 ms, and u = 0.5 is the jitter's midpoint.
    assert out =~ "delay=2000"
    # Only the NIF crate was built, in release mode.
    refute out =~ "tinker_sim"
    assert File.exists?(Path.join(dir, "tinkex_native/priv/native/release/tinkex_nif.so"))
  end

  # Copies every file that package[:files] names (files, and folders
  # recursively, as hex does) and returns their relative paths.
  defp copy_package(dest) do
    files = Mix.Project.config()[:package][:files]

    copied =
      for entry <- files,
          path <- expand(Path.join(@root, entry)),
          File.regular?(path) do
        rel = Path.relative_to(path, @root)
        File.mkdir_p!(Path.dirname(Path.join(dest, rel)))
        File.cp!(path, Path.join(dest, rel))
        rel
      end

    for entry <- files do
      assert File.exists?(Path.join(@root, entry)), "package file #{entry} does not exist"
    end

    copied
  end

  defp expand(path) do
    if File.dir?(path), do: Path.wildcard(Path.join(path, "**"), match_dot: true), else: [path]
  end
end
