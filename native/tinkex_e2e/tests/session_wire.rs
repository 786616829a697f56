//! Session set-up calls against a scripted mock.

mod common;

use std::time::Duration;

use common::{gaps, Mock, Reply};
use reqwest::Method;
use serde_json::json;
use tinkex_core::error::ErrorKind;
use tinkex_core::http::Endpoint;
use tinkex_core::seq_base::SeqBases;
use tinkex_core::session::{
    client_config, create_sampling_session, create_session, get_sampler, heartbeat, open,
    request_with_retries, ModelRef, OpenTarget, SessionRetry,
};
use tinkex_core::wire::ServerFlags;

const KEY: &str = "tml-session-key";

fn ep(m: &Mock) -> Endpoint {
    Endpoint::with_sdk_version(&m.base_url, KEY, "1.2.3").unwrap()
}

#[tokio::test]
async fn client_config_flags_and_404_defaults() {
    let m = Mock::start().await;
    assert_eq!(
        client_config(&ep(&m)).await.unwrap(),
        ServerFlags::default()
    );
    let req = &m.requests("/api/v1/client/config")[0];
    assert_eq!(req.body, json!({"sdk_version":"1.2.3"}));
    assert_eq!(req.header("x-api-key"), Some(KEY));

    m.default(
        "/api/v1/client/config",
        Reply::Json(
            200,
            json!({"sample_max_concurrent_requests":7,"sample_no_retries":true,"other":1}),
        ),
    );
    let f = client_config(&ep(&m)).await.unwrap();
    assert_eq!(f.sample_max_concurrent_requests, 7);
    assert!(f.sample_no_retries);
    assert!(f.sample_enable_stuck_detection);
    assert_eq!(f.sample_dispatch_bytes_semaphore_size, 10 * 1024 * 1024);

    m.default(
        "/api/v1/client/config",
        Reply::Json(401, json!({"detail":"bad key"})),
    );
    let e = client_config(&ep(&m)).await.unwrap_err();
    assert_eq!((e.status, e.retryable), (Some(401), false));
    assert!(!e.message.contains(KEY));
    // 401 is not retried.
    assert_eq!(m.requests("/api/v1/client/config").len(), 3);
}

#[tokio::test]
async fn sessions_and_sampling_sessions() {
    let m = Mock::start().await;
    m.default(
        "/api/v1/create_session",
        Reply::Json(200, json!({"type":"create_session","session_id":"s-1"})),
    );
    m.default(
        "/api/v1/create_sampling_session",
        Reply::Json(
            200,
            json!({"type":"create_sampling_session","sampling_session_id":"s-1:sample:0"}),
        ),
    );
    let e = ep(&m);
    let s = create_session(&e, &[], None).await.unwrap();
    assert_eq!(s.session_id, "s-1");
    assert_eq!(
        m.requests("/api/v1/create_session")[0].body,
        json!({"type":"create_session","tags":[],"user_metadata":null,"sdk_version":"1.2.3"})
    );
    let id = create_sampling_session(&e, "s-1", ModelRef::BaseModel("Qwen/Qwen3-8B"), 0)
        .await
        .unwrap();
    assert_eq!(id, "s-1:sample:0");
    create_sampling_session(&e, "s-1", ModelRef::ModelPath("tinker://w/1"), 1)
        .await
        .unwrap();
    let reqs = m.requests("/api/v1/create_sampling_session");
    assert_eq!(
        reqs[0].body,
        json!({"type":"create_sampling_session","session_id":"s-1","sampling_session_seq_id":0,"base_model":"Qwen/Qwen3-8B"})
    );
    assert_eq!(
        reqs[1].body,
        json!({"type":"create_sampling_session","session_id":"s-1","sampling_session_seq_id":1,"model_path":"tinker://w/1"})
    );
}

#[tokio::test]
async fn open_in_a_given_session_creates_only_the_sampling_session() {
    let m = Mock::start().await;
    m.default(
        "/api/v1/client/config",
        Reply::Json(200, json!({"sample_max_concurrent_requests":9})),
    );
    m.default(
        "/api/v1/create_session",
        Reply::Json(200, json!({"session_id":"new-1"})),
    );
    m.default(
        "/api/v1/create_sampling_session",
        Reply::Json(200, json!({"sampling_session_id":"ss-x"})),
    );
    let e = ep(&m);

    let bases = SeqBases::new();

    // A given session: no create_session, the given seq_id.
    let o = open(
        &e,
        OpenTarget::Create(ModelRef::BaseModel("Qwen/Qwen3-8B")),
        Some("theirs"),
        3,
        &bases,
    )
    .await
    .unwrap();
    assert_eq!(o.session_id.as_deref(), Some("theirs"));
    assert!(!o.created_session);
    assert_eq!(o.sampling_session_id, "ss-x");
    assert_eq!(o.first_seq_id, 0);
    assert_eq!(o.flags.sample_max_concurrent_requests, 9);
    assert!(m.requests("/api/v1/create_session").is_empty());
    assert_eq!(
        m.requests("/api/v1/create_sampling_session")[0].body,
        json!({"type":"create_sampling_session","session_id":"theirs","sampling_session_seq_id":3,"base_model":"Qwen/Qwen3-8B"})
    );

    // No session given: one is created, and is this client's.
    let o = open(
        &e,
        OpenTarget::Create(ModelRef::ModelPath("tinker://w/2")),
        None,
        0,
        &bases,
    )
    .await
    .unwrap();
    assert_eq!(
        (o.session_id.as_deref(), o.created_session),
        (Some("new-1"), true)
    );
    assert_eq!(m.requests("/api/v1/create_session").len(), 1);
    assert_eq!(
        m.requests("/api/v1/create_sampling_session")[1].body["session_id"],
        json!("new-1")
    );

    // An existing sampling session: nothing created, only the flags read.
    let o = open(
        &e,
        OpenTarget::Existing("ss-given"),
        Some("theirs"),
        0,
        &bases,
    )
    .await
    .unwrap();
    assert_eq!(o.sampling_session_id, "ss-given");
    // A clone of it: a drawn seq_id range, not the original's.
    assert!(o.first_seq_id >= tinkex_core::seq_base::CLONE_STRIDE);
    assert_eq!(
        (o.session_id.as_deref(), o.created_session),
        (Some("theirs"), false)
    );
    assert_eq!(m.requests("/api/v1/create_session").len(), 1);
    assert_eq!(m.requests("/api/v1/create_sampling_session").len(), 2);
    assert_eq!(m.requests("/api/v1/client/config").len(), 3);
}

