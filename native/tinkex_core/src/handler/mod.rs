//! The retry handler: one per `{name, RetryConfig}`.
//!
//! A handler owns a FIFO semaphore of `max_connections` permits (none when
//! unbounded), live counters, the progress clock and one watchdog timer.
//! [`Handler::execute`] runs an async operation under it — wait for a
//! permit, attempt, classify the failure with the config's rule, sleep the
//! corrected backoff, attempt again — and turns "no success anywhere in
//! this handler for `progress_timeout`" into the stuck error for every
//! in-flight execution at once, as the official Python SDK does.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use tinkex_core::config::RetryConfig;
//! use tinkex_core::error::Error;
//! use tinkex_core::handler::{Handler, NoEvents};
//!
//! let config = RetryConfig { base_delay_ms: 1, max_delay_ms: 2, ..Default::default() };
//! let handler = Handler::get("session-1", config);
//! let mut calls = 0;
//! let result = handler
//!     .execute(&NoEvents, |_attempt| {
//!         calls += 1;
//!         let ok = calls == 3;
//!         async move { if ok { Ok("done") } else { Err(Error::http(503, "busy")) } }
//!     })
//!     .await;
//! assert_eq!(result, Ok("done"));
//! assert_eq!(handler.stats().retries, 2);
//! # });
//! ```

mod cache;
mod counters;
mod events;
mod permit;
mod progress;
mod signal;
mod watchdog;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::config::RetryConfig;
use crate::error::{Error, ErrorKind};

pub use cache::live_handlers;
pub use counters::Stats;
pub use events::{Events, NoEvents, RetryEvent};
pub use permit::Permit;
pub use progress::{ProgressReport, PROGRESS_INTERVAL};
pub use signal::OnStuck;

use counters::{Counters, Gauge};
use signal::StuckSignal;

/// The retry handler of one sampling session (or any named workload).
pub struct Handler {
    name: String,
    config: RetryConfig,
    /// `None` when `max_connections` is `nil`.
    semaphore: Option<Arc<Semaphore>>,
    counters: Counters,
    /// Origin of `last_progress_us`.
    epoch: Instant,
    /// Last success, or the moment the handler last became busy, in µs
    /// after `epoch`. The watchdog's deadline is this plus the timeout.
    last_progress_us: AtomicU64,
    /// When the last progress report was claimed, µs after `epoch`.
    last_report_us: AtomicU64,
    /// processed + failed + retries at the last progress report.
    reported_events: AtomicU64,
    /// Stuck signals of the executions holding a permit, by permit id.
    in_flight: Mutex<HashMap<u64, Arc<StuckSignal>>>,
    next_id: AtomicU64,
    /// Wakes the watchdog when the handler becomes busy or is dropped.
    watchdog_wake: Arc<Notify>,
    watchdog_started: AtomicBool,
    /// Points where tests force an interleaving of `enter` and `check`.
    #[cfg(test)]
    hooks: tests::Hooks,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Handler {
    /// The handler for `{name, config}`: the same one (same semaphore) for
    /// an equal config while any user holds it; a new one otherwise.
    pub fn get(name: &str, config: RetryConfig) -> Arc<Handler> {
        cache::get(name, config)
    }

    /// A handler of its own, not shared through the cache.
    pub fn new(name: &str, config: RetryConfig) -> Handler {
        let semaphore = config
            .max_connections
            .map(|n| Arc::new(Semaphore::new(permits_of(n))));
        Handler {
            name: name.to_owned(),
            config,
            semaphore,
            counters: Counters::default(),
            epoch: Instant::now(),
            last_progress_us: AtomicU64::new(0),
            last_report_us: AtomicU64::new(0),
            reported_events: AtomicU64::new(0),
            in_flight: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            watchdog_wake: Arc::new(Notify::new()),
            watchdog_started: AtomicBool::new(false),
            #[cfg(test)]
            hooks: tests::Hooks::default(),
        }
    }

    /// The handler's name (the sampling session id for samples).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The handler's configuration.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// Waits for a permit (FIFO) and enters the handler. Counts as waiting
    /// meanwhile; dropping the future midway leaves no trace.
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        let waiting = Gauge::up(&self.counters.waiting);
        let sem = match &self.semaphore {
            // The semaphore is never closed, so acquire cannot fail.
            Some(s) => s.clone().acquire_owned().await.ok(),
            None => None,
        };
        drop(waiting);
        self.enter(sem)
    }

