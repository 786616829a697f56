//! Session set-up calls (`docs/protocol.md` "Setting up a client"): client
//! config, sessions, sampling sessions, joining a sampling session,
//! heartbeats, sampler info and the end of a session; and [`open`], a
//! sampling client's whole set-up.
//!
//! These calls carry the Python SDK's lower-layer (Stainless) retry: on a
//! connection error, a timeout, 408/409/429/5xx (or `x-should-retry: true`)
//! the same request, with the same idempotency key, is sent again after the
//! server's `retry-after-ms`/`retry-after` when within (0, 60] s, else after
//! `min(0.5·2^n, 10)·(1 − 0.25u)` s, up to 10 retries. Heartbeats are sent
//! once (the caller's 10 s loop is their retry), as the SDK does.

use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::classify::retryable_status;
use crate::error::{Error, ErrorKind};
use crate::http::{Endpoint, IdempotencyKey, Reply, DEFAULT_TIMEOUT};
use crate::seq_base::{Role, SeqBases};
use crate::wire::{
    ClientConfigRequest, CreateSamplingSessionAnswer, CreateSamplingSessionRequest,
    CreateSessionAnswer, CreateSessionRequest, FinishReason, FinishReasonBody,
    FinishSessionRequest, HeartbeatRequest, JoinSamplingSessionAnswer, JoinSamplingSessionRequest,
    SamplerInfo, ServerFlags,
};

/// The transport retry of session calls (the SDK's Stainless layer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionRetry {
    /// Resends after the first send (default 10).
    pub max_retries: u32,
    /// Delay of the first resend before jitter (default 0.5 s).
    pub base: Duration,
    /// Largest delay (default 10 s).
    pub cap: Duration,
    /// Timeout of each send (default 60 s).
    pub timeout: Duration,
}

