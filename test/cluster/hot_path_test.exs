defmodule TinkexNative.ClusterHotPathTest do
  # Invariant 5 on 3 `:peer` nodes: permits come from each node's leased
  # batch, not from a message per sample. The cluster messages (between
  # members and the coordinator, all nodes together) stay under 0.1 per
  # sample with the default lease ttl. `bench/cluster.exs` measures the
  # same over 20k samples, and the throughput.
  use ExUnit.Case, async: false
  @moduletag :cluster
  @moduletag timeout: 300_000

  alias TinkexNative.Test.{ClusterNode, ClusterSetup, Peers}

  @per_node 3_000

  test "under 0.1 cluster messages per sample" do
    ctx = ClusterSetup.start(cluster: [max_in_flight: 60])

    loads =
      for p <- ctx.peers do
        c = ClusterSetup.client(ctx, p)
        {p, ClusterSetup.load(ctx, p, c, concurrency: 40, total: @per_node)}
      end

    for {p, l} <- loads do
      s = Peers.rpc(p, ClusterNode, :await_load, [l, 240_000], 250_000)
      assert s.errors == [] and s.done == @per_node
    end

    stats = ClusterSetup.stats(ctx, hd(ctx.peers))
    samples = 3 * @per_node
    per_sample = stats.messages_sent / samples
    assert Enum.sum(for {_, n} <- stats.nodes, do: n.acquired) == samples
    assert per_sample <= 0.1, "#{stats.messages_sent} cluster messages for #{samples} samples"
  end
end
