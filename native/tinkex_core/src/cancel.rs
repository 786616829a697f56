//! Announcing abandoned samples on `POST /api/v1/cancel_future`.
//!
//! A sample abandoned while its future is polled — its caller cancelled
//! it or died, its deadline passed, the watchdog declared it stuck — would
//! keep the server busy until the session's heartbeats lapse. When the
//! dynamic flag `sample_cancel_enabled` is on, the client tells the server
//! instead, as the Python SDK does:
//!
//! - the attempt holds a [`CancelGuard`] from the moment `asample` named the
//!   future until polling ended; a guard dropped before that (the sample's
//!   future was dropped) queues the request id;
//! - one [`CancelDrain`] per client sends the queue: it takes what is queued,
//!   up to `sample_cancel_max_batch_size` ids, sends one
//!   `{"request_id": …}` call per id, all at once, waits for the round to
//!   finish, and starts the next round;
//! - each call is resent on transient failures (1, 2, 4 … 30 s, for up to
//!   300 s, as the SDK's `execute_with_retries`); a failure is only logged
//!   (the heartbeat expiry still stops the work).
//!
//! The flag is read when the id is queued, the batch size when a round
//! starts, both from [`DynamicFlags`].
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::{Arc, Mutex};
//! use tinkex_core::cancel::CancelAnnouncer;
//! use tinkex_core::dynamic_config::{DynamicConfig, DynamicFlags};
//!
//! let flags = Arc::new(DynamicFlags::new(&DynamicConfig {
//!     sample_cancel_enabled: true,
//!     ..DynamicConfig::default()
//! }));
//! let (announcer, drain) = CancelAnnouncer::new(flags);
//! drop(announcer.guard("req-1")); // abandoned: announced
//! announcer.guard("req-2").disarm(); // polling ended: nothing to do
//! drop(announcer);
//! let sent = Arc::new(Mutex::new(Vec::new()));
//! let s = sent.clone();
//! drain
//!     .run(move |id| {
//!         s.lock().unwrap().push(id.to_string());
//!         async { Ok(()) }
//!     })
//!     .await; // ends once every announcer is gone and the queue is empty
//! assert_eq!(*sent.lock().unwrap(), ["req-1"]);
//! # });
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use reqwest::Method;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::dynamic_config::DynamicFlags;
use crate::error::{Error, ErrorKind};
use crate::http::{Endpoint, IdempotencyKey};
use crate::sampling::Timings;

#[derive(Debug, Default)]
struct Counters {
    announced: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
}

/// What a client's announcer has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CancelStats {
    /// Request ids queued for `cancel_future`.
    pub announced: u64,
    /// `cancel_future` calls the server accepted.
    pub sent: u64,
    /// Calls that failed for good (logged, not repeated).
    pub failed: u64,
}

/// Queues the request ids of abandoned samples for a [`CancelDrain`].
/// Cheap to use from any thread: queueing is one channel send.
#[derive(Debug)]
pub struct CancelAnnouncer {
    /// `None` when no drain exists: nothing is ever announced.
    tx: Option<mpsc::UnboundedSender<Box<str>>>,
    flags: Arc<DynamicFlags>,
    counters: Arc<Counters>,
}

/// Sends the ids queued by the [`CancelAnnouncer`]s of one client; see
/// [`CancelDrain::run`].
#[derive(Debug)]
pub struct CancelDrain {
    rx: mpsc::UnboundedReceiver<Box<str>>,
    flags: Arc<DynamicFlags>,
    counters: Arc<Counters>,
}

impl CancelAnnouncer {
    /// An announcer governed by `flags`, and the drain that sends what it
    /// queues.
    pub fn new(flags: Arc<DynamicFlags>) -> (CancelAnnouncer, CancelDrain) {
        let (tx, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let drain = CancelDrain {
            rx,
            flags: flags.clone(),
            counters: counters.clone(),
        };
        let announcer = CancelAnnouncer {
            tx: Some(tx),
            flags,
            counters,
        };
        (announcer, drain)
    }

    /// An announcer with no drain: it announces nothing (a context that
    /// never started its background work).
    pub fn detached(flags: Arc<DynamicFlags>) -> CancelAnnouncer {
        CancelAnnouncer {
            tx: None,
            flags,
            counters: Arc::new(Counters::default()),
        }
    }

    /// The flags that govern it.
    pub fn flags(&self) -> &Arc<DynamicFlags> {
        &self.flags
    }

    /// Queues `request_id` when cancels are enabled; true when queued.
    pub fn announce(&self, request_id: &str) -> bool {
        if !self.flags.cancel_enabled() {
            return false;
        }
        let queued = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send(request_id.into()).is_ok());
        if queued {
            self.counters.announced.fetch_add(1, Ordering::Relaxed);
        }
        queued
    }

