//! One attempt of a sample: submit (`asample`) and poll (`retrieve_future`),
//! exactly as `shared/PROTOCOL.md` describes.
//!
//! The retry handler owns the attempts: it allocates a `seq_id` per
//! attempt, calls [`run_attempt`], and on a retryable error sleeps and
//! calls it again with the next `seq_id`. Inside an attempt every resend
//! reuses the `seq_id` ([`submit`] has the table); polling follows the
//! poll table ([`poll`]). When the server switched on
//! `sample_use_retrieve_futures`, the attempt first waits for its
//! completion on the session poller ([`futures_poller`]) and then fetches
//! the result with one poll under the same table.
//!
//! Parts:
//! - [`SampleContext`]: what all samples of one sampling client share — the
//!   pooled [`Endpoint`], the shared 429 [`RateLimiter`] of
//!   `{base_url, api_key}`, the [`DispatchLimits`], the [`Timings`], the
//!   [`QueueObserver`], the [`BillingWindow`], the in-flight response
//!   [`BytesBudget`] and, when the server asks for it
//!   (`sample_use_retrieve_futures`), the session pollers
//!   ([`futures_poller`]) that replace per-request polling;
//! - [`SampleSpec`]: what to sample;
//! - [`SampleOutput`]: the result.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tinkex_core::error::Error> {
//! use tinkex_core::http::Endpoint;
//! use tinkex_core::sampling::{run_attempt, SampleContext, SampleSpec};
//! use tinkex_core::wire::{ModelInput, SamplingParams};
//!
//! let ep = Endpoint::new("http://127.0.0.1:8080", "tml-test")?;
//! let ctx = SampleContext::new(ep, "sampling-session-1");
//! let spec = SampleSpec::new(ModelInput::from_tokens(vec![1, 2, 3]), SamplingParams::default(), 2);
//! let out = run_attempt(&ctx, &spec, 0).await?;
//! assert_eq!(out.sequences.len(), 2);
//! # Ok(()) }
//! ```

use std::sync::Arc;

use crate::error::Error;
use crate::http::Endpoint;
use crate::rate_limiter::RateLimiter;

mod billing;
mod budget;
mod dispatch;
pub mod futures_poller;
mod observer;
pub(crate) mod output;
pub mod poll;
mod spec;
pub mod submit;
mod timings;

pub use billing::BillingWindow;
pub use budget::{BytesBudget, BytesPermit, DEFAULT_INFLIGHT_RESPONSE_BYTES};
pub use dispatch::{
    DispatchLimits, DispatchPermit, DEFAULT_MAX_SUBMITS, THROTTLED_BYTES_FACTOR, THROTTLED_SUBMITS,
};
pub use observer::{LogLevel, LogSink, QueueObserver, QueueState};
pub use output::{SampleOutput, Sequence, StopReason, TopkPosition};
pub use spec::{SampleSpec, SdkMethod};
pub use timings::{Timings, LARGE_PROMPT_BYTES};

/// What every sample of one sampling client shares. Build it once per
/// client and keep it in an `Arc`; all fields are read-only or internally
/// synchronized, and no lock is held across an await.
#[derive(Debug)]
pub struct SampleContext {
    /// The service and API key.
    pub endpoint: Endpoint,
    /// The sampling session the samples belong to.
    pub sampling_session_id: Box<str>,
    /// The shared 429 backoff of `{base_url, api_key}`.
    pub limiter: Arc<RateLimiter>,
    /// Submission limits (held only while submitting).
    pub dispatch: Arc<DispatchLimits>,
    /// Every delay and timeout.
    pub timings: Timings,
    /// The queue state last reported, and the pause log.
    pub observer: Arc<QueueObserver>,
    /// The current billing (402) incident.
    pub billing: Arc<BillingWindow>,
    /// Result bytes being fetched after their size was announced.
    pub response_budget: Arc<BytesBudget>,
    /// The session pollers, when results are awaited through
    /// `retrieve_futures`; `None`: per-request polling.
    pub futures: Option<futures_poller::FuturesPollers>,
}

