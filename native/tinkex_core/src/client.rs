//! A sampling client's native half: the shared [`SampleContext`], the retry
//! [`Handler`] and the `seq_id` counter — everything one sample needs.
//!
//! One sample = one handler permit + the retry loop over attempts; one
//! attempt = [`run_attempt`] with a fresh `seq_id` (resends inside an
//! attempt reuse it; a new attempt, e.g. after a 410, takes the next).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::cluster::{run_leased, Budget, WITHDRAW_TIMEOUT};
use crate::error::Error;
use crate::handler::{Events, Handler};
use crate::sampling::{run_attempt, LogLevel, SampleContext, SampleOutput, SampleSpec};

/// The native state of one `TinkexNative.SamplingClient`.
#[derive(Debug)]
pub struct SamplingClient {
    ctx: Arc<SampleContext>,
    handler: Arc<Handler>,
    /// Next `seq_id`; one per attempt, from 0, as the Python SDK does.
    next_seq: AtomicU64,
    /// This node's share of the cluster budget of the key, when the client
    /// takes part in one: each attempt also holds a permit of it.
    budget: Option<Arc<Budget>>,
}

/// What a finished sample reports besides its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleMeta {
    /// Attempts made (1 when the first succeeded).
    pub attempts: u64,
}

impl SamplingClient {
    /// A client over `ctx`, running samples under `handler`.
    pub fn new(ctx: SampleContext, handler: Arc<Handler>) -> SamplingClient {
        SamplingClient {
            ctx: Arc::new(ctx),
            handler,
            next_seq: AtomicU64::new(0),
            budget: None,
        }
    }

    /// Starts the `seq_id`s at `first` (a clone's base, see
    /// [`crate::cluster::clone_seq_base`]) instead of 0.
    pub fn with_first_seq_id(self, first: u64) -> SamplingClient {
        self.next_seq.store(first, Ordering::Relaxed);
        self
    }

    /// Runs every attempt under a permit of `budget` too (see
    /// [`crate::cluster::run_leased`]).
    pub fn with_budget(mut self, budget: Arc<Budget>) -> SamplingClient {
        self.budget = Some(budget);
        self
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
    /// attempts.
    pub async fn sample(
        &self,
        spec: &SampleSpec,
        events: &dyn Events,
    ) -> (Result<SampleOutput, Error>, SampleMeta) {
        let mut attempts = 0;
        self.log_progress();
        let permit = self.handler.acquire().await;
        // The attempt's state machine (HTTP futures, ~2 KB) is boxed only
        // once a permit is held, so the many samples queued at the
        // semaphore stay small.
        let result = Box::pin(self.handler.execute_with(&permit, events, |_retry| {
            attempts += 1;
            self.attempt(spec)
        }))
        .await;
        drop(permit);
        self.log_progress();
        (result, SampleMeta { attempts })
    }

    async fn attempt(&self, spec: &SampleSpec) -> Result<SampleOutput, Error> {
        let next_seq = || self.next_seq.fetch_add(1, Ordering::Relaxed);
        match &self.budget {
            None => run_attempt(&self.ctx, spec, next_seq()).await,
            Some(b) => run_leased(&self.ctx, spec, b, next_seq, WITHDRAW_TIMEOUT).await,
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
