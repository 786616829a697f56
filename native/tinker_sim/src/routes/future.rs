//! `POST retrieve_future` (the long poll) and `POST cancel_future`.

use super::session::field_error;
use super::{Call, Scripted};
use crate::endpoint::Endpoint;
use crate::future::FutureEntry;
use crate::http::Reply;
use crate::matcher::MatchCtx;
use crate::request::Fields;
use crate::rule::{CallAction, FailSpec};
use crate::state::SimState;
use prost::Message;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::time::{sleep_until, Instant};

fn try_again(request_id: &str, queue_state: &str, reason: Option<&str>) -> Reply {
    let mut body =
        json!({"type": "try_again", "request_id": request_id, "queue_state": queue_state});
    if let Some(r) = reason {
        body["queue_state_reason"] = json!(r);
    }
    Reply::json(200, &body, "try_again")
}

fn failed(sim: &SimState, future: &FutureEntry, spec: &FailSpec) -> Reply {
    let first = {
        let mut st = future.state();
        !std::mem::replace(&mut st.failure_reported, true)
    };
    if first {
        sim.stats.bump(&sim.stats.futures_failed);
    }
    Reply::json(
        200,
        &json!({"error": spec.error, "category": spec.category}),
        "failed",
    )
}

/// Waits until the future is ready and not stuck (`true`), or until `hold`
/// has passed (`false`). Sleeps; wakes early only when the global stuck
/// switch changes.
async fn wait_ready(sim: &SimState, future: &FutureEntry, hold: std::time::Duration) -> bool {
    let deadline = Instant::now() + hold;
    let mut stuck_rx = sim.stuck.subscribe();
    loop {
        let stuck = *stuck_rx.borrow_and_update() || future.fate.stuck;
        let now = Instant::now();
        if !stuck && now >= future.ready_at {
            return true;
        }
        if now >= deadline {
            return false;
        }
        let wake = if stuck {
            deadline
        } else {
            future.ready_at.min(deadline)
        };
        tokio::select! {
            _ = sleep_until(wake) => {}
            changed = stuck_rx.changed() => {
                if changed.is_err() {
                    sleep_until(wake).await;
                }
            }
        }
    }
}