    fn enter(self: &Arc<Self>, sem: Option<tokio::sync::OwnedSemaphorePermit>) -> Permit {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let signal = Arc::new(StuckSignal::default());
        if !self.config.enable_stuck_detection {
            // No watchdog, so nothing can see the steps apart.
            if self.counters.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
                self.mark_progress();
            }
            return Permit::new(self.clone(), id, signal, sem);
        }
        // Under the lock the watchdog's check holds from reading the count
        // to draining the executions: it sees this one either not yet in
        // flight, or in flight with its fresh progress window and
        // registered — never counted with a stale clock.
        let mut in_flight = self.lock_in_flight();
        // An idle handler starts a fresh progress window, so time spent
        // idle never counts against the next request.
        let was_idle = self.counters.in_flight.fetch_add(1, Ordering::AcqRel) == 0;
        #[cfg(test)]
        self.hooks.run(&self.hooks.entering);
        if was_idle {
            self.mark_progress();
        }
        in_flight.insert(id, signal.clone());
        drop(in_flight);
        self.ensure_watchdog();
        if was_idle {
            // The watchdog sleeps while idle; it must start timing now.
            self.watchdog_wake.notify_one();
        }
        Permit::new(self.clone(), id, signal, sem)
    }

    fn leave(&self, id: u64) {
        if self.config.enable_stuck_detection {
            self.lock_in_flight().remove(&id);
        }
        self.counters.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<StuckSignal>>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn mark_progress(&self) {
        self.last_progress_us
            .fetch_max(self.now_us(), Ordering::AcqRel);
    }

    /// Records one success: the progress clock moves and `processed` grows.
    pub fn record_success(&self) {
        self.counters.processed.fetch_add(1, Ordering::Relaxed);
        self.mark_progress();
    }

    /// Records one failed attempt of an execution driven from outside
    /// [`Handler::execute`] (the Elixir `execute/3`): `retried` tells
    /// whether a retry follows or the execution failed for good.
    pub fn record_failure(&self, label: String, retried: bool) {
        self.counters.note_error(label);
        if retried {
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The stuck error of this handler.
    pub fn stuck_error(&self) -> Error {
        Error::stuck(self.config.progress_timeout_ms)
    }

    /// Runs `attempt` under the handler: permit, retry loop, watchdog.
    /// `attempt` gets the retry number (0 for the first attempt).
    pub async fn execute<T, F, Fut>(
        self: &Arc<Self>,
        events: &dyn Events,
        attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut(u64) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let permit = self.acquire().await;
        self.execute_with(&permit, events, attempt).await
    }

    /// [`Handler::execute`] with a permit the caller already holds.
    pub async fn execute_with<T, F, Fut>(
        self: &Arc<Self>,
        permit: &Permit,
        events: &dyn Events,
        attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut(u64) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let result = tokio::select! {
            biased;
            _ = permit.stuck() => {
                let e = self.stuck_error();
                self.record_failure(label_of(&e), false);
                Err(e)
            }
            r = self.retry_loop(events, attempt) => r,
        };
        if result.is_ok() {
            self.record_success();
        }
        result
    }

    async fn retry_loop<T, F, Fut>(&self, events: &dyn Events, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut(u64) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let start = Instant::now();
        let backoff = self.config.backoff();
        let mut retries = 0u64;
        loop {
            let mut e = match attempt(retries).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            // The config's rule classifies what the layer below left open;
            // a verdict of that layer that rules a new attempt out stands.
            e.retryable = !e.fatal && self.config.is_retryable(&e);
            let retry = e.retryable && self.config.may_retry(retries);
            let delay_ms = retry.then(|| backoff.sample_ms(retries, &mut rand::rng()));
            self.record_failure(label_of(&e), retry);
            events.attempt_failed(&RetryEvent {
                handler: &self.name,
                error: &e,
                attempt: retries + 1,
                delay_ms,
                elapsed: start.elapsed(),
            });
            let Some(delay_ms) = delay_ms else {
                return Err(e);
            };
            retries += 1;
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
    }

    /// The live counters.
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let since = self
            .now_us()
            .saturating_sub(self.last_progress_us.load(Ordering::Acquire));
        Stats {
            waiting: c.waiting.load(Ordering::Relaxed),
            in_flight: c.in_flight.load(Ordering::Relaxed),
            processed: c.processed.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            stuck_events: c.stuck_events.load(Ordering::Relaxed),
            available_permits: self
                .semaphore
                .as_ref()
                .map(|s| s.available_permits() as u64),
            max_connections: self.config.max_connections,
            ms_since_progress: since / 1000,
            errors: c.peek_errors(),
        }
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        // Lets the watchdog notice that its handler is gone and end.
        self.watchdog_wake.notify_one();
    }
}

/// The semaphore size for `max_connections`, within tokio's limit.
fn permits_of(n: u64) -> usize {
    usize::try_from(n)
        .unwrap_or(usize::MAX)
        .min(Semaphore::MAX_PERMITS)
}

/// The key an error is counted under in `stats().errors`.
pub fn label_of(e: &Error) -> String {
    match (e.kind, e.status) {
        (ErrorKind::Http, Some(s)) => format!("http {s}"),
        (kind, _) => kind.as_str().to_owned(),
    }
}

#[cfg(test)]
mod tests;
