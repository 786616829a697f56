//! Awaiting results through `POST /api/v1/retrieve_futures`: one session
//! poller per (sampling session, clone) instead of one poll loop per
//! request, when the server's `client/config` says
//! `sample_use_retrieve_futures` (the Python SDK 0.38's
//! `SessionFuturesPoller`).
//!
//! A sample submits as usual, then registers its `request_id` with the
//! poller of its clone (`seq_id / 1e9`) and awaits a oneshot. The poller is
//! one tokio task that long-polls `retrieve_futures` while anyone waits:
//!
//! - the body carries the last answer's cursor (`prev_cursor`) and the ids
//!   whose results were fetched since the last poll
//!   (`retrieved_request_ids`);
//! - with nobody waiting, a poll only reports: `timeout: 0` (answered at
//!   once) and a 5 s HTTP timeout instead of 45 s;
//! - with nobody waiting and nothing to report, the task ends; the next
//!   registration starts it again;
//! - a completion wakes its waiter, which then fetches the result with one
//!   `retrieve_future` under every rule of the poll table
//!   ([`super::poll`]): a `finished` completion with a size reserves that
//!   many bytes of the response budget and asks for the full result at
//!   once; a `failed` one (or one without a size) polls as usual, which
//!   returns the failure with its category;
//! - the fetched result (or failure) is acknowledged on the next poll;
//! - a completion nobody waits for yet (it can arrive before its sample
//!   registered) is kept for its sample for 10 minutes.
//!
//! | poller error | action |
//! |---|---|
//! | connection error, timeout, 408, 409, 429, 5xx, 400 with an empty body | sleep 1 s (`futures_retry`), poll again; no backoff, no bound (the stuck watchdog bounds the samples) |
//! | 402 inside the billing window | sleep 5 s, poll again |
//! | 400 with a body | as retryable, at most 3 times in a row |
//! | anything else (404, 410, 401, 422, a malformed answer …) | terminal |
//!
//! A terminal error fails every sample waiting at that moment at once,
//! with `retrieve_futures polling failed for sampling session S (clone N):
//! …` (not retryable, as in the SDK). Unlike the SDK, the poller does not
//! stay failed: the next sample to register starts a fresh poller (cursor
//! 0), so one bad answer does not fail every later sample of the client.
//!
//! A sample that goes away (its task aborted, the watchdog, a deadline)
//! drops its registration, which removes it from the poller; nothing is
//! left behind.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, Url};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::output::SampleOutput;
use super::submit::bare_400;
use super::{poll, BillingWindow, LogLevel, QueueObserver, SampleContext, SdkMethod, Timings};
use crate::classify::retryable_status;
use crate::error::{Error, ErrorKind};
use crate::http::{Endpoint, IdempotencyKey};
use crate::wire::{FutureCompletion, FuturesAnswer, FuturesRetrieveRequest, FuturesTarget};

/// `seq_id`s of clone `n` start at `n × CLONE_STRIDE`; the poller of a
/// sample is that of `seq_id / CLONE_STRIDE`.
pub const CLONE_STRIDE: u64 = 1_000_000_000;

/// How long a completion that no sample has claimed is kept.
pub const UNCLAIMED_TTL: Duration = Duration::from_secs(600);

/// The session pollers of one sampling client, one per clone id, made on
/// first use.
#[derive(Default)]
pub struct FuturesPollers {
    by_clone: Mutex<HashMap<u64, Arc<Poller>>>,
}

impl fmt::Debug for FuturesPollers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FuturesPollers")
            .field("waiting", &self.waiting())
            .finish()
    }
}

impl FuturesPollers {
    /// The poller of `clone`, made from `ctx` the first time.
    pub fn poller(&self, ctx: &SampleContext, clone: u64) -> Result<Arc<Poller>, Error> {
        let mut map = self.by_clone.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = map.get(&clone) {
            return Ok(p.clone());
        }
        let p = Arc::new(Poller::new(ctx, clone)?);
        map.insert(clone, p.clone());
        Ok(p)
    }

