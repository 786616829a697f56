//! Poll: `POST /api/v1/retrieve_future` until the future resolves, row by
//! row as `shared/PROTOCOL.md`'s poll table:
//!
//! | answer | action |
//! |---|---|
//! | 2xx protobuf | decode the result |
//! | 2xx `try_again` | record the queue state, poll again at once |
//! | 2xx `complete_metadata` | reserve `response_payload_size` bytes of the response budget, poll again at once with `allow_metadata_only: false` |
//! | 2xx with `error` | fail with the category; never retried |
//! | 2xx other JSON | decode it as a JSON result |
//! | 408 | record a `queue_state` in the body, poll again at once |
//! | 5xx | poll again after 10 ms, doubling to 1 s (reset by a 2xx or 408) |
//! | 429, connection error, timeout, 400 with an empty body | sleep `min(2^n, 30)` s, n = consecutive such errors |
//! | 400 with a body | poll again at once, at most 3 times, then fail (not retryable) |
//! | 402 | billing pause, as on submit |
//! | 410 | fail as `Expired` (retryable: a new attempt with a new seq_id) |
//! | other 4xx | fail (not retryable) |
//! | malformed JSON or protobuf | decode error (not retryable) |
//!
//! The reserved bytes are held until the poll ends: the result is decoded,
//! or the poll failed. When the size is known before the first poll (a
//! `retrieve_futures` completion announced it), the bytes are reserved
//! first and the first poll already asks for the full result.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderValue, ACCEPT};

use super::output::SampleOutput;
use super::submit::bare_400;
use super::{QueueState, SampleContext, SdkMethod};
use crate::error::{Category, Error, ErrorKind};
use crate::http::{names, IdempotencyKey, Reply};
use crate::proto::decode_sample_response;
use crate::wire::{PollAnswer, RetrieveFutureRequest};

/// Re-polls allowed after a 400 with a body (the SDK's
/// `_MAX_BAD_REQUEST_RETRIES`).
pub const MAX_BAD_REQUEST_RETRIES: u32 = 3;

fn poll_body(request_id: &str, allow_metadata_only: bool) -> Result<Bytes, Error> {
    serde_json::to_vec(&RetrieveFutureRequest {
        request_id,
        allow_metadata_only,
    })
    .map(Bytes::from)
    .map_err(|e| {
        Error::new(
            ErrorKind::Internal,
            format!("encoding retrieve_future: {e}"),
        )
    })
}

/// What a 2xx answer means.
enum Answer {
    Done(SampleOutput),
    Pending,
    /// `complete_metadata`, with the announced result size.
    FullResultNext(u64),
}