    /// A guard that announces `request_id` when dropped without
    /// [`CancelGuard::disarm`]: hold it while the future is polled.
    pub fn guard<'a>(&'a self, request_id: &'a str) -> CancelGuard<'a> {
        CancelGuard {
            announcer: self,
            request_id,
            armed: true,
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> CancelStats {
        let c = &self.counters;
        CancelStats {
            announced: c.announced.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }
}

/// Announces its request id when dropped while armed: the attempt that
/// held it was abandoned mid-poll.
#[must_use = "dropping the guard at once announces the request"]
#[derive(Debug)]
pub struct CancelGuard<'a> {
    announcer: &'a CancelAnnouncer,
    request_id: &'a str,
    armed: bool,
}

impl CancelGuard<'_> {
    /// Polling ended (with a result or an error): nothing to announce.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.announcer.announce(self.request_id);
        }
    }
}

impl CancelDrain {
    /// Sends queued ids with `send` in rounds of at most
    /// `sample_cancel_max_batch_size` concurrent calls, until every
    /// [`CancelAnnouncer`] is gone and the queue is empty. Spawns the calls
    /// of a round on the current runtime. `send`'s error counts the call as
    /// failed; logging it is `send`'s business.
    pub async fn run<F, Fut>(mut self, send: F)
    where
        F: Fn(Box<str>) -> Fut,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        while let Some(first) = self.rx.recv().await {
            let max = self.flags.cancel_max_batch();
            let mut round = JoinSet::new();
            round.spawn(send(first));
            while round.len() < max {
                match self.rx.try_recv() {
                    Ok(id) => {
                        round.spawn(send(id));
                    }
                    Err(_) => break,
                }
            }
            while let Some(done) = round.join_next().await {
                let counter = match done {
                    Ok(Ok(())) => &self.counters.sent,
                    _ => &self.counters.failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[derive(Serialize)]
struct CancelFutureRequest<'a> {
    request_id: &'a str,
}

/// `POST /api/v1/cancel_future` `{"request_id": …}`, each send limited to
/// `timings.cancel_timeout`, resent as [`resend_transient`] says.
pub async fn send_cancel(ep: &Endpoint, timings: &Timings, request_id: &str) -> Result<(), Error> {
    let body = serde_json::to_vec(&CancelFutureRequest { request_id })
        .map(Bytes::from)
        .map_err(|e| Error::new(ErrorKind::Internal, format!("encoding cancel_future: {e}")))?;
    let url = ep.url("/api/v1/cancel_future", &[])?;
    resend_transient(timings, || {
        let rb = ep
            .request_url(Method::POST, url.clone(), &IdempotencyKey::new(), 0)
            .timeout(timings.cancel_timeout)
            .body(body.clone());
        async move {
            let reply = ep.send(rb).await?;
            if reply.status.is_success() {
                Ok(())
            } else {
                Err(reply.to_error())
            }
        }
    })
    .await
}

/// Runs `once` until it succeeds, resending after a retryable error
/// (connection error, timeout, 408, 409, 429, 5xx) after
/// `timings.submit_backoff(n)` — 1, 2, 4 … 30 s — until
/// `timings.submit_total` (300 s) has passed: the Python SDK's
/// `execute_with_retries`.
pub async fn resend_transient<F, Fut>(timings: &Timings, mut once: F) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    let started = Instant::now();
    let mut n: u32 = 0;
    loop {
        let e = match once().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let elapsed = started.elapsed();
        if !e.retryable || elapsed >= timings.submit_total {
            return Err(e);
        }
        let d = timings
            .submit_backoff(n)
            .min(timings.submit_total - elapsed);
        n = n.saturating_add(1);
        tokio::time::sleep(d).await;
    }
}

#[cfg(test)]
mod tests;
