:inets.start()

# Stand-ins of tinkex's structs for test/tinkex_adapter/ (see
# test/support/tinkex_stubs/README.md): loaded here, not compiled by mix,
# so that they stay out of the :tinkex_native application.
for stub <- Path.wildcard(Path.join(__DIR__, "support/tinkex_stubs/*.exs")) do
  Code.require_file(stub)
end

# The chaos suite (test/chaos/) is tagged :chaos and :chaos_long and always
# runs: its size is chosen at run time. A plain `mix test` runs its short
# version; `mix test --only chaos_long` (or `--include chaos_long`, or
# `--only chaos`) runs the long one. See the top of test/chaos/chaos_test.exs.
# The package build (test/package_test.exs) takes minutes: `.ci/run` and
# `mix test --include package` run it.
# The cluster suite (test/cluster/, tagged :cluster) runs `:peer` nodes:
# it needs epmd and a distributed test VM, so it runs only when asked,
# `mix test --include cluster` (or `--only cluster`).
ExUnit.start(capture_log: true, exclude: [:package, :cluster])

if :cluster in Keyword.get(ExUnit.configuration(), :include, []) do
  TinkexNative.Test.Peers.ensure_distributed()
end
