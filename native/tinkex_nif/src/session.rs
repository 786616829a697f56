//! Session set-up and heartbeats for `TinkexNative.SamplingClient`, run on tokio
//! and answered by message.

use rustler::{Atom, Encoder, Env, NifMap, NifTaggedEnum, Term};
use tinkex_core::http::Endpoint;
use tinkex_core::session::{self, ModelRef};
use tinkex_core::wire::ServerFlags;

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
    /// `{:sampling_session_id, "..."}`: an existing session; only the
    /// server flags are read.
    SamplingSessionId(String),
}

/// The server flags Elixir uses to complete a config.
#[derive(NifMap)]
pub struct Flags {
    sample_max_concurrent_requests: u64,
    sample_no_retries: bool,
    sample_enable_stuck_detection: bool,
    sample_dispatch_bytes_semaphore_size: u64,
}

impl From<&ServerFlags> for Flags {
    fn from(f: &ServerFlags) -> Flags {
        Flags {
            sample_max_concurrent_requests: f.sample_max_concurrent_requests,
            sample_no_retries: f.sample_no_retries,
            sample_enable_stuck_detection: f.sample_enable_stuck_detection,
            sample_dispatch_bytes_semaphore_size: f.sample_dispatch_bytes_semaphore_size,
        }
    }
}

#[derive(NifMap)]
struct Opened {
    session_id: Option<String>,
    sampling_session_id: String,
    flags: Flags,
    /// The first `seq_id`: 0 for a session created here, a clone's base
    /// for an existing one.
    seq_base: u64,
}

/// The endpoint, or `{:error, message}` for a bad URL or key.
pub fn endpoint(base_url: &str, api_key: &str, version: &str) -> rustler::NifResult<Endpoint> {
    Endpoint::with_sdk_version(base_url, api_key, version)
        .map_err(|e| rustler::Error::Term(Box::new(e.message)))
}

/// Reads the server flags and, unless given an existing sampling session,
/// creates a session and a sampling session. Answers
/// `{:tinkex_session, ref, {:ok, %{session_id, sampling_session_id, flags}}
/// | {:error, error}}`; `{:error, message}` at once for a bad URL. Dirty:
/// the first use of a base URL builds its TLS client (milliseconds).
#[rustler::nif(schedule = "DirtyCpu")]
fn session_open<'a>(
    env: Env<'a>,
    base_url: String,
    api_key: String,
    version: String,
    model: Term<'a>,
    reference: Term<'a>,
) -> rustler::NifResult<Atom> {
    let model: SessionTarget = error::decode_arg(model)?;
    let ep = endpoint(&base_url, &api_key, &version)?;
    let reply = ReplyTo::new(env.pid(), reference);
    spawn_answer(env, reply, atoms::tinkex_session(), async move {
        open(&ep, model).await
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

async fn open(ep: &Endpoint, model: SessionTarget) -> Result<Opened, tinkex_core::error::Error> {
    let flags = session::client_config(ep).await?;
    let model_ref = match &model {
        SessionTarget::BaseModel(m) => ModelRef::BaseModel(m),
        SessionTarget::ModelPath(p) => ModelRef::ModelPath(p),
        SessionTarget::SamplingSessionId(id) => {
            let join = flags.sample_join_sampling_session;
            return Ok(Opened {
                session_id: None,
                sampling_session_id: id.clone(),
                flags: Flags::from(&flags),
                seq_base: tinkex_core::cluster::clone_seq_base(ep, id, join).await?,
            });
        }
    };
    let session = session::create_session(ep, &[], None).await?;
    let sampling_session_id =
        session::create_sampling_session(ep, &session.session_id, model_ref, 0).await?;
    Ok(Opened {
        session_id: Some(session.session_id),
        sampling_session_id,
        flags: Flags::from(&flags),
        seq_base: 0,
    })
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
