//! Load generator for the simulator's happy path: per sample, one `asample`
//! and one `retrieve_future` (protobuf), over `--concurrency` keep-alive
//! connections on loopback.
//!
//! ```text
//! cargo run --release -p tinker_sim --example load -- \
//!     [--url http://127.0.0.1:PORT] [--concurrency 64] [--samples 20000] [--max-tokens 16]
//! ```
//!
//! Without `--url` it starts a simulator in-process (logging off). Prints
//! samples/s and requests/s (2 requests per sample) and per-sample latency
//! percentiles. Bounded in count: it stops after `--samples`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    url: Option<String>,
    concurrency: usize,
    samples: u64,
    max_tokens: u32,
}

fn parse_args() -> Args {
    let mut a = Args {
        url: None,
        concurrency: 64,
        samples: 20_000,
        max_tokens: 16,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = Some(value()),
            "--concurrency" => a.concurrency = value().parse().expect("--concurrency N"),
            "--samples" => a.samples = value().parse().expect("--samples N"),
            "--max-tokens" => a.max_tokens = value().parse().expect("--max-tokens N"),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let mut _handle = None;
    let base = match &args.url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let config = tinker_sim::SimConfig {
                log: false,
                ..Default::default()
            };
            let (_, h) = tinker_sim::serve(config).await.expect("serve");
            let url = h.base_url();
            _handle = Some(h);
            url
        }
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let ssid: Arc<str> = Arc::from(format!("load-{}:sample:0", std::process::id()));
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, base, ssid, next, errors) = (
            client.clone(),
            base.clone(),
            ssid.clone(),
            next.clone(),
            errors.clone(),
        );
        let (samples, max_tokens) = (args.samples, args.max_tokens);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= samples {
                    return latencies;
                }
                let t = Instant::now();
                let body = serde_json::json!({
                    "type": "sample", "sampling_session_id": &*ssid, "seq_id": seq, "num_samples": 1,
                    "prompt": {"chunks": [{"type": "encoded_text", "tokens": [1, 2, 3, 4, 5, 6, 7, 8]}]},
                    "sampling_params": {"max_tokens": max_tokens, "temperature": 1.0, "top_k": -1, "top_p": 1.0},
                    "prompt_logprobs": false, "topk_prompt_logprobs": 0,
                });
                let ok = async {
                    let r = client
                        .post(format!("{base}/api/v1/asample"))
                        .header("x-api-key", "tml-load")
                        .json(&body)
                        .send()
                        .await
                        .ok()?;
                    let fut: serde_json::Value = r.json().await.ok()?;
                    let rid = fut["request_id"].as_str()?.to_string();
                    let r = client
                        .post(format!("{base}/api/v1/retrieve_future"))
                        .header("x-api-key", "tml-load")
                        .header("accept", "application/x-protobuf")
                        .json(&serde_json::json!({"request_id": rid, "allow_metadata_only": true}))
                        .send()
                        .await
                        .ok()?;
                    let is_proto = r.headers().get("content-type")? == "application/x-protobuf";
                    let _ = r.bytes().await.ok()?;
                    is_proto.then_some(())
                }
                .await;
                if ok.is_none() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("worker"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
    println!(
        "concurrency {} samples {} errors {} in {:.2}s: {:.0} samples/s, {:.0} requests/s; sample latency p50 {:?} p99 {:?} max {:?}",
        args.concurrency,
        latencies.len(),
        errors.load(Ordering::Relaxed),
        elapsed,
        latencies.len() as f64 / elapsed,
        2.0 * latencies.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        latencies.last().copied().unwrap_or_default(),
    );
}
