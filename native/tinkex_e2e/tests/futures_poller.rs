//! The `retrieve_futures` session poller against the simulator, and the
//! in-flight response budget: one fetch per sample, shared long polls,
//! acks, failed completions, terminal and retryable poller errors,
//! deregistration of abandoned samples, and the budget bounding
//! concurrent large fetches in both polling modes.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tinkex_core::client::SamplingClient;
use tinkex_core::config::RetryConfig;
use tinkex_core::error::{Category, ErrorKind};
use tinkex_core::handler::{Handler, NoEvents};
use tinkex_core::http::Endpoint;
use tinkex_core::rate_limiter::RateLimiter;
use tinkex_core::sampling::{run_attempt, SampleContext, SampleSpec, Timings};
use tinkex_core::session::{create_sampling_session, create_session};
use tinkex_core::wire::{ModelInput, SamplingParams};

const FLAG: &str = "sample_use_retrieve_futures";

async fn start(hold: Duration, scenario: Value) -> (tinker_sim::SimHandle, Endpoint, String) {
    let (_, sim) = tinker_sim::serve(tinker_sim::SimConfig {
        exit_on_stdin_eof: false,
        hold,
        ..tinker_sim::SimConfig::default()
    })
    .await
    .unwrap();
    sim.set_scenario(&scenario).unwrap();
    let ep = Endpoint::new(&sim.base_url(), "tml-futures-poller").unwrap();
    let session = create_session(&ep, &[], None).await.unwrap().session_id;
    let id = create_sampling_session(
        &ep,
        &session,
        tinkex_core::session::ModelRef::BaseModel("m"),
        0,
    )
    .await
    .unwrap();
    (sim, ep, id)
}

fn futures_on() -> Value {
    json!({"client_config": {FLAG: true}})
}

fn timings() -> Timings {
    Timings {
        futures_retry: Duration::from_millis(150),
        ..Timings::default()
    }
}

fn ctx(ep: &Endpoint, id: &str, futures: bool) -> Arc<SampleContext> {
    Arc::new(
        SampleContext::new(ep.clone(), id)
            .with_timings(timings())
            .with_limiter(Arc::new(RateLimiter::new()))
            .with_retrieve_futures(futures),
    )
}

fn spec(n: i32) -> SampleSpec {
    let params = SamplingParams {
        max_tokens: Some(4),
        ..SamplingParams::default()
    };
    SampleSpec::new(ModelInput::from_tokens(vec![1, 2, n]), params, 1)
}

fn entries(sim: &tinker_sim::SimHandle, endpoint: &str) -> Vec<Value> {
    let mut v: Vec<Value> = sim
        .log()
        .into_iter()
        .filter(|e| e["endpoint"] == endpoint)
        .collect();
    v.sort_by_key(|e| e["t_us"].as_u64());
    v
}