impl Default for SessionRetry {
    fn default() -> SessionRetry {
        SessionRetry {
            max_retries: 10,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(10),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl SessionRetry {
    /// Delay before resend `n` (0 = first) when the server named none:
    /// `min(base·2^n, cap)` shortened by up to 25 % (`u` in [0, 1)).
    pub fn delay(&self, n: u32, u: f64) -> Duration {
        let nominal = self
            .base
            .checked_mul(1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX))
            .map_or(self.cap, |d| d.min(self.cap));
        nominal.mul_f64(1.0 - 0.25 * u.clamp(0.0, 1.0))
    }
}

/// Sends `body` to `url` with the session retry. Returns the last answer
/// (which may be a non-success status once retries are exhausted or for a
/// status that is not retried) or the last transport error.
pub async fn request_with_retries(
    ep: &Endpoint,
    method: Method,
    url: Url,
    body: Option<Bytes>,
    policy: &SessionRetry,
) -> Result<Reply, Error> {
    let key = IdempotencyKey::new();
    let mut n = 0;
    loop {
        let mut rb = ep
            .request_url(method.clone(), url.clone(), &key, n)
            .timeout(policy.timeout);
        if let Some(b) = &body {
            rb = rb.body(b.clone());
        }
        let outcome = ep.send(rb).await;
        let (retry, server_delay) = match &outcome {
            Ok(r) if r.status.is_success() => return outcome,
            Ok(r) => (
                r.should_retry()
                    .unwrap_or_else(|| retryable_status(r.code())),
                r.retry_after(),
            ),
            Err(e) => (e.retryable, None),
        };
        if !retry || n >= policy.max_retries {
            return outcome;
        }
        let delay = server_delay.unwrap_or_else(|| policy.delay(n, rand::rng().random()));
        tokio::time::sleep(delay).await;
        n += 1;
    }
}

fn json_body<T: Serialize>(v: &T) -> Result<Bytes, Error> {
    serde_json::to_vec(v)
        .map(Bytes::from)
        .map_err(|e| Error::new(ErrorKind::Internal, format!("encoding a request: {e}")))
}

async fn post<B: Serialize, A: DeserializeOwned>(
    ep: &Endpoint,
    path: &str,
    body: &B,
) -> Result<A, Error> {
    let reply = request_with_retries(
        ep,
        Method::POST,
        ep.url(path, &[])?,
        Some(json_body(body)?),
        &SessionRetry::default(),
    )
    .await?;
    if !reply.status.is_success() {
        return Err(reply.to_error());
    }
    reply.json()
}

/// `POST /api/v1/client/config`: the server's flags; a 404 means defaults.
pub async fn client_config(ep: &Endpoint) -> Result<ServerFlags, Error> {
    let body = ClientConfigRequest {
        sdk_version: ep.sdk_version(),
    };
    let reply = request_with_retries(
        ep,
        Method::POST,
        ep.url("/api/v1/client/config", &[])?,
        Some(json_body(&body)?),
        &SessionRetry::default(),
    )
    .await?;
    match reply.code() {
        404 => Ok(ServerFlags::default()),
        _ if reply.status.is_success() => reply.json(),
        _ => Err(reply.to_error()),
    }
}

/// `POST /api/v1/create_session`: a new session (its id and any messages
/// the server wants shown).
pub async fn create_session(
    ep: &Endpoint,
    tags: &[String],
    user_metadata: Option<&serde_json::Value>,
) -> Result<CreateSessionAnswer, Error> {
    let body = CreateSessionRequest {
        kind: "create_session",
        tags,
        user_metadata,
        sdk_version: ep.sdk_version(),
    };
    post(ep, "/api/v1/create_session", &body).await
}

/// What a sampling session samples from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelRef<'a> {
    /// A base model, e.g. `Qwen/Qwen3-8B`.
    BaseModel(&'a str),
    /// Saved weights, `tinker://...`.
    ModelPath(&'a str),
}

/// `POST /api/v1/create_sampling_session`: the new sampling session's id.
/// `seq_id` counts the sampling clients of the session, from 0.
pub async fn create_sampling_session(
    ep: &Endpoint,
    session_id: &str,
    model: ModelRef<'_>,
    seq_id: u64,
) -> Result<String, Error> {
    let (base_model, model_path) = match model {
        ModelRef::BaseModel(m) => (Some(m), None),
        ModelRef::ModelPath(p) => (None, Some(p)),
    };
    let body = CreateSamplingSessionRequest {
        kind: "create_sampling_session",
        session_id,
        sampling_session_seq_id: seq_id,
        base_model,
        model_path,
    };
    let a: CreateSamplingSessionAnswer = post(ep, "/api/v1/create_sampling_session", &body).await?;
    Ok(a.sampling_session_id)
}

/// `POST /api/v1/join_sampling_session`: this clone's `client_counter` in
/// the sampling session (the original client is 0). Sent with the session
/// retry, as the SDK does.
pub async fn join_sampling_session(ep: &Endpoint, sampling_session_id: &str) -> Result<u64, Error> {
    let body = JoinSamplingSessionRequest {
        sampling_session_id,
        kind: "join_sampling_session",
    };
    let a: JoinSamplingSessionAnswer = post(ep, "/api/v1/join_sampling_session", &body).await?;
    Ok(a.client_counter)
}

/// `POST /api/v1/sessions/{session_id}/finish`, with the session retry but
/// bounded by `within` in all (the answer's body is ignored, as the SDK
/// does). A shutdown calls it, so it must never hang on the network: once
/// `within` has passed the call fails as a `Timeout`.
pub async fn finish_session(
    ep: &Endpoint,
    session_id: &str,
    reason: FinishReason,
    detail: Option<&str>,
    within: Duration,
) -> Result<(), Error> {
    let body = FinishSessionRequest {
        reason: FinishReasonBody { kind: reason },
        detail,
    };
    let url = ep.url("/api/v1/sessions", &[session_id, "finish"])?;
    let policy = SessionRetry {
        timeout: within,
        ..SessionRetry::default()
    };
    let send = request_with_retries(ep, Method::POST, url, Some(json_body(&body)?), &policy);
    match tokio::time::timeout(within, send).await {
        Ok(Ok(reply)) if reply.status.is_success() => Ok(()),
        Ok(Ok(reply)) => Err(reply.to_error()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "finishing session {session_id} took longer than {} ms",
                within.as_millis()
            ),
        )),
    }
}

/// Where [`open`] gets its sampling session from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenTarget<'a> {
    /// Create a sampling session of this model: the client is its
    /// original ([`Role::Original`]).
    Create(ModelRef<'a>),
    /// Attach to this existing sampling session: the client is a clone
    /// ([`Role::Clone`]).
    Existing(&'a str),
}

/// What [`open`] set up.
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    /// The session: the one given, else the one created (`None` for an
    /// existing sampling session without a given session).
    pub session_id: Option<String>,
    /// Whether `session_id` was created here: only then is keeping it
    /// alive, and ending it, this client's job.
    pub created_session: bool,
    /// The sampling session to sample from.
    pub sampling_session_id: String,
    /// The client's first seq_id ([`crate::seq_base`]).
    pub first_seq_id: u64,
    /// The server's flags.
    pub flags: ServerFlags,
}

/// A sampling client's set-up: reads the server's flags; unless given an
/// existing sampling session, creates a sampling session numbered `seq_id`
/// in `session_id` — in a new session when none is given (a given session
/// is someone else's: they created it and keep it alive); then claims the
/// client's seq_id base in `bases`.
pub async fn open(
    ep: &Endpoint,
    target: OpenTarget<'_>,
    session_id: Option<&str>,
    seq_id: u64,
    bases: &SeqBases,
) -> Result<Opened, Error> {
    let flags = client_config(ep).await?;
    let join = flags.sample_join_sampling_session;
    let (session_id, created_session, sampling_session_id, role) = match target {
        OpenTarget::Existing(id) => (
            session_id.map(str::to_owned),
            false,
            id.to_owned(),
            Role::Clone,
        ),
        OpenTarget::Create(model) => {
            let (session, created) = match session_id {
                Some(s) => (s.to_owned(), false),
                None => (create_session(ep, &[], None).await?.session_id, true),
            };
            let ssid = create_sampling_session(ep, &session, model, seq_id).await?;
            (Some(session), created, ssid, Role::Original)
        }
    };
    let base = bases
        .claim_for(ep, &sampling_session_id, role, join)
        .await?;
    Ok(Opened {
        session_id,
        created_session,
        sampling_session_id,
        first_seq_id: base.first_seq_id,
        flags,
    })
}

/// Timeout of one heartbeat (the SDK's 10 s).
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// `POST /api/v1/session_heartbeat`, sent once: a failure is for the
/// caller to log (and a 410 means the session is gone).
pub async fn heartbeat(ep: &Endpoint, session_id: &str) -> Result<(), Error> {
    let body = HeartbeatRequest {
        kind: "session_heartbeat",
        session_id,
    };
    let rb = ep
        .request_url(
            Method::POST,
            ep.url("/api/v1/session_heartbeat", &[])?,
            &IdempotencyKey::new(),
            0,
        )
        .timeout(HEARTBEAT_TIMEOUT)
        .body(json_body(&body)?);
    let reply = ep.send(rb).await?;
    if reply.status.is_success() {
        Ok(())
    } else {
        Err(reply.to_error())
    }
}

/// `GET /api/v1/samplers/{sampling_session_id}`: the sampler's model.
pub async fn get_sampler(ep: &Endpoint, sampling_session_id: &str) -> Result<SamplerInfo, Error> {
    let url = ep.url("/api/v1/samplers", &[sampling_session_id])?;
    let reply = request_with_retries(ep, Method::GET, url, None, &SessionRetry::default()).await?;
    if !reply.status.is_success() {
        return Err(reply.to_error());
    }
    reply.json()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stainless_delays() {
        let p = SessionRetry::default();
        assert_eq!(p.delay(0, 0.0), Duration::from_millis(500));
        assert_eq!(p.delay(0, 1.0), Duration::from_millis(375));
        assert_eq!(p.delay(1, 0.0), Duration::from_secs(1));
        assert_eq!(p.delay(4, 0.0), Duration::from_secs(8));
        assert_eq!(p.delay(5, 0.0), Duration::from_secs(10));
        assert_eq!(p.delay(1000, 0.0), Duration::from_secs(10));
        assert_eq!(p.delay(9, 1.0), Duration::from_millis(7500));
    }
}
