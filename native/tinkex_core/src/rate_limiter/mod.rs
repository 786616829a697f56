//! The shared 429 backoff of one `{base_url, api_key}` pair.
//!
//! When any request of any client gets a 429 on submit, every request to
//! the same service with the same key must hold off until the backoff
//! deadline. The deadline lives in one atomic on the monotonic clock:
//! setting it never shortens a later deadline (compare-and-swap), clearing
//! it ends the backoff, and waiting is one exact sleep to the deadline —
//! not a polling loop like the Python SDK's 1 s or the old Elixir SDK's
//! 100 ms checks.
//!
//! ```
//! use std::time::Duration;
//! use tinkex_core::rate_limiter::RateLimiter;
//!
//! let a = RateLimiter::for_key("https://example.test", "tml-key");
//! let b = RateLimiter::for_key("https://example.test", "tml-key");
//! assert!(std::sync::Arc::ptr_eq(&a, &b));
//! a.set_backoff(Duration::from_millis(200));
//! assert!(b.remaining() > Duration::from_millis(100));
//! b.clear();
//! assert_eq!(a.remaining(), Duration::ZERO);
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio::time::Instant;

mod probe;
mod remote;
pub use probe::Probe;
pub use remote::{LimiterEvent, Listener, ProbeState};

/// How long before the deadline [`RateLimiter::wait_then`] hands its
/// wait to the precise timer thread. Generous: a tokio worker that is
/// descheduled for a few ms must not make the hand-over itself late.
pub const WAKE_HANDOVER: Duration = Duration::from_millis(20);

/// Deadline value meaning "no backoff".
const NONE: u64 = 0;

/// A shared backoff deadline. Obtain the one for a service and key with
/// [`RateLimiter::for_key`]; clones of the `Arc` share the deadline.
#[derive(Debug)]
pub struct RateLimiter {
    /// Origin of the deadline clock; deadlines are microseconds after it,
    /// plus one so that `0` can mean "none".
    epoch: Instant,
    /// The backoff deadline (`NONE` when there is no backoff). Only moves
    /// later through `set_backoff`, or to `NONE` through `clear`.
    deadline_us: AtomicU64,
    /// Wakes waiters when the backoff is cleared early, or a probe ends.
    changed: Notify,
    /// Set by every backoff; cleared by `clear` or a probe that got
    /// through. While set, an expired backoff lets one probe request go
    /// first (see [`RateLimiter::wait_turn`]).
    tripped: AtomicBool,
    /// A probe request is in flight.
    probing: AtomicBool,
    /// Another node of the cluster probes for everyone (see `remote.rs`).
    remote_probe: AtomicBool,
    /// Told about local backoffs and passed probes (the cluster layer).
    listener: remote::ListenerSlot,
}

/// The registry key: a SHA-256 of the base URL and the API key, so the key
/// itself is never kept in plain text.
type Key = [u8; 32];

fn registry() -> &'static Mutex<HashMap<Key, Arc<RateLimiter>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<Key, Arc<RateLimiter>>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

fn key_of(base_url: &str, api_key: &str) -> Key {
    let mut h = Sha256::new();
    h.update(base_url.trim_end_matches('/').as_bytes());
    h.update([0u8]);
    h.update(api_key.as_bytes());
    h.finalize().into()
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::new()
    }
}

impl RateLimiter {
    /// A limiter of its own, shared with nobody. Most callers want
    /// [`RateLimiter::for_key`].
    pub fn new() -> RateLimiter {
        RateLimiter {
            epoch: Instant::now(),
            deadline_us: AtomicU64::new(NONE),
            changed: Notify::new(),
            tripped: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            remote_probe: AtomicBool::new(false),
            listener: remote::ListenerSlot::default(),
        }
    }

