//! A sampling client's native half: the shared [`SampleContext`], the retry
//! [`Handler`] and the `seq_id` counter — everything one sample needs.
//!
//! One sample = one handler permit + the retry loop over attempts; one
//! attempt = [`run_attempt_with`] with a fresh `seq_id` (resends inside an
//! attempt reuse it; a new attempt, e.g. after a 410, takes the next).
//!
//! A client [started](SamplingClient::start) on a runtime also keeps the
//! server's dynamic config fresh and drains its cancel announcements
//! ([`crate::cancel`]); a sample may carry a [`Deadline`] for all of it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::cancel::{send_cancel, CancelAnnouncer};
use crate::cluster::{run_leased, Budget, WITHDRAW_TIMEOUT};
use crate::dynamic_config::{self, DynamicConfig, DynamicFlags};
use crate::error::{Error, ErrorKind};
use crate::handler::{Events, Handler};
use crate::sampling::{run_attempt_with, LogLevel, SampleContext, SampleOutput, SampleSpec};

/// The native state of one `TinkexNative.SamplingClient`.
#[derive(Debug)]
pub struct SamplingClient {
    ctx: Arc<SampleContext>,
    handler: Arc<Handler>,
    /// Next `seq_id`; one per attempt, from the client's base (0 for the
    /// client that created the sampling session, see `crate::seq_base`).
    next_seq: AtomicU64,
    /// The dynamic config refresh, stopped with the client.
    refresher: Mutex<Option<AbortHandle>>,
    /// This node's share of the cluster budget of the key, when the client
    /// takes part in one: each attempt also holds a permit of it.
    budget: Option<Arc<Budget>>,
}

/// When a whole sample must be over — permit wait, every attempt, every
/// backoff and poll — after which it fails with [`ErrorKind::Timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
    after: Duration,
}

impl Deadline {
    /// `after` from now; `None` when that is too far away to represent
    /// (the same as no deadline).
    pub fn after(after: Duration) -> Option<Deadline> {
        Instant::now()
            .checked_add(after)
            .map(|at| Deadline { at, after })
    }

    /// The instant it passes.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// The error of a sample that outlived it: not retryable (the caller's
    /// time is up).
    pub fn error(&self) -> Error {
        let mut e = Error::new(
            ErrorKind::Timeout,
            format!(
                "the sample did not finish within its timeout of {} ms",
                self.after.as_millis()
            ),
        );
        e.retryable = false;
        e
    }
}

/// What a finished sample reports besides its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleMeta {
    /// Attempts made (1 when the first succeeded).
    pub attempts: u64,
}

impl SamplingClient {
    /// A client over `ctx`, running samples under `handler`, with no
    /// background work: its dynamic config stays `ctx`'s and nothing is
    /// announced on `cancel_future`.
    pub fn new(ctx: SampleContext, handler: Arc<Handler>) -> SamplingClient {
        SamplingClient {
            ctx: Arc::new(ctx),
            handler,
            next_seq: AtomicU64::new(0),
            refresher: Mutex::new(None),
            budget: None,
        }
    }

    /// Starts this client's `seq_id`s at `first` (a clone's base, from
    /// [`crate::seq_base::SeqBases::claim_for`]) instead of 0.
    pub fn starting_at(self, first: u64) -> SamplingClient {
        self.next_seq.store(first, Ordering::Relaxed);
        self
    }

    /// Runs every attempt under a permit of `budget` too (see
    /// [`crate::cluster::run_leased`]).
    pub fn with_budget(mut self, budget: Arc<Budget>) -> SamplingClient {
        self.budget = Some(budget);
        self
    }

