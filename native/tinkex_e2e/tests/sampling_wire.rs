//! One attempt (submit + poll) against a scripted mock: the wire facts of
//! `shared/PROTOCOL.md`, row by row.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{fast, gaps, sample_output, Mock, Reply};
use serde_json::json;
use tinkex_core::error::{Category, ErrorKind};
use tinkex_core::http::Endpoint;
use tinkex_core::rate_limiter::RateLimiter;
use tinkex_core::sampling::{
    run_attempt, DispatchLimits, LogLevel, QueueState, SampleContext, SampleSpec, StopReason,
};
use tinkex_core::wire::{ModelInput, SamplingParams};

const KEY: &str = "tml-test-key-do-not-print";

fn ctx(m: &Mock) -> SampleContext {
    let ep = Endpoint::with_sdk_version(&m.base_url, KEY, "9.9.9").unwrap();
    SampleContext::new(ep, "sess:sample:0")
        .with_timings(fast())
        .with_limiter(Arc::new(RateLimiter::new()))
}

fn spec() -> SampleSpec {
    let params = SamplingParams {
        max_tokens: Some(2),
        ..SamplingParams::default()
    };
    SampleSpec::new(ModelInput::from_tokens(vec![1, 2, 3]), params, 1)
}

fn asample_ok(rid: &str, ids: &[&str]) -> Reply {
    Reply::Json(200, json!({"request_id": rid, "sample_sequence_ids": ids}))
}

#[tokio::test]
async fn happy_path_protobuf_and_headers() {
    let m = Mock::start().await;
    m.script("/api/v1/asample", [asample_ok("r9", &["a", "b"])]);
    m.script("/api/v1/retrieve_future", [Reply::Proto(sample_output(2))]);
    let mut s = spec();
    s.num_samples = 2;
    let out = run_attempt(&ctx(&m), &s, 5).await.unwrap();
    assert_eq!(out.request_id, "r9");
    assert_eq!(out.sequences.len(), 2);
    assert_eq!(out.sequences[0].tokens, [10, 11]);
    assert_eq!(out.sequences[1].logprobs, Some(vec![-0.5, -0.25]));
    assert_eq!(out.sequences[1].stop_reason, StopReason::Length);
    assert_eq!(out.sequences[0].sequence_id.as_deref(), Some("a"));
    assert_eq!(out.sequences[1].sequence_id.as_deref(), Some("b"));
    assert_eq!(
        out.prompt_logprobs,
        Some(vec![None, Some(-1.0), Some(-2.0)])
    );

    let sub = &m.asamples()[0];
    assert_eq!(
        sub.body,
        json!({"type":"sample","sampling_session_id":"sess:sample:0","seq_id":5,"num_samples":2,
               "prompt":{"chunks":[{"type":"encoded_text","tokens":[1,2,3]}]},
               "sampling_params":{"max_tokens":2,"temperature":1.0,"top_k":-1,"top_p":1.0},
               "prompt_logprobs":false,"topk_prompt_logprobs":0,"topk_sample_logprobs":0,
               "prompt_alt_tokens_k":0,"record_stability_info":false})
    );
    assert_eq!(sub.header("x-api-key"), Some(KEY));
    assert_eq!(sub.header("content-type"), Some("application/json"));
    assert_eq!(sub.header("user-agent"), Some("TinkexNative/Elixir 9.9.9"));
    assert_eq!(sub.header("x-tinker-sampling-backpressure"), Some("1"));
    assert_eq!(sub.header("x-stainless-retry-count"), Some("0"));
    assert_eq!(sub.header("x-sdk-version"), Some("9.9.9"));
    assert_eq!(sub.header("x-sdk-method"), Some("SamplingClient.sample"));
    assert!(sub
        .header("x-idempotency-key")
        .is_some_and(|k| k.len() > 20));

    let poll = &m.polls()[0];
    assert_eq!(
        poll.body,
        json!({"request_id":"r9","allow_metadata_only":true})
    );
    assert_eq!(poll.header("accept"), Some("application/x-protobuf"));
    assert_eq!(poll.header("x-tinker-request-iteration"), Some("0"));
    assert_eq!(poll.header("x-tinker-request-type"), Some("Sample"));
    assert_eq!(poll.header("x-sdk-method"), Some("SamplingClient.sample"));
    assert_eq!(poll.header("x-api-key"), Some(KEY));
}

