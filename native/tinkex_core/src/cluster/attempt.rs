//! One attempt of a sample under a cluster budget permit.
//!
//! A permit is held from before the submit until the result is in, so a
//! node's permits in use bound its requests outstanding at the server.
//! When the node's lease expires unrenewed (it lost the coordinator: a
//! netsplit), its share is about to be given to other nodes; requests
//! still running here would then be counted twice at the server. So every
//! attempt running under a revoked permit is *withdrawn*: dropped locally
//! and cancelled at the server ([`withdraw`]), and only then is its permit
//! given back. The sample itself is not failed: it waits for a permit of a
//! new lease and runs again with a fresh `seq_id` (the cancelled future
//! cannot be reused).

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::Method;

use super::Budget;
use crate::error::Error;
use crate::handler::Events;
use crate::http::{names, IdempotencyKey};
use crate::sampling::{run_attempt_with, SampleContext, SampleOutput, SampleSpec};
use crate::wire::AsampleAnswer;

/// Timeout of each of the two requests of [`withdraw`]. The cluster layer
/// reissues an expired lease only after a grace that covers both.
pub const WITHDRAW_TIMEOUT: Duration = Duration::from_millis(250);

/// Runs one attempt of `spec` under a permit of `budget`, with a `seq_id`
/// from `next_seq` taken once the permit is held. If the permit is
/// revoked midway, withdraws the attempt from the server, then waits for
/// a new permit and runs it again with a new `seq_id`. `events` hears the
/// 429 backoffs the attempts set.
pub async fn run_leased<F>(
    ctx: &SampleContext,
    spec: &SampleSpec,
    budget: &Arc<Budget>,
    mut next_seq: F,
    events: &dyn Events,
    withdraw_timeout: Duration,
) -> Result<SampleOutput, Error>
where
    F: FnMut() -> u64,
{
    loop {
        let permit = budget.acquire().await;
        let seq_id = next_seq();
        tokio::select! {
            biased;
            r = run_attempt_with(ctx, spec, seq_id, events) => return r,
            _ = permit.revoked() => {
                withdraw(ctx, spec, seq_id, withdraw_timeout).await;
                drop(permit);
            }
        }
    }
}

/// Withdraws attempt `seq_id` of `spec` from the server. The attempt was
/// dropped at an unknown point (maybe its submit was on the wire), so its
/// `request_id` is learned the protocol's way: an `asample` with the same
/// `seq_id` returns the same future when one exists (creating it
/// otherwise), and that future is then cancelled with `cancel_future`.
/// Returns whether the server confirmed the cancel. Best effort: a server
/// that does not support `cancel_future` keeps running the request until
/// it finishes (`docs/cluster.md` discusses what that means for the
/// budget).
pub async fn withdraw(
    ctx: &SampleContext,
    spec: &SampleSpec,
    seq_id: u64,
    timeout: Duration,
) -> bool {
    let Ok(body) = spec.body(&ctx.sampling_session_id, seq_id) else {
        return false;
    };
    let ep = &ctx.endpoint;
    let rb = ep
        .post_url(ep.asample_url(), &IdempotencyKey::new(), 0)
        .header(names::BACKPRESSURE, HeaderValue::from_static("1"))
        .timeout(timeout)
        .body(body);
    let rb = ep.sdk_headers(rb, spec.method.header());
    let request_id = match ep.send(rb).await {
        Ok(r) if r.status.is_success() => match r.json::<AsampleAnswer>() {
            Ok(a) => a.request_id,
            Err(_) => return false,
        },
        _ => return false,
    };
    cancel_future(ctx, &request_id, timeout).await
}

/// `POST /api/v1/cancel_future` for `request_id`, sent once.
async fn cancel_future(ctx: &SampleContext, request_id: &str, timeout: Duration) -> bool {
    let ep = &ctx.endpoint;
    let Ok(url) = ep.url("/api/v1/cancel_future", &[]) else {
        return false;
    };
    let Ok(body) = serde_json::to_vec(&serde_json::json!({ "request_id": request_id })) else {
        return false;
    };
    let rb = ep
        .request_url(Method::POST, url, &IdempotencyKey::new(), 0)
        .timeout(timeout)
        .body(body);
    matches!(ep.send(rb).await, Ok(r) if r.status.is_success())
}