    /// The one limiter of the process for `{base_url, api_key}` (a trailing
    /// `/` of the URL does not make another limiter).
    pub fn for_key(base_url: &str, api_key: &str) -> Arc<RateLimiter> {
        let key = key_of(base_url, api_key);
        let mut map = registry().lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key)
            .or_insert_with(|| Arc::new(RateLimiter::new()))
            .clone()
    }

    /// How many limiters the registry holds (one per pair ever used).
    pub fn registry_len() -> usize {
        registry().lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn now_us(&self) -> u64 {
        let d = Instant::now().saturating_duration_since(self.epoch);
        u64::try_from(d.as_micros()).unwrap_or(u64::MAX - 1) + 1
    }

    fn instant_of(&self, deadline_us: u64) -> Instant {
        // A saturated deadline (a backoff of `Duration::MAX`) does not fit
        // in an `Instant`; a century away is "never" for every purpose here.
        let far = Duration::from_secs(100 * 365 * 24 * 3600);
        let d = Duration::from_micros(deadline_us - 1).min(far);
        self.epoch.checked_add(d).unwrap_or(self.epoch + far)
    }

    /// Backs off for `d` from now, unless a later deadline is already set
    /// (a backoff is never shortened). Returns the deadline in force.
    pub fn set_backoff(&self, d: Duration) -> Instant {
        let (deadline, moved) = self.extend(d);
        if moved {
            self.emit(LimiterEvent::Backoff(d));
        }
        deadline
    }

    /// [`RateLimiter::set_backoff`] without telling the listener; `true`
    /// when the deadline moved.
    fn extend(&self, d: Duration) -> (Instant, bool) {
        self.tripped.store(true, Ordering::Release);
        let wanted = self
            .now_us()
            .saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let mut current = self.deadline_us.load(Ordering::Acquire);
        loop {
            if current != NONE && current >= wanted {
                return (self.instant_of(current), false);
            }
            match self.deadline_us.compare_exchange_weak(
                current,
                wanted,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return (self.instant_of(wanted), true),
                Err(actual) => current = actual,
            }
        }
    }

    /// Ends the backoff now and wakes every waiter.
    pub fn clear(&self) {
        let had = self.deadline_us.swap(NONE, Ordering::AcqRel) != NONE;
        if self.tripped.swap(false, Ordering::AcqRel) || had {
            self.changed.notify_waiters();
        }
    }

    /// Time left until the deadline; zero when there is no backoff.
    pub fn remaining(&self) -> Duration {
        let dl = self.deadline_us.load(Ordering::Acquire);
        if dl == NONE {
            return Duration::ZERO;
        }
        Duration::from_micros(dl.saturating_sub(self.now_us()))
    }

    /// The deadline in force, if any is still in the future.
    pub fn deadline(&self) -> Option<Instant> {
        let dl = self.deadline_us.load(Ordering::Acquire);
        (dl != NONE && dl > self.now_us()).then(|| self.instant_of(dl))
    }

    /// Waits out the backoff: one sleep to the deadline, again only if the
    /// deadline moved later meanwhile; returns at once when there is none,
    /// and early when the backoff is cleared. Uses tokio's timer (1 ms
    /// granularity, so it follows a paused test clock); the NIF uses the
    /// more precise [`RateLimiter::wait_then`], submits
    /// [`RateLimiter::wait_turn`].
    pub async fn wait(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Register for `clear` before reading the deadline, so a clear
            // between the read and the sleep is not missed.
            notified.as_mut().enable();
            let Some(deadline) = self.deadline() else {
                return;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = &mut notified => {}
            }
        }
    }

    /// Calls `done` once the backoff is over: at once when there is none,
    /// else from the precise timer thread at the deadline (re-armed if the
    /// deadline moved later), so a message sent by `done` leaves within
    /// microseconds of it, without a hop through a tokio worker. Clearing
    /// the backoff ends the wait early, except in its last
    /// [`WAKE_HANDOVER`].
    pub async fn wait_then<F>(self: &Arc<Self>, done: F)
    where
        F: FnOnce() + Send + 'static,
    {
        let mut done: crate::precise_sleep::Callback = Box::new(done);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let Some(deadline) = self.deadline() else {
                return done();
            };
            let handover = deadline.checked_sub(WAKE_HANDOVER);
            if let Some(coarse) = handover.filter(|c| *c > Instant::now()) {
                tokio::select! {
                    _ = tokio::time::sleep_until(coarse) => {}
                    _ = &mut notified => {}
                }
                continue;
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            let me = Arc::clone(self);
            crate::precise_sleep::call_at(
                deadline.into_std(),
                Box::new(move || {
                    // Still backing off (the deadline moved): hand `done` back.
                    let back = match me.deadline() {
                        None => {
                            done();
                            None
                        }
                        Some(_) => Some(done),
                    };
                    let _ = tx.send(back);
                }),
            );
            match rx.await {
                Ok(Some(f)) => done = f,
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wait_sleeps_until_deadline() {
        let rl = RateLimiter::new();
        let start = Instant::now();
        rl.set_backoff(Duration::from_millis(300));
        rl.wait().await;
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn never_shortens_and_extends() {
        let rl = Arc::new(RateLimiter::new());
        let start = Instant::now();
        rl.set_backoff(Duration::from_millis(500));
        rl.set_backoff(Duration::from_millis(100));
        assert!(rl.remaining() >= Duration::from_millis(499));
        let rl2 = rl.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            rl2.set_backoff(Duration::from_millis(700));
        });
        rl.wait().await;
        assert_eq!(start.elapsed(), Duration::from_millis(900));
    }

    #[tokio::test(start_paused = true)]
    async fn clear_wakes_waiters() {
        let rl = Arc::new(RateLimiter::new());
        let start = Instant::now();
        rl.set_backoff(Duration::from_secs(10));
        let rl2 = rl.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            rl2.clear();
        });
        rl.wait().await;
        assert_eq!(start.elapsed(), Duration::from_millis(50));
        assert_eq!(rl.remaining(), Duration::ZERO);
    }

    #[test]
    fn registry_shares_by_key() {
        let a = RateLimiter::for_key("http://x.test/", "tml-a");
        let b = RateLimiter::for_key("http://x.test", "tml-a");
        let c = RateLimiter::for_key("http://x.test", "tml-b");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_goes_first_after_a_backoff() {
        let rl = Arc::new(RateLimiter::new());
        assert!(rl.wait_turn().await.is_none(), "never tripped: free");
        rl.set_backoff(Duration::from_millis(100));
        let probe = rl
            .wait_turn()
            .await
            .expect("first after the backoff probes");
        let rl2 = rl.clone();
        let follower = tokio::spawn(async move { rl2.wait_turn().await.is_none() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!follower.is_finished(), "waits behind the probe");
        probe.passed();
        assert!(
            follower.await.unwrap(),
            "released, with no probe of its own"
        );
        assert!(rl.wait_turn().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_meets_a_429_puts_everyone_back_to_sleep() {
        let rl = Arc::new(RateLimiter::new());
        rl.set_backoff(Duration::from_millis(100));
        let probe = rl.wait_turn().await.unwrap();
        let rl2 = rl.clone();
        let start = Instant::now();
        let follower = tokio::spawn(async move {
            let p = rl2.wait_turn().await;
            (p.is_some(), Instant::now())
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        rl.set_backoff(Duration::from_millis(200));
        drop(probe);
        let (probed, at) = follower.await.unwrap();
        assert!(probed, "the follower probes next");
        assert!(at.duration_since(start) >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn wait_then_calls_at_the_deadline_and_follows_extensions() {
        let rl = Arc::new(RateLimiter::new());
        let (tx, rx) = std::sync::mpsc::channel();
        let tx2 = tx.clone();
        rl.wait_then(move || tx2.send(Instant::now()).unwrap())
            .await;
        assert!(rx.try_recv().is_ok(), "no backoff: called at once");
        rl.set_backoff(Duration::from_millis(60));
        let rl2 = rl.clone();
        let waiter = tokio::spawn(async move {
            rl2.wait_then(move || tx.send(Instant::now()).unwrap())
                .await;
        });
        // Moved later long before the first deadline, whatever the load:
        // the call must follow the new deadline.
        let later = rl.set_backoff(Duration::from_millis(120));
        waiter.await.unwrap();
        let woke = rx.recv().unwrap();
        assert!(woke >= later, "woke {:?} before the deadline", later - woke);
    }

    #[test]
    fn huge_backoff_saturates() {
        let rl = RateLimiter::new();
        rl.set_backoff(Duration::MAX);
        assert!(rl.remaining() > Duration::from_secs(1_000_000));
    }
}