#[tokio::test]
async fn json_result_is_accepted() {
    let m = Mock::start().await;
    m.script(
        "/api/v1/retrieve_future",
        [Reply::Json(
            200,
            json!({"type":"sample","sequences":[{"tokens":[7],"logprobs":null,"stop_reason":"stop"}],
                   "prompt_logprobs":null,"topk_prompt_logprobs":null,"prompt_cache_hit_tokens":4}),
        )],
    );
    let out = run_attempt(&ctx(&m), &spec(), 0).await.unwrap();
    assert_eq!(out.sequences[0].tokens, [7]);
    assert_eq!(out.sequences[0].stop_reason, StopReason::Stop);
    assert_eq!(out.sequences[0].sequence_id.as_deref(), Some("seq-a"));
    assert_eq!(out.prompt_cache_hit_tokens, 4);
}

#[tokio::test]
async fn try_again_records_queue_state_and_logs_once() {
    let m = Mock::start().await;
    let pending = |qs: &str| {
        Reply::Json(
            200,
            json!({"type":"try_again","request_id":"r1","queue_state":qs}),
        )
    };
    m.script(
        "/api/v1/retrieve_future",
        [
            pending("paused_capacity"),
            pending("paused_rate_limit"),
            pending("active"),
        ],
    );
    let lines = Arc::new(Mutex::new(Vec::<(LogLevel, String)>::new()));
    let l = lines.clone();
    let c = ctx(&m).with_log_sink(Arc::new(move |lv: LogLevel, s: &str| {
        l.lock().unwrap().push((lv, s.to_owned()))
    }));
    run_attempt(&c, &spec(), 0).await.unwrap();
    let polls = m.polls();
    let iters: Vec<_> = polls
        .iter()
        .map(|p| p.header("x-tinker-request-iteration").unwrap().to_owned())
        .collect();
    assert_eq!(iters, ["0", "1", "2", "3"]);
    assert!(polls.iter().all(|p| p.body["allow_metadata_only"] == true));
    // Polls follow try_again at once.
    assert!(gaps(&polls).iter().all(|g| *g < Duration::from_millis(200)));
    assert_eq!(c.observer.queue_state(), QueueState::Active);
    let lines = lines.lock().unwrap();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].0, LogLevel::Warning);
    assert_eq!(
        lines[0].1,
        "Sampling is paused for sampler sess:sample:0. Reason: Tinker backend is running short on capacity, please wait"
    );
}

#[tokio::test]
async fn complete_metadata_repolls_without_metadata() {
    let m = Mock::start().await;
    m.script(
        "/api/v1/retrieve_future",
        [Reply::Json(
            200,
            json!({"status":"complete_metadata","response_payload_size":1234}),
        )],
    );
    run_attempt(&ctx(&m), &spec(), 0).await.unwrap();
    let polls = m.polls();
    assert_eq!(polls.len(), 2);
    assert_eq!(polls[0].body["allow_metadata_only"], true);
    assert_eq!(polls[1].body["allow_metadata_only"], false);
}

#[tokio::test]
async fn failed_future_is_never_repolled() {
    for (cat, want) in [
        ("user", Category::User),
        ("server", Category::Server),
        ("weird", Category::Unknown),
    ] {
        let m = Mock::start().await;
        m.script(
            "/api/v1/retrieve_future",
            [Reply::Json(
                200,
                json!({"error":"prompt too long","category":cat}),
            )],
        );
        let e = run_attempt(&ctx(&m), &spec(), 0).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::RequestFailed);
        assert_eq!(e.category, Some(want));
        assert!(!e.retryable);
        assert_eq!(e.request_id.as_deref(), Some("r1"));
        assert!(e.message.contains("prompt too long"), "{}", e.message);
        assert_eq!(m.polls().len(), 1);
        assert_eq!(m.asamples().len(), 1);
    }
}

