//! A client's life around its session: where its seq_ids start (original,
//! joined clone, drawn clone) and ending the session, against a scripted
//! mock and against the simulator.

mod common;

use std::time::{Duration, Instant};

use common::{Mock, Reply};
use serde_json::json;
use tinkex_core::error::ErrorKind;
use tinkex_core::http::Endpoint;
use tinkex_core::seq_base::{BaseSource, Role, SeqBases, CLONE_STRIDE, MAX_DRAWN_CLONE};
use tinkex_core::session::{finish_session, join_sampling_session};
use tinkex_core::wire::FinishReason;

const KEY: &str = "tml-lifecycle-key";

fn ep(url: &str) -> Endpoint {
    Endpoint::with_sdk_version(url, KEY, "1.2.3").unwrap()
}

fn join_answer(counter: u64) -> Reply {
    Reply::Json(
        200,
        json!({"type":"join_sampling_session","client_counter":counter}),
    )
}

#[tokio::test]
async fn join_body_and_answer() {
    let m = Mock::start().await;
    m.default("/api/v1/join_sampling_session", join_answer(3));
    assert_eq!(
        join_sampling_session(&ep(&m.base_url), "s:sample:0")
            .await
            .unwrap(),
        3
    );
    let req = &m.requests("/api/v1/join_sampling_session")[0];
    assert_eq!(
        req.body,
        json!({"sampling_session_id":"s:sample:0","type":"join_sampling_session"})
    );
    assert_eq!(req.header("x-api-key"), Some(KEY));
}

#[tokio::test]
async fn a_joined_counter_taken_here_is_asked_for_again() {
    let m = Mock::start().await;
    m.script(
        "/api/v1/join_sampling_session",
        [join_answer(0), join_answer(1), join_answer(1)],
    );
    m.default("/api/v1/join_sampling_session", join_answer(2));
    let (e, bases) = (ep(&m.base_url), SeqBases::new());
    bases.claim(&m.base_url, "s", 0);
    // 0 is the original's (here): joined again, 1 is free.
    let b = bases.claim_for(&e, "s", Role::Clone, true).await.unwrap();
    assert_eq!(b.first_seq_id, CLONE_STRIDE);
    assert_eq!(
        b.source,
        BaseSource::Joined {
            client_counter: 1,
            joins: 2
        }
    );
    // 1 is taken now: the next free counter is 2.
    let c = bases.claim_for(&e, "s", Role::Clone, true).await.unwrap();
    assert_eq!(c.first_seq_id, 2 * CLONE_STRIDE);
    assert_eq!(m.requests("/api/v1/join_sampling_session").len(), 4);
}

#[tokio::test]
async fn a_service_that_repeats_a_taken_counter_is_given_up_on() {
    let m = Mock::start().await;
    m.default("/api/v1/join_sampling_session", join_answer(0));
    let (e, bases) = (ep(&m.base_url), SeqBases::new());
    bases.claim(&m.base_url, "s", 0);
    let err = bases
        .claim_for(&e, "s", Role::Clone, true)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Internal);
    assert!(err.message.contains("client_counter 0"), "{}", err.message);
    // One join per base held here, plus one.
    assert_eq!(m.requests("/api/v1/join_sampling_session").len(), 2);

    // A counter whose range overflows a seq_id is a decode error.
    m.default("/api/v1/join_sampling_session", join_answer(u64::MAX));
    let err = bases
        .claim_for(&e, "s", Role::Clone, true)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Decode);
}

#[tokio::test]
async fn clones_against_the_simulator() {
    let (_, sim) = tinker_sim::serve(tinker_sim::SimConfig {
        exit_on_stdin_eof: false,
        ..tinker_sim::SimConfig::default()
    })
    .await
    .unwrap();
    let url = sim.base_url();
    let (e, bases) = (ep(&url), SeqBases::new());

    let first = |r: Role, join| {
        let (e, bases) = (&e, &bases);
        async move { bases.claim_for(e, "s:sample:0", r, join).await.unwrap() }
    };
    assert_eq!(first(Role::Original, true).await.first_seq_id, 0);
    assert_eq!(first(Role::Clone, true).await.first_seq_id, CLONE_STRIDE);
    assert_eq!(
        first(Role::Clone, true).await.first_seq_id,
        2 * CLONE_STRIDE
    );
    // A second "original" of the same sampling session is a clone.
    assert_eq!(
        first(Role::Original, true).await.first_seq_id,
        3 * CLONE_STRIDE
    );
    let drawn = first(Role::Clone, false).await;
    assert_eq!(drawn.source, BaseSource::Drawn);
    assert_eq!(drawn.first_seq_id % CLONE_STRIDE, 0);
    assert!((1..=MAX_DRAWN_CLONE).contains(&(drawn.first_seq_id / CLONE_STRIDE)));

    let joins: Vec<_> = sim
        .log()
        .into_iter()
        .filter(|e| e["endpoint"] == "join_sampling_session")
        .collect();
    assert_eq!(joins.len(), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn finish_body_path_and_reason() {
    let m = Mock::start().await;
    let path = "/api/v1/sessions/sess%2F1/finish";
    m.default(path, Reply::Json(200, json!({"type":"finish_session"})));
    let e = ep(&m.base_url);
    let within = Duration::from_secs(2);
    finish_session(&e, "sess/1", FinishReason::Success, None, within)
        .await
        .unwrap();
    finish_session(&e, "sess/1", FinishReason::Errored, Some("boom"), within)
        .await
        .unwrap();
    let reqs = m.requests(path);
    assert_eq!(
        reqs[0].body,
        json!({"reason":{"type":"success"},"detail":null})
    );
    assert_eq!(
        reqs[1].body,
        json!({"reason":{"type":"errored"},"detail":"boom"})
    );

    // A refusal is reported, not retried.
    m.default(path, Reply::Json(404, json!({"detail":"no session"})));
    let err = finish_session(&e, "sess/1", FinishReason::Success, None, within)
        .await
        .unwrap_err();
    assert_eq!(err.status, Some(404));
    assert_eq!(m.requests(path).len(), 3);
}

#[tokio::test]
async fn finish_is_bounded_by_within() {
    let m = Mock::start().await;
    let within = Duration::from_millis(300);

    // A service that does not answer.
    m.default(
        "/api/v1/sessions/s/finish",
        Reply::Sleep(
            Duration::from_secs(30),
            Box::new(Reply::Json(200, json!({}))),
        ),
    );
    let t0 = Instant::now();
    let err = finish_session(&ep(&m.base_url), "s", FinishReason::Success, None, within)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(
        t0.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        t0.elapsed()
    );

    // A service that answers 503 for ever: retried (the first resend
    // comes after 375-500 ms), within the bound.
    m.default("/api/v1/sessions/s/finish", Reply::Json(503, json!({})));
    let t0 = Instant::now();
    let longer = Duration::from_millis(800);
    let err = finish_session(&ep(&m.base_url), "s", FinishReason::Success, None, longer)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(
        t0.elapsed() < Duration::from_millis(2_000),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(m.requests("/api/v1/sessions/s/finish").len(), 1 + 2);

    // Nothing listening: connection errors are retried, within the bound.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let t0 = Instant::now();
    let err = finish_session(&ep(&closed), "s", FinishReason::Errored, None, within)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(
        t0.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        t0.elapsed()
    );
}
