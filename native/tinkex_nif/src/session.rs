//! Session set-up, heartbeats and session end for
//! `TinkexNative.SamplingClient`, run on tokio and answered by message.

use std::time::Duration;

use rustler::{Atom, Encoder, Env, NifMap, NifTaggedEnum, NifUnitEnum, Term};
use tinkex_core::http::Endpoint;
use tinkex_core::seq_base::SeqBases;
use tinkex_core::session::{self, ModelRef, OpenTarget};
use tinkex_core::wire::{FinishReason, ServerFlags};

use crate::atoms;
use crate::error;
use crate::jobs::{spawn_for_caller, ReplyTo};

/// What to sample from, as Elixir passes it.
#[derive(NifTaggedEnum)]
pub enum SessionTarget {
    /// `{:base_model, "Qwen/Qwen3-8B"}`.
    BaseModel(String),
    /// `{:model_path, "tinker://..."}`.
    ModelPath(String),
    /// `{:sampling_session_id, "..."}`: an existing session; the client
    /// is a clone of it (flags read, then its seq_id base claimed).
    SamplingSessionId(String),
}

/// The server flags Elixir uses to complete a config.
#[derive(NifMap)]
pub struct Flags {
    sample_max_concurrent_requests: u64,
    sample_no_retries: bool,
    sample_enable_stuck_detection: bool,
    sample_dispatch_bytes_semaphore_size: u64,
    inflight_response_bytes_semaphore_size: u64,
    sample_use_retrieve_futures: bool,
}

impl From<&ServerFlags> for Flags {
    fn from(f: &ServerFlags) -> Flags {
        Flags {
            sample_max_concurrent_requests: f.sample_max_concurrent_requests,
            sample_no_retries: f.sample_no_retries,
            sample_enable_stuck_detection: f.sample_enable_stuck_detection,
            sample_dispatch_bytes_semaphore_size: f.sample_dispatch_bytes_semaphore_size,
            inflight_response_bytes_semaphore_size: f.inflight_response_bytes_semaphore_size,
            sample_use_retrieve_futures: f.sample_use_retrieve_futures,
        }
    }
}

#[derive(NifMap)]
struct Opened {
    session_id: Option<String>,
    /// True when this set-up created `session_id`: only then does the
    /// client heartbeat it, and end it when it stops.
    created_session: bool,
    sampling_session_id: String,
    /// The client's first seq_id (`tinkex_core::seq_base`).
    first_seq_id: u64,
    flags: Flags,
}

/// The endpoint, or `{:error, message}` for a bad URL or key.
pub fn endpoint(base_url: &str, api_key: &str, version: &str) -> rustler::NifResult<Endpoint> {
    Endpoint::with_sdk_version(base_url, api_key, version)
        .map_err(|e| rustler::Error::Term(Box::new(e.message)))
}

/// Reads the server flags and, unless given an existing sampling session,
/// creates a sampling session numbered `seq_id` in `session_id` (`nil`: in
/// a new session); then claims the client's seq_id base (joining the
/// sampling session when a clone should): `tinkex_core::session::open`.
/// Answers `{:tinkex_session, ref, {:ok, %{session_id, created_session,
/// sampling_session_id, first_seq_id, flags}} | {:error, error}}`;
/// `{:error, message}` at once for a bad URL. Dirty:
/// the first use of a base URL builds its TLS client (milliseconds).
#[allow(clippy::too_many_arguments)]
#[rustler::nif(schedule = "DirtyCpu")]
fn session_open<'a>(
    env: Env<'a>,
    base_url: String,
    api_key: String,
    version: String,
    model: Term<'a>,
    session_id: Option<String>,
    seq_id: u64,
    reference: Term<'a>,
) -> rustler::NifResult<Atom> {
    let model: SessionTarget = error::decode_arg(model)?;
    let ep = endpoint(&base_url, &api_key, &version)?;
    let reply = ReplyTo::new(env.pid(), reference);
    spawn_answer(env, reply, atoms::tinkex_session(), async move {
        let target = match &model {
            SessionTarget::BaseModel(m) => OpenTarget::Create(ModelRef::BaseModel(m)),
            SessionTarget::ModelPath(p) => OpenTarget::Create(ModelRef::ModelPath(p)),
            SessionTarget::SamplingSessionId(id) => OpenTarget::Existing(id),
        };
        let o = session::open(
            &ep,
            target,
            session_id.as_deref(),
            seq_id,
            SeqBases::global(),
        )
        .await?;
        Ok(Opened {
            session_id: o.session_id,
            created_session: o.created_session,
            sampling_session_id: o.sampling_session_id,
            first_seq_id: o.first_seq_id,
            flags: Flags::from(&o.flags),
        })
    });
    Ok(atoms::ok())
}

/// Runs `work` on tokio for the calling process (aborted if it dies: a
/// client that gave up on its set-up stops retrying it) and sends
/// `{tag, ref, {:ok, value} | {:error, error}}`.
fn spawn_answer<T, F>(env: Env<'_>, reply: ReplyTo, tag: Atom, work: F)
where
    T: Encoder + Send + 'static,
    F: std::future::Future<Output = Result<T, tinkex_core::error::Error>> + Send + 'static,
{
    spawn_for_caller(env, async move {
        let result = work.await;
        reply.send(tag, move |env| match result {
            Ok(v) => (atoms::ok(), v).encode(env),
            Err(e) => error::error_result(env, &e),
        });
    });
}

/// One heartbeat; answers `{:tinkex_heartbeat, ref, :ok | {:error, error}}`.
#[rustler::nif(schedule = "DirtyCpu")]
fn session_heartbeat<'a>(
    env: Env<'a>,
    base_url: String,
    api_key: String,
    version: String,
    session_id: String,
    reference: Term<'a>,
) -> rustler::NifResult<Atom> {
    let ep = endpoint(&base_url, &api_key, &version)?;
    let reply = ReplyTo::new(env.pid(), reference);
    spawn_answer(env, reply, atoms::tinkex_heartbeat(), async move {
        session::heartbeat(&ep, &session_id).await
    });
    Ok(atoms::ok())
}

/// Why a client ends its session, as Elixir passes it.
#[derive(NifUnitEnum, Clone, Copy)]
pub enum FinishArg {
    /// `:success`.
    Success,
    /// `:errored`.
    Errored,
}

/// Ends a session (`POST /api/v1/sessions/{id}/finish`) within
/// `timeout_ms` in all (at most a day); answers `{:tinkex_finish, ref,
/// {:ok, _} | {:error, error}}`.
#[allow(clippy::too_many_arguments)]
#[rustler::nif(schedule = "DirtyCpu")]
fn session_finish<'a>(
    env: Env<'a>,
    base_url: String,
    api_key: String,
    version: String,
    session_id: String,
    reason: Term<'a>,
    detail: Option<String>,
    timeout_ms: u64,
    reference: Term<'a>,
) -> rustler::NifResult<Atom> {
    let reason: FinishArg = error::decode_arg(reason)?;
    let ep = endpoint(&base_url, &api_key, &version)?;
    let reply = ReplyTo::new(env.pid(), reference);
    let reason = match reason {
        FinishArg::Success => FinishReason::Success,
        FinishArg::Errored => FinishReason::Errored,
    };
    spawn_answer(env, reply, atoms::tinkex_finish(), async move {
        session::finish_session(
            &ep,
            &session_id,
            reason,
            detail.as_deref(),
            Duration::from_millis(timeout_ms.min(86_400_000)),
        )
        .await
    });
    Ok(atoms::ok())
}