#[tokio::test]
async fn rate_limit_resends_same_seq_id_after_fallback() {
    let m = Mock::start().await;
    let busy = Reply::Json(429, json!({"detail":"slow down"}));
    m.script("/api/v1/asample", [busy.clone(), busy]);
    let mut t = fast();
    t.dispatch_recent_window = Duration::from_secs(30);
    let c = ctx(&m).with_timings(t);
    run_attempt(&c, &spec(), 11).await.unwrap();
    let subs = m.asamples();
    assert_eq!(subs.len(), 3);
    assert!(subs.iter().all(|s| s.body["seq_id"] == 11));
    let key = subs[0].header("x-idempotency-key").unwrap();
    assert!(subs
        .iter()
        .all(|s| s.header("x-idempotency-key") == Some(key)));
    let counts: Vec<_> = subs
        .iter()
        .map(|s| s.header("x-stainless-retry-count").unwrap())
        .collect();
    assert_eq!(counts, ["0", "1", "2"]);
    // The 1 s fallback, shrunk to 60 ms for tests.
    for g in gaps(&subs) {
        assert!(
            g >= Duration::from_millis(58) && g < Duration::from_millis(400),
            "{g:?}"
        );
    }
    // A success does not clear the backoff: it expires by itself.
    assert!(c.dispatch.recently_backed_off());
}

#[tokio::test]
async fn large_prompt_gets_long_fallback() {
    let m = Mock::start().await;
    m.script("/api/v1/asample", [Reply::Json(429, json!({}))]);
    let big = SampleSpec::new(
        ModelInput::from_tokens(vec![1; 13_108]),
        SamplingParams::default(),
        1,
    );
    run_attempt(&ctx(&m), &big, 0).await.unwrap();
    let g = gaps(&m.asamples())[0];
    assert!(g >= Duration::from_millis(148), "{g:?}");
}

#[tokio::test]
async fn retry_after_is_honoured_and_shared() {
    let m = Mock::start().await;
    m.script(
        "/api/v1/asample",
        [Reply::JsonWith(
            429,
            json!({}),
            vec![("retry-after-ms", "300".into())],
        )],
    );
    let limiter = Arc::new(RateLimiter::new());
    let a = Arc::new(ctx(&m).with_limiter(limiter.clone()));
    let b = ctx(&m).with_limiter(limiter.clone());
    let t = tokio::spawn({
        let a = a.clone();
        async move { run_attempt(&a, &spec(), 0).await }
    });
    while m.asamples().is_empty() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(limiter.remaining() > Duration::from_millis(200));
    // Another client of the same key waits out the same backoff.
    run_attempt(&b, &spec(), 1).await.unwrap();
    t.await.unwrap().unwrap();
    let subs = m.asamples();
    assert_eq!(subs.len(), 3);
    let first = subs[0].at;
    for s in &subs[1..] {
        let g = s.at - first;
        assert!(
            g >= Duration::from_millis(295) && g < Duration::from_millis(700),
            "{g:?}"
        );
    }
}

#[tokio::test]
async fn retry_after_seconds_and_out_of_range() {
    let m = Mock::start().await;
    m.script(
        "/api/v1/asample",
        [
            Reply::JsonWith(429, json!({}), vec![("retry-after", "1".into())]),
            // Out of (0, 60] s: ignored, the fallback applies.
            Reply::JsonWith(429, json!({}), vec![("retry-after", "120".into())]),
        ],
    );
    run_attempt(&ctx(&m), &spec(), 0).await.unwrap();
    let g = gaps(&m.asamples());
    assert!(
        g[0] >= Duration::from_millis(990) && g[0] < Duration::from_millis(1500),
        "{g:?}"
    );
    assert!(
        g[1] >= Duration::from_millis(58) && g[1] < Duration::from_millis(500),
        "{g:?}"
    );
}

