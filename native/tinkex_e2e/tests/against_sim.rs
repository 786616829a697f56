//! The executor against the real simulator (`tinker_sim`): session set-up,
//! many concurrent samples with checked results, compute_logprobs, and a
//! 429 on submit.

use std::sync::Arc;

use serde_json::{json, Value};
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
