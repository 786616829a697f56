//! `TinkexNative.SamplingClient`'s hot path: a client resource, one NIF that
//! starts a sample on tokio and returns at once, and one that cancels it.
//! The result arrives as `{:tinkex_sample, ref, {:ok,
//! %TinkexNative.Types.SampleResponse{}} | {:error, error}}`.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use rustler::{
    Atom, Encoder, Env, LocalPid, NifMap, NifStruct, NifTaggedEnum, OwnedEnv, ResourceArc, Term,
};
use tinkex_core::client::{Deadline, SamplingClient};
use tinkex_core::error::{Error, ErrorKind};
use tinkex_core::handler::{Events, RetryEvent};
use tinkex_core::sampling::{
    DispatchLimits, LogLevel, SampleContext, SampleOutput, SampleSpec, SdkMethod, StopReason,
    TopkPosition, DEFAULT_MAX_SUBMITS,
};
use tinkex_core::wire::{ModelInput, SamplingParams, Stop};

use crate::atoms;
use crate::cluster::BudgetRes;
use crate::error;
use crate::handler::HandlerRes;
use crate::jobs::{start_job, Job, JobReply};
use crate::runtime;
use crate::session::{endpoint, DynamicArg};
use crate::timings;

/// The native half of one sampling client.
/// (`AssertUnwindSafe`: the client is only shared state behind atomics and
/// locks; a caught panic cannot leave it half-updated in a way that matters.)
pub struct ClientRes(AssertUnwindSafe<Arc<SamplingClient>>);

#[rustler::resource_impl]
impl rustler::Resource for ClientRes {}

/// Where a client is and how it behaves, from `TinkexNative.SamplingClient`.
#[derive(NifMap)]
pub struct ClientOpts {
    base_url: String,
    api_key: String,
    version: String,
    max_body_bytes: crate::limits::LimitsArg,
    sampling_session_id: String,
    first_seq_id: u64,
    dispatch_bytes: u64,
    inflight_bytes: u64,
    retrieve_futures: bool,
    timings: Vec<(String, u64)>,
    log_to: Option<LocalPid>,
    dynamic_config: DynamicArg,
    /// The node's share of the key's cluster budget (`cluster: [max_in_flight: n]`).
    budget: Option<ResourceArc<BudgetRes>>,
}

/// `{:ok, client}` or `{:error, message}`. Dirty: it may build the base
/// URL's TLS client (milliseconds); it runs once per client. Starts the
/// client's dynamic config refresh and cancel drain on tokio.
#[rustler::nif(schedule = "DirtyCpu")]
fn client_new<'a>(
    opts: Term<'a>,
    handler: ResourceArc<HandlerRes>,
) -> rustler::NifResult<(Atom, ResourceArc<ClientRes>)> {
    let opts: ClientOpts = error::decode_arg(opts)?;
    let ep = endpoint(&opts.base_url, &opts.api_key, &opts.version)?
        .with_body_limits(opts.max_body_bytes.into());
    let timings =
        timings::from_overrides(opts.timings).map_err(|m| rustler::Error::Term(Box::new(m)))?;
    let mut ctx = SampleContext::new(ep, &opts.sampling_session_id)
        .with_timings(timings)
        .with_dispatch(Arc::new(DispatchLimits::new(
            DEFAULT_MAX_SUBMITS,
            opts.dispatch_bytes,
        )))
        .with_response_budget(opts.inflight_bytes)
        .with_retrieve_futures(opts.retrieve_futures);
    if let Some(pid) = opts.log_to {
        ctx = ctx.with_log_sink(Arc::new(move |level: LogLevel, msg: &str| {
            log_to(pid, level, msg)
        }));
    }
    let client = {
        let _rt = runtime::get().enter();
        SamplingClient::start(
            ctx,
            handler.0.clone(),
            &(&opts.dynamic_config).into(),
            opts.first_seq_id,
            opts.budget.as_ref().map(|b| b.0.clone()),
        )
    };
    let client = ResourceArc::new(ClientRes(AssertUnwindSafe(client)));
    Ok((atoms::ok(), client))
}

/// Sends `{:tinkex_log, level, message}` to the client process.
fn log_to(pid: LocalPid, level: LogLevel, msg: &str) {
    if rustler::thread::is_scheduler_thread() {
        return; // cannot send from here; the core logs only from tokio
    }
    let level = match level {
        LogLevel::Debug => atoms::debug(),
        LogLevel::Info => atoms::info(),
        LogLevel::Warning => atoms::warning(),
        LogLevel::Error => atoms::error(),
    };
    let _ =
        OwnedEnv::new().send_and_clear(&pid, |env| (atoms::tinkex_log(), level, msg).encode(env));
}

