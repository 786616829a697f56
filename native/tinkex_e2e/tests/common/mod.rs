//! A scripted Tinker mock for wire-level tests: every request is logged
//! (path, headers, JSON body, arrival time) and answered from a per-path
//! script, then from a per-path default.
//!
//! A script is looked up first under `"<path>#<request_id>"` (the
//! `request_id` of a JSON body), then under `"<path>"`.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::Value;
use tinkex_core::sampling::{SampleOutput, Sequence, StopReason, Timings};

/// One canned answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A JSON body with a status.
    Json(u16, Value),
    /// A JSON body with a status and extra headers.
    JsonWith(u16, Value, Vec<(&'static str, String)>),
    /// A raw body with a status and a content type.
    Raw(u16, &'static str, Vec<u8>),
    /// A protobuf `SampleResponse`.
    Proto(SampleOutput),
    /// Waits, then answers.
    Sleep(Duration, Box<Reply>),
}

/// A logged request.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
    pub at: Instant,
}

impl Logged {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct Inner {
    log: Mutex<Vec<Logged>>,
    scripts: Mutex<HashMap<String, VecDeque<Reply>>>,
    defaults: Mutex<HashMap<String, Reply>>,
}

/// A running mock on 127.0.0.1.
#[derive(Clone)]
pub struct Mock {
    pub base_url: String,
    inner: Arc<Inner>,
}

fn respond(reply: Reply) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>> {
    Box::pin(async move {
        match reply {
            Reply::Json(s, v) => json_response(s, &v, &[]),
            Reply::JsonWith(s, v, h) => json_response(s, &v, &h),
            Reply::Raw(s, ct, body) => Response::builder()
                .status(StatusCode::from_u16(s).unwrap())
                .header("content-type", ct)
                .body(Body::from(body))
                .unwrap(),
            Reply::Proto(out) => Response::builder()
                .status(200)
                .header("content-type", "application/x-protobuf")
                .body(Body::from(tinkex_core::proto::encode_sample_response(&out)))
                .unwrap(),
            Reply::Sleep(d, r) => {
                tokio::time::sleep(d).await;
                respond(*r).await
            }
        }
    })
}

fn json_response(status: u16, v: &Value, headers: &[(&'static str, String)]) -> Response {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json");
    for (k, val) in headers {
        b = b.header(*k, val);
    }
    b.body(Body::from(serde_json::to_vec(v).unwrap())).unwrap()
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let rid = json
        .get("request_id")
        .and_then(Value::as_str)
        .map(|r| format!("{path}#{r}"));
    inner.log.lock().unwrap().push(Logged {
        method,
        path: path.clone(),
        headers,
        body: json,
        at: Instant::now(),
    });
    let reply = {
        let mut scripts = inner.scripts.lock().unwrap();
        let mut next = None;
        for key in rid.iter().chain(std::iter::once(&path)) {
            if let Some(r) = scripts.get_mut(key).and_then(VecDeque::pop_front) {
                next = Some(r);
                break;
            }
        }
        next.or_else(|| inner.defaults.lock().unwrap().get(&path).cloned())
    };
    match reply {
        Some(r) => respond(r).await,
        None => json_response(404, &serde_json::json!({"detail": "no route"}), &[]),
    }
}

impl Mock {
    /// Starts a mock with the happy-path defaults: `asample` hands out
    /// `r1` with sequence id `seq-a`; `retrieve_future` answers
    /// [`sample_output`] as protobuf.
    pub async fn start() -> Mock {
        let inner = Arc::new(Inner::default());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let m = Mock {
            base_url: format!("http://{addr}"),
            inner,
        };
        m.default(
            "/api/v1/asample",
            Reply::Json(
                200,
                serde_json::json!({"request_id":"r1","sample_sequence_ids":["seq-a"]}),
            ),
        );
        m.default("/api/v1/retrieve_future", Reply::Proto(sample_output(1)));
        m
    }

    /// Sets the answer used when a path's script is empty.
    pub fn default(&self, path: &str, reply: Reply) {
        self.inner
            .defaults
            .lock()
            .unwrap()
            .insert(path.to_owned(), reply);
    }

    /// Queues answers for `key` (a path, or `"<path>#<request_id>"`).
    pub fn script(&self, key: &str, replies: impl IntoIterator<Item = Reply>) {
        self.inner
            .scripts
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default()
            .extend(replies);
    }

    /// Every request to `path` so far.
    pub fn requests(&self, path: &str) -> Vec<Logged> {
        self.inner
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.path == path)
            .cloned()
            .collect()
    }

    /// Every request so far.
    pub fn all(&self) -> Vec<Logged> {
        self.inner.log.lock().unwrap().clone()
    }

    pub fn asamples(&self) -> Vec<Logged> {
        self.requests("/api/v1/asample")
    }

    pub fn polls(&self) -> Vec<Logged> {
        self.requests("/api/v1/retrieve_future")
    }
}

/// A result of `n` sequences (tokens `[10+i, 11+i]`, logprobs, length),
/// with prompt logprobs `[None, -1.0, -2.0]`.
pub fn sample_output(n: usize) -> SampleOutput {
    SampleOutput {
        sequences: (0..n as i32)
            .map(|i| Sequence {
                tokens: vec![10 + i, 11 + i],
                logprobs: Some(vec![-0.5, -0.25]),
                stop_reason: StopReason::Length,
                sequence_id: None,
            })
            .collect(),
        prompt_logprobs: Some(vec![None, Some(-1.0), Some(-2.0)]),
        topk_prompt_logprobs: None,
        prompt_cache_hit_tokens: 0,
        request_id: String::new(),
    }
}

/// Timings shrunk for tests (milliseconds instead of seconds).
pub fn fast() -> Timings {
    let ms = Duration::from_millis;
    Timings {
        submit_timeout: ms(2000),
        submit_backoff_base: ms(20),
        submit_backoff_cap: ms(80),
        submit_total: ms(2000),
        rate_limit_small: ms(60),
        rate_limit_large: ms(150),
        billing_pause: ms(30),
        billing_max: ms(2000),
        billing_reset: ms(1000),
        poll_timeout: ms(2000),
        poll_5xx_initial: ms(5),
        poll_5xx_cap: ms(40),
        poll_backoff_base: ms(20),
        poll_backoff_cap: ms(80),
        pause_log_interval: Duration::from_secs(60),
        dispatch_recent_window: ms(100),
        futures_poll_timeout: ms(2000),
        futures_ack_timeout: ms(2000),
        futures_retry: ms(20),
    }
}

/// Gaps between consecutive arrival times.
pub fn gaps(reqs: &[Logged]) -> Vec<Duration> {
    reqs.windows(2).map(|w| w[1].at - w[0].at).collect()
}
