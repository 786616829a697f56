//! The cluster budget on the sample path, against the simulator: permits
//! bound what the server sees outstanding, and a revoked lease withdraws
//! the request from the server before the permit is given back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tinkex_core::cluster::{run_leased, Budget, WITHDRAW_TIMEOUT};
use tinkex_core::handler::NoEvents;
use tinkex_core::http::Endpoint;
use tinkex_core::rate_limiter::RateLimiter;
use tinkex_core::sampling::{SampleContext, SampleSpec};
use tinkex_core::wire::{ModelInput, SamplingParams};

async fn start() -> (tinker_sim::SimHandle, Arc<SampleContext>) {
    let (_, sim) = tinker_sim::serve(tinker_sim::SimConfig {
        exit_on_stdin_eof: false,
        ..tinker_sim::SimConfig::default()
    })
    .await
    .unwrap();
    let ep = Endpoint::new(&sim.base_url(), "tml-cluster-budget").unwrap();
    let ctx = SampleContext::new(ep, "cluster:sample:0").with_limiter(Arc::new(RateLimiter::new()));
    (sim, Arc::new(ctx))
}

fn spec(token: i32) -> SampleSpec {
    let params = SamplingParams {
        max_tokens: Some(3),
        ..SamplingParams::default()
    };
    SampleSpec::new(ModelInput::from_tokens(vec![token]), params, 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_never_sees_more_outstanding_than_the_lease() {
    let (sim, ctx) = start().await;
    sim.set_scenario(&json!({"latency_ms": "20..40"})).unwrap();
    let budget = Arc::new(Budget::new());
    budget.set_lease(5, Duration::from_secs(60), 1);
    let seq = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let (ctx, budget, seq) = (ctx.clone(), budget.clone(), seq.clone());
            tokio::spawn(async move {
                let s = spec(i);
                let next = || seq.fetch_add(1, Ordering::Relaxed);
                run_leased(&ctx, &s, &budget, next, &NoEvents, WITHDRAW_TIMEOUT).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let stats = sim.stats();
    assert_eq!(stats["futures_created"], json!(60));
    assert_eq!(stats["max_futures_outstanding"], json!(5), "{stats}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_lease_withdraws_the_request_and_the_sample_runs_again() {
    let (sim, ctx) = start().await;
    // seq_id 0 never completes: the attempt is still polling when the
    // lease runs out.
    sim.set_scenario(&json!({"rules": [
        {"endpoint": "future", "match": {"seq_id": 0}, "action": {"stuck": true}}
    ]}))
    .unwrap();
    let budget = Arc::new(Budget::new());
    budget.set_lease(1, Duration::from_millis(300), 1);
    let driver = tokio::spawn(budget.clone().drive(Duration::ZERO, |_| true));
    let seq = Arc::new(AtomicU64::new(0));
    let task = {
        let (ctx, budget, seq) = (ctx.clone(), budget.clone(), seq.clone());
        tokio::spawn(async move {
            let s = spec(9);
            let next = || seq.fetch_add(1, Ordering::Relaxed);
            run_leased(&ctx, &s, &budget, next, &NoEvents, WITHDRAW_TIMEOUT).await
        })
    };
    // Wait for the revocation and the withdrawal (both leave traces).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sim.stats()["futures_cancelled"] != json!(1) {
        assert!(tokio::time::Instant::now() < deadline, "{}", sim.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = sim.stats();
    assert_eq!(stats["futures_outstanding"], json!(0), "{stats}");
    assert!(!task.is_finished(), "waits for a new lease, does not fail");
    while budget.snapshot().used != 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    budget.set_lease(1, Duration::from_secs(60), 2);
    let out = task.await.unwrap().unwrap();
    assert_eq!(out.request_id, "req:cluster:sample:0:1", "a fresh seq_id");
    let snap = budget.snapshot();
    assert_eq!((snap.revoked_total, snap.used), (1, 0));
    let asamples: Vec<_> = sim
        .log()
        .into_iter()
        .filter(|e| e["endpoint"] == "asample")
        .map(|e| (e["seq_id"].clone(), e["outcome"].clone()))
        .collect();
    assert_eq!(
        asamples,
        vec![
            (json!(0), json!("created")),
            (json!(0), json!("duplicate")),
            (json!(1), json!("created"))
        ]
    );
    budget.close();
    driver.await.unwrap();
    sim.shutdown().await;
}
