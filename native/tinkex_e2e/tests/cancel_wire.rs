//! Deadlines, cancel announcements and the dynamic config against the real
//! simulator (`tinker_sim`), with wire facts from its log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tinkex_core::client::{Deadline, SamplingClient};
use tinkex_core::config::RetryConfig;
use tinkex_core::dynamic_config::{self, DynamicConfig};
use tinkex_core::error::ErrorKind;
use tinkex_core::handler::{Handler, NoEvents};
use tinkex_core::http::Endpoint;
use tinkex_core::rate_limiter::RateLimiter;
use tinkex_core::sampling::{SampleContext, SampleSpec, Timings};
use tinkex_core::wire::{ModelInput, SamplingParams};

async fn start(scenario: Value) -> (tinker_sim::SimHandle, Endpoint) {
    let (_, sim) = tinker_sim::serve(tinker_sim::SimConfig {
        exit_on_stdin_eof: false,
        ..tinker_sim::SimConfig::default()
    })
    .await
    .unwrap();
    sim.set_scenario(&scenario).unwrap();
    let ep = Endpoint::new(&sim.base_url(), "tml-cancel-wire").unwrap();
    (sim, ep)
}

async fn client(ep: &Endpoint, timings: Timings) -> Arc<SamplingClient> {
    let initial = dynamic_config::fetch(ep, &dynamic_config::initial_policy())
        .await
        .unwrap();
    let ctx = SampleContext::new(ep.clone(), "sess:sample:0")
        .with_timings(timings)
        .with_limiter(Arc::new(RateLimiter::new()));
    let handler = Arc::new(Handler::new("sess:sample:0", RetryConfig::default()));
    SamplingClient::start(ctx, handler, &initial, 0, None)
}

fn spec() -> SampleSpec {
    SampleSpec::new(
        ModelInput::from_tokens(vec![1, 2, 3]),
        SamplingParams::default(),
        1,
    )
}

fn entries(sim: &tinker_sim::SimHandle, endpoint: &str) -> Vec<Value> {
    sim.log()
        .into_iter()
        .filter(|e| e["endpoint"] == endpoint)
        .collect()
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < give_up, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_during_a_stuck_poll_times_out_and_announces_the_future() {
    let (sim, ep) = start(json!({
        "stuck": true,
        "dynamic_config": {"sample_cancel_enabled": true}
    }))
    .await;
    let c = client(&ep, Timings::default()).await;
    let t0 = Instant::now();
    let deadline = Deadline::after(Duration::from_millis(300));
    let (r, meta) = c.sample_until(&spec(), &NoEvents, deadline).await;
    let took = t0.elapsed();
    let e = r.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(!e.retryable);
    assert_eq!(
        e.message,
        "the sample did not finish within its timeout of 300 ms"
    );
    assert!(took >= Duration::from_millis(290) && took < Duration::from_secs(5));
    assert_eq!(meta.attempts, 1);
    assert_eq!(c.handler().stats().in_flight, 0, "the permit is back");
    let rid = entries(&sim, "asample")[0]["request_id"].clone();
    until("cancel_future", || c.context().cancel.stats().sent == 1).await;
    let cancels = entries(&sim, "cancel_future");
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0]["body"], json!({"request_id": rid}));
    assert_eq!(sim.stats()["futures_cancelled"], 1);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_sample_announces_nothing() {
    let (sim, ep) = start(json!({"dynamic_config": {"sample_cancel_enabled": true}})).await;
    let c = client(&ep, Timings::default()).await;
    let deadline = Deadline::after(Duration::from_secs(30));
    let (r, _) = c.sample_until(&spec(), &NoEvents, deadline).await;
    r.unwrap();
    assert_eq!(c.context().cancel.stats().announced, 0);
    assert!(entries(&sim, "cancel_future").is_empty());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_from_dynamic_config_means_the_defaults() {
    let (sim, ep) = start(json!({"rules": [
        {"endpoint": "client/dynamic_config", "action": {"status": 404}}
    ]}))
    .await;
    let c = dynamic_config::fetch(&ep, &dynamic_config::initial_policy())
        .await
        .unwrap();
    assert_eq!(c, DynamicConfig::default());
    let calls = entries(&sim, "client/dynamic_config");
    assert_eq!(calls.len(), 1, "a 404 is not retried");
    assert_eq!(calls[0]["method"], "POST");
    assert_eq!(calls[0]["body"]["sdk_version"], env!("CARGO_PKG_VERSION"));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_picks_up_a_changed_config() {
    let (sim, ep) = start(json!({"dynamic_config": {"refresh_interval_sec": 0}})).await;
    let timings = Timings {
        min_config_refresh: Duration::from_millis(50),
        ..Timings::default()
    };
    let c = client(&ep, timings).await;
    let dynamic = c.context().dynamic.clone();
    assert!(!dynamic.cancel_enabled());
    sim.set_scenario(&json!({"dynamic_config": {
        "refresh_interval_sec": 0,
        "sample_cancel_enabled": true,
        "sample_cancel_max_batch_size": 5
    }}))
    .unwrap();
    until("refreshed", || dynamic.cancel_enabled()).await;
    assert_eq!(dynamic.cancel_max_batch(), 5);
    let seen = entries(&sim, "client/dynamic_config").len();
    assert!(seen >= 2);
    // Dropping the client stops the refresh.
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = entries(&sim, "client/dynamic_config").len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(entries(&sim, "client/dynamic_config").len(), after);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_already_over_sends_nothing() {
    let (sim, ep) = start(json!({})).await;
    let c = client(&ep, Timings::default()).await;
    let deadline = Deadline::after(Duration::ZERO);
    let (r, meta) = c.sample_until(&spec(), &NoEvents, deadline).await;
    assert_eq!(r.unwrap_err().kind, ErrorKind::Timeout);
    assert_eq!(meta.attempts, 0);
    let (r, _) = c.sample_until(&spec(), &NoEvents, None).await;
    r.unwrap();
    assert_eq!(entries(&sim, "asample").len(), 1);
    sim.shutdown().await;
}