fn on_success(ctx: &SampleContext, reply: Reply, request_id: &str) -> Result<Answer, Error> {
    if reply.is_protobuf() {
        return decode_sample_response(reply.body, request_id).map(Answer::Done);
    }
    let a: PollAnswer = reply.json().map_err(|e| e.with_request_id(request_id))?;
    if a.kind.as_deref() == Some("try_again") {
        let state = a
            .queue_state
            .as_deref()
            .map_or(QueueState::Unknown, QueueState::parse);
        // The SDK reports nothing when the server said nothing.
        if state != QueueState::Unknown || a.queue_state_reason.is_some() {
            ctx.observer.record(state, a.queue_state_reason.as_deref());
        }
        return Ok(Answer::Pending);
    }
    if a.status.as_deref() == Some("complete_metadata") {
        return Ok(Answer::FullResultNext(
            a.response_payload_size.unwrap_or_default(),
        ));
    }
    if let Some(err) = &a.error {
        let category = a
            .category
            .as_deref()
            .map_or(Category::Unknown, Category::parse);
        // The request is over: the queue no longer holds it.
        ctx.observer.record(QueueState::Active, None);
        let msg = match err {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        return Err(Error::request_failed(
            category,
            format!("Request failed: {msg} for request {request_id}"),
        )
        .with_request_id(request_id));
    }
    SampleOutput::from_json(a, request_id).map(Answer::Done)
}

/// Polls the future `request_id` until it resolves. `announced`: the
/// result's size when already known (then the bytes are reserved and the
/// first poll asks for the full result).
pub(crate) async fn poll(
    ctx: &SampleContext,
    method: SdkMethod,
    request_id: &str,
    announced: Option<u64>,
) -> Result<SampleOutput, Error> {
    let t = &ctx.timings;
    // Held until this function returns, whatever the outcome.
    let mut _reserved = None;
    if let Some(n) = announced {
        _reserved = Some(ctx.response_budget.acquire(n).await);
    }
    let mut allow_metadata_only = announced.is_none();
    let mut body = poll_body(request_id, allow_metadata_only)?;
    let mut iteration: u64 = 0;
    let mut backoffs: u32 = 0;
    let mut bad_requests: u32 = 0;
    let mut delay_5xx: Option<Duration> = None;
    loop {
        let rb = ctx
            .endpoint
            .post_url(
                ctx.endpoint.retrieve_future_url(),
                &IdempotencyKey::new(),
                0,
            )
            .timeout(t.poll_timeout)
            .header(ACCEPT, HeaderValue::from_static("application/x-protobuf"))
            .header(names::ITERATION, HeaderValue::from(iteration))
            .header(names::REQUEST_TYPE, HeaderValue::from_static("Sample"))
            .body(body.clone());
        let rb = ctx.endpoint.sdk_headers(rb, method.header());
        iteration += 1;
        let reply = match ctx.endpoint.send(rb).await {
            Ok(r) => r,
            Err(e) if !matches!(e.kind, ErrorKind::Transport | ErrorKind::Timeout) => {
                return Err(e.with_request_id(request_id));
            }
            Err(_) => {
                tokio::time::sleep(t.poll_backoff(backoffs)).await;
                backoffs = backoffs.saturating_add(1);
                continue;
            }
        };
        let code = reply.code();
        if code == 429 || bare_400(&reply).is_some() {
            tokio::time::sleep(t.poll_backoff(backoffs)).await;
            backoffs = backoffs.saturating_add(1);
            continue;
        }
        // Any other answer proves the connection works.
        backoffs = 0;
        match code {
            200..=299 => {
                delay_5xx = None;
                match on_success(ctx, reply, request_id)? {
                    Answer::Done(out) => {
                        ctx.observer.record(QueueState::Active, None);
                        return Ok(out);
                    }
                    Answer::Pending => {}
                    Answer::FullResultNext(size) if allow_metadata_only => {
                        allow_metadata_only = false;
                        _reserved = Some(ctx.response_budget.acquire(size).await);
                        body = poll_body(request_id, false)?;
                    }
                    Answer::FullResultNext(_) => {
                        return Err(Error::new(
                            ErrorKind::Decode,
                            format!("complete_metadata twice for request {request_id}"),
                        )
                        .with_request_id(request_id));
                    }
                }
            }
            408 => {
                delay_5xx = None;
                if let Ok(a) = serde_json::from_slice::<PollAnswer>(&reply.body) {
                    bad_requests = 0;
                    if let Some(qs) = a.queue_state.as_deref().filter(|s| !s.is_empty()) {
                        ctx.observer
                            .record(QueueState::parse(qs), a.queue_state_reason.as_deref());
                    }
                }
            }
            500..=599 => {
                let d = t.next_5xx_delay(delay_5xx);
                delay_5xx = Some(d);
                tokio::time::sleep(d).await;
            }
            400 if bad_requests < MAX_BAD_REQUEST_RETRIES => bad_requests += 1,
            400 => {
                let mut e = reply.to_error().with_request_id(request_id);
                e.message = format!(
                    "Error retrieving result: {} (status 400) for request {request_id} — exceeded {MAX_BAD_REQUEST_RETRIES} retries",
                    reply.detail()
                );
                return Err(e);
            }
            402 if ctx.billing.on_402(&reply.detail(), t, &ctx.observer) => {
                tokio::time::sleep(t.billing_pause).await;
            }
            410 => {
                let mut e = Error::new(
                    ErrorKind::Expired,
                    format!("Promise expired/broken for request {request_id}"),
                )
                .with_request_id(request_id);
                e.status = Some(410);
                return Err(e);
            }
            _ => {
                let mut e = reply.to_error().with_request_id(request_id);
                e.message = format!(
                    "Error retrieving result: {} with status {code} for request {request_id}",
                    reply.detail()
                );
                // The SDK fails these polls for good, whatever the status
                // (a 409 here is not the retryable 409 of a submit).
                e.retryable = false;
                return Err(e);
            }
        }
    }
}
