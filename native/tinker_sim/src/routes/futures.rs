//! `POST retrieve_futures`: the session-level long poll (cursor + acks).

use super::session::field_error;
use super::{Call, Scripted};
use crate::endpoint::Endpoint;
use crate::http::Reply;
use crate::matcher::MatchCtx;
use crate::request::{FieldError, Fields};
use serde_json::json;
use std::time::Duration;
use tokio::time::{sleep_until, Instant};

struct Request {
    sampling_session_id: String,
    clone: i64,
    prev_cursor: u64,
    timeout: Option<f64>,
}

fn parse(call: &Call<'_>) -> Result<Request, FieldError> {
    let f = Fields::of(call.json())?;
    let target = f.object("target")?;
    let prev_cursor = f.opt_int("prev_cursor")?.unwrap_or(0);
    if prev_cursor < 0 {
        return Err(FieldError::new("prev_cursor", "must not be negative"));
    }
    let timeout = f.opt_f64("timeout")?;
    if timeout.is_some_and(|t| t.is_nan() || t < 0.0) {
        return Err(FieldError::new("timeout", "must not be negative"));
    }
    f.opt_strings("retrieved_request_ids")?;
    Ok(Request {
        sampling_session_id: target.string("sampling_session_id")?.to_string(),
        clone: target.opt_int("cloned_sampler_id")?.unwrap_or(0),
        prev_cursor: prev_cursor as u64,
        timeout,
    })
}

/// Handles retrieve_futures.
pub async fn retrieve_futures(call: &mut Call<'_>) -> Reply {
    let ssid = call
        .json()
        .and_then(|b| b.pointer("/target/sampling_session_id"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let ctx = MatchCtx {
        seq_id: None,
        sampling_session_id: ssid.as_deref(),
        poll: None,
    };
    if let Scripted::Reply(r) = call.scripted(Endpoint::RetrieveFutures, &ctx).await {
        return r;
    }
    let req = match parse(call) {
        Ok(r) => r,
        Err(e) => return field_error(&e),
    };
    let sim = call.sim;
    let queue = sim.queue(&req.sampling_session_id, req.clone);
    let hold = match req.timeout {
        Some(t) => Duration::from_secs_f64(t.min(3600.0)).min(call.settings.hold),
        None => call.settings.hold,
    };
    let deadline = Instant::now() + hold;
    let mut stuck_rx = sim.stuck.subscribe();
    loop {
        let notified = queue.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let stuck = *stuck_rx.borrow_and_update();
        let now = Instant::now();
        let poll = queue.poll(req.prev_cursor, now, stuck);
        if !poll.completions.is_empty() || now >= deadline {
            let outcome = if poll.completions.is_empty() {
                "try_again"
            } else {
                "result"
            };
            let body = json!({"completions": poll.completions, "cursor": poll.cursor});
            return Reply::json(200, &body, outcome);
        }
        let wake = poll.next_ready.map_or(deadline, |r| r.min(deadline));
        tokio::select! {
            _ = sleep_until(wake) => {}
            _ = &mut notified => {}
            changed = stuck_rx.changed() => {
                if changed.is_err() {
                    sleep_until(wake).await;
                }
            }
        }
    }
}