impl SampleContext {
    /// A context with the protocol's defaults and the process-wide
    /// limiter of the endpoint's `{base_url, api_key}`.
    pub fn new(endpoint: Endpoint, sampling_session_id: &str) -> SampleContext {
        let limiter = RateLimiter::for_key(endpoint.base_url(), endpoint.api_key().expose());
        let timings = Timings::default();
        SampleContext {
            endpoint,
            sampling_session_id: sampling_session_id.into(),
            limiter,
            dispatch: Arc::new(DispatchLimits::default()),
            observer: Arc::new(QueueObserver::new(
                sampling_session_id,
                timings.pause_log_interval,
            )),
            timings,
            billing: Arc::new(BillingWindow::new()),
            response_budget: Arc::new(BytesBudget::new(DEFAULT_INFLIGHT_RESPONSE_BYTES)),
            futures: None,
        }
    }

    /// Uses `timings` (and its pause-log interval) instead of the defaults.
    pub fn with_timings(mut self, timings: Timings) -> SampleContext {
        self.timings = timings;
        self.observer = Arc::new(self.new_observer(None));
        self
    }

    /// Sends pause and billing log lines to `sink`.
    pub fn with_log_sink(mut self, sink: Arc<dyn LogSink>) -> SampleContext {
        self.observer = Arc::new(self.new_observer(Some(sink)));
        self
    }

    /// Uses these submission limits (e.g. [`DispatchLimits::from_flags`]).
    pub fn with_dispatch(mut self, dispatch: Arc<DispatchLimits>) -> SampleContext {
        self.dispatch = dispatch;
        self
    }

    /// Uses this limiter instead of the process-wide one of the key.
    pub fn with_limiter(mut self, limiter: Arc<RateLimiter>) -> SampleContext {
        self.limiter = limiter;
        self
    }

    /// An in-flight response budget of `bytes` (the server's
    /// `inflight_response_bytes_semaphore_size`).
    pub fn with_response_budget(mut self, bytes: u64) -> SampleContext {
        self.response_budget = Arc::new(BytesBudget::new(bytes));
        self
    }

    /// `true`: await results through one `retrieve_futures` poller per
    /// (session, clone) (the server's `sample_use_retrieve_futures`);
    /// `false`: per-request polling.
    pub fn with_retrieve_futures(mut self, on: bool) -> SampleContext {
        self.futures = on.then(futures_poller::FuturesPollers::default);
        self
    }

    /// Samples currently waiting for a `retrieve_futures` completion (0
    /// with per-request polling).
    pub fn futures_waiting(&self) -> usize {
        self.futures.as_ref().map_or(0, |f| f.waiting())
    }

    fn new_observer(&self, sink: Option<Arc<dyn LogSink>>) -> QueueObserver {
        let obs = QueueObserver::new(&self.sampling_session_id, self.timings.pause_log_interval);
        match sink.or_else(|| self.observer.sink()) {
            Some(s) => obs.with_sink(s),
            None => obs,
        }
    }
}

/// Runs one attempt of `spec` as `seq_id`: submit, then poll. The result's
/// sequences carry the `sample_sequence_ids` of this attempt. Dropping the
/// future cancels the attempt and returns its dispatch limits.
///
/// An error's `retryable` says whether the handler may start a new attempt
/// (with a new `seq_id`); errors from polling carry the `request_id`.
pub async fn run_attempt(
    ctx: &SampleContext,
    spec: &SampleSpec,
    seq_id: u64,
) -> Result<SampleOutput, Error> {
    let submitted = submit::submit(ctx, spec, seq_id).await?;
    let mut out = match &ctx.futures {
        Some(pollers) => {
            futures_poller::await_result(ctx, pollers, spec.method, seq_id, &submitted.request_id)
                .await?
        }
        None => poll::poll(ctx, spec.method, &submitted.request_id, None).await?,
    };
    out.attach_sequence_ids(submitted.sequence_ids)?;
    Ok(out)
}