#[tokio::test]
async fn submit_transient_errors_back_off_with_same_seq_id() {
    let m = Mock::start().await;
    m.script(
        "/api/v1/asample",
        [
            Reply::Json(503, json!({"detail":"unavailable"})),
            Reply::Json(408, json!({})),
            Reply::Raw(400, "application/json", vec![]),
            Reply::Json(409, json!({})),
        ],
    );
    run_attempt(&ctx(&m), &spec(), 3).await.unwrap();
    let subs = m.asamples();
    assert_eq!(subs.len(), 5);
    assert!(subs.iter().all(|s| s.body["seq_id"] == 3));
    let g = gaps(&subs);
    // 20, 40, 80, 80 ms (base 20 ms doubling to the 80 ms cap).
    for (g, want) in g.iter().zip([20u64, 40, 80, 80]) {
        assert!(*g >= Duration::from_millis(want - 2), "{g:?} < {want}");
        assert!(*g < Duration::from_millis(want + 250), "{g:?} ≫ {want}");
    }
}

#[tokio::test]
async fn submit_gives_up_after_the_total() {
    let m = Mock::start().await;
    m.default(
        "/api/v1/asample",
        Reply::Json(502, json!({"detail":"bad gateway"})),
    );
    let mut t = fast();
    t.submit_total = Duration::from_millis(250);
    let c = ctx(&m).with_timings(t);
    let start = Instant::now();
    let e = run_attempt(&c, &spec(), 0).await.unwrap_err();
    assert!(start.elapsed() >= Duration::from_millis(250));
    assert_eq!(e.status, Some(502));
    assert!(e.retryable);
    assert!(e.message.contains("bad gateway"));
    assert!(m.polls().is_empty());
}

#[tokio::test]
async fn submit_fatal_4xx_and_malformed_answer() {
    let m = Mock::start().await;
    m.script(
        "/api/v1/asample",
        [Reply::Json(422, json!({"detail":[{"msg":"bad"}]}))],
    );
    let e = run_attempt(&ctx(&m), &spec(), 0).await.unwrap_err();
    assert_eq!(
        (e.kind, e.status, e.retryable),
        (ErrorKind::Http, Some(422), false)
    );
    assert_eq!(m.asamples().len(), 1);
    assert!(!e.message.contains(KEY));

    m.script(
        "/api/v1/asample",
        [Reply::Raw(200, "application/json", b"{not json".to_vec())],
    );
    let e = run_attempt(&ctx(&m), &spec(), 1).await.unwrap_err();
    assert_eq!((e.kind, e.retryable), (ErrorKind::Decode, false));
    assert_eq!(m.asamples().len(), 2);
    assert!(m.polls().is_empty());
}

#[tokio::test]
async fn billing_pause_then_resend() {
    let m = Mock::start().await;
    m.script(
        "/api/v1/asample",
        [Reply::Json(402, json!({"detail":"payment required"}))],
    );
    m.script(
        "/api/v1/retrieve_future",
        [Reply::Json(402, json!({"detail":"payment required"}))],
    );
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let l = lines.clone();
    let c = ctx(&m).with_log_sink(Arc::new(move |_: LogLevel, s: &str| {
        l.lock().unwrap().push(s.into())
    }));
    run_attempt(&c, &spec(), 0).await.unwrap();
    assert_eq!(m.asamples().len(), 2);
    assert!(gaps(&m.asamples())[0] >= Duration::from_millis(29));
    assert_eq!(m.polls().len(), 2);
    let lines = lines.lock().unwrap();
    assert_eq!(
        lines[0],
        "The job is paused due to billing status. Error: payment required"
    );
}

#[tokio::test]
async fn expired_future_is_a_retryable_error() {
    let m = Mock::start().await;
    m.script(
        "/api/v1/retrieve_future",
        [Reply::Json(410, json!({"detail":"gone"}))],
    );
    let e = run_attempt(&ctx(&m), &spec(), 0).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Expired);
    assert_eq!(e.status, Some(410));
    assert!(e.retryable);
    assert_eq!(e.request_id.as_deref(), Some("r1"));
    assert_eq!(m.polls().len(), 1);
}

