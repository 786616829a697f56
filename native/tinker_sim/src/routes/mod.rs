//! Request handling: logging, auth, scripted faults, then the endpoint.

mod admin;
mod future;
mod futures;
mod sample;
mod session;

use crate::endpoint::{Endpoint, Route};
use crate::http::{Reply, JSON};
use crate::log::{redact, Body, LogEntry};
use crate::matcher::MatchCtx;
use crate::rule::{CallAction, ReplyBody};
use crate::scenario::Settings;
use crate::state::SimState;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Header part of the unsigned JWTs issued by `auth/token`
/// (`{"alg":"none","typ":"JWT"}`).
pub const JWT_HEADER: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";

/// One API call being handled.
pub struct Call<'a> {
    /// Shared state.
    pub sim: &'a Arc<SimState>,
    /// Settings in force when the call arrived.
    pub settings: Arc<Settings>,
    /// Method, path, headers.
    pub parts: &'a hyper::http::request::Parts,
    /// The body.
    pub body: &'a Body,
    /// `{id}` of the path.
    pub param: Option<&'a str>,
    /// Rule that scripted the answer.
    pub rule: Option<usize>,
    /// seq_id concerned (for the log).
    pub seq_id: Option<i64>,
    /// request_id concerned (for the log).
    pub request_id: Option<Arc<str>>,
}

/// The outcome of scripted faults for a call.
pub enum Scripted {
    /// No rule fired (or it only delayed): handle normally.
    Continue,
    /// Answer this.
    Reply(Reply),
    /// retrieve_future: a poll-level answer (try_again, complete_metadata, fail).
    Poll(CallAction),
}

impl Call<'_> {
    /// The JSON body, if any.
    pub fn json(&self) -> Option<&Value> {
        self.body.json()
    }

    /// Whether the client asked for protobuf.
    pub fn wants_protobuf(&self) -> bool {
        self.parts
            .headers
            .get_all(hyper::header::ACCEPT)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.contains(crate::http::PROTOBUF)))
    }

    /// Runs the scenario's call rules for `endpoint`.
    pub async fn scripted(&mut self, endpoint: Endpoint, ctx: &MatchCtx<'_>) -> Scripted {
        let rules = self.settings.rules.clone();
        let Some(fired) = rules.match_call(endpoint, ctx) else {
            return Scripted::Continue;
        };
        self.rule = Some(fired.index);
        if fired.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fired.delay_ms)).await;
        }
        match fired.action {
            CallAction::Pass => Scripted::Continue,
            CallAction::Drop => Scripted::Reply(Reply::drop_connection()),
            CallAction::Malformed => Scripted::Reply(Reply::raw(
                200,
                Bytes::from_static(b"{\"request_id\": \"trunc"),
                Some(JSON),
                "malformed",
            )),
            CallAction::Respond {
                status,
                headers,
                body,
                queue_state,
                queue_state_reason,
            } => {
                let reply = match body {
                    ReplyBody::Json(v) => Reply::json(*status, v, "rule"),
                    ReplyBody::Raw(s) => {
                        Reply::raw(*status, Bytes::from(s.clone()), Some(JSON), "rule")
                    }
                    ReplyBody::Empty => Reply::raw(*status, Bytes::new(), None, "rule"),
                    ReplyBody::Padded { bytes, chunked } => {
                        Reply::padded(*status, *bytes, *chunked, "rule")
                    }
                    ReplyBody::Default if *status == 408 => {
                        let mut b = json!({"type": "try_again", "request_id": self.request_id.as_deref(),
                                           "queue_state": queue_state.as_deref().unwrap_or("active")});
                        if let Some(r) = queue_state_reason {
                            b["queue_state_reason"] = json!(r);
                        }
                        Reply::json(408, &b, "rule")
                    }
                    ReplyBody::Default if *status < 300 => Reply::json(*status, &json!({}), "rule"),
                    ReplyBody::Default => {
                        let mut r =
                            Reply::error(*status, &format!("simulated {status}"), json!({}));
                        r.outcome = "rule";
                        r
                    }
                };
                Scripted::Reply(reply.with_headers(headers))
            }
            other => Scripted::Poll(other.clone()),
        }
    }
}

fn authorized(sim: &SimState, parts: &hyper::http::request::Parts) -> bool {
    let Some(key) = parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    if key.starts_with(JWT_HEADER) {
        return true;
    }
    match &sim.api_key {
        Some(want) => key == want,
        None => key.starts_with("tml-"),
    }
}