/// The body's `request_id` and the future it names, if any.
fn requested_future(call: &mut Call<'_>) -> (Option<String>, Option<Arc<FutureEntry>>) {
    let id = call
        .json()
        .and_then(|b| b.get("request_id"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let future = id.as_deref().and_then(|id| call.sim.futures.get(id));
    (id, future)
}

/// Handles retrieve_future.
pub async fn retrieve_future(call: &mut Call<'_>) -> Reply {
    let sim = call.sim;
    let (id, future) = requested_future(call);
    let poll = future.as_ref().map(|f| {
        let mut st = f.state();
        st.polls += 1;
        st.polls
    });
    if let Some(f) = &future {
        call.seq_id = Some(f.seq_id);
        call.request_id = Some(f.request_id.clone());
    }
    let ctx = MatchCtx {
        seq_id: future.as_ref().map(|f| f.seq_id),
        sampling_session_id: future.as_ref().map(|f| &*f.sampling_session_id),
        poll,
    };
    let forced = match call.scripted(Endpoint::RetrieveFuture, &ctx).await {
        Scripted::Reply(r) => {
            if let (410, Some(f)) = (r.status, &future) {
                let newly = !std::mem::replace(&mut f.state().expired, true);
                if newly {
                    sim.stats.bump(&sim.stats.futures_expired);
                    sim.outstanding.settled(&f.request_id);
                }
            }
            return r;
        }
        Scripted::Poll(action) => Some(action),
        Scripted::Continue => None,
    };
    let allow_metadata_only = match Fields::of(call.json()).and_then(|f| {
        f.string("request_id")?;
        f.opt_bool("allow_metadata_only")
    }) {
        Ok(v) => v.unwrap_or(false),
        Err(e) => return field_error(&e),
    };
    let Some(future) = future else {
        return Reply::error(404, "unknown request_id", json!({"request_id": id}));
    };
    answer(call, &future, forced, allow_metadata_only).await
}

async fn answer(
    call: &Call<'_>,
    future: &Arc<FutureEntry>,
    forced: Option<CallAction>,
    allow_metadata_only: bool,
) -> Reply {
    let sim = call.sim;
    let fate = &future.fate;
    let (expired, cancelled, owed_try_again) = {
        let mut st = future.state();
        let owed = st.try_again_left > 0 && forced.is_none();
        if owed && !st.expired && !st.cancelled {
            st.try_again_left -= 1;
        }
        (st.expired, st.cancelled, owed)
    };
    if expired {
        let mut r = Reply::error(
            410,
            "the future expired",
            json!({"request_id": &*future.request_id}),
        );
        r.outcome = "expired";
        return r;
    }
    if cancelled {
        let spec = FailSpec {
            category: "user".into(),
            error: "the request was cancelled".into(),
        };
        return failed(sim, future, &spec);
    }
    match forced {
        Some(CallAction::TryAgain {
            queue_state,
            queue_state_reason,
        }) => {
            return try_again(
                &future.request_id,
                &queue_state,
                queue_state_reason.as_deref(),
            )
        }
        Some(CallAction::Fail(spec)) => return failed(sim, future, &spec),
        Some(CallAction::CompleteMetadata) => return metadata(future, call.wants_protobuf()),
        _ => {}
    }
    if owed_try_again {
        let qs = fate.queue_state.as_deref().unwrap_or("active");
        return try_again(&future.request_id, qs, fate.queue_state_reason.as_deref());
    }
    if !wait_ready(sim, future, call.settings.hold).await {
        return try_again(&future.request_id, "active", None);
    }
    if let Some(spec) = &fate.fail {
        return failed(sim, future, spec);
    }
    let proto = call.wants_protobuf();
    if fate.complete_metadata && allow_metadata_only {
        let send = !std::mem::replace(&mut future.state().metadata_sent, true);
        if send {
            return metadata(future, proto);
        }
    }
    let result = future.key.result();
    let first = !std::mem::replace(&mut future.state().delivered, true);
    if first {
        sim.stats.bump(&sim.stats.futures_completed);
    }
    if proto {
        Reply::protobuf(result.to_proto().encode_to_vec(), "result")
    } else {
        Reply::json(200, &result.to_json(), "result")
    }
}

fn metadata(future: &FutureEntry, proto: bool) -> Reply {
    let result = future.key.result();
    let size = if proto {
        result.to_proto().encoded_len()
    } else {
        serde_json::to_vec(&result.to_json()).map_or(0, |v| v.len())
    };
    let body = json!({"status": "complete_metadata", "request_id": &*future.request_id,
                      "response_payload_size": size});
    Reply::json(200, &body, "complete_metadata")
}

/// Handles cancel_future.
pub async fn cancel_future(call: &mut Call<'_>) -> Reply {
    let sim = call.sim;
    let (_, future) = requested_future(call);
    if let Some(f) = &future {
        call.seq_id = Some(f.seq_id);
        call.request_id = Some(f.request_id.clone());
    }
    let ctx = MatchCtx {
        seq_id: future.as_ref().map(|f| f.seq_id),
        sampling_session_id: future.as_ref().map(|f| &*f.sampling_session_id),
        poll: None,
    };
    if let Scripted::Reply(r) = call.scripted(Endpoint::CancelFuture, &ctx).await {
        return r;
    }
    if let Err(e) = Fields::of(call.json()).and_then(|f| f.string("request_id")) {
        return field_error(&e);
    }
    if let Some(f) = future {
        let newly = !std::mem::replace(&mut f.state().cancelled, true);
        if newly {
            sim.stats.bump(&sim.stats.futures_cancelled);
            sim.outstanding.settled(&f.request_id);
        }
    }
    Reply::ok(json!({"type": "cancel_future"}))
}