/// Waits (bounded) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn poller_running(ctx: &SampleContext) -> bool {
    ctx.futures
        .as_ref()
        .unwrap()
        .poller(ctx, 0)
        .unwrap()
        .is_running()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_fetch_per_sample_and_shared_long_polls() {
    let (sim, ep, id) = start(Duration::from_secs(5), futures_on()).await;
    // Results held until every sample waits on the poller, then released
    // together.
    sim.set_scenario(&json!({"stuck": true})).unwrap();
    let ctx = ctx(&ep, &id, true);
    let n = 40u64;
    let tasks: Vec<_> = (0..n)
        .map(|seq| {
            let ctx = ctx.clone();
            tokio::spawn(async move { run_attempt(&ctx, &spec(seq as i32), seq).await })
        })
        .collect();
    until("all waiting", || ctx.futures_waiting() == n as usize).await;
    let seen = sim.log().len() as u64;
    sim.set_scenario(&json!({"stuck": false})).unwrap();
    let want = tinker_sim::SamplingParams::with_max_tokens(4);
    for (seq, t) in tasks.into_iter().enumerate() {
        let out = t.await.unwrap().unwrap();
        let expected = tinker_sim::expected_tokens(&id, seq as i64, &[1, 2, seq as i32], &want, 0);
        assert_eq!(out.sequences[0].tokens, expected, "seq {seq}");
    }
    // Every fetched result is acknowledged, and then the poller stops.
    until("poller idle", || !poller_running(&ctx)).await;
    assert_eq!(ctx.futures_waiting(), 0);

    assert_eq!(entries(&sim, "asample").len(), n as usize);
    let fetches = entries(&sim, "retrieve_future");
    assert_eq!(fetches.len(), n as usize, "one retrieve_future per sample");
    for f in &fetches {
        // The completion announced the size: the full result at once.
        assert_eq!(f["body"]["allow_metadata_only"], false);
        assert_eq!(f["status"], 200);
    }
    let polls = entries(&sim, "retrieve_futures");
    // One long poll brings every completion, a few more carry the acks;
    // a poll loop per sample would take at least one per sample.
    let released = polls
        .iter()
        .filter(|p| p["seq"].as_u64() >= Some(seen))
        .count();
    assert!(
        (1..=n as usize / 2).contains(&released),
        "{released} retrieve_futures for {n} samples: long polls are shared"
    );
    let mut acked = std::collections::BTreeSet::new();
    let mut cursor = 0;
    for p in &polls {
        let b = &p["body"];
        assert_eq!(
            b["target"],
            json!({"type": "sampling_session", "sampling_session_id": id, "cloned_sampler_id": 0})
        );
        assert!(p["headers"].get("x-sdk-method").is_none());
        let prev = b["prev_cursor"].as_u64().unwrap();
        assert!(prev >= cursor, "cursors only move forward");
        cursor = prev;
        for r in b["retrieved_request_ids"].as_array().unwrap() {
            assert!(
                acked.insert(r.as_str().unwrap().to_owned()),
                "acked once: {r}"
            );
        }
    }
    let fetched: std::collections::BTreeSet<String> = fetches
        .iter()
        .map(|f| f["request_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(acked, fetched);
    // Nothing is left waiting: the last poll only reported.
    assert_eq!(polls.last().unwrap()["body"]["timeout"], 0.0);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_failed_completion_fetches_the_error_with_its_category() {
    let (sim, ep, id) = start(Duration::from_secs(5), futures_on()).await;
    sim.set_scenario(&json!({"rules": [
        {"endpoint": "future", "action": {"fail": {"category": "user", "error": "bad prompt"}}}
    ]}))
    .unwrap();
    let ctx = ctx(&ep, &id, true);
    let e = run_attempt(&ctx, &spec(1), 0).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::RequestFailed);
    assert_eq!(e.category, Some(Category::User));
    assert!(e.message.contains("bad prompt"), "{}", e.message);
    let rid = e.request_id.clone().unwrap();
    let fetches = entries(&sim, "retrieve_future");
    assert_eq!(fetches.len(), 1);
    // No size for a failed request: a normal poll, which returns the error.
    assert_eq!(fetches[0]["body"]["allow_metadata_only"], true);
    assert_eq!(fetches[0]["outcome"], "failed");
    // The failure counts as retrieved.
    until("ack of the failure", || !poller_running(&ctx)).await;
    let acked: Vec<Value> = entries(&sim, "retrieve_futures")
        .iter()
        .flat_map(|p| {
            p["body"]["retrieved_request_ids"]
                .as_array()
                .unwrap()
                .clone()
        })
        .collect();
    assert_eq!(acked, [json!(rid)]);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_status_fails_all_waiters_at_once_and_the_next_sample_starts_fresh() {
    let (sim, ep, id) = start(Duration::from_millis(100), futures_on()).await;
    let ctx = SampleContext::new(ep.clone(), &id)
        .with_timings(timings())
        .with_limiter(Arc::new(RateLimiter::new()))
        .with_retrieve_futures(true);
    let config = RetryConfig {
        base_delay_ms: 1,
        max_delay_ms: 2,
        ..RetryConfig::default()
    };
    let client = Arc::new(SamplingClient::new(
        ctx,
        Arc::new(Handler::new("terminal", config)),
    ));
    // A first sample moves the cursor past 0.
    client.sample(&spec(0), &NoEvents).await.0.unwrap();
    until("first sample acked", || !poller_running(client.context())).await;
    sim.set_scenario(&json!({"stuck": true})).unwrap();
    let tasks: Vec<_> = (1..6)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.sample(&spec(i), &NoEvents).await })
        })
        .collect();
    until("5 waiters", || client.context().futures_waiting() == 5).await;
    sim.set_scenario(&json!({"rules": [
        {"endpoint": "retrieve_futures", "action": {"status": 404}}
    ]}))
    .unwrap();
    let mut rids = std::collections::BTreeSet::new();
    for t in tasks {
        let (r, meta) = t.await.unwrap();
        let e = r.unwrap_err();
        assert_eq!(
            (e.kind, e.status, e.retryable),
            (ErrorKind::Http, Some(404), false)
        );
        assert!(
            e.message.starts_with(&format!(
                "retrieve_futures polling failed for sampling session {id} (clone 0): Error code: 404"
            )),
            "{}",
            e.message
        );
        assert_eq!(meta.attempts, 1, "not retried");
        rids.insert(e.request_id.unwrap());
    }
    assert_eq!(rids.len(), 5);
    let polls = entries(&sim, "retrieve_futures");
    let failed: Vec<_> = polls.iter().filter(|p| p["status"] == 404).collect();
    assert_eq!(failed.len(), 1, "one terminal answer failed every waiter");
    assert!(!poller_running(client.context()));
    assert_eq!(client.context().futures_waiting(), 0);

    // The next sample starts a fresh poller (cursor 0) and works.
    sim.set_scenario(&json!({"rules": [], "stuck": false}))
        .unwrap();
    let (r, _) = client.sample(&spec(9), &NoEvents).await;
    r.unwrap();
    let after: Vec<Value> = entries(&sim, "retrieve_futures")
        .into_iter()
        .filter(|p| p["t_us"].as_u64() > failed[0]["t_us"].as_u64())
        .collect();
    let before = &polls[polls.len() - 2];
    assert!(before["body"]["prev_cursor"].as_u64() > Some(0), "{before}");
    assert_eq!(after[0]["body"]["prev_cursor"], 0);
    assert_eq!(after[0]["status"], 200);
    assert_eq!(entries(&sim, "asample").len(), 7);
    sim.shutdown().await;
}