/// Stop sequences as Elixir passes them.
#[derive(NifTaggedEnum)]
enum StopArg {
    None,
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<i32>),
}

/// A validated request from `TinkexNative.SamplingClient`: prompt chunks
/// (see [`crate::prompt`]), and the parameters.
#[derive(NifMap)]
struct SpecArg<'a> {
    chunks: Vec<Term<'a>>,
    num_samples: u32,
    max_tokens: Option<u32>,
    seed: Option<i64>,
    stop: StopArg,
    temperature: f64,
    top_k: i32,
    top_p: f64,
    prompt_logprobs: bool,
    topk_prompt_logprobs: u32,
    compute_logprobs: bool,
    tokens_as_binary: bool,
    events: bool,
    timeout_ms: Option<u64>,
}

fn decode_spec(a: &SpecArg<'_>) -> rustler::NifResult<SampleSpec> {
    let chunks = crate::prompt::decode_chunks(&a.chunks)?;
    let stop = match &a.stop {
        StopArg::None => None,
        StopArg::Text(s) => Some(Stop::Text(s.clone())),
        StopArg::Texts(v) => Some(Stop::Texts(v.clone())),
        StopArg::Tokens(v) => Some(Stop::Tokens(v.clone())),
    };
    let params = SamplingParams {
        max_tokens: a.max_tokens,
        seed: a.seed,
        stop,
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
    };
    let mut spec = SampleSpec::new(ModelInput { chunks }, params, a.num_samples);
    spec.prompt_logprobs = a.prompt_logprobs;
    spec.topk_prompt_logprobs = a.topk_prompt_logprobs;
    if a.compute_logprobs {
        spec.method = SdkMethod::ComputeLogprobs;
    }
    Ok(spec)
}

/// Starts a sample for the calling process and returns its job at once.
/// The result arrives as `{:tinkex_sample, job, {:ok, response} |
/// {:error, error}}` (with `events`, `{:tinkex_event, job, ...}` before it
/// per failed attempt and per 429 backoff set). If the caller dies, the
/// sample is aborted; `timeout_ms` bounds all of it from now.
#[rustler::nif]
fn client_sample<'a>(
    env: Env<'a>,
    client: ResourceArc<ClientRes>,
    spec: Term<'a>,
) -> rustler::NifResult<ResourceArc<Job>> {
    let spec: SpecArg<'a> = error::decode_arg(spec)?;
    let sample = decode_spec(&spec)?;
    let tokens_as_binary = spec.tokens_as_binary;
    let with_events = spec.events;
    // From the call, not from when tokio first runs the job.
    let deadline = spec
        .timeout_ms
        .and_then(|ms| Deadline::after(Duration::from_millis(ms)));
    let client = Arc::clone(&client.0);
    start_job(
        env,
        move |reply| async move {
            let events = with_events.then(|| EventsTo(reply));
            let events: &dyn Events = match &events {
                Some(e) => e,
                None => &tinkex_core::handler::NoEvents,
            };
            client.sample_until(&sample, events, deadline).await.0
        },
        move |reply, result| {
            if !reply.claim() {
                return; // cancelled: `client_cancel` sent the reply
            }
            reply.send(atoms::tinkex_sample(), move |env| match result {
                Ok(out) => (atoms::ok(), Response::from_output(out, tokens_as_binary)).encode(env),
                Err(e) => error::error_result(env, &e),
            })
        },
    )
    // The caller is running this NIF, so it is alive.
    .ok_or(rustler::Error::BadArg)
}

/// Cancels a sample of `client_sample`: `:ok` when this call stopped it —
/// its caller then gets `{:tinkex_sample, job, {:error, %TinkexNative.Error{type:
/// :cancelled}}}`, sent from here — or `:finished` when it had already
/// resolved (its own reply is sent, or on its way). Either way exactly one
/// reply reaches the caller. The stopped sample returns its permit, and is
/// announced on `cancel_future` when it was polling and the server asks.
#[rustler::nif]
fn client_cancel(env: Env<'_>, job: ResourceArc<Job>) -> Atom {
    if !job.cancel() {
        return atoms::finished();
    }
    let e = Error::new(ErrorKind::Cancelled, "the sample was cancelled");
    let reply = (
        atoms::tinkex_sample(),
        job.encode(env),
        error::error_result(env, &e),
    );
    // A dead owner needs no reply.
    let _ = env.send(&job.owner(), reply);
    atoms::ok()
}