    /// Samples waiting for a completion, over all clones.
    pub fn waiting(&self) -> usize {
        let map = self.by_clone.lock().unwrap_or_else(|p| p.into_inner());
        map.values().map(|p| p.waiting()).sum()
    }
}

/// Waits for `request_id` (submitted as `seq_id`) through its session
/// poller, then fetches its result with one `retrieve_future` under the
/// poll table, and acknowledges it once fetched (result or failure).
pub(crate) async fn await_result(
    ctx: &SampleContext,
    pollers: &FuturesPollers,
    method: SdkMethod,
    seq_id: u64,
    request_id: &str,
) -> Result<SampleOutput, Error> {
    let poller = pollers.poller(ctx, seq_id / CLONE_STRIDE)?;
    let completion = poller.wait_for(request_id).await?;
    let out = poll::poll(ctx, method, request_id, completion.payload_size()).await;
    let fetched = match &out {
        Ok(_) => true,
        Err(e) => e.kind == ErrorKind::RequestFailed,
    };
    if fetched {
        poller.mark_retrieved(request_id);
    }
    out
}

/// The session poller of one (sampling session, clone).
pub struct Poller {
    shared: Arc<Shared>,
}

impl fmt::Debug for Poller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Poller")
            .field("sampling_session_id", &self.shared.sampling_session_id)
            .field("clone", &self.shared.clone)
            .finish_non_exhaustive()
    }
}

struct Shared {
    endpoint: Endpoint,
    url: Url,
    sampling_session_id: Box<str>,
    clone: u64,
    timings: Timings,
    billing: Arc<BillingWindow>,
    observer: Arc<QueueObserver>,
    state: Mutex<State>,
}

type Outcome = Result<FutureCompletion, Error>;

struct Waiter {
    /// Tells this registration from a later one of the same request id.
    id: u64,
    tx: oneshot::Sender<Outcome>,
}

#[derive(Default)]
struct State {
    waiters: HashMap<String, Waiter>,
    next_waiter: u64,
    /// Completions no sample has claimed yet, with when they arrived.
    unclaimed: HashMap<String, (FutureCompletion, Instant)>,
    unclaimed_order: VecDeque<(Instant, String)>,
    /// Fetched ids not yet reported (sorted: the wire order).
    retrieved: BTreeSet<String>,
    cursor: u64,
    /// The highest cursor a completed poll has reported.
    acked_cursor: u64,
    /// Whether the poll task is running.
    running: bool,
}

impl State {
    fn keep_unclaimed(&mut self, c: FutureCompletion, now: Instant) {
        self.unclaimed_order.push_back((now, c.request_id.clone()));
        self.unclaimed.insert(c.request_id.clone(), (c, now));
    }

    fn prune_unclaimed(&mut self, now: Instant) {
        while let Some((at, _)) = self.unclaimed_order.front() {
            if now.saturating_duration_since(*at) < UNCLAIMED_TTL {
                break;
            }
            let (at, id) = self.unclaimed_order.pop_front().expect("peeked");
            if self.unclaimed.get(&id).is_some_and(|(_, t)| *t == at) {
                self.unclaimed.remove(&id);
            }
        }
    }
}

impl Poller {
    /// A poller of `clone` of `ctx`'s sampling session, with `ctx`'s
    /// endpoint, timings, billing window and log sink. Its task starts
    /// with the first registration.
    pub fn new(ctx: &SampleContext, clone: u64) -> Result<Poller, Error> {
        let url = ctx.endpoint.url("/api/v1/retrieve_futures", &[])?;
        Ok(Poller {
            shared: Arc::new(Shared {
                endpoint: ctx.endpoint.clone(),
                url,
                sampling_session_id: ctx.sampling_session_id.clone(),
                clone,
                timings: ctx.timings,
                billing: ctx.billing.clone(),
                observer: ctx.observer.clone(),
                state: Mutex::new(State::default()),
            }),
        })
    }