#[tokio::test]
async fn bad_request_with_body_three_times_then_error() {
    let m = Mock::start().await;
    let bad = Reply::Json(400, json!({"detail":"bad"}));
    m.script("/api/v1/retrieve_future", vec![bad.clone(); 3]);
    run_attempt(&ctx(&m), &spec(), 0).await.unwrap();
    assert_eq!(m.polls().len(), 4);

    let m = Mock::start().await;
    m.script("/api/v1/retrieve_future", vec![bad; 4]);
    let e = run_attempt(&ctx(&m), &spec(), 0).await.unwrap_err();
    assert_eq!(m.polls().len(), 4);
    assert_eq!((e.status, e.retryable), (Some(400), false));
    assert!(e.message.contains("exceeded 3 retries"), "{}", e.message);
}

#[tokio::test]
async fn bare_400_and_429_while_polling_back_off() {
    let m = Mock::start().await;
    m.script(
        "/api/v1/retrieve_future",
        [
            Reply::Raw(400, "text/plain", vec![]),
            Reply::Json(429, json!({})),
            Reply::Raw(400, "text/plain", vec![]),
            Reply::Raw(400, "text/plain", vec![]),
            Reply::Raw(400, "text/plain", vec![]),
        ],
    );
    run_attempt(&ctx(&m), &spec(), 0).await.unwrap();
    let g = gaps(&m.polls());
    // Bare 400s are connection errors, not bad requests: no 3-retry limit,
    // and the same 20, 40, 80, 80 ms backoff as 429.
    assert_eq!(g.len(), 5);
    for (g, want) in g.iter().zip([20u64, 40, 80, 80, 80]) {
        assert!(*g >= Duration::from_millis(want - 2), "{g:?} < {want}");
        assert!(*g < Duration::from_millis(want + 250), "{g:?} ≫ {want}");
    }
}

#[tokio::test]
async fn poll_timeout_backs_off_then_succeeds() {
    let m = Mock::start().await;
    m.script(
        "/api/v1/retrieve_future",
        [Reply::Sleep(
            Duration::from_millis(500),
            Box::new(Reply::Proto(sample_output(1))),
        )],
    );
    let mut t = fast();
    t.poll_timeout = Duration::from_millis(100);
    let out = run_attempt(&ctx(&m).with_timings(t), &spec(), 0)
        .await
        .unwrap();
    assert_eq!(out.sequences.len(), 1);
    let g = gaps(&m.polls());
    assert!(g[0] >= Duration::from_millis(118), "{g:?}");
}

#[tokio::test]
async fn server_errors_repoll_with_small_growing_delay() {
    let m = Mock::start().await;
    let err = Reply::Json(500, json!({}));
    m.script(
        "/api/v1/retrieve_future",
        [
            err.clone(),
            err.clone(),
            err.clone(),
            err.clone(),
            err.clone(),
            err,
        ],
    );
    run_attempt(&ctx(&m), &spec(), 0).await.unwrap();
    let g = gaps(&m.polls());
    for (g, want) in g.iter().zip([5u64, 10, 20, 40, 40, 40]) {
        assert!(*g >= Duration::from_millis(want - 1), "{g:?} < {want}");
    }
}

#[tokio::test]
async fn timeout_408_records_queue_state() {
    let m = Mock::start().await;
    m.script(
        "/api/v1/retrieve_future",
        [Reply::Json(
            408,
            json!({"type":"try_again","queue_state":"paused_rate_limit"}),
        )],
    );
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let l = lines.clone();
    let c = ctx(&m).with_log_sink(Arc::new(move |_: LogLevel, s: &str| {
        l.lock().unwrap().push(s.into())
    }));
    run_attempt(&c, &spec(), 0).await.unwrap();
    let polls = m.polls();
    assert_eq!(polls.len(), 2);
    assert!(polls[1].at - polls[0].at < Duration::from_millis(200));
    assert_eq!(
        *lines.lock().unwrap(),
        ["Sampling is paused for sampler sess:sample:0. Reason: concurrent sampler weights limit hit"]
    );
    // The result moves the queue back to active.
    assert_eq!(c.observer.queue_state(), QueueState::Active);
}

#[tokio::test]
async fn fatal_poll_statuses_are_not_retried() {
    for status in [401u16, 403, 404, 409, 422] {
        let m = Mock::start().await;
        m.script(
            "/api/v1/retrieve_future",
            [Reply::Json(status, json!({"detail":"no"}))],
        );
        let e = run_attempt(&ctx(&m), &spec(), 0).await.unwrap_err();
        assert_eq!(e.status, Some(status));
        assert!(!e.retryable, "{status}");
        assert_eq!(e.request_id.as_deref(), Some("r1"));
        assert!(!e.message.contains(KEY));
        assert_eq!(m.polls().len(), 1);
    }
}