/// Sends `{:tinkex_event, job, {:attempt_failed, measurements, error}}` per
/// failed attempt and `{:tinkex_event, job, {:backoff, %{backoff_ms: ms}}}`
/// per 429 backoff set, to the process that runs the sample's telemetry.
struct EventsTo(JobReply);

#[derive(NifMap)]
struct Backoff {
    backoff_ms: u64,
}

#[derive(NifMap)]
struct AttemptFailed {
    attempt: u64,
    delay_ms: Option<u64>,
    elapsed_ms: u64,
}

impl Events for EventsTo {
    fn attempt_failed(&self, ev: &RetryEvent<'_>) {
        if !self.0.is_running() {
            return;
        }
        let data = AttemptFailed {
            attempt: ev.attempt,
            delay_ms: ev.delay_ms,
            elapsed_ms: u64::try_from(ev.elapsed.as_millis()).unwrap_or(u64::MAX),
        };
        let err = ev.error;
        self.0.send(atoms::tinkex_event(), |env| {
            (atoms::attempt_failed(), data, error::encode(env, err)).encode(env)
        });
    }

    fn backoff_set(&self, backoff: Duration) {
        if !self.0.is_running() {
            return;
        }
        let data = Backoff {
            backoff_ms: u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
        };
        self.0.send(atoms::tinkex_event(), |env| {
            (atoms::backoff(), data).encode(env)
        });
    }
}

#[derive(NifStruct)]
#[rustler(encode)]
#[module = "TinkexNative.Types.SampledSequence"]
struct SequenceOut {
    tokens: Tokens,
    logprobs: Option<Vec<f32>>,
    stop_reason: Atom,
    sequence_id: Option<String>,
}

#[derive(NifStruct)]
#[rustler(encode)]
#[module = "TinkexNative.Types.SampleResponse"]
struct Response {
    sequences: Vec<SequenceOut>,
    prompt_logprobs: Option<Vec<Option<f32>>>,
    topk_prompt_logprobs: Option<Vec<TopkPosition>>,
    prompt_cache_hit_tokens: i64,
    request_id: String,
}

impl Response {
    fn from_output(out: SampleOutput, tokens_as_binary: bool) -> Response {
        Response {
            sequences: out
                .sequences
                .into_iter()
                .map(|s| SequenceOut {
                    tokens: if tokens_as_binary {
                        Tokens::Binary(s.tokens)
                    } else {
                        Tokens::List(s.tokens)
                    },
                    logprobs: s.logprobs,
                    stop_reason: match s.stop_reason {
                        StopReason::Stop => atoms::stop(),
                        StopReason::Length => atoms::length(),
                    },
                    sequence_id: s.sequence_id,
                })
                .collect(),
            prompt_logprobs: out.prompt_logprobs,
            topk_prompt_logprobs: out.topk_prompt_logprobs,
            prompt_cache_hit_tokens: out.prompt_cache_hit_tokens,
            request_id: out.request_id,
        }
    }
}

/// Token ids as a list, or as a little-endian int32 binary.
enum Tokens {
    List(Vec<i32>),
    Binary(Vec<i32>),
}

impl Encoder for Tokens {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        match self {
            Tokens::List(v) => v.encode(env),
            Tokens::Binary(v) => {
                let mut bin = rustler::NewBinary::new(env, v.len() * 4);
                for (dst, t) in bin.as_mut_slice().chunks_exact_mut(4).zip(v) {
                    dst.copy_from_slice(&t.to_le_bytes());
                }
                Term::from(bin)
            }
        }
    }
}

#[derive(NifMap)]
struct ClientStats {
    backoff_ms: u64,
    queue_state: String,
    next_seq_id: u64,
    futures_waiting: u64,
    dynamic_config: DynamicArg,
    cancels: Cancels,
}

#[derive(NifMap)]
struct Cancels {
    announced: u64,
    sent: u64,
    failed: u64,
}

/// The client's own counters (the handler's come from `handler_stats`).
#[rustler::nif]
fn client_stats(client: ResourceArc<ClientRes>) -> ClientStats {
    let ctx = client.0.context();
    let cancels = ctx.cancel.stats();
    ClientStats {
        backoff_ms: u64::try_from(ctx.limiter.remaining().as_micros().div_ceil(1000))
            .unwrap_or(u64::MAX),
        queue_state: ctx.observer.queue_state().as_str().to_owned(),
        next_seq_id: client.0.peek_seq_id(),
        futures_waiting: ctx.futures_waiting() as u64,
        dynamic_config: ctx.dynamic.get().into(),
        cancels: Cancels {
            announced: cancels.announced,
            sent: cancels.sent,
            failed: cancels.failed,
        },
    }
}
