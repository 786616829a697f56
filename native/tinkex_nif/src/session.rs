//! Session set-up, heartbeats and session end for
//! `TinkexNative.SamplingClient`, run on tokio and answered by message.

use std::time::Duration;

use rustler::{Atom, Env, NifMap, NifTaggedEnum, NifUnitEnum, Term};
use tinkex_core::dynamic_config::{self, DynamicConfig};
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

/// The server's dynamic config, read at set-up and handed to
/// `client_new` (which keeps it fresh).
#[derive(NifMap)]
pub struct DynamicArg {
    refresh_interval_sec: u64,
    sample_cancel_enabled: bool,
    sample_cancel_max_batch_size: u64,
}

impl From<DynamicConfig> for DynamicArg {
    fn from(c: DynamicConfig) -> DynamicArg {
        DynamicArg {
            refresh_interval_sec: c.refresh_interval_sec,
            sample_cancel_enabled: c.sample_cancel_enabled,
            sample_cancel_max_batch_size: c.sample_cancel_max_batch_size,
        }
    }
}

impl From<&DynamicArg> for DynamicConfig {
    fn from(a: &DynamicArg) -> DynamicConfig {
        DynamicConfig {
            refresh_interval_sec: a.refresh_interval_sec,
            sample_cancel_enabled: a.sample_cancel_enabled,
            sample_cancel_max_batch_size: a.sample_cancel_max_batch_size,
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
    dynamic_config: DynamicArg,
}

/// The endpoint, or `{:error, message}` for a bad URL or key.
pub fn endpoint(base_url: &str, api_key: &str, version: &str) -> rustler::NifResult<Endpoint> {
    Endpoint::with_sdk_version(base_url, api_key, version)
        .map_err(|e| rustler::Error::Term(Box::new(e.message)))
}

/// The endpoint of a session NIF, reading answers up to the `limits` map
/// it was given.
fn limited(
    base_url: &str,
    api_key: &str,
    version: &str,
    limits: Term<'_>,
) -> rustler::NifResult<Endpoint> {
    crate::limits::limited_endpoint(base_url, api_key, version, error::decode_arg(limits)?)
}

/// Reads the server flags and dynamic config and, unless given an existing
/// sampling session, creates a sampling session numbered `seq_id` in
/// `session_id` (`nil`: in a new session); then claims the client's seq_id
/// base (joining the sampling session when a clone should):
/// `tinkex_core::session::open`. Answers `{:tinkex_session, ref, {:ok,
/// %{session_id, created_session, sampling_session_id, first_seq_id,
/// flags, dynamic_config}} | {:error, error}}` (an `:internal` error
/// should the task panic); `{:error, message}` at once for a bad URL. The
/// task is aborted if the caller dies: a client that gave up on its set-up
/// stops retrying it. Dirty:
/// the first use of a base URL builds its TLS client (milliseconds).
#[allow(clippy::too_many_arguments)]
#[rustler::nif(schedule = "DirtyCpu")]
fn session_open<'a>(
    env: Env<'a>,
    base_url: String,
    api_key: String,
    version: String,
    limits: Term<'a>,
    model: Term<'a>,
    session_id: Option<String>,
    seq_id: u64,
    reference: Term<'a>,
) -> rustler::NifResult<Atom> {
    let model: SessionTarget = error::decode_arg(model)?;
    let ep = limited(&base_url, &api_key, &version, limits)?;
    let reply = ReplyTo::new(env.pid(), reference);
    spawn_for_caller(env, reply, atoms::tinkex_session(), async move {
        let target = match &model {
            SessionTarget::BaseModel(m) => OpenTarget::Create(ModelRef::BaseModel(m)),
            SessionTarget::ModelPath(p) => OpenTarget::Create(ModelRef::ModelPath(p)),
            SessionTarget::SamplingSessionId(id) => OpenTarget::Existing(id),
        };
        let dynamic = dynamic_config::fetch(&ep, &dynamic_config::initial_policy()).await?;
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
            dynamic_config: dynamic.into(),
        })
    });
    Ok(atoms::ok())
}

/// One heartbeat; answers `{:tinkex_heartbeat, ref, :ok | {:error, error}}`.
#[rustler::nif(schedule = "DirtyCpu")]
fn session_heartbeat<'a>(
    env: Env<'a>,
    base_url: String,
    api_key: String,
    version: String,
    limits: Term<'a>,
    session_id: String,
    reference: Term<'a>,
) -> rustler::NifResult<Atom> {
    let ep = limited(&base_url, &api_key, &version, limits)?;
    let reply = ReplyTo::new(env.pid(), reference);
    spawn_for_caller(env, reply, atoms::tinkex_heartbeat(), async move {
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
    limits: Term<'a>,
    session_id: String,
    reason: Term<'a>,
    detail: Option<String>,
    timeout_ms: u64,
    reference: Term<'a>,
) -> rustler::NifResult<Atom> {
    let reason: FinishArg = error::decode_arg(reason)?;
    let ep = limited(&base_url, &api_key, &version, limits)?;
    let reply = ReplyTo::new(env.pid(), reference);
    let reason = match reason {
        FinishArg::Success => FinishReason::Success,
        FinishArg::Errored => FinishReason::Errored,
    };
    spawn_for_caller(env, reply, atoms::tinkex_finish(), async move {
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
