defmodule TinkexNative.ClusterLocalTest do
  # The cluster layer on one, non-distributed VM: option validation, the
  # pure parts (shares, quorum), disagreeing clients, and a cluster of one
  # node. The multi-node invariants are in the `:cluster`-tagged files.
  use ExUnit.Case, async: false

  alias TinkexNative.Cluster
  alias TinkexNative.Cluster.{Allocation, Quorum}
  alias TinkexNative.SamplingClient
  alias TinkexNative.Test.TinkerSim
  alias TinkexNative.Types.{ModelInput, SamplingParams}

  doctest TinkexNative.Cluster

  describe ":cluster option" do
    test "bad values name the field and show the value" do
      cases = [
        {0,
         "invalid value for :cluster: expected true, false or a keyword list of :max_in_flight and :lease_ttl_ms, got: 0"},
        {[max_in_flight: 0],
         "invalid value for {:cluster, :max_in_flight}: expected a positive integer, got: 0"},
        {[max_inflight: 3],
         "invalid :cluster: unknown option :max_inflight. Did you mean :max_in_flight?"},
        {[max_in_flight: 3, lease_ttl_ms: 50],
         "invalid value for {:cluster, :lease_ttl_ms}: expected an integer of milliseconds from 100 to 600000, got: 50"}
      ]

      for {value, message} <- cases do
        opts = [base_url: "http://127.0.0.1:1", api_key: "tml-x", base_model: "m", cluster: value]
        assert {:error, %ArgumentError{message: ^message}} = SamplingClient.start_link(opts)
      end
    end
  end

  describe "shares" do
    test "max-min fair: nobody gets more than asked, the rest is shared equally" do
      assert Allocation.targets(30, a: 100, b: 100, c: 100) == %{a: 10, b: 10, c: 10}
      assert Allocation.targets(30, a: 100, b: 0, c: 0) == %{a: 30, b: 0, c: 0}
      assert Allocation.targets(30, a: 100, b: 4, c: 100) == %{a: 13, b: 4, c: 13}

      assert Allocation.targets(31, a: 100, b: 100, c: 100) |> Map.values() |> Enum.sort() == [
               10,
               10,
               11
             ]

      assert Allocation.targets(30, a: 5, b: 6) == %{a: 5, b: 6}
      assert Allocation.targets(2, a: 9, b: 9, c: 9) |> Map.values() |> Enum.sum() == 2
    end
  end

  describe "quorum" do
    @ttl 1_000_000

    test "a lease ends a ttl after the majority was last heard from" do
      heard = %{a: 10_000_000, b: 9_500_000, c: 1_000}
      assert Quorum.validity([:a, :b, :c], heard, 10_000_000, @ttl) == 500_000
      assert Quorum.validity([:a, :b, :c], %{a: 10_000_000}, 10_000_000, @ttl) == 0
      assert Quorum.validity([:a], %{a: 10_000_000}, 10_200_000, @ttl) == 800_000
      assert Quorum.validity([], %{}, 0, @ttl) == 0
    end

    test "an even split: the half with the smallest node keeps the quorum" do
      assert Quorum.validity([:a, :b], %{a: 100}, 100, @ttl) == @ttl
      assert Quorum.validity([:a, :b], %{b: 100}, 100, @ttl) == 0
      assert Quorum.validity([:a, :b, :c, :d], %{a: 100, d: 100}, 100, @ttl) == @ttl
      assert Quorum.validity([:a, :b, :c, :d], %{c: 100, d: 100}, 100, @ttl) == 0
    end
  end

  describe "a client of an existing sampling session (a clone)" do
    test "numbers its seq_ids from the server's join counter, or from a random 10^9 base" do
      sim =
        TinkerSim.start(scenario: %{"client_config" => %{"sample_join_sampling_session" => true}})

      on_exit(fn -> TinkerSim.stop(sim) end)
      opts = [base_url: sim.base_url, api_key: "tml-clone", sampling_session_id: "s:sample:0"]
      {:ok, first} = SamplingClient.start_link(opts)
      {:ok, second} = SamplingClient.start_link(opts)
      assert SamplingClient.stats(first).next_seq_id == 1_000_000_000
      assert SamplingClient.stats(second).next_seq_id == 2_000_000_000

      {:ok, _} =
        TinkerSim.set_scenario(sim, %{
          "client_config" => %{"sample_join_sampling_session" => false}
        })

      bases =
        for _ <- 1..3 do
          {:ok, c} = SamplingClient.start_link(opts)
          SamplingClient.stats(c).next_seq_id
        end

      assert Enum.all?(bases, &(rem(&1, 1_000_000_000) == 0 and &1 >= 1_000_000_000))
      assert length(Enum.uniq(bases)) == 3

      {:ok, creator} =
        SamplingClient.start_link(Keyword.delete(opts, :sampling_session_id) ++ [base_model: "m"])

      assert SamplingClient.stats(creator).next_seq_id == 0
    end
  end

  describe "one node" do
    setup do
      sim = TinkerSim.start(latency_ms: "30..60")
      on_exit(fn -> TinkerSim.stop(sim) end)
      base = [base_url: sim.base_url, base_model: "m"]
      %{sim: sim, base: base}
    end

    test "clients of one key that disagree on the budget get a clear error", %{base: base} do
      key = "tml-disagree-#{System.unique_integer([:positive])}"
      {:ok, a} = SamplingClient.start_link(base ++ [api_key: key, cluster: [max_in_flight: 10]])

      assert {:error, %ArgumentError{message: m}} =
               SamplingClient.start_link(base ++ [api_key: key, cluster: [max_in_flight: 20]])

      assert m ==
               "invalid :cluster: max_in_flight 20 disagrees with 10 already in force for this {base_url, api_key}"

      assert {:error, %ArgumentError{message: m}} =
               SamplingClient.start_link(base ++ [api_key: key, cluster: true])

      assert m =~ "max_in_flight nil (cluster: true, no shared budget) disagrees with 10"

      assert {:ok, _} =
               SamplingClient.start_link(base ++ [api_key: key, cluster: [max_in_flight: 10]])

      assert Process.alive?(a)
    end

    test "the budget bounds what the server sees, and stats report it", %{sim: sim, base: base} do
      key = "tml-one-node-#{System.unique_integer([:positive])}"
      {:ok, c} = SamplingClient.start_link(base ++ [api_key: key, cluster: [max_in_flight: 7]])
      params = %SamplingParams{max_tokens: 2}

      tasks =
        for i <- 1..60 do
          {:ok, t} = SamplingClient.sample(c, ModelInput.from_ints([i]), params)
          t
        end

      TinkexNative.Test.Wait.wait_until(fn ->
        Cluster.stats(sim.base_url, key).in_flight == 7
      end)

      stats = Cluster.stats(sim.base_url, key)
      assert %{members: [_], max_in_flight: 7, leased: 7, coordinator: coordinator} = stats
      assert coordinator == node()
      assert %{in_flight: 7, leased: 7} = stats.nodes[node()]
      assert Enum.all?(Task.await_many(tasks, 30_000), &match?({:ok, _}, &1))
      assert TinkerSim.stats(sim)["max_futures_outstanding"] == 7
    end
  end
end
