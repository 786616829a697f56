//! The executor against the real simulator (`tinker_sim`): session set-up,
//! many concurrent samples with checked results, compute_logprobs, and a
//! 429 on submit.

use std::sync::Arc;

use serde_json::{json, Value};
use tinkex_core::client::SamplingClient;
use tinkex_core::config::RetryConfig;
use tinkex_core::error::ErrorKind;
use tinkex_core::handler::{Handler, NoEvents};
use tinkex_core::http::Endpoint;
use tinkex_core::rate_limiter::RateLimiter;
use tinkex_core::sampling::{run_attempt, SampleContext, SampleSpec, Timings};
use tinkex_core::session::{
    client_config, create_sampling_session, create_session, get_sampler, heartbeat, ModelRef,
};
use tinkex_core::wire::{ModelInput, SamplingParams};

async fn start() -> (tinker_sim::SimHandle, Endpoint) {
    let (_, sim) = tinker_sim::serve(tinker_sim::SimConfig {
        exit_on_stdin_eof: false,
        ..tinker_sim::SimConfig::default()
    })
    .await
    .unwrap();
    let ep = Endpoint::new(&sim.base_url(), "tml-against-sim").unwrap();
    (sim, ep)
}

async fn sampling_session(ep: &Endpoint) -> String {
    let flags = client_config(ep).await.unwrap();
    assert_eq!(flags.sample_max_concurrent_requests, 2000);
    let session = create_session(ep, &[], None).await.unwrap().session_id;
    heartbeat(ep, &session).await.unwrap();
    let id = create_sampling_session(ep, &session, ModelRef::BaseModel("Qwen/Qwen3-8B"), 0)
        .await
        .unwrap();
    let info = get_sampler(ep, &id).await.unwrap();
    assert_eq!(info.base_model.as_deref(), Some("Qwen/Qwen3-8B"));
    id
}

