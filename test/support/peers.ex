defmodule TinkexNative.Test.Peers do
  @moduledoc """
  `:peer` nodes on this machine for the cluster tests (`test/cluster/`).

  The test VM becomes a *hidden* distributed node, with `epmd` started
  if it is not running; it controls the peers over their standard I/O
  (`connection: :standard_io`), so it is never part of the cluster under
  test. Each peer runs the application with the test VM's code paths and
  one tokio worker, and with two kernel settings that make a netsplit
  made with `:erlang.disconnect_node/1` exactly the split the test asks
  for: `dist_auto_connect never` (the next message does not reconnect
  it; `connect/1` does) and `prevent_overlapping_partitions false`
  (`:global` does not cut further connections on its own).

  On each peer, `TinkexNative.Test.ClusterNode` holds the clients and
  runs the load (a process started from an rpc would die with it).
  """

  @doc "Makes this VM a hidden distributed node (once)."
  @spec ensure_distributed() :: :ok
  def ensure_distributed do
    if Node.alive?() do
      :ok
    else
      {_, 0} = System.cmd("epmd", ["-daemon"])
      name = :"tinkex_test_#{System.unique_integer([:positive])}"

      {:ok, _} = :net_kernel.start(name, %{name_domain: :shortnames, hidden: true})

      :ok
    end
  end

  @doc """
  Starts `n` peers (not yet connected to one another) and returns
  `[%{peer: pid, node: node}]`. They stop when the calling process exits.
  """
  @spec start(pos_integer(), keyword()) :: [%{peer: pid(), node: node()}]
  def start(n, opts \\ []) do
    :ok = ensure_distributed()
    prefix = Keyword.get(opts, :prefix, "p#{System.unique_integer([:positive])}")
    paths = code_paths()

    for i <- 1..n do
      name = :"#{prefix}_#{<<?a + i - 1>>}"

      args =
        Enum.flat_map(paths, &[~c"-pa", &1]) ++
          [~c"-kernel", ~c"dist_auto_connect", ~c"never"] ++
          [~c"-kernel", ~c"prevent_overlapping_partitions", ~c"false"]

      {:ok, peer, node} =
        :peer.start_link(%{
          name: name,
          args: args,
          connection: :standard_io,
          wait_boot: 30_000
        })

      :ok = :peer.call(peer, TinkexNative.Test.ClusterNode, :boot, [], 30_000)
      %{peer: peer, node: node}
    end
  end

  # The test VM's code paths outside OTP: this project, Elixir itself.
  defp code_paths do
    root = List.to_string(:code.root_dir())
    Enum.reject(:code.get_path(), &String.starts_with?(List.to_string(&1), root))
  end

  @doc "Connects every pair of `peers`, as a user's `Node.connect/1` would."
  @spec connect([%{peer: pid(), node: node()}]) :: :ok
  def connect(peers) do
    for a <- peers, b <- peers, a.node < b.node do
      true = rpc(a, :net_kernel, :connect_node, [b.node])
    end

    for p <- peers, do: :ok = rpc(p, :global, :sync, [])
    :ok
  end

  @doc "Cuts `peer` off from `others` (both directions)."
  @spec split(%{peer: pid(), node: node()}, [%{node: node()}]) :: :ok
  def split(peer, others) do
    for o <- others, do: rpc(peer, :erlang, :disconnect_node, [o.node])
    :ok
  end

  @doc "Runs `m.f(a...)` on `peer`."
  @spec rpc(%{peer: pid()}, module(), atom(), list(), timeout()) :: term()
  def rpc(%{peer: peer}, m, f, a, timeout \\ 30_000), do: :peer.call(peer, m, f, a, timeout)

  @doc "Kills `peer`'s OS process (SIGKILL): no cleanup of any kind."
  @spec kill(%{peer: pid()}) :: :ok
  def kill(%{peer: peer} = p) do
    os_pid = rpc(p, :os, :getpid, [])
    Process.unlink(peer)
    {_, 0} = System.cmd("kill", ["-9", List.to_string(os_pid)])
    :ok
  end
end
