defmodule TinkexNative.Cluster do
  @moduledoc """
  One Tinker API key shared by many BEAM nodes, on distributed Erlang.

  Start every sampling client of a key with `cluster:` set and connect the
  nodes as you already do (`Node.connect/1`, libcluster, ...). Then:

    * a 429 seen on any node holds back the submits of that
      `{base_url, api_key}` on every connected node until its deadline,
      and after it one probe goes first for the whole cluster;
    * with `cluster: [max_in_flight: n]`, the nodes also share one budget
      of `n` in-flight samples for the key, on top of each client's own
      `max_connections`.

  The layer is plain OTP: one member process per key per node in a `:pg`
  group, one coordinator per key registered with `:global` (re-elected
  when its node goes away), monitors and `nodeup`/`nodedown`. The budget
  is leased to the nodes in batches and held natively, so a sample takes
  its permit with no message at all.

  ## The `:cluster` option of `TinkexNative.SamplingClient.start_link/1`

  | value | meaning |
  |---|---|
  | `false` (default) | no cluster: the backoff and the limits hold in this VM only |
  | `true` | share the 429 backoff of the key with every node running a client of it with `cluster:` set |
  | `[max_in_flight: n]` | the same, plus one budget of `n` in-flight samples for the key across those nodes |
  | `[max_in_flight: n, lease_ttl_ms: t]` | leases last `t` ms (default #{TinkexNative.Cluster.Options.default_ttl_ms()}, from 100 to 600_000): a node that died, or was cut off, gives its share back within `t` plus about 0.7 s |

  Every client of one key, on every node, must give the same `cluster:`
  option (`true` and `[max_in_flight: n]` disagree too): `start_link`
  returns `{:error, %ArgumentError{}}` naming the disagreement otherwise.

  `docs/cluster.md` describes the protocol, its guarantees and their
  assumptions (clocks, partitions), and how to run it across machines.

  ## Example

      # on every node, once the nodes are connected
      {:ok, client} =
        TinkexNative.SamplingClient.start_link(
          api_key: System.fetch_env!("TINKER_API_KEY"),
          base_model: "Qwen/Qwen3-8B",
          cluster: [max_in_flight: 512]
        )

      TinkexNative.Cluster.stats(TinkexNative.SamplingClient.Options.production_url(), System.fetch_env!("TINKER_API_KEY"))
      # => %{members: [:"a@host", :"b@host"], coordinator: :"a@host", backoff_ms: 0,
      #      nodes: %{:"a@host" => %{in_flight: 200, leased: 256, ...}, ...}, ...}
  """

  alias TinkexNative.Cluster.{Coordinator, Member}
  alias TinkexNative.Native

  @join_timeout 5_000

  @doc false
  # Joins the calling process (a sampling client) to the key's member on
  # this node, starting the member if needed. `{:ok, %{budget: resource |
  # nil}}`, or `{:error, %ArgumentError{}}` when the cluster runs the key
  # with another config.
  @spec join(String.t(), String.t(), TinkexNative.Cluster.Options.t()) ::
          {:ok, %{budget: reference() | nil}} | {:error, ArgumentError.t()}
  def join(base_url, api_key, config), do: ask(base_url, api_key, config, {:join, self(), config})

  @doc false
  # Whether a client of the key with `config` may join the cluster (asks
  # the coordinator the first time): `:ok` or `{:error, %ArgumentError{}}`.
  @spec check(String.t(), String.t(), TinkexNative.Cluster.Options.t()) ::
          :ok | {:error, ArgumentError.t()}
  def check(base_url, api_key, config) do
    with {:ok, _} <- ask(base_url, api_key, config, {:join, nil, config}), do: :ok
  end

  defp ask(base_url, api_key, config, msg) do
    key = Native.cluster_key(base_url, api_key)
    limiter = Native.rate_limiter_for_key(base_url, api_key)
    ask_member(key, limiter, config, msg, 3)
  end

  defp ask_member(key, limiter, config, msg, tries) do
    pid =
      case Registry.lookup(TinkexNative.Cluster.Registry, key) do
        [{pid, _}] -> pid
        [] -> start_member(key, limiter, config)
      end

    GenServer.call(pid, msg, @join_timeout)
  catch
    # The member was stopping (its last client had just left): a new one.
    :exit, _ when tries > 1 -> ask_member(key, limiter, config, msg, tries - 1)
  end

  defp start_member(key, limiter, config) do
    args = %{key: key, limiter: limiter, config: config}

    case DynamicSupervisor.start_child(TinkexNative.Cluster.Members, {Member, args}) do
      {:ok, pid} -> pid
      {:error, {:already_started, pid}} -> pid
    end
  end

  @doc """
  The cluster's view of one `{base_url, api_key}`, from any connected node:

    * `:members` - the nodes running a client of the key with `cluster:` set;
    * `:coordinator` - the node whose coordinator leases the budget (`nil`
      while none is elected);
    * `:backoff_ms` - the longest 429 backoff left on any member;
    * `:max_in_flight`, `:leased`, `:in_flight` - the budget (`nil` for
      `cluster: true`), the permits leased and in use in all;
    * `:nodes` - per node: `:in_flight` (permits in use), `:leased` (its
      share), `:waiting`, `:backoff_ms`, `:lease_valid_ms`, `:level`, and
      the counters `:messages_sent`, `:backoffs_applied`,
      `:last_backoff_delay_us`;
    * `:messages_sent` - cluster messages sent so far by all members and
      the coordinator (divide by the samples done for messages per sample);
    * `:coordinator_view` - what the coordinator knows (membership that
      votes, shares held, recovery and quorum).

  Nodes that do not answer within a second are left out.

  ## Examples

      iex> TinkexNative.Cluster.stats("http://127.0.0.1:1", "tml-nobody-uses-this")
      %{members: [], coordinator: nil, backoff_ms: 0, max_in_flight: nil, leased: 0,
        in_flight: 0, nodes: %{}, messages_sent: 0, coordinator_view: nil}
  """
  @spec stats(String.t(), String.t()) :: map()
  def stats(base_url, api_key) when is_binary(base_url) and is_binary(api_key) do
    key = Native.cluster_key(base_url, api_key)
    members = :pg.get_members(Member.scope(), Member.group(key))

    nodes =
      for pid <- members, stats = call(pid, :stats), stats != nil, into: %{} do
        {node(pid), stats}
      end

    coord =
      case :global.whereis_name(Coordinator.name(key)) do
        pid when is_pid(pid) -> call(pid, :stats)
        :undefined -> nil
      end

    per_node = Map.values(nodes)

    %{
      members: nodes |> Map.keys() |> Enum.sort(),
      coordinator: coord && coord.node,
      backoff_ms: per_node |> Enum.map(& &1.backoff_ms) |> Enum.max(fn -> 0 end),
      max_in_flight: coord && coord.max_in_flight,
      leased: per_node |> Enum.map(&(&1.leased || 0)) |> Enum.sum(),
      in_flight: per_node |> Enum.map(&(&1.in_flight || 0)) |> Enum.sum(),
      nodes: nodes,
      messages_sent:
        Enum.sum(Enum.map(per_node, & &1.messages_sent)) + ((coord && coord.messages_sent) || 0),
      coordinator_view: coord
    }
  end

  defp call(pid, msg) do
    GenServer.call(pid, msg, 1_000)
  catch
    :exit, _ -> nil
  end

  @doc """
  Tells the cluster that `node` is gone for good, so it no longer counts
  towards the majority that the budget needs (see "Partitions" in
  `docs/cluster.md`). Only needed when a crash leaves the surviving nodes
  without a majority of the last membership, e.g. the node with the
  smaller name of a 2-node cluster: the survivors then stop leasing the
  budget until the node is back, or until this call. A node that stops
  its clients normally leaves on its own. The node's lease, if any, still
  runs out before its share is given to others. Returns `:ok`, or
  `{:error, :no_coordinator}` when no coordinator of the key is reachable.

  ## Examples

      iex> TinkexNative.Cluster.forget_node("http://127.0.0.1:1", "tml-nobody-uses-this", :"gone@host")
      {:error, :no_coordinator}
  """
  @spec forget_node(String.t(), String.t(), node()) :: :ok | {:error, :no_coordinator}
  def forget_node(base_url, api_key, node) when is_atom(node) do
    key = Native.cluster_key(base_url, api_key)

    with pid when is_pid(pid) <- :global.whereis_name(Coordinator.name(key)),
         :ok <- call(pid, {:forget, node}) do
      :ok
    else
      _ -> {:error, :no_coordinator}
    end
  end

  @doc """
  The options another node passes to `TinkexNative.SamplingClient.start_link/1`
  (with its own `:api_key` and `:cluster`) to sample from this client's
  sampling session: plain data, safe to send across. That client numbers
  its `seq_id`s as a clone does (the server's `join_sampling_session`
  counter when offered, else a random multiple of 10^9), so the nodes'
  requests never collide. `{:error, %TinkexNative.Error{type:
  :client_not_running}}` for a client that is not running.

  ## Examples

      opts = TinkexNative.Cluster.session_opts(client)
      # on another node:
      {:ok, clone} = TinkexNative.SamplingClient.start_link(opts ++ [api_key: key, cluster: true])
  """
  @spec session_opts(TinkexNative.SamplingClient.client()) ::
          keyword() | {:error, TinkexNative.Error.t()}
  def session_opts(client) do
    with %{sampling_session_id: id} <- TinkexNative.SamplingClient.session(client),
         url when is_binary(url) <- TinkexNative.SamplingClient.base_url(client) do
      [base_url: url, sampling_session_id: id]
    end
  end
end