    /// A client whose dynamic config starts as `initial` (read at session
    /// set-up), with its background work spawned on the current tokio
    /// runtime (panics outside one):
    ///
    /// - the dynamic config refresh every `max(refresh_interval_sec,
    ///   timings.min_config_refresh)`, stopped when the client is dropped;
    /// - the drain of its cancel announcements, which ends once the
    ///   client and its last sample are gone and the queue is sent.
    ///
    /// Its `seq_id`s start at `first_seq_id` (see [`Self::starting_at`]);
    /// with a `budget`, every attempt also holds a permit of this node's
    /// share of a cluster budget ([`Self::with_budget`]).
    pub fn start(
        ctx: SampleContext,
        handler: Arc<Handler>,
        initial: &DynamicConfig,
        first_seq_id: u64,
        budget: Option<Arc<Budget>>,
    ) -> Arc<Self> {
        let flags = Arc::new(DynamicFlags::new(initial));
        let (announcer, drain) = CancelAnnouncer::new(flags.clone());
        let ctx = ctx.with_cancel(announcer);
        let (ep, timings, observer) = (ctx.endpoint.clone(), ctx.timings, ctx.observer.clone());
        tokio::spawn(drain.run(move |id| {
            let (ep, observer) = (ep.clone(), observer.clone());
            async move {
                let sent = send_cancel(&ep, &timings, &id).await;
                if let Err(e) = &sent {
                    observer.log(
                        LogLevel::Error,
                        &format!("Failed to cancel sampling request {id}: {e}"),
                    );
                }
                sent
            }
        }));
        let (ep, observer) = (ctx.endpoint.clone(), ctx.observer.clone());
        let refresher = tokio::spawn(dynamic_config::refresh_loop(
            Arc::downgrade(&flags),
            timings.min_config_refresh,
            move || {
                let (ep, observer) = (ep.clone(), observer.clone());
                async move {
                    match dynamic_config::fetch(&ep, &dynamic_config::refresh_policy()).await {
                        Ok(c) => Some(c),
                        Err(e) => {
                            observer.log(
                                LogLevel::Debug,
                                &format!("Dynamic client config refresh failed: {e}"),
                            );
                            None
                        }
                    }
                }
            },
        ));
        let mut client = SamplingClient::new(ctx, handler).starting_at(first_seq_id);
        if let Some(b) = budget {
            client = client.with_budget(b);
        }
        *client.refresher.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(refresher.abort_handle());
        Arc::new(client)
    }

    /// The shared context (limiter, observer, dispatch limits).
    pub fn context(&self) -> &SampleContext {
        &self.ctx
    }

    /// The retry handler.
    pub fn handler(&self) -> &Arc<Handler> {
        &self.handler
    }

    /// The next `seq_id` that will be used.
    pub fn peek_seq_id(&self) -> u64 {
        self.next_seq.load(Ordering::Relaxed)
    }

    /// Runs one sample under the handler. `events` hears about failed
    /// attempts and 429 backoffs.
    pub async fn sample(
        &self,
        spec: &SampleSpec,
        events: &dyn Events,
    ) -> (Result<SampleOutput, Error>, SampleMeta) {
        self.sample_until(spec, events, None).await
    }

    /// [`SamplingClient::sample`] that fails with the deadline's timeout
    /// error once `deadline` passes, wherever the sample is: the sample is
    /// then dropped, which returns its permit and announces its future
    /// (when it was polling one).
    pub async fn sample_until(
        &self,
        spec: &SampleSpec,
        events: &dyn Events,
        deadline: Option<Deadline>,
    ) -> (Result<SampleOutput, Error>, SampleMeta) {
        let attempts = AtomicU64::new(0);
        let run = self.run(spec, events, &attempts);
        let result = match deadline {
            None => run.await,
            // Already over (e.g. `timeout: 0`): not even a first poll of the
            // sample, which could send a request.
            Some(d) if d.at <= Instant::now() => Err(d.error()),
            Some(d) => match tokio::time::timeout_at(d.at, run).await {
                Ok(r) => r,
                Err(_) => {
                    self.log_progress();
                    Err(d.error())
                }
            },
        };
        let attempts = attempts.load(Ordering::Relaxed);
        (result, SampleMeta { attempts })
    }

    async fn run(
        &self,
        spec: &SampleSpec,
        events: &dyn Events,
        attempts: &AtomicU64,
    ) -> Result<SampleOutput, Error> {
        self.log_progress();
        let permit = self.handler.acquire().await;
        // The attempt's state machine (HTTP futures, ~2 KB) is boxed only
        // once a permit is held, so the many samples queued at the
        // semaphore stay small.
        let result = Box::pin(self.handler.execute_with(&permit, events, |_retry| {
            attempts.fetch_add(1, Ordering::Relaxed);
            self.attempt(spec, events)
        }))
        .await;
        drop(permit);
        self.log_progress();
        result
    }

    async fn attempt(&self, spec: &SampleSpec, events: &dyn Events) -> Result<SampleOutput, Error> {
        let next_seq = || self.next_seq.fetch_add(1, Ordering::Relaxed);
        match &self.budget {
            None => run_attempt_with(&self.ctx, spec, next_seq(), events).await,
            Some(b) => run_leased(&self.ctx, spec, b, next_seq, events, WITHDRAW_TIMEOUT).await,
        }
    }

    /// The handler's progress line, at debug level, when one is due.
    fn log_progress(&self) {
        if let Some(report) = self.handler.progress_report() {
            for line in report.lines(self.handler.name()) {
                self.ctx.observer.log(LogLevel::Debug, &line);
            }
        }
    }
}

impl Drop for SamplingClient {
    fn drop(&mut self) {
        let refresher = self.refresher.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = refresher.take() {
            h.abort();
        }
    }
}
