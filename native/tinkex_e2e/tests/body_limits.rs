//! Limits on answer sizes, against the simulator's `body_bytes` rule: a
//! success over its limit fails with a clear error, by `Content-Length`
//! or by a running count when the body is chunked; an error status over
//! it still drives the retry; raising a limit lets the body through.

use std::time::{Duration, Instant};

use serde_json::json;
use tinkex_core::error::ErrorKind;
use tinkex_core::http::{BodyLimits, Endpoint};
use tinkex_core::sampling::{run_attempt, SampleContext, SampleSpec};
use tinkex_core::session::{client_config, create_session};
use tinkex_core::wire::{ModelInput, SamplingParams};

const MIB: u64 = 1 << 20;

async fn start(rules: serde_json::Value) -> (tinker_sim::SimHandle, Endpoint) {
    let (_, sim) = tinker_sim::serve(tinker_sim::SimConfig {
        exit_on_stdin_eof: false,
        ..tinker_sim::SimConfig::default()
    })
    .await
    .unwrap();
    sim.set_scenario(&json!({ "rules": rules })).unwrap();
    let ep = Endpoint::new(&sim.base_url(), "tml-body-limits").unwrap();
    (sim, ep)
}

fn padded(endpoint: &str, bytes: u64, chunked: bool) -> serde_json::Value {
    json!([{"endpoint": endpoint, "match": {"first": 1},
            "action": {"status": 200, "body_bytes": bytes, "chunked": chunked}}])
}

#[tokio::test]
async fn control_answer_over_1_mib_by_content_length() {
    let (sim, ep) = start(padded("client/config", 2 * MIB, false)).await;
    let e = client_config(&ep).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Decode);
    assert!(!e.retryable);
    assert_eq!(
        e.message,
        "the answer of /api/v1/client/config is too large: Content-Length is 2097152 bytes, \
         over the 1048576-byte limit of control answers (raise it with max_body_bytes: [control: bytes])"
    );
    // Not retried: one call.
    let calls = sim
        .log()
        .iter()
        .filter(|e| e["endpoint"] == "client/config")
        .count();
    assert_eq!(calls, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn control_answer_over_1_mib_chunked() {
    let (sim, ep) = start(padded("create_session", 2 * MIB, true)).await;
    let e = create_session(&ep, &[], None).await.unwrap_err();
    assert_eq!(
        e.message,
        "the answer of /api/v1/create_session is too large: more than 1048576 bytes arrived, \
         over the 1048576-byte limit of control answers (raise it with max_body_bytes: [control: bytes])"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_raised_limit_reads_the_body() {
    let (sim, ep) = start(padded("client/config", 2 * MIB, true)).await;
    let ep = ep.with_body_limits(BodyLimits {
        result: MIB,
        control: 3 * MIB,
    });
    // `{"pad":"xx…"}`: unknown keys, so the default flags.
    let flags = client_config(&ep).await.unwrap();
    assert_eq!(flags.sample_max_concurrent_requests, 2000);
    sim.shutdown().await;
}

#[tokio::test]
async fn an_error_status_over_the_limit_is_still_retried() {
    // A huge 503 page: its body is not read, its status still means "retry".
    let rules = json!([{"endpoint": "create_session", "match": {"first": 1},
                        "action": {"status": 503, "body_bytes": 5 * MIB}}]);
    let (sim, ep) = start(rules).await;
    let session = create_session(&ep, &[], None).await.unwrap();
    assert!(session.session_id.starts_with("sim-session-"));
    let statuses: Vec<_> = sim
        .log()
        .iter()
        .filter(|e| e["endpoint"] == "create_session")
        .map(|e| e["status"].clone())
        .collect();
    assert_eq!(statuses, [json!(503), json!(200)]);
    sim.shutdown().await;
}

fn spec() -> SampleSpec {
    let params = SamplingParams {
        max_tokens: Some(2),
        ..SamplingParams::default()
    };
    SampleSpec::new(ModelInput::from_tokens(vec![1, 2]), params, 1)
}

#[tokio::test]
async fn result_over_256_mib_fails_before_a_byte_is_read() {
    let (sim, ep) = start(padded("retrieve_future", 300 * MIB, false)).await;
    let ctx = SampleContext::new(ep, "limits:sample:0");
    let t0 = Instant::now();
    let e = run_attempt(&ctx, &spec(), 0).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Decode);
    assert!(!e.retryable);
    assert_eq!(
        e.message,
        "the answer of /api/v1/retrieve_future is too large: Content-Length is 314572800 bytes, \
         over the 268435456-byte limit of result answers (raise it with max_body_bytes: [result: bytes])"
    );
    // Reading 300 MiB (and parsing it) would take far longer.
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    sim.shutdown().await;
}

#[tokio::test]
async fn result_limit_is_counted_on_a_chunked_body() {
    let (sim, ep) = start(padded("retrieve_future", 300 * MIB, true)).await;
    let ep = ep.with_body_limits(BodyLimits {
        result: 64 * 1024,
        control: MIB,
    });
    let ctx = SampleContext::new(ep, "limits:sample:0");
    let e = run_attempt(&ctx, &spec(), 0).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Decode);
    assert!(
        e.message
            .contains("more than 65536 bytes arrived, over the 65536-byte limit of result answers"),
        "{}",
        e.message
    );
    // The next poll of the same future is an ordinary, small result.
    let out = run_attempt(&ctx, &spec(), 0).await.unwrap();
    assert_eq!(out.sequences[0].tokens.len(), 2);
    sim.shutdown().await;
}