#[tokio::test]
async fn malformed_poll_answers_are_decode_errors() {
    for reply in [
        Reply::Raw(200, "application/json", b"{oops".to_vec()),
        Reply::Raw(200, "application/x-protobuf", vec![0x0a, 0xff, 0xff]),
    ] {
        let m = Mock::start().await;
        m.script("/api/v1/retrieve_future", [reply]);
        let e = run_attempt(&ctx(&m), &spec(), 0).await.unwrap_err();
        assert_eq!((e.kind, e.retryable), (ErrorKind::Decode, false));
        assert_eq!(e.request_id.as_deref(), Some("r1"));
        assert_eq!(m.polls().len(), 1);
    }
}

#[tokio::test]
async fn dispatch_limits_are_not_held_while_polling() {
    let m = Mock::start().await;
    m.script(
        "/api/v1/asample",
        [asample_ok("ra", &["a"]), asample_ok("rb", &["b"])],
    );
    let slow = |ms| {
        Reply::Sleep(
            Duration::from_millis(ms),
            Box::new(Reply::Proto(sample_output(1))),
        )
    };
    m.script("/api/v1/retrieve_future#ra", [slow(400)]);
    m.script("/api/v1/retrieve_future#rb", [slow(0)]);
    let c = Arc::new(ctx(&m).with_dispatch(Arc::new(DispatchLimits::new(1, 1))));
    let a = tokio::spawn({
        let c = c.clone();
        async move { run_attempt(&c, &spec(), 0).await }
    });
    let b = tokio::spawn({
        let c = c.clone();
        async move { run_attempt(&c, &spec(), 1).await }
    });
    let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
    assert_eq!(a.sequences[0].sequence_id.as_deref(), Some("a"));
    assert_eq!(b.sequences[0].sequence_id.as_deref(), Some("b"));
    // Both submits happened while the first future was still being polled.
    let subs = m.asamples();
    assert!(subs[1].at - subs[0].at < Duration::from_millis(300));
    assert_eq!(c.dispatch.available_submits(), 1);
    assert_eq!(c.dispatch.available_bytes(), 1);
}

#[tokio::test]
async fn compute_logprobs_spec_on_the_wire() {
    let m = Mock::start().await;
    let spec = SampleSpec::compute_logprobs(ModelInput::from_tokens(vec![4, 5, 6]));
    let out = run_attempt(&ctx(&m), &spec, 0).await.unwrap();
    assert_eq!(
        out.prompt_logprobs,
        Some(vec![None, Some(-1.0), Some(-2.0)])
    );
    let sub = &m.asamples()[0];
    assert_eq!(sub.body["num_samples"], 1);
    assert_eq!(sub.body["prompt_logprobs"], true);
    assert_eq!(
        sub.body["sampling_params"],
        json!({"max_tokens":1,"temperature":1.0,"top_k":-1,"top_p":1.0})
    );
    assert_eq!(
        sub.header("x-sdk-method"),
        Some("SamplingClient.compute_logprobs")
    );
    assert_eq!(
        m.polls()[0].header("x-sdk-method"),
        Some("SamplingClient.compute_logprobs")
    );
}

#[tokio::test]
async fn connection_refused_is_retryable_and_keyless() {
    // Bind and drop a listener to get a port nobody serves.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ep = Endpoint::new(&format!("http://127.0.0.1:{port}"), KEY).unwrap();
    let mut t = fast();
    t.submit_total = Duration::from_millis(100);
    let c = SampleContext::new(ep, "s")
        .with_timings(t)
        .with_limiter(Arc::new(RateLimiter::new()));
    let e = run_attempt(&c, &spec(), 0).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transport);
    assert!(e.retryable);
    assert!(!e.message.contains(KEY), "{}", e.message);
    assert!(!format!("{e:?}").contains(KEY));
}