#[tokio::test]
async fn retryable_poller_errors_sleep_the_fixed_delay() {
    let (sim, ep, id) = start(Duration::from_secs(5), futures_on()).await;
    sim.set_scenario(&json!({"rules": [
        {"endpoint": "retrieve_futures", "match": {"first": 1}, "action": {"status": 503}},
        {"endpoint": "retrieve_futures", "match": {"first": 1}, "action": {"drop": true}},
        {"endpoint": "retrieve_futures", "match": {"first": 1}, "action": {"status": 400, "empty_body": true}}
    ]}))
    .unwrap();
    let ctx = ctx(&ep, &id, true);
    run_attempt(&ctx, &spec(1), 0).await.unwrap();
    let polls = entries(&sim, "retrieve_futures");
    let statuses: Vec<_> = polls.iter().take(4).map(|p| p["status"].clone()).collect();
    assert_eq!(statuses, [json!(503), json!(0), json!(400), json!(200)]);
    for w in polls[..4].windows(2) {
        let gap = w[1]["t_us"].as_u64().unwrap() - w[0]["t_done_us"].as_u64().unwrap();
        // 150 ms each (timings().futures_retry), no backoff growth.
        assert!((140_000..600_000).contains(&gap), "gap {gap} µs");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn a_400_with_a_body_is_retried_three_times_then_terminal() {
    let (sim, ep, id) = start(Duration::from_secs(5), futures_on()).await;
    sim.set_scenario(&json!({"rules": [
        {"endpoint": "retrieve_futures", "action": {"status": 400}}
    ]}))
    .unwrap();
    let ctx = ctx(&ep, &id, true);
    let e = run_attempt(&ctx, &spec(1), 0).await.unwrap_err();
    assert_eq!(e.status, Some(400));
    assert!(e.message.contains("retrieve_futures polling failed"));
    assert_eq!(entries(&sim, "retrieve_futures").len(), 4);
    assert!(entries(&sim, "retrieve_future").is_empty());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_sample_deregisters() {
    let (sim, ep, id) = start(Duration::from_millis(100), futures_on()).await;
    sim.set_scenario(&json!({"stuck": true})).unwrap();
    let ctx = ctx(&ep, &id, true);
    let c = ctx.clone();
    let task = tokio::spawn(async move { run_attempt(&c, &spec(1), 0).await });
    until("registered", || ctx.futures_waiting() == 1).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(ctx.futures_waiting(), 0);
    // With nobody waiting the poller ends after its current long poll.
    until("poller stops", || !poller_running(&ctx)).await;
    sim.shutdown().await;
}

/// Intervals `[t_us, t_done_us]` of the full-result fetches.
fn full_fetches(sim: &tinker_sim::SimHandle) -> Vec<(u64, u64)> {
    entries(sim, "retrieve_future")
        .iter()
        .filter(|e| e["body"]["allow_metadata_only"] == false)
        .map(|e| {
            (
                e["t_us"].as_u64().unwrap(),
                e["t_done_us"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn overlapping(iv: &[(u64, u64)]) -> bool {
    iv.windows(2).any(|w| w[1].0 < w[0].1)
}

async fn four_large_samples(futures: bool, budget: Option<u64>) -> Vec<(u64, u64)> {
    let scenario = if futures {
        // The fetch is the first poll of each future.
        json!({"client_config": {FLAG: true}, "rules": [
            {"endpoint": "retrieve_future", "match": {"poll": 1}, "action": {"delay_ms": 250}}
        ]})
    } else {
        json!({"rules": [
            {"endpoint": "future", "action": {"complete_metadata": true}},
            {"endpoint": "retrieve_future", "match": {"poll": 2}, "action": {"delay_ms": 250}}
        ]})
    };
    let (sim, ep, id) = start(Duration::from_secs(5), scenario).await;
    let mut c = SampleContext::new(ep.clone(), &id)
        .with_timings(timings())
        .with_limiter(Arc::new(RateLimiter::new()))
        .with_retrieve_futures(futures);
    if let Some(b) = budget {
        c = c.with_response_budget(b);
    }
    let ctx = Arc::new(c);
    let tasks: Vec<_> = (0..4u64)
        .map(|seq| {
            let ctx = ctx.clone();
            tokio::spawn(async move { run_attempt(&ctx, &spec(seq as i32), seq).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        ctx.response_budget.available(),
        budget.map_or(50 << 20, |b| b as i64)
    );
    let iv = full_fetches(&sim);
    assert_eq!(iv.len(), 4);
    sim.shutdown().await;
    iv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_response_budget_serialises_large_fetches_after_complete_metadata() {
    // Each result is larger than a 1-byte budget: one full fetch at a time.
    let iv = four_large_samples(false, Some(1)).await;
    assert!(!overlapping(&iv), "{iv:?}");
    // The 50 MiB default lets them run together (the check can fail).
    let iv = four_large_samples(false, None).await;
    assert!(overlapping(&iv), "{iv:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_response_budget_serialises_large_fetches_announced_by_the_poller() {
    let iv = four_large_samples(true, Some(1)).await;
    assert!(!overlapping(&iv), "{iv:?}");
    let iv = four_large_samples(true, None).await;
    assert!(overlapping(&iv), "{iv:?}");
}

mod common;

/// A completion that arrives before its sample registered is kept for it;
/// the cursor ack and the retrieved ack follow the SDK's sequence.
#[tokio::test]
async fn an_early_completion_is_kept_for_its_sample() {
    use common::{Mock, Reply};
    let m = Mock::start().await;
    m.script(
        "/api/v1/retrieve_futures",
        [Reply::Json(
            200,
            json!({"completions": [
                {"state": "finished", "request_id": "a", "response_payload_uncompressed_size": 5},
                {"state": "failed", "request_id": "b"}
            ], "cursor": 2}),
        )],
    );
    m.default(
        "/api/v1/retrieve_futures",
        Reply::Json(200, json!({"completions": [], "cursor": 2})),
    );
    let ep = Endpoint::new(&m.base_url, "tml-k").unwrap();
    let ctx = SampleContext::new(ep, "s").with_retrieve_futures(true);
    let poller = ctx.futures.as_ref().unwrap().poller(&ctx, 3).unwrap();
    let a = poller.wait_for("a").await.unwrap();
    assert_eq!(a.payload_size(), Some(5));
    until("cursor acked", || !poller.is_running()).await;
    // "b" completed before anyone waited for it: answered without a poll.
    let b = poller.wait_for("b").await.unwrap();
    assert_eq!((b.state.as_str(), b.payload_size()), ("failed", None));
    poller.mark_retrieved("a");
    until("retrieved acked", || !poller.is_running()).await;
    let bodies: Vec<Value> = m
        .requests("/api/v1/retrieve_futures")
        .into_iter()
        .map(|l| l.body)
        .collect();
    let target =
        json!({"type": "sampling_session", "sampling_session_id": "s", "cloned_sampler_id": 3});
    assert_eq!(
        bodies,
        [
            json!({"target": target, "prev_cursor": 0, "retrieved_request_ids": []}),
            json!({"target": target, "prev_cursor": 2, "retrieved_request_ids": [], "timeout": 0.0}),
            json!({"target": target, "prev_cursor": 2, "retrieved_request_ids": ["a"], "timeout": 0.0}),
        ]
    );
}

/// A malformed answer is terminal: the waiter gets a decode error naming
/// the session and clone.
#[tokio::test]
async fn a_malformed_answer_is_terminal() {
    use common::{Mock, Reply};
    let m = Mock::start().await;
    m.default(
        "/api/v1/retrieve_futures",
        Reply::Raw(200, "application/json", b"{\"cursor\":".to_vec()),
    );
    let ep = Endpoint::new(&m.base_url, "tml-k").unwrap();
    let ctx = SampleContext::new(ep, "s").with_retrieve_futures(true);
    let poller = ctx.futures.as_ref().unwrap().poller(&ctx, 0).unwrap();
    let e = poller.wait_for("a").await.unwrap_err();
    assert_eq!((e.kind, e.retryable), (ErrorKind::Decode, false));
    assert!(e.message.starts_with(
        "retrieve_futures polling failed for sampling session s (clone 0): Malformed JSON"
    ));
    assert_eq!(e.request_id.as_deref(), Some("a"));
    assert!(!poller.is_running());
    assert_eq!(m.requests("/api/v1/retrieve_futures").len(), 1);
}