    /// Waits until the server reports `request_id` complete and returns
    /// its completion, or the poller's terminal error. Dropping the future
    /// deregisters it. Must run inside a tokio runtime (it may start the
    /// poll task).
    pub async fn wait_for(&self, request_id: &str) -> Outcome {
        let (id, rx) = {
            let mut st = self.shared.lock();
            if let Some((c, _)) = st.unclaimed.remove(request_id) {
                return Ok(c);
            }
            let (tx, rx) = oneshot::channel();
            let id = st.next_waiter;
            st.next_waiter += 1;
            st.waiters.insert(request_id.to_owned(), Waiter { id, tx });
            Shared::ensure_running(&self.shared, &mut st);
            (id, rx)
        };
        let _registration = Registration {
            shared: &self.shared,
            request_id,
            id,
        };
        rx.await.unwrap_or_else(|_| {
            // The task ended without answering: only a panic does that,
            // and its guard answers first; kept as a clear error anyway.
            Err(self
                .shared
                .stopped_error()
                .with_request_id(request_id.to_owned()))
        })
    }

    /// Reports `request_id`'s result as fetched on the next poll.
    pub fn mark_retrieved(&self, request_id: &str) {
        let mut st = self.shared.lock();
        st.retrieved.insert(request_id.to_owned());
        Shared::ensure_running(&self.shared, &mut st);
    }

    /// Samples registered and waiting.
    pub fn waiting(&self) -> usize {
        self.shared.lock().waiters.len()
    }

    /// Whether the poll task is running.
    pub fn is_running(&self) -> bool {
        self.shared.lock().running
    }
}

/// Removes its waiter on drop (a no-op once the poller answered it).
struct Registration<'a> {
    shared: &'a Shared,
    request_id: &'a str,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if st
            .waiters
            .get(self.request_id)
            .is_some_and(|w| w.id == self.id)
        {
            st.waiters.remove(self.request_id);
        }
    }
}

/// Why one poll did not give an answer.
enum Failure {
    /// Sleep this long and poll again.
    Retry(Duration),
    /// A 400 with a body: retried a few times, then terminal.
    BadRequest(Error),
    /// The poller is done.
    Terminal(Error),
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ensure_running(this: &Arc<Shared>, st: &mut State) {
        if !st.running {
            st.running = true;
            tokio::spawn(run(this.clone()));
        }
    }

    fn stopped_error(&self) -> Error {
        Error::new(
            ErrorKind::Internal,
            format!(
                "the retrieve_futures poller of sampling session {} (clone {}) stopped unexpectedly",
                self.sampling_session_id, self.clone
            ),
        )
    }

