defmodule TinkexNative.Cluster.Quorum do
  @moduledoc false
  # How long a coordinator may grant a lease for: only as long as it can
  # prove a majority of the cluster's last known membership still talks to
  # it. `q` is the latest time by which the coordinator had heard from a
  # majority (the k-th most recent member message, k = floor(|M|/2) + 1);
  # a lease granted now ends no later than `q + ttl`. So a coordinator cut
  # off from the majority (a netsplit) grants nothing that outlives
  # `split + ttl`, and a coordinator elected on the majority side, which
  # waits out a recovery of `ttl` (plus margins) before growing any lease,
  # never overlaps it.
  #
  # An even membership split in half has no strict majority: the half that
  # holds the smallest node name (term order) counts as one, so exactly one
  # side of a 2-node cluster keeps working.

  @doc false
  # `heard` maps each node to the monotonic µs of its member's last
  # message (absent: never). Returns the lease validity in µs (0: no
  # quorum).
  @spec validity([node()], %{node() => integer()}, integer(), pos_integer()) :: non_neg_integer()
  def validity([], _heard, _now, _ttl_us), do: 0

  def validity(view, heard, now, ttl_us) do
    case since(view, heard) do
      nil -> 0
      q -> max(0, min(ttl_us, q + ttl_us - now))
    end
  end

  @doc false
  # The time `q` (or nil: never had a quorum).
  @spec since([node()], %{node() => integer()}) :: integer() | nil
  def since(view, heard) do
    times = view |> Enum.map(&Map.get(heard, &1)) |> Enum.sort(&later?/2)
    size = length(view)
    majority = Enum.at(times, div(size, 2))

    half =
      if rem(size, 2) == 0 do
        senior = Map.get(heard, Enum.min(view))
        earliest(senior, Enum.at(times, div(size, 2) - 1))
      end

    latest(majority, half)
  end

  # nil (never heard) sorts last.
  defp later?(nil, _), do: false
  defp later?(_, nil), do: true
  defp later?(a, b), do: a >= b

  defp earliest(nil, _), do: nil
  defp earliest(_, nil), do: nil
  defp earliest(a, b), do: min(a, b)

  defp latest(nil, b), do: b
  defp latest(a, nil), do: a
  defp latest(a, b), do: max(a, b)
end
