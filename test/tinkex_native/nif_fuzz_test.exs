defmodule TinkexNative.NifFuzzTest do
  # Every NIF of `TinkexNative.Native` fed random terms from a seeded generator
  # (issue 7): the VM must not crash, and a call may only return a value of
  # the NIF's result shape (for input that happens to be valid), return
  # `{:error, _}`, or raise `ArgumentError`.
  #
  # Half of the arguments are fully random terms, half are "plausible"
  # ones (the right shape with random, often invalid, contents, real
  # resources of every kind, tagged tuples, maps with the decoder's keys),
  # so the calls get past term decoding into validation too.
  #
  # Safety: calls that would start network work only ever see loopback
  # URLs or garbage (random binaries never start with "http"): the
  # simulator this test starts (session NIFs), 127.0.0.1:1 where nothing
  # listens (the sampling client given to `client_sample/2`, with retries
  # off), and hosts under `.invalid` for rate limiters (no network).
  # Clients built by fuzzed `client_new/2` calls are never used to sample.
  #
  # TINKEX_FUZZ_SEED=<int> changes the seed; TINKEX_FUZZ_CALLS the total;
  # TINKEX_FUZZ_VERBOSE=1 prints the outcomes per NIF.
  #
  # async: false: it compares `TinkexNative.RateLimiter.count/0`, which is
  # VM-wide, before and after.
  use ExUnit.Case, async: false

  import TinkexNative.Test.Wait

  alias TinkexNative.{Native, RateLimiter, RetryHandler}
  alias TinkexNative.Test.TinkerSim

  @moduletag timeout: 300_000

  defp env_int(name, default) do
    case Integer.parse(System.get_env(name, "")) do
      {n, ""} -> n
      _ -> default
    end
  end

  setup do
    sim = TinkerSim.start(hold_ms: 100)
    on_exit(fn -> TinkerSim.stop(sim) end)
    %{sim: sim}
  end

  test "every NIF survives 100k random terms", %{sim: sim} do
    seed = env_int("TINKEX_FUZZ_SEED", 20_251_129)
    total = env_int("TINKEX_FUZZ_CALLS", 110_000)
    :rand.seed(:exsss, {seed, 3, 5})

    nifs = for {name, arity} <- Native.__info__(:functions), name != :load_nif, do: {name, arity}

    assert length(nifs) >= 20
    {ctx, handlers} = context(sim)
    per_nif = div(total, length(nifs)) + 1
    limiters_before = RateLimiter.count()

    counts =
      for {name, arity} <- nifs, into: %{} do
        outcomes =
          Enum.reduce(1..per_nif, %{}, fn i, acc ->
            args = args_for(name, arity, ctx)
            outcome = call(name, args, seed)
            if rem(i, 500) == 0, do: drain()
            Map.update(acc, outcome, 1, &(&1 + 1))
          end)

        {name, outcomes}
      end

    if System.get_env("TINKEX_FUZZ_VERBOSE"), do: IO.inspect(counts)
    calls = counts |> Map.values() |> Enum.flat_map(&Map.values/1) |> Enum.sum()
    assert calls >= 100_000

    # Each NIF was exercised both ways: rejected, and (where random input
    # can be valid at all) accepted.
    for {name, outcomes} <- counts, arity_of(nifs, name) > 0 do
      assert Map.get(outcomes, :badarg, 0) > 0, "#{name} never rejected its input"
    end

    for name <- [:backoff_delay, :backoff_schedule, :handler_get, :client_sample, :session_open] do
      assert Map.get(counts[name], :ok, 0) > 0, "#{name} never accepted its input"
    end

    # The NIF is still loaded and right.
    assert Native.backoff_delay(500, 10_000, 0.25, 0, 0.5) == 500

    # Nothing leaked: the fuzzed leases are released once collected, and
    # fuzzed limiter keys came only from the small pool.
    Enum.each(ctx.limiters, &Native.rate_limiter_clear/1)

    for {handler, max} <- handlers do
      wait_until(fn -> :erlang.garbage_collect() && RetryHandler.stats(handler).in_flight == 0 end)

      assert RetryHandler.stats(handler).available_permits == max
    end

    assert RateLimiter.count() <= limiters_before + length(limiter_urls()) * length(keys())
    drain()
  end

  defp arity_of(nifs, name), do: Keyword.fetch!(nifs, name)

  # Calls the NIF; :ok (a result of its shape), :error ({:error, _}) or
  # :badarg (ArgumentError). Anything else fails the test.
  defp call(name, args, seed) do
    result = apply(Native, name, args)

    cond do
      match?({:error, _}, result) -> :error
      valid_result?(name, result) -> :ok
      true -> flunk("#{name}#{inspect(args)} returned #{inspect(result)} (seed #{seed})")
    end
  rescue
    ArgumentError ->
      :badarg

    e ->
      flunk(
        "#{name}#{inspect(args, limit: 20)} raised #{Exception.format(:error, e)} (seed #{seed})"
      )
  catch
    kind, reason ->
      flunk("#{name}#{inspect(args, limit: 20)} #{kind}: #{inspect(reason)} (seed #{seed})")
  end

  defp valid_result?(name, r) when name in [:backoff_delay, :backoff_random],
    do: is_integer(r) and r >= 0

  defp valid_result?(:backoff_schedule, r), do: is_list(r) and Enum.all?(r, &is_integer/1)
  defp valid_result?(:rate_limiter_for_key, r), do: is_reference(r)

  defp valid_result?(name, r)
       when name in [:rate_limiter_set_backoff, :rate_limiter_remaining_ms, :rate_limiter_count],
       do: is_integer(r) and r >= 0

  defp valid_result?(:rate_limiter_clear, r), do: r == :ok
  defp valid_result?(:rate_limiter_wait, r), do: r in [:ok, :wait]
  defp valid_result?(:handler_get, r), do: match?({:ok, ref} when is_reference(ref), r)
  defp valid_result?(:handler_stats, r), do: is_map(r) and is_integer(r.in_flight)
  defp valid_result?(:handler_acquire, r), do: is_reference(r)
  defp valid_result?(:lease_release, r), do: r in [:ok, :stuck_sent]
  defp valid_result?(:handler_record_failure, r), do: r == :ok
  defp valid_result?(:handler_live_count, r), do: is_integer(r) and r >= 0

  defp valid_result?(name, r) when name in [:session_open, :session_heartbeat, :session_finish],
    do: r == :ok

  defp valid_result?(:client_new, r), do: match?({:ok, ref} when is_reference(ref), r)
  defp valid_result?(:client_sample, r), do: is_reference(r)
  defp valid_result?(:client_stats, r), do: is_map(r) and Map.has_key?(r, :next_seq_id)
  defp valid_result?(:client_cancel, r), do: r in [:ok, :finished]
  # A NIF added after this test was written: any value (the point is no crash).
  defp valid_result?(_name, _r), do: true

  defp drain do
    receive do
      _ -> drain()
    after
      0 -> :ok
    end
  end

  ## Real resources and pools

  defp limiter_urls, do: ["http://fuzz-a.invalid", "http://fuzz-b.invalid/", ""]
  defp keys, do: ["tml-fuzz", "", "tml-fuzz-2"]

  defp context(sim) do
    seed = :rand.uniform(1_000_000_000)

    small =
      RetryHandler.get!("fuzz-small-#{seed}", max_connections: 2, enable_stuck_detection: false)

    unbounded = RetryHandler.get!("fuzz-unbounded-#{seed}", max_connections: nil)

    # A sampling client aimed where nothing listens, retries off: a valid
    # fuzzed sample fails at once with a connection error.
    quick =
      RetryHandler.get!("fuzz-client-#{seed}",
        enable_retry_logic: false,
        enable_stuck_detection: false
      )

    {:ok, client} =
      Native.client_new(
        %{
          base_url: "http://127.0.0.1:1",
          api_key: "tml-fuzz",
          version: "0.0.0",
          max_body_bytes: %{result: 1_000_000, control: 1_000},
          sampling_session_id: "fuzz",
          first_seq_id: 0,
          dispatch_bytes: 1_000_000,
          inflight_bytes: 1_000_000,
          retrieve_futures: false,
          timings: [{"submit_total", 0}, {"submit_timeout", 100}],
          log_to: nil,
          dynamic_config: dynamic_config(),
          budget: nil
        },
        quick.resource
      )

    # A sample that fails at once (nothing listens): its job, finished,
    # for `client_cancel/1`.
    job = Native.client_sample(client, valid_spec())

    limiters = for u <- limiter_urls(), k <- keys(), do: RateLimiter.for_key(u, k).resource

    leases = for h <- [small, unbounded], do: Native.handler_acquire(h.resource, make_ref())

    ctx = %{
      sim_url: sim.base_url,
      handlers: [small.resource, unbounded.resource, quick.resource],
      client: client,
      limiters: limiters,
      leases: leases,
      resources: [client, job | limiters ++ leases ++ [small.resource, unbounded.resource]],
      dead_pid: spawn(fn -> :ok end)
    }

    {ctx, [{small, 2}, {unbounded, nil}]}
  end

  ## Random terms

  defp pick(list), do: Enum.at(list, :rand.uniform(length(list)) - 1)
  defp coin(p \\ 0.5), do: :rand.uniform() < p

  defp term(ctx, depth \\ 0) do
    case :rand.uniform(if depth >= 2, do: 12, else: 16) do
      1 -> :rand.uniform(200) - 100
      2 -> pick([2 ** 31, 2 ** 32, 2 ** 63, 2 ** 64 - 1, 2 ** 64, -(2 ** 63) - 1, 2 ** 200])
      3 -> :rand.uniform(2 ** 64) - 1
      4 -> pick([0.0, -0.0, 0.5, -1.0, 1.0, 0.9999999, 1.0e308, -1.0e308, 5.0e-324])
      5 -> pick([nil, true, false, :ok, :error, :nan, :infinity, :neg_infinity, :text, :tokens])
      6 -> random_binary()
      7 -> pick(["", "tml-x", "Qwen/Qwen3-8B", "tinker://m", "é", "a:b", "\n", "\0"])
      8 -> pick([self(), ctx.dead_pid])
      9 -> make_ref()
      10 -> pick(ctx.resources)
      11 -> pick([fn -> :ok end, &Kernel.+/2, <<1::3>>, <<255, 1::7>>])
      12 -> pick([[], {}, %{}, [{}], [[]], {nil}])
      13 -> list(ctx, depth)
      14 -> List.to_tuple(list(ctx, depth))
      15 -> Map.new(list(ctx, depth), &{&1, term(ctx, depth + 1)})
      16 -> if coin(), do: [term(ctx, depth + 1) | term(ctx, depth + 1)], else: plausible_map(ctx)
    end
  end

  defp list(ctx, depth), do: for(_ <- 1..:rand.uniform(5)//1, do: term(ctx, depth + 1))

  # Random bytes that can never read as an http(s) URL.
  defp random_binary do
    b = :crypto.strong_rand_bytes(:rand.uniform(40) - 1)
    if b =~ ~r/^\s*h/i, do: "x" <> b, else: b
  end

  defp plausible_map(ctx) do
    pick([fn -> config(ctx) end, fn -> client_opts(ctx) end, fn -> spec(ctx) end]).()
  end

  # Plausible or random, half and half.
  defp arg(ctx, plausible), do: if(coin(), do: plausible.(), else: term(ctx))

  defp int(ctx), do: arg(ctx, fn -> pick([0, 1, 5, 100, 10_000, 2 ** 64 - 1, -1, 2 ** 64]) end)
  defp float(ctx), do: arg(ctx, fn -> pick([0.0, 0.25, 0.5, 1.0, 1.5, -0.1, :rand.uniform()]) end)
  defp bool(ctx), do: arg(ctx, fn -> coin() end)
  defp ref(ctx), do: arg(ctx, fn -> make_ref() end)
  defp handler(ctx), do: arg(ctx, fn -> pick(ctx.handlers) end)
  defp limiter(ctx), do: arg(ctx, fn -> pick(ctx.limiters) end)
  defp lease(ctx), do: arg(ctx, fn -> pick(ctx.leases) end)
  defp client(ctx), do: arg(ctx, fn -> ctx.client end)

  # Strings that open no network connection anywhere but the simulator.
  defp session_url(ctx),
    do: arg(ctx, fn -> pick([ctx.sim_url, "", "not a url", "ftp://x", "http://[::1"]) end)

  defp string(ctx), do: arg(ctx, fn -> pick(["", "tml-fuzz", "bad\nkey", "0.1.0", "é"]) end)

  defp limits(ctx) do
    arg(ctx, fn ->
      pick([
        %{result: 1_000_000, control: 1_000},
        %{result: 2 ** 64 - 1, control: 1},
        %{result: 2 ** 64, control: 1},
        %{result: -1, control: 1},
        %{control: 1}
      ])
    end)
  end

  defp model(ctx) do
    arg(ctx, fn ->
      {pick([:base_model, :model_path, :sampling_session_id, :other]),
       pick(["Qwen/Qwen3-8B", "tinker://x", "", 42])}
    end)
  end

  # A valid map, or one with a few fields replaced by plausible-but-odd
  # values or random terms, a field dropped or an unknown one added.
  defp near(ctx, valid, odd) do
    if coin(0.3) do
      valid
    else
      map =
        Enum.reduce(1..:rand.uniform(3), valid, fn _, m ->
          k = pick(Map.keys(valid))
          Map.put(m, k, if(coin(), do: pick(Map.fetch!(odd, k)), else: term(ctx)))
        end)

      cond do
        coin(0.1) -> Map.delete(map, pick(Map.keys(map)))
        coin(0.1) -> Map.put(map, term(ctx), term(ctx))
        true -> map
      end
    end
  end

  defp config(ctx) do
    near(
      ctx,
      %{
        max_retries: nil,
        base_delay_ms: 5,
        max_delay_ms: 20,
        jitter_pct: 0.25,
        progress_timeout_ms: 60_000,
        max_connections: 2,
        enable_retry_logic: true,
        enable_stuck_detection: true,
        retry_statuses: [{500, 599}],
        retry_kinds: ["transport"]
      },
      %{
        max_retries: [0, 3, -1, 2 ** 64],
        base_delay_ms: [0, 2 ** 64 - 1, 100, -1],
        max_delay_ms: [0, 2 ** 64 - 1, 1, 1.0],
        jitter_pct: [0.0, 1.0, 1.5, -0.1, 1],
        progress_timeout_ms: [0, 1, 2 ** 64 - 1, 2 ** 64],
        max_connections: [nil, 1, 2 ** 64 - 1, 0],
        enable_retry_logic: [false, nil, 1],
        enable_stuck_detection: [false, nil, "true"],
        retry_statuses: [[], [{408, 408}], [{600, 1}], [{599, 500}], [408], [{1, 2, 3}]],
        retry_kinds: [[], ["bogus"], [:transport], ["stuck", "decode"]]
      }
    )
  end

  defp client_opts(ctx) do
    near(
      ctx,
      %{
        base_url: "http://127.0.0.1:1",
        api_key: "tml-fuzz",
        version: "0.0.0",
        max_body_bytes: %{result: 1_000_000, control: 1_000},
        sampling_session_id: "fuzz",
        first_seq_id: 0,
        dispatch_bytes: 1_000,
        inflight_bytes: 1_000,
        retrieve_futures: false,
        timings: [],
        log_to: nil,
        dynamic_config: dynamic_config(),
        budget: nil
      },
      %{
        base_url: ["", "::", "http://[::1", "not a url", "a:b"],
        api_key: ["", "bad\nkey", "é"],
        version: ["", "\n", "é"],
        max_body_bytes: [%{result: 1, control: -1}, %{result: 1}, [result: 1, control: 1]],
        sampling_session_id: ["", "x/y"],
        first_seq_id: [2 ** 64 - 1, -1, 2 ** 64],
        dispatch_bytes: [0, 2 ** 64 - 1, -1],
        inflight_bytes: [0, 2 ** 64 - 1, -1],
        retrieve_futures: [true, nil, "yes"],
        timings: [[{"poll_timeout", 5}], [{"bogus", 1}], [{"submit_total", 2 ** 64}], [1]],
        log_to: [self(), ctx.dead_pid, :self],
        dynamic_config: [
          %{},
          nil,
          %{dynamic_config() | refresh_interval_sec: -1},
          %{dynamic_config() | sample_cancel_max_batch_size: 2 ** 64}
        ],
        budget: [:not_a_budget, make_ref()]
      }
    )
  end

  defp dynamic_config,
    do: %{
      refresh_interval_sec: 300,
      sample_cancel_enabled: false,
      sample_cancel_max_batch_size: 64
    }

  defp valid_spec do
    %{
      chunks: [<<1, 0, 0, 0>>],
      num_samples: 1,
      max_tokens: 4,
      seed: nil,
      stop: :none,
      temperature: 1.0,
      top_k: -1,
      top_p: 1.0,
      prompt_logprobs: false,
      topk_prompt_logprobs: 0,
      compute_logprobs: false,
      tokens_as_binary: false,
      events: false,
      timeout_ms: nil
    }
  end

  defp spec(ctx) do
    near(
      ctx,
      valid_spec(),
      %{
        chunks: [
          [<<1, 0, 0>>],
          [],
          ["", "abcd"],
          [<<0::1024>>],
          [{:image, Native.prompt_image("img"), :png, 3}, <<1, 0, 0, 0>>],
          [{:image, make_ref(), :png, nil}],
          [{:image_asset_pointer, "s3://x", :jpeg, nil}],
          [{:image_asset_pointer, "s3://x", :gif, 1}],
          [{:image_asset_pointer, "s3://x", :png, -1}],
          [{:image, "raw bytes", :png}]
        ],
        num_samples: [0, 2 ** 32 - 1, 2 ** 32],
        max_tokens: [0, 2 ** 32 - 1, 2 ** 32, -1],
        seed: [1, -(2 ** 63), 2 ** 63],
        stop: [{:text, "x"}, {:texts, ["a"]}, {:tokens, [1, 2]}, {:tokens, ["a"]}, {:text}],
        temperature: [0.0, -1.0, 1.0e308, 1],
        top_k: [0, 2 ** 31, -2],
        top_p: [0.0, 2.0, 1],
        prompt_logprobs: [true, nil],
        topk_prompt_logprobs: [5, 2 ** 32, -1],
        compute_logprobs: [true, 1],
        tokens_as_binary: [true, :yes],
        events: [true, 0],
        timeout_ms: [0, 5, 2 ** 64 - 1, 2 ** 64, -1, :infinity]
      }
    )
  end

  ## Arguments per NIF

  defp args_for(:backoff_delay, 5, c), do: [int(c), int(c), float(c), int(c), float(c)]

  defp args_for(:backoff_schedule, 5, c) do
    count = arg(c, fn -> pick([0, 1, 10, 100, 10_000, 10_001, 2 ** 32]) end)
    [int(c), int(c), float(c), count, int(c)]
  end

  defp args_for(:backoff_random, 4, c), do: [int(c), int(c), float(c), int(c)]

  # Only pooled strings as keys: each new pair is a limiter kept for the
  # VM's life (by design), so random ones would grow the registry.
  defp args_for(:rate_limiter_for_key, 2, c) do
    [
      if(coin(), do: pick(limiter_urls()), else: non_binary(c)),
      if(coin(), do: pick(keys()), else: non_binary(c))
    ]
  end

  defp args_for(:rate_limiter_set_backoff, 2, c), do: [limiter(c), int(c)]
  defp args_for(:rate_limiter_clear, 1, c), do: [limiter(c)]
  defp args_for(:rate_limiter_remaining_ms, 1, c), do: [limiter(c)]
  defp args_for(:rate_limiter_wait, 2, c), do: [limiter(c), ref(c)]
  defp args_for(:handler_get, 2, c), do: [string(c), arg(c, fn -> config(c) end)]
  defp args_for(:handler_acquire, 2, c), do: [handler(c), ref(c)]
  defp args_for(:lease_release, 2, c), do: [lease(c), bool(c)]
  defp args_for(:handler_record_failure, 3, c), do: [handler(c), string(c), bool(c)]

  # Eight arguments, each valid half the time, would almost never all be
  # valid at once: one call in four gets a well-formed set, so the accepted
  # path is exercised too.
  defp args_for(:session_open, 8, c) do
    if :rand.uniform(4) == 1 do
      [
        c.sim_url,
        "tml-fuzz",
        "0.1.0",
        %{result: 1_000_000, control: 1_000},
        {pick([:base_model, :sampling_session_id]), "Qwen/Qwen3-8B"},
        pick([nil, "sess"]),
        pick([0, 5]),
        make_ref()
      ]
    else
      fuzzed_session_open_args(c)
    end
  end

  defp args_for(:session_heartbeat, 6, c),
    do: [session_url(c), string(c), string(c), limits(c), string(c), ref(c)]

  defp args_for(:session_finish, 9, c) do
    reason = arg(c, fn -> pick([:success, :errored, :interrupted]) end)
    detail = arg(c, fn -> pick([nil, "", "boom", "é"]) end)
    ms = arg(c, fn -> pick([1, 50, 2 ** 64 - 1, 0]) end)
    [session_url(c), string(c), string(c), limits(c), string(c), reason, detail, ms, ref(c)]
  end

  defp args_for(:client_new, 2, c), do: [arg(c, fn -> client_opts(c) end), handler(c)]
  defp args_for(:client_sample, 2, c), do: [client(c), arg(c, fn -> spec(c) end)]
  defp args_for(:client_stats, 1, c), do: [client(c)]

  # Any other NIF taking a resource first (e.g. handler_stats,
  # handler_progress): a plausible resource, or random terms.
  defp args_for(name, arity, c) do
    first =
      cond do
        arity == 0 -> []
        String.starts_with?(Atom.to_string(name), "handler") -> [handler(c)]
        true -> [term(c)]
      end

    first ++ for(_ <- 2..arity//1, do: term(c))
  end

  defp fuzzed_session_open_args(c),
    do: [
      session_url(c),
      string(c),
      string(c),
      limits(c),
      model(c),
      arg(c, fn -> pick([nil, "sess"]) end),
      int(c),
      ref(c)
    ]

  defp non_binary(c) do
    t = term(c)
    if is_binary(t), do: :not_a_binary, else: t
  end
end