fn fast_ctx(ep: &Endpoint, id: &str) -> Arc<SampleContext> {
    let t = Timings {
        rate_limit_small: std::time::Duration::from_millis(50),
        ..Timings::default()
    };
    Arc::new(
        SampleContext::new(ep.clone(), id)
            .with_timings(t)
            .with_limiter(Arc::new(RateLimiter::new())),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_samples_have_the_simulated_tokens() {
    let (sim, ep) = start().await;
    let id = sampling_session(&ep).await;
    let ctx = fast_ctx(&ep, &id);
    let tasks: Vec<_> = (0..300u64)
        .map(|seq| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let prompt = vec![1, 2, (seq % 50) as i32];
                let params = SamplingParams {
                    max_tokens: Some(5),
                    ..SamplingParams::default()
                };
                let spec = SampleSpec::new(ModelInput::from_tokens(prompt.clone()), params, 2);
                (seq, prompt, run_attempt(&ctx, &spec, seq).await)
            })
        })
        .collect();
    let want_params = tinker_sim::SamplingParams::with_max_tokens(5);
    for t in tasks {
        let (seq, prompt, out) = t.await.unwrap();
        let out = out.unwrap();
        assert_eq!(out.sequences.len(), 2);
        for (i, s) in out.sequences.iter().enumerate() {
            let want =
                tinker_sim::expected_tokens(&id, seq as i64, &prompt, &want_params, i as u32);
            assert_eq!(s.tokens, want, "seq {seq} sample {i}");
            assert!(s.sequence_id.is_some());
        }
    }
    assert_eq!(ctx.dispatch.available_submits(), 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn compute_logprobs_first_is_none() {
    let (sim, ep) = start().await;
    let id = sampling_session(&ep).await;
    let ctx = fast_ctx(&ep, &id);
    let spec = SampleSpec::compute_logprobs(ModelInput::from_tokens(vec![5, 6, 7, 8]));
    let out = run_attempt(&ctx, &spec, 0).await.unwrap();
    let lp = out.prompt_logprobs.unwrap();
    assert_eq!(lp.len(), 4);
    assert_eq!(lp[0], None);
    assert!(lp[1..].iter().all(Option::is_some));
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limited_submit_is_resent_with_the_same_seq_id() {
    let (sim, ep) = start().await;
    let id = sampling_session(&ep).await;
    sim.set_scenario(&json!({"rules": [
        {"endpoint": "asample", "match": {"first": 2}, "action": {"status": 429}}
    ]}))
    .unwrap();
    let ctx = fast_ctx(&ep, &id);
    let spec = SampleSpec::new(
        ModelInput::from_tokens(vec![1]),
        SamplingParams::default(),
        1,
    );
    run_attempt(&ctx, &spec, 7).await.unwrap();
    let seqs: Vec<Value> = sim
        .log()
        .into_iter()
        .filter(|e| e["path"] == "/api/v1/asample")
        .map(|e| e["seq_id"].clone())
        .collect();
    assert_eq!(seqs, [json!(7), json!(7), json!(7)]);
    sim.shutdown().await;
}

/// The SDK fails a poll answered 409 for good; the handler must not make
/// it a new attempt (a second asample: the server would do the work twice),
/// although 409 is among the statuses it retries.
#[tokio::test]
async fn a_409_while_polling_fails_the_sample_with_one_asample() {
    let (sim, ep) = start().await;
    let id = sampling_session(&ep).await;
    sim.set_scenario(&json!({"rules": [
        {"endpoint": "retrieve_future", "match": {"first": 1}, "action": {"status": 409}}
    ]}))
    .unwrap();
    let config = RetryConfig {
        base_delay_ms: 1,
        max_delay_ms: 2,
        ..RetryConfig::default()
    };
    assert!(config.is_retryable(&tinkex_core::error::Error::http(409, "x")));
    let handler = Arc::new(Handler::new(&id, config));
    let ctx = Arc::try_unwrap(fast_ctx(&ep, &id)).unwrap();
    let client = SamplingClient::new(ctx, handler.clone());
    let spec = SampleSpec::new(
        ModelInput::from_tokens(vec![1, 2]),
        SamplingParams::default(),
        1,
    );
    let (result, meta) = client.sample(&spec, &NoEvents).await;
    let e = result.unwrap_err();
    assert_eq!(
        (e.kind, e.status, e.retryable, e.fatal),
        (ErrorKind::Http, Some(409), false, true),
        "{e:?}"
    );
    assert_eq!(meta.attempts, 1);
    let asamples = sim
        .log()
        .into_iter()
        .filter(|e| e["path"] == "/api/v1/asample")
        .count();
    assert_eq!(asamples, 1, "one asample in the simulator's log");
    let s = handler.stats();
    assert_eq!((s.retries, s.failed), (0, 1));
    sim.shutdown().await;
}

/// After a 429 every submit of the key waits behind one probe request;
/// a probe the service does not answer (held 30 s by a delay rule) holds
/// them for the probe timeout, not for its own 60 s submit timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_probe_holds_the_other_submits_for_the_probe_timeout_only() {
    let (sim, ep) = start().await;
    let id = sampling_session(&ep).await;
    sim.set_scenario(&json!({"rules": [
        {"endpoint": "asample", "match": {"nth": 1},
         "action": {"status": 429, "headers": {"retry-after-ms": "50"}}},
        // The second asample, the probe after that backoff, hangs.
        {"endpoint": "asample", "match": {"nth": 1}, "action": {"delay_ms": 30000}}
    ]}))
    .unwrap();
    let probe_timeout = std::time::Duration::from_millis(300);
    let ctx = Arc::new(
        SampleContext::new(ep.clone(), &id)
            .with_timings(Timings {
                probe_timeout,
                ..Timings::default()
            })
            .with_limiter(Arc::new(RateLimiter::new())),
    );
    let spec = Arc::new(SampleSpec::new(
        ModelInput::from_tokens(vec![3]),
        SamplingParams::default(),
        1,
    ));
    let stalled = {
        let (ctx, spec) = (ctx.clone(), spec.clone());
        tokio::spawn(async move { run_attempt(&ctx, &spec, 0).await })
    };
    let fired = |rule: usize| sim.stats()["rules"][rule]["fired"].as_u64().unwrap_or(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !(fired(1) == 1 && ctx.limiter.probe_in_flight()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the probe never went out"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let probe_out = std::time::Instant::now();
    let others: Vec<_> = (1..=2u64)
        .map(|seq| {
            let (ctx, spec) = (ctx.clone(), spec.clone());
            tokio::spawn(async move { run_attempt(&ctx, &spec, seq).await })
        })
        .collect();
    for t in others {
        let out = tokio::time::timeout(std::time::Duration::from_secs(10), t)
            .await
            .expect("still held behind the stalled probe after 10 s")
            .unwrap();
        assert_eq!(out.unwrap().sequences.len(), 1);
    }
    assert!(probe_out.elapsed() < std::time::Duration::from_secs(10));
    assert!(!stalled.is_finished(), "the stalled probe is still out");
    stalled.abort();
    // The next probe left once the stalled one (sent at the end of the
    // 50 ms backoff) had been out 300 ms: not before, and not 30 s later.
    let at = |status: u64| -> Vec<u64> {
        sim.log()
            .into_iter()
            .filter(|e| e["path"] == "/api/v1/asample" && e["status"] == status)
            .map(|e| e["t_us"].as_u64().unwrap())
            .collect()
    };
    let (limited, passed) = (at(429), at(200));
    assert_eq!(
        (limited.len(), passed.len()),
        (1, 2),
        "{limited:?} {passed:?}"
    );
    let gap = passed.iter().min().unwrap() - limited[0];
    assert!(
        (349_000..5_000_000).contains(&gap),
        "next probe {gap} µs after the 429"
    );
    sim.shutdown().await;
}

/// 20 000 samples, 256 at a time, through one context: prints the rate.
/// Run with `cargo test --release -p tinkex_core --test against_sim -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement, run on demand"]
async fn throughput_20k_at_256() {
    let (_, sim) = tinker_sim::serve(tinker_sim::SimConfig {
        exit_on_stdin_eof: false,
        log: false,
        ..tinker_sim::SimConfig::default()
    })
    .await
    .unwrap();
    let ep = Endpoint::new(&sim.base_url(), "tml-throughput").unwrap();
    let id = sampling_session(&ep).await;
    let ctx = fast_ctx(&ep, &id);
    let permits = Arc::new(tokio::sync::Semaphore::new(256));
    let start = std::time::Instant::now();
    let tasks: Vec<_> = (0..20_000u64)
        .map(|seq| {
            let (ctx, permits) = (ctx.clone(), permits.clone());
            tokio::spawn(async move {
                let _p = permits.acquire().await.unwrap();
                let params = SamplingParams {
                    max_tokens: Some(16),
                    ..SamplingParams::default()
                };
                let spec = SampleSpec::new(ModelInput::from_tokens(vec![1; 64]), params, 1);
                run_attempt(&ctx, &spec, seq)
                    .await
                    .map(|o| o.sequences.len())
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 1);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "20000 samples in {secs:.2} s: {:.0} samples/s",
        20_000.0 / secs
    );
    sim.shutdown().await;
}
