//! The control endpoints under `/_sim/`: stats, log, scenario, reset,
//! expected. They need no API key and are not logged.

use crate::endpoint::AdminRoute;
use crate::future::{request_id, sequence_ids};
use crate::http::Reply;
use crate::log::Body;
use crate::spec::SampleSpec;
use crate::state::SimState;
use bytes::Bytes;
use hyper::Method;
use serde_json::{json, Value};

/// Most entries one `/_sim/log` answer holds unless `limit` says otherwise.
pub const DEFAULT_LOG_PAGE: usize = 100_000;

fn query(parts: &hyper::http::request::Parts, key: &str) -> Option<String> {
    parts.uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| v.to_string())
    })
}

fn bad(message: &str) -> Reply {
    Reply::error(400, message, json!({}))
}

/// Handles a control request.
pub fn handle(
    sim: &SimState,
    route: AdminRoute,
    parts: &hyper::http::request::Parts,
    raw: Bytes,
) -> Reply {
    let method = &parts.method;
    match (route, method) {
        (AdminRoute::Stats, &Method::GET) => {
            let settings = sim.settings();
            let mut v = sim.stats.to_json();
            let (entries, dropped) = sim.log.sizes();
            v["uptime_us"] = json!(sim.now_us());
            v["futures_stored"] = json!(sim.futures.len());
            sim.outstanding.add_to(&mut v);
            v["stuck"] = json!(sim.is_stuck());
            v["rules"] = settings.rules.stats();
            v["log"] = json!({"entries": entries, "dropped": dropped, "enabled": settings.log});
            Reply::ok(v)
        }
        (AdminRoute::Log, &Method::GET) => {
            let since = match query(parts, "since").map(|s| s.parse::<u64>()) {
                None => 0,
                Some(Ok(n)) => n,
                Some(Err(_)) => return bad("since: expected a non-negative integer"),
            };
            let limit = match query(parts, "limit").map(|s| s.parse::<usize>()) {
                None => DEFAULT_LOG_PAGE,
                Some(Ok(n)) => n,
                Some(Err(_)) => return bad("limit: expected a non-negative integer"),
            };
            let (entries, next, dropped) = sim.log.since(since, limit);
            let entries: Vec<Value> = entries
                .iter()
                .map(|e| serde_json::to_value(&**e).unwrap_or(Value::Null))
                .collect();
            Reply::ok(json!({"entries": entries, "next": next, "dropped": dropped}))
        }
        (AdminRoute::Scenario, &Method::GET) => Reply::ok(sim.settings().document.clone()),
        (AdminRoute::Scenario, &Method::POST) | (AdminRoute::Scenario, &Method::PUT) => {
            let patch = match Body::parse(raw) {
                Body::Json(v) => v,
                Body::Empty => json!({}),
                Body::Invalid(e, _) => return bad(&format!("scenario is not JSON: {e}")),
            };
            match sim.apply_scenario(&patch) {
                Ok(s) => Reply::ok(s.document.clone()),
                Err(e) => bad(&format!("invalid scenario: {e}")),
            }
        }
        (AdminRoute::Reset, &Method::POST) => {
            sim.reset();
            Reply::ok(json!({"reset": true}))
        }
        (AdminRoute::Expected, &Method::POST) => {
            let body = Body::parse(raw);
            match SampleSpec::from_json(body.json()) {
                Ok(spec) => {
                    let id = request_id(&spec.sampling_session_id, spec.seq_id);
                    let mut v = spec.expected().to_json();
                    v["sample_sequence_ids"] = json!(sequence_ids(&id, spec.num_samples));
                    v["request_id"] = json!(id);
                    Reply::ok(v)
                }
                Err(e) => super::session::field_error(&e),
            }
        }
        _ => Reply::error(
            405,
            "Method Not Allowed",
            json!({"method": method.as_str()}),
        ),
    }
}