#[tokio::test]
async fn heartbeat_and_get_sampler() {
    let m = Mock::start().await;
    m.default(
        "/api/v1/session_heartbeat",
        Reply::Json(200, json!({"type":"session_heartbeat"})),
    );
    m.default(
        "/api/v1/samplers/s-1:sample:0",
        Reply::Json(
            200,
            json!({"sampler_id":"s-1:sample:0","base_model":"Qwen/Qwen3-8B","model_path":null}),
        ),
    );
    let e = ep(&m);
    heartbeat(&e, "s-1").await.unwrap();
    assert_eq!(
        m.requests("/api/v1/session_heartbeat")[0].body,
        json!({"type":"session_heartbeat","session_id":"s-1"})
    );
    let info = get_sampler(&e, "s-1:sample:0").await.unwrap();
    assert_eq!(info.base_model.as_deref(), Some("Qwen/Qwen3-8B"));
    assert_eq!(
        m.requests("/api/v1/samplers/s-1:sample:0")[0].method,
        Method::GET
    );

    // A failed heartbeat is reported, not retried.
    m.script("/api/v1/session_heartbeat", [Reply::Json(503, json!({}))]);
    let err = heartbeat(&e, "s-1").await.unwrap_err();
    assert_eq!(err.status, Some(503));
    assert_eq!(m.requests("/api/v1/session_heartbeat").len(), 2);
}

#[tokio::test]
async fn session_calls_retry_with_same_idempotency_key() {
    let m = Mock::start().await;
    m.script(
        "/api/v1/create_session",
        [
            Reply::Json(503, json!({})),
            Reply::JsonWith(429, json!({}), vec![("retry-after-ms", "150".into())]),
        ],
    );
    m.default(
        "/api/v1/create_session",
        Reply::Json(200, json!({"session_id":"s-2"})),
    );
    let s = create_session(&ep(&m), &["t".into()], Some(&json!({"k":"v"})))
        .await
        .unwrap();
    assert_eq!(s.session_id, "s-2");
    let reqs = m.requests("/api/v1/create_session");
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].body["tags"], json!(["t"]));
    assert_eq!(reqs[0].body["user_metadata"], json!({"k":"v"}));
    let key = reqs[0].header("x-idempotency-key").unwrap();
    assert!(reqs
        .iter()
        .all(|r| r.header("x-idempotency-key") == Some(key)));
    let counts: Vec<_> = reqs
        .iter()
        .map(|r| r.header("x-stainless-retry-count").unwrap())
        .collect();
    assert_eq!(counts, ["0", "1", "2"]);
    let g = gaps(&reqs);
    // Stainless delay for the first retry: (0.375, 0.5] s.
    assert!(
        g[0] >= Duration::from_millis(370) && g[0] < Duration::from_millis(900),
        "{g:?}"
    );
    // The server's retry-after-ms: exactly 150 ms, no jitter.
    assert!(
        g[1] >= Duration::from_millis(148) && g[1] < Duration::from_millis(600),
        "{g:?}"
    );
}

#[tokio::test]
async fn retry_budget_and_should_retry_override() {
    let m = Mock::start().await;
    m.default("/api/v1/x", Reply::Json(500, json!({"detail":"boom"})));
    let policy = SessionRetry {
        max_retries: 2,
        base: Duration::from_millis(5),
        cap: Duration::from_millis(10),
        ..SessionRetry::default()
    };
    let e = ep(&m);
    let url = e.url("/api/v1/x", &[]).unwrap();
    let r = request_with_retries(&e, Method::POST, url.clone(), None, &policy)
        .await
        .unwrap();
    assert_eq!(r.code(), 500);
    assert_eq!(m.requests("/api/v1/x").len(), 3);

    m.default(
        "/api/v1/x",
        Reply::JsonWith(500, json!({}), vec![("x-should-retry", "false".into())]),
    );
    request_with_retries(&e, Method::POST, url.clone(), None, &policy)
        .await
        .unwrap();
    assert_eq!(m.requests("/api/v1/x").len(), 4);

    m.default(
        "/api/v1/x",
        Reply::JsonWith(400, json!({}), vec![("x-should-retry", "true".into())]),
    );
    request_with_retries(&e, Method::POST, url, None, &policy)
        .await
        .unwrap();
    assert_eq!(m.requests("/api/v1/x").len(), 7);
}

#[tokio::test]
async fn malformed_session_answer_is_a_decode_error() {
    let m = Mock::start().await;
    m.default(
        "/api/v1/create_session",
        Reply::Raw(200, "application/json", b"[]".to_vec()),
    );
    let e = create_session(&ep(&m), &[], None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Decode);
}
