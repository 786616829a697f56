//! Submit: `POST /api/v1/asample` until the server hands out a future.
//!
//! Every resend inside the attempt reuses the attempt's `seq_id` (and its
//! idempotency key), so the server returns the same future and never does
//! the work twice:
//!
//! | answer | action |
//! |---|---|
//! | 2xx | the future (`request_id`, `sample_sequence_ids`) |
//! | 429 | set the shared backoff (`Retry-After` within (0, 60] s, else 1 s / 5 s by prompt size), wait it out, resend — not a failure |
//! | 402 | billing pause: sleep 5 s and resend while the incident is under an hour |
//! | connection error, timeout, 408, 409, 5xx, 400 with an empty body | resend after `min(2^n, 30)` s, for up to 300 s; then return the error |
//! | other 4xx | return the error (not retryable) |
//! | malformed JSON | decode error (not retryable) |
//!
//! A success does not clear the shared backoff: the backoff simply
//! expires. Clearing it would let every waiting request of the key through
//! at once on the first success — the thundering herd the backoff exists
//! to prevent (the Python SDK never clears it either). When it expires,
//! one probe request goes first and the others follow only once it got an
//! answer other than 429, or until it has been out `probe_timeout`
//! ([`crate::rate_limiter::RateLimiter::wait_turn`]).

use std::time::Duration;

use reqwest::header::HeaderValue;
use tokio::time::Instant;

use super::SampleContext;
use super::SampleSpec;
use crate::error::{Error, ErrorKind};
use crate::handler::Events;
use crate::http::{names, IdempotencyKey, Reply};
use crate::wire::AsampleAnswer;

/// What one `asample` answer means for the loop.
enum Step {
    Done(AsampleAnswer),
    RateLimited(Option<Duration>),
    Billing(Reply),
    Transient(Error),
    Fatal(Error),
}

/// A 400 with no body comes from a proxy in front of the service, not from
/// the service; the SDK treats it as a connection error.
pub(crate) fn bare_400(reply: &Reply) -> Option<Error> {
    (reply.code() == 400 && reply.body.is_empty()).then(|| {
        Error::new(
            ErrorKind::Transport,
            "Connection error: HTTP 400 with an empty body (rejected before the service)",
        )
    })
}

fn classify(outcome: Result<Reply, Error>) -> Step {
    let reply = match outcome {
        Ok(r) => r,
        Err(e) if matches!(e.kind, ErrorKind::Transport | ErrorKind::Timeout) => {
            return Step::Transient(e)
        }
        Err(e) => return Step::Fatal(e),
    };
    match reply.code() {
        200..=299 => match reply.json::<AsampleAnswer>() {
            Ok(a) => Step::Done(a),
            Err(e) => Step::Fatal(e),
        },
        429 => Step::RateLimited(reply.retry_after()),
        402 => Step::Billing(reply),
        400 if reply.body.is_empty() => Step::Transient(bare_400(&reply).expect("bare 400")),
        408 | 409 | 500..=599 => Step::Transient(reply.to_error()),
        _ => Step::Fatal(reply.to_error()),
    }
}

/// The future an `asample` returned.
#[derive(Debug)]
pub(crate) struct Submitted {
    pub request_id: String,
    pub sequence_ids: Option<Vec<String>>,
}

/// Submits `spec` as attempt `seq_id`, holding the dispatch limits only
/// for the duration of this function; `events` hears of every backoff a
/// 429 sets.
pub(crate) async fn submit(
    ctx: &SampleContext,
    spec: &SampleSpec,
    seq_id: u64,
    events: &dyn Events,
) -> Result<Submitted, Error> {
    let t = &ctx.timings;
    let bytes = spec.estimated_bytes();
    let body = spec.body(&ctx.sampling_session_id, seq_id)?;
    let _permit = ctx
        .dispatch
        .acquire(bytes, || {
            ctx.limiter.deadline().is_some() || ctx.dispatch.recently_backed_off()
        })
        .await;
    let key = IdempotencyKey::new();
    let started = Instant::now();
    let mut sends: u32 = 0;
    let mut failures: u32 = 0;
    loop {
        // Held until the end of this turn: on a 429 the new backoff is set
        // before the probe is released.
        let mut probe = ctx.limiter.wait_turn(t.probe_timeout).await;
        let rb = ctx
            .endpoint
            .post_url(ctx.endpoint.asample_url(), &key, sends)
            .header(names::BACKPRESSURE, HeaderValue::from_static("1"))
            .timeout(t.submit_timeout)
            .body(body.clone());
        let rb = ctx.endpoint.sdk_headers(rb, spec.method.header());
        sends = sends.saturating_add(1);
        let step = classify(ctx.endpoint.send(rb).await);
        if !matches!(step, Step::RateLimited(_)) {
            if let Some(p) = probe.take() {
                // The service answered something other than 429: the storm
                // is over for every waiter of the key.
                p.passed();
            }
        }
        match step {
            Step::Done(a) => {
                return Ok(Submitted {
                    request_id: a.request_id,
                    sequence_ids: a.sample_sequence_ids,
                })
            }
            Step::RateLimited(after) => {
                let d = after.unwrap_or_else(|| t.rate_limit_fallback(bytes));
                let deadline = ctx.limiter.set_backoff(d);
                ctx.dispatch
                    .note_backoff(deadline, t.dispatch_recent_window);
                events.backoff_set(deadline.saturating_duration_since(Instant::now()));
            }
            Step::Billing(reply) => {
                if !ctx.billing.on_402(&reply.detail(), t, &ctx.observer) {
                    return Err(reply.to_error());
                }
                tokio::time::sleep(t.billing_pause).await;
            }
            Step::Transient(e) => {
                let elapsed = started.elapsed();
                if elapsed >= t.submit_total {
                    return Err(e);
                }
                let d = t.submit_backoff(failures).min(t.submit_total - elapsed);
                failures = failures.saturating_add(1);
                tokio::time::sleep(d).await;
            }
            Step::Fatal(e) => return Err(e),
        }
    }
}
