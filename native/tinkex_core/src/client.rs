//! A sampling client's native half: the shared [`SampleContext`], the retry
//! [`Handler`] and the `seq_id` counter — everything one sample needs.
//!
//! One sample = one handler permit + the retry loop over attempts; one
//! attempt = [`run_attempt`] with a fresh `seq_id` (resends inside an
//! attempt reuse it; a new attempt, e.g. after a 410, takes the next).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::Error;
use crate::handler::{Events, Handler};
use crate::sampling::{run_attempt, LogLevel, SampleContext, SampleOutput, SampleSpec};

/// The native state of one `TinkexNative.SamplingClient`.
#[derive(Debug)]
pub struct SamplingClient {
    ctx: Arc<SampleContext>,
    handler: Arc<Handler>,
    /// Next `seq_id`; one per attempt, from the client's base (0 for the
    /// client that created the sampling session, see `crate::seq_base`).
    next_seq: AtomicU64,
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
        }
    }

    /// Starts this client's `seq_id`s at `first` (a clone's base, from
    /// [`crate::seq_base::SeqBases::claim_for`]) instead of 0.
    pub fn starting_at(self, first: u64) -> SamplingClient {
        self.next_seq.store(first, Ordering::Relaxed);
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
            let seq_id = self.next_seq.fetch_add(1, Ordering::Relaxed);
            run_attempt(&self.ctx, spec, seq_id)
        }))
        .await;
        drop(permit);
        self.log_progress();
        (result, SampleMeta { attempts })
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
