//! `bare_client`: the peer of bench P1. A hand-written Tinker sampling
//! client with no retry machinery: per sample one `POST asample` and
//! `POST retrieve_future` polls (protobuf result, re-poll on `try_again`)
//! with reqwest, bounded by a tokio semaphore.
//!
//! ```text
//! bare_client BASE_URL API_KEY AMOUNT CONCURRENCY [MAX_TOKENS]
//! ```
//!
//! `AMOUNT` is a number of samples (`20000`) or a duration (`10s`, `2.5s`):
//! keep submitting until it has passed, then wait for the outstanding ones.
//! Creates a session and a sampling session first (as every client does),
//! runs `CONCURRENCY` untimed warm-up samples (to open the connections),
//! then prints one JSON line: `{"client":"bare_rust","samples":N,
//! "concurrency":C,"seconds":S,"samples_per_s":R,"errors":E,"requests":Q}`.
//! Any failed sample counts as an error (nothing is retried); the run
//! exits non-zero when there were errors. With env `SIM_PID`, it also
//! reports the CPU seconds the simulator process spent in the timed part
//! (`sim_cpu_s`), beside its own (`client_cpu_s`), from `/proc/PID/stat`.

use prost::Message;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// `tinker_public.SampleResponse`, only the fields a sampler reads.
#[derive(Clone, PartialEq, Message)]
struct SampleResponse {
    #[prost(message, repeated, tag = "1")]
    sequences: Vec<SampledSequence>,
}

/// `tinker_public.SampledSequence`.
#[derive(Clone, PartialEq, Message)]
struct SampledSequence {
    #[prost(int32, tag = "1")]
    stop_reason: i32,
    #[prost(bytes = "vec", tag = "2")]
    tokens: Vec<u8>,
    #[prost(bytes = "vec", optional, tag = "3")]
    logprobs: Option<Vec<u8>>,
}

/// CPU seconds (user + system) of a process so far, from `/proc/PID/stat`
/// (`None` where that cannot be read, e.g. outside Linux).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces): state is
    // field 3, utime 14 and stime 15, in clock ticks (100 per second).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// How long a run lasts: a number of samples, or a time to keep submitting.
#[derive(Clone, Copy)]
enum Amount {
    Samples(u64),
    Duration(Duration),
}

struct Args {
    base: String,
    api_key: String,
    amount: Amount,
    concurrency: usize,
    max_tokens: u32,
}

fn parse_args() -> Result<Args, String> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 4 || a.len() > 5 {
        return Err(
            "usage: bare_client BASE_URL API_KEY AMOUNT CONCURRENCY [MAX_TOKENS] \
             (AMOUNT: samples, e.g. 20000, or seconds, e.g. 10s)"
                .into(),
        );
    }
    let num = |i: usize, name: &str| -> Result<u64, String> {
        a[i].parse()
            .map_err(|_| format!("{name}: expected a positive integer, got {:?}", a[i]))
    };
    let concurrency = num(3, "CONCURRENCY")? as usize;
    if concurrency == 0 {
        return Err("CONCURRENCY: must be at least 1".into());
    }
    Ok(Args {
        base: a[0].trim_end_matches('/').to_string(),
        api_key: a[1].clone(),
        amount: parse_amount(&a[2])?,
        concurrency,
        max_tokens: if a.len() == 5 {
            num(4, "MAX_TOKENS")? as u32
        } else {
            16
        },
    })
}

fn parse_amount(s: &str) -> Result<Amount, String> {
    let bad = || format!("AMOUNT: expected a sample count (20000) or seconds (10s), got {s:?}");
    match s.strip_suffix('s') {
        Some(secs) => {
            let secs: f64 = secs.parse().map_err(|_| bad())?;
            if !(secs > 0.0 && secs.is_finite()) {
                return Err(bad());
            }
            Ok(Amount::Duration(Duration::from_secs_f64(secs)))
        }
        None => s.parse().map(Amount::Samples).map_err(|_| bad()),
    }
}

struct Ctx {
    http: reqwest::Client,
    base: String,
    api_key: String,
    ssid: String,
    max_tokens: u32,
    requests: AtomicU64,
    /// seq_ids are unique per sampling session, warm-up included.
    next_seq_id: AtomicU64,
}