    fn body(&self, prev_cursor: u64, retrieved: &[String], ack_only: bool) -> Result<Bytes, Error> {
        serde_json::to_vec(&FuturesRetrieveRequest {
            target: FuturesTarget {
                kind: "sampling_session",
                sampling_session_id: &self.sampling_session_id,
                cloned_sampler_id: self.clone,
            },
            prev_cursor,
            retrieved_request_ids: retrieved,
            timeout: ack_only.then_some(0.0),
        })
        .map(Bytes::from)
        .map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("encoding retrieve_futures: {e}"),
            )
        })
    }

    /// One `retrieve_futures` request.
    async fn poll_once(
        &self,
        prev_cursor: u64,
        retrieved: &[String],
        ack_only: bool,
    ) -> Result<FuturesAnswer, Failure> {
        let t = &self.timings;
        let body = self
            .body(prev_cursor, retrieved, ack_only)
            .map_err(Failure::Terminal)?;
        let timeout = if ack_only {
            t.futures_ack_timeout
        } else {
            t.futures_poll_timeout
        };
        let rb = self
            .endpoint
            .request_url(Method::POST, self.url.clone(), &IdempotencyKey::new(), 0)
            .timeout(timeout)
            .body(body);
        let reply = match self.endpoint.send(rb).await {
            Ok(r) => r,
            Err(e) if matches!(e.kind, ErrorKind::Transport | ErrorKind::Timeout) => {
                return Err(Failure::Retry(t.futures_retry))
            }
            Err(e) => return Err(Failure::Terminal(e)),
        };
        let code = reply.code();
        if reply.status.is_success() {
            return reply.json().map_err(Failure::Terminal);
        }
        if code == 402 && self.billing.on_402(&reply.detail(), t, &self.observer) {
            return Err(Failure::Retry(t.billing_pause));
        }
        if retryable_status(code) || bare_400(&reply).is_some() {
            return Err(Failure::Retry(t.futures_retry));
        }
        if code == 400 {
            return Err(Failure::BadRequest(reply.to_error()));
        }
        Err(Failure::Terminal(reply.to_error()))
    }

    /// Records an answer to the poll sent with `prev_cursor` and
    /// `retrieved`, and wakes the waiters it completes.
    fn on_answer(&self, prev_cursor: u64, retrieved: &[String], answer: FuturesAnswer) {
        let mut served = Vec::new();
        {
            let mut st = self.lock();
            for id in retrieved {
                st.retrieved.remove(id);
            }
            st.acked_cursor = st.acked_cursor.max(prev_cursor);
            st.cursor = answer.cursor;
            let now = Instant::now();
            for c in answer.completions {
                match st.waiters.remove(&c.request_id) {
                    Some(w) => served.push((w, c)),
                    None => st.keep_unclaimed(c, now),
                }
            }
            st.prune_unclaimed(now);
        }
        for (w, c) in served {
            let _ = w.tx.send(Ok(c));
        }
    }

    /// Ends this poller with `cause`: every waiter gets the error now, and
    /// the next registration starts a fresh poller.
    fn fail(&self, cause: Error) {
        let mut e = cause;
        e.message = format!(
            "retrieve_futures polling failed for sampling session {} (clone {}): {}",
            self.sampling_session_id, self.clone, e.message
        );
        e.retryable = false;
        self.observer.log(LogLevel::Error, &e.message);
        let waiters = {
            let mut st = self.lock();
            st.running = false;
            st.cursor = 0;
            st.acked_cursor = 0;
            std::mem::take(&mut st.waiters)
        };
        for (request_id, w) in waiters {
            let _ = w.tx.send(Err(e.clone().with_request_id(request_id)));
        }
    }
}

/// Marks the task stopped and answers its waiters if the task ends any
/// other way than through its loop (a panic, the runtime shutting down).
struct RunGuard {
    shared: Arc<Shared>,
    armed: bool,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let waiters = {
            let mut st = self.shared.lock();
            st.running = false;
            std::mem::take(&mut st.waiters)
        };
        let e = self.shared.stopped_error();
        for (request_id, w) in waiters {
            let _ = w.tx.send(Err(e.clone().with_request_id(request_id)));
        }
    }
}

/// The poll task: polls while anyone waits or anything is left to report.
async fn run(shared: Arc<Shared>) {
    let mut guard = RunGuard {
        shared: shared.clone(),
        armed: true,
    };
    let mut bad_requests: u32 = 0;
    loop {
        let (prev_cursor, retrieved, ack_only) = {
            let mut st = shared.lock();
            if st.waiters.is_empty() && st.retrieved.is_empty() && st.cursor <= st.acked_cursor {
                // Checked and stopped under one lock: a registration after
                // this sees `running == false` and starts a new task.
                st.running = false;
                guard.armed = false;
                return;
            }
            let retrieved: Vec<String> = st.retrieved.iter().cloned().collect();
            (st.cursor, retrieved, st.waiters.is_empty())
        };
        match shared.poll_once(prev_cursor, &retrieved, ack_only).await {
            Ok(answer) => {
                bad_requests = 0;
                shared.on_answer(prev_cursor, &retrieved, answer);
            }
            Err(Failure::Retry(d)) => tokio::time::sleep(d).await,
            Err(Failure::BadRequest(_)) if bad_requests < poll::MAX_BAD_REQUEST_RETRIES => {
                bad_requests += 1;
                tokio::time::sleep(shared.timings.futures_retry).await;
            }
            Err(Failure::BadRequest(e) | Failure::Terminal(e)) => {
                guard.armed = false;
                shared.fail(e);
                return;
            }
        }
    }
}
