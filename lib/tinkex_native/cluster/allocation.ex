defmodule TinkexNative.Cluster.Allocation do
  @moduledoc false
  # How the coordinator splits a budget of `n` permits between members:
  # max-min fairness (water-filling) over their demands (permits in use
  # plus samples waiting). A member never gets more than it asks for, a
  # member asking for less than an equal share leaves the rest to the
  # others, and what nobody asks for stays free. Idle members get 0; a
  # member that becomes busy asks again (one round trip).

  @doc false
  # `demands` is a list of `{id, demand}`; returns `%{id => target}` whose
  # sum is at most `n`. Ties are broken by id, so every node computing it
  # gets the same answer.
  @spec targets(non_neg_integer(), [{term(), non_neg_integer()}]) :: %{
          term() => non_neg_integer()
        }
  def targets(n, demands) do
    sorted = Enum.sort_by(demands, fn {id, d} -> {d, id} end)

    {targets, _, _} =
      Enum.reduce(sorted, {%{}, n, length(sorted)}, fn {id, d}, {acc, left, k} ->
        t = min(d, div(left, k))
        {Map.put(acc, id, t), left - t, k - 1}
      end)

    hand_out_remainder(targets, sorted, n - Enum.sum(Map.values(targets)))
  end

  # Integer division leaves up to k - 1 permits; they go, one each, to
  # the members that still want more, largest demand first.
  defp hand_out_remainder(targets, _sorted, 0), do: targets

  defp hand_out_remainder(targets, sorted, left) do
    wanting =
      sorted
      |> Enum.reverse()
      |> Enum.filter(fn {id, d} -> targets[id] < d end)

    case wanting do
      [] ->
        targets

      _ ->
        {targets, left} =
          Enum.reduce_while(wanting, {targets, left}, fn
            _, {acc, 0} -> {:halt, {acc, 0}}
            {id, _}, {acc, l} -> {:cont, {Map.update!(acc, id, &(&1 + 1)), l - 1}}
          end)

        hand_out_remainder(targets, sorted, left)
    end
  end
end