/// Writes the log entry and counts the request, also when the client goes
/// away before the answer (`status` 0, outcome `client_gone`).
struct Pending<'a> {
    sim: &'a SimState,
    t0: u64,
    parts: &'a hyper::http::request::Parts,
    body: Arc<Body>,
    endpoint: Option<Endpoint>,
    log: bool,
    finished: bool,
}

impl Pending<'_> {
    fn finish(&mut self, status: u16, outcome: &'static str, call: Option<&Call<'_>>) {
        self.finished = true;
        self.sim.stats.record(self.endpoint, status);
        if !self.log {
            return;
        }
        let headers = self
            .parts
            .headers
            .iter()
            .map(|(k, v)| {
                let v = String::from_utf8_lossy(v.as_bytes());
                let v = if k == "x-api-key" {
                    redact(&v)
                } else {
                    v.into_owned()
                };
                (k.as_str().to_string(), v)
            })
            .collect();
        self.sim.log.push(LogEntry {
            seq: 0,
            t_us: self.t0,
            t_done_us: self.sim.now_us(),
            method: self.parts.method.to_string(),
            path: self.parts.uri.path().to_string(),
            endpoint: self.endpoint.map(Endpoint::name),
            headers,
            body: self.body.clone(),
            status,
            outcome,
            rule: call.and_then(|c| c.rule),
            seq_id: call.and_then(|c| c.seq_id),
            request_id: call.and_then(|c| c.request_id.clone()),
        });
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(0, "client_gone", None);
        }
    }
}

/// Handles one HTTP request. `abort` closes the connection when notified.
pub async fn handle(
    sim: Arc<SimState>,
    req: Request<Incoming>,
    abort: Arc<Notify>,
) -> Result<Response<crate::padded::SimBody>, Infallible> {
    let t0 = sim.now_us();
    let (parts, incoming) = req.into_parts();
    let raw = match incoming.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return Ok(
                Reply::error(400, "could not read the request body", json!({})).into_response(),
            )
        }
    };
    let route = Route::parse(&parts.method, parts.uri.path());
    if let Route::Admin(admin) = route {
        return Ok(admin::handle(&sim, admin, &parts, raw).into_response());
    }
    let settings = sim.settings();
    let body = Arc::new(Body::parse(raw));
    let endpoint = match &route {
        Route::Api(e, _) | Route::MethodNotAllowed(e) => Some(*e),
        _ => None,
    };
    let mut pending = Pending {
        sim: &sim,
        t0,
        parts: &parts,
        body: body.clone(),
        endpoint,
        log: settings.log,
        finished: false,
    };
    let mut call = Call {
        sim: &sim,
        settings,
        parts: &parts,
        body: &body,
        param: None,
        rule: None,
        seq_id: None,
        request_id: None,
    };
    let reply = match &route {
        Route::NotFound => {
            let mut r = Reply::error(404, "Not Found", json!({"path": parts.uri.path()}));
            r.outcome = "not_found";
            r
        }
        Route::MethodNotAllowed(_) => Reply::error(
            405,
            "Method Not Allowed",
            json!({"method": parts.method.as_str()}),
        ),
        Route::Api(_, _) if !authorized(&sim, &parts) => {
            let mut r = Reply::error(401, "Invalid API key: send X-API-Key: tml-...", json!({}));
            r.outcome = "unauthorized";
            r
        }
        Route::Api(endpoint, param) => {
            call.param = param.as_deref();
            dispatch(*endpoint, &mut call).await
        }
        Route::Admin(_) => unreachable!("handled above"),
    };
    pending.finish(reply.status, reply.outcome, Some(&call));
    if reply.drop {
        abort.notify_one();
        std::future::pending::<()>().await;
    }
    Ok(reply.into_response())
}

async fn dispatch(endpoint: Endpoint, call: &mut Call<'_>) -> Reply {
    match endpoint {
        Endpoint::Asample => sample::asample(call).await,
        Endpoint::RetrieveFuture => future::retrieve_future(call).await,
        Endpoint::RetrieveFutures => futures::retrieve_futures(call).await,
        Endpoint::CancelFuture => future::cancel_future(call).await,
        other => session::handle(other, call).await,
    }
}
