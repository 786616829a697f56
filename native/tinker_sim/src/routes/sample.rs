//! `POST asample`: accept a sample request, idempotent on
//! (sampling_session_id, seq_id).

use super::session::field_error;
use super::{Call, Scripted};
use crate::endpoint::Endpoint;
use crate::future::{request_id, sequence_ids, FutureEntry};
use crate::http::Reply;
use crate::matcher::MatchCtx;
use crate::results::{fnv1a64, mix};
use crate::spec::SampleSpec;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::time::Instant;

/// Handles asample.
pub async fn asample(call: &mut Call<'_>) -> Reply {
    let body = call.json();
    let seq_id = body.and_then(|b| b.get("seq_id")).and_then(Value::as_i64);
    let ssid = body
        .and_then(|b| b.get("sampling_session_id"))
        .and_then(Value::as_str)
        .map(str::to_string);
    call.seq_id = seq_id;
    let ctx = MatchCtx {
        seq_id,
        sampling_session_id: ssid.as_deref(),
        poll: None,
    };
    match call.scripted(Endpoint::Asample, &ctx).await {
        Scripted::Reply(r) => return r,
        Scripted::Continue | Scripted::Poll(_) => {}
    }
    let spec = match SampleSpec::from_json(call.json()) {
        Ok(s) => s,
        Err(e) => return field_error(&e),
    };
    let (future, duplicate) = submit(call, &spec);
    call.request_id = Some(future.request_id.clone());
    let sim = call.sim;
    if duplicate {
        sim.stats.bump(&sim.stats.duplicate_submissions);
    }
    let body = json!({
        "request_id": &*future.request_id,
        "sample_sequence_ids": sequence_ids(&future.request_id, future.key.num_samples),
    });
    Reply::json(200, &body, if duplicate { "duplicate" } else { "created" })
}

/// Finds the future of (sampling_session_id, seq_id), or creates it with the
/// fate the scenario's future rules give. `true` when it already existed.
fn submit(call: &Call<'_>, spec: &SampleSpec) -> (Arc<FutureEntry>, bool) {
    let sim = call.sim;
    let settings = &call.settings;
    let id = request_id(&spec.sampling_session_id, spec.seq_id);
    let (future, existed) = sim.futures.get_or_insert_with(&id, || {
        let ctx = MatchCtx {
            seq_id: Some(spec.seq_id),
            sampling_session_id: Some(&spec.sampling_session_id),
            poll: None,
        };
        let (fate, fate_rule) = settings.rules.match_future(&ctx);
        let latency = fate.latency.unwrap_or(settings.latency);
        let ready_at = Instant::now() + latency.pick(mix(settings.seed, fnv1a64(id.as_bytes())));
        FutureEntry::new(
            Arc::from(id.as_str()),
            Arc::from(spec.sampling_session_id.as_str()),
            spec.seq_id,
            spec.key(),
            fate,
            fate_rule,
            ready_at,
        )
    });
    if !existed {
        sim.stats.bump(&sim.stats.futures_created);
        sim.outstanding.created(
            &future.request_id,
            (!future.fate.stuck).then_some(future.ready_at),
        );
        let create = settings
            .client_config
            .get("sample_use_retrieve_futures")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if let Some(queue) = sim.queue_if(
            &future.sampling_session_id,
            future.cloned_sampler_id(),
            create,
        ) {
            queue.push(future.clone());
        }
    }
    (future, existed)
}