impl Ctx {
    async fn post(&self, path: &str, body: &Value) -> Result<reqwest::Response, String> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.http
            .post(format!("{}/api/v1/{path}", self.base))
            .header("x-api-key", &self.api_key)
            .header("accept", "application/x-protobuf")
            .json(body)
            .send()
            .await
            .map_err(|e| format!("{path}: {e}"))
    }

    async fn post_json(&self, path: &str, body: &Value) -> Result<Value, String> {
        let r = self.post(path, body).await?;
        let status = r.status();
        if !status.is_success() {
            return Err(format!("{path}: HTTP {status}"));
        }
        r.json().await.map_err(|e| format!("{path}: {e}"))
    }

    /// One sample: submit, then poll until the result.
    async fn sample(&self, seq_id: u64) -> Result<usize, String> {
        let body = json!({
            "type": "sample", "sampling_session_id": self.ssid, "seq_id": seq_id,
            "num_samples": 1,
            "prompt": {"chunks": [{"type": "encoded_text", "tokens": [1, 2, 3]}]},
            "sampling_params": {"max_tokens": self.max_tokens, "temperature": 0.7,
                                "top_k": -1, "top_p": 1.0, "seed": null, "stop": null},
            "prompt_logprobs": false, "topk_prompt_logprobs": 0,
        });
        let future = self.post_json("asample", &body).await?;
        let request_id = future["request_id"]
            .as_str()
            .ok_or("asample: no request_id")?
            .to_string();
        let poll = json!({"request_id": request_id, "allow_metadata_only": true});
        loop {
            let r = self.post("retrieve_future", &poll).await?;
            if !r.status().is_success() {
                return Err(format!("retrieve_future: HTTP {}", r.status()));
            }
            let is_proto = r
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"application/x-protobuf"));
            let bytes = r
                .bytes()
                .await
                .map_err(|e| format!("retrieve_future: {e}"))?;
            if is_proto {
                let resp = SampleResponse::decode(bytes)
                    .map_err(|e| format!("retrieve_future: bad protobuf: {e}"))?;
                let tokens: usize = resp
                    .sequences
                    .iter()
                    .map(|s| {
                        let toks: Vec<i32> = s
                            .tokens
                            .chunks_exact(4)
                            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect();
                        let _logprobs: Option<Vec<f32>> = s.logprobs.as_ref().map(|l| {
                            l.chunks_exact(4)
                                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                                .collect()
                        });
                        let _ = s.stop_reason;
                        toks.len()
                    })
                    .sum();
                return Ok(tokens);
            }
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|e| format!("retrieve_future: bad JSON: {e}"))?;
            if v["type"] == "try_again" {
                continue;
            }
            if let Some(err) = v.get("error") {
                return Err(format!("retrieve_future: failed future: {err}"));
            }
            if v["type"] == "sample" {
                return Ok(v["sequences"].as_array().map_or(0, Vec::len));
            }
            return Err(format!("retrieve_future: unexpected answer {v}"));
        }
    }
}

/// Samples that succeeded and failed in one [`drive`].
struct Outcome {
    done: u64,
    errors: u64,
}

/// Runs samples keeping `concurrency` outstanding until `amount` is used up,
/// then waits for every outstanding one.
async fn drive(ctx: &Arc<Ctx>, amount: Amount, concurrency: usize) -> Result<Outcome, String> {
    let sem = Arc::new(Semaphore::new(concurrency));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut submitted = 0u64;
    loop {
        let more = match amount {
            Amount::Samples(n) => submitted < n,
            Amount::Duration(d) => started.elapsed() < d,
        };
        if !more {
            break;
        }
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        // The permit may have taken a while: a run by time must not start
        // a sample after its end.
        if let Amount::Duration(d) = amount {
            if started.elapsed() >= d {
                break;
            }
        }
        let seq_id = ctx.next_seq_id.fetch_add(1, Ordering::Relaxed);
        let (ctx, done, errors) = (ctx.clone(), done.clone(), errors.clone());
        tokio::spawn(async move {
            match ctx.sample(seq_id).await {
                Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("bare_client: {e}");
                    }
                    0
                }
            };
            drop(permit);
        });
        submitted += 1;
    }
    // Every permit back means every sample has finished.
    let _all = sem
        .acquire_many(concurrency as u32)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Outcome {
        done: done.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
    })
}

async fn run(args: Args) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let mut ctx = Ctx {
        http,
        base: args.base,
        api_key: args.api_key,
        ssid: String::new(),
        max_tokens: args.max_tokens,
        requests: AtomicU64::new(0),
        next_seq_id: AtomicU64::new(0),
    };
    let session = ctx
        .post_json(
            "create_session",
            &json!({"type": "create_session", "tags": [], "user_metadata": null,
                    "sdk_version": "bare_client"}),
        )
        .await?;
    let session_id = session["session_id"]
        .as_str()
        .ok_or("create_session: no session_id")?
        .to_string();
    let sampler = ctx
        .post_json(
            "create_sampling_session",
            &json!({"type": "create_sampling_session", "session_id": session_id,
                    "sampling_session_seq_id": 0, "base_model": "Qwen/Qwen3-8B"}),
        )
        .await?;
    ctx.ssid = sampler["sampling_session_id"]
        .as_str()
        .ok_or("create_sampling_session: no sampling_session_id")?
        .to_string();

    let ctx = Arc::new(ctx);
    let warm_up = drive(
        &ctx,
        Amount::Samples(args.concurrency as u64),
        args.concurrency,
    )
    .await?;
    if warm_up.errors > 0 {
        return Err(format!(
            "warm-up: {} of {} samples failed",
            warm_up.errors, args.concurrency
        ));
    }
    ctx.requests.store(0, Ordering::Relaxed);
    let sim_pid = std::env::var("SIM_PID").ok();
    let cpu0 = (
        cpu_seconds("self"),
        sim_pid.as_deref().and_then(cpu_seconds),
    );
    let started = Instant::now();
    let Outcome { done, errors } = drive(&ctx, args.amount, args.concurrency).await?;
    let seconds = started.elapsed().as_secs_f64();
    let delta = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| b - a);
    let client_cpu_s = delta(cpu0.0, cpu_seconds("self"));
    let sim_cpu_s = delta(cpu0.1, sim_pid.as_deref().and_then(cpu_seconds));
    println!(
        "{}",
        json!({
            "client": "bare_rust",
            "samples": done,
            "concurrency": args.concurrency,
            "seconds": seconds,
            "samples_per_s": done as f64 / seconds,
            "errors": errors,
            "requests": ctx.requests.load(Ordering::Relaxed),
            "client_cpu_s": client_cpu_s,
            "sim_cpu_s": sim_cpu_s,
        })
    );
    if errors > 0 {
        return Err(format!("{errors} samples failed"));
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare_client: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
