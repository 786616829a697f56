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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::registry::WeakRegistry;

mod probe;
mod remote;
mod wait;
pub use probe::{Probe, DEFAULT_PROBE_TIMEOUT};
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
    /// Backoffs set so far: the generation of the latest 429.
    trips: AtomicU64,
    /// The generation up to which the service is known to take requests
    /// again (a probe of it passed, or `clear`). While `trips` is ahead,
    /// an expired backoff lets one probe request go first (see
    /// [`RateLimiter::wait_turn`]). A probe settles only the generation
    /// it probed, so a 429 that lands while it is out is not forgotten.
    settled: AtomicU64,
    /// The probe request out now, if any.
    probe: Mutex<probe::Slot>,
    /// Timers armed by waits on this limiter, for tests: a wait is one
    /// exact sleep (two timers: a coarse one and a precise one), not a
    /// polling loop.
    arms: AtomicU64,
    /// Another node of the cluster probes for everyone (see `remote.rs`).
    remote_probe: AtomicBool,
    /// Told about local backoffs and passed probes (the cluster layer).
    listener: remote::ListenerSlot,
}

/// The registry key: a SHA-256 of the base URL and the API key, so the key
/// itself is never kept in plain text.
pub type Key = [u8; 32];

/// The limiters in use, by key; an entry goes once no client holds its
/// limiter (a backoff nobody waits on is worth nothing).
static REGISTRY: LazyLock<WeakRegistry<Key, RateLimiter>> = LazyLock::new(WeakRegistry::new);

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
            trips: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            probe: Mutex::new(probe::Slot::default()),
            arms: AtomicU64::new(0),
            remote_probe: AtomicBool::new(false),
            listener: remote::ListenerSlot::default(),
        }
    }

    /// The one limiter of the process for `{base_url, api_key}` (a trailing
    /// `/` of the URL does not make another limiter), while anyone holds
    /// it; a new one, with no backoff, once nobody does.
    pub fn for_key(base_url: &str, api_key: &str) -> Arc<RateLimiter> {
        REGISTRY.get_or_insert_with(key_of(base_url, api_key), RateLimiter::new)
    }

    /// How many limiters are in use (held by some client) in the process.
    pub fn registry_len() -> usize {
        REGISTRY.live()
    }

    /// Entries the registry holds, dead ones not yet swept included.
    #[doc(hidden)]
    pub fn registry_entries() -> usize {
        REGISTRY.entries()
    }

    /// The registry's keys of the limiters in use: what the process keeps
    /// about each `{base_url, api_key}` (tests check it is only a digest).
    #[doc(hidden)]
    pub fn registry_keys() -> Vec<Key> {
        REGISTRY.live_keys()
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
        let wanted = self
            .now_us()
            .saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let mut current = self.deadline_us.load(Ordering::Acquire);
        let deadline = loop {
            if current != NONE && current >= wanted {
                break (current, false);
            }
            match self.deadline_us.compare_exchange_weak(
                current,
                wanted,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break (wanted, true),
                Err(actual) => current = actual,
            }
        };
        // After the deadline: whoever sees this generation sees its
        // deadline too, so never probes ahead of it.
        self.trips.fetch_add(1, Ordering::AcqRel);
        (self.instant_of(deadline.0), deadline.1)
    }

    /// Ends the backoff now and wakes every waiter.
    pub fn clear(&self) {
        let had = self.deadline_us.swap(NONE, Ordering::AcqRel) != NONE;
        let trips = self.trips.load(Ordering::Acquire);
        if self.settled.fetch_max(trips, Ordering::AcqRel) < trips || had {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn registry_keeps_only_limiters_in_use() {
        let held = RateLimiter::for_key("http://held.test", "tml-held");
        for i in 0..10_000 {
            drop(RateLimiter::for_key(&format!("http://k{i}.test"), "tml-k"));
        }
        // Other tests of this binary may hold a few limiters meanwhile.
        assert!(
            RateLimiter::registry_entries() < 200,
            "{} entries",
            RateLimiter::registry_entries()
        );
        assert!(Arc::ptr_eq(
            &held,
            &RateLimiter::for_key("http://held.test/", "tml-held")
        ));
    }

    #[test]
    fn registry_keys_are_digests_not_the_api_key() {
        let secret = "tml-registry-secret-0123456789";
        let _l = RateLimiter::for_key("http://digest.test", secret);
        let keys = RateLimiter::registry_keys();
        let mut h = Sha256::new();
        h.update(b"http://digest.test\0");
        h.update(secret.as_bytes());
        let want: Key = h.finalize().into();
        assert!(
            keys.contains(&want),
            "no SHA-256 of url NUL key among {keys:?}"
        );
        for k in &keys {
            assert!(!k
                .windows(8)
                .any(|w| secret.as_bytes().windows(8).any(|s| s == w)));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_goes_first_after_a_backoff() {
        let rl = Arc::new(RateLimiter::new());
        assert!(
            rl.wait_turn(DEFAULT_PROBE_TIMEOUT).await.is_none(),
            "never tripped: free"
        );
        rl.set_backoff(Duration::from_millis(100));
        let probe = rl
            .wait_turn(DEFAULT_PROBE_TIMEOUT)
            .await
            .expect("first after the backoff probes");
        let rl2 = rl.clone();
        let follower =
            tokio::spawn(async move { rl2.wait_turn(DEFAULT_PROBE_TIMEOUT).await.is_none() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!follower.is_finished(), "waits behind the probe");
        probe.passed();
        assert!(
            follower.await.unwrap(),
            "released, with no probe of its own"
        );
        assert!(rl.wait_turn(DEFAULT_PROBE_TIMEOUT).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_meets_a_429_puts_everyone_back_to_sleep() {
        let rl = Arc::new(RateLimiter::new());
        rl.set_backoff(Duration::from_millis(100));
        let probe = rl.wait_turn(DEFAULT_PROBE_TIMEOUT).await.unwrap();
        let rl2 = rl.clone();
        let start = Instant::now();
        let follower = tokio::spawn(async move {
            let p = rl2.wait_turn(DEFAULT_PROBE_TIMEOUT).await;
            (p.is_some(), Instant::now())
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        rl.set_backoff(Duration::from_millis(200));
        drop(probe);
        let (probed, at) = follower.await.unwrap();
        assert!(probed, "the follower probes next");
        assert!(at.duration_since(start) >= Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_does_not_answer_hands_over_after_the_probe_timeout() {
        let rl = RateLimiter::new();
        let timeout = Duration::from_millis(2000);
        rl.set_backoff(Duration::from_millis(100));
        let stalled = rl.wait_turn(timeout).await.unwrap();
        let taken = Instant::now();
        let next = rl.wait_turn(timeout);
        tokio::pin!(next);
        tokio::select! {
            _ = &mut next => panic!("went before the probe timed out"),
            _ = tokio::time::sleep(Duration::from_millis(1999)) => {}
        }
        let second = next.await.expect("probes in the stalled one's place");
        assert_eq!(taken.elapsed(), timeout);
        // The stalled probe's late drop must not free the new probe's slot.
        drop(stalled);
        assert!(rl.probe_in_flight());
        let third = rl.wait_turn(timeout);
        tokio::pin!(third);
        tokio::select! {
            _ = &mut third => panic!("released while the new probe is out"),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        second.passed();
        assert!(third.await.is_none(), "released once the new probe passed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_while_a_probe_is_out_survives_the_probe_passing() {
        let rl = Arc::new(RateLimiter::new());
        rl.set_backoff(Duration::from_millis(100));
        let probe = rl.wait_turn(DEFAULT_PROBE_TIMEOUT).await.unwrap();
        // Another request, sent before the backoff, meets a 429 now.
        let deadline = rl.set_backoff(Duration::from_millis(100));
        probe.passed();
        let p = rl.wait_turn(DEFAULT_PROBE_TIMEOUT).await;
        assert!(Instant::now() >= deadline);
        assert!(p.is_some(), "the new backoff gets its own probe");
        p.unwrap().passed();
        assert!(rl.wait_turn(DEFAULT_PROBE_TIMEOUT).await.is_none());
    }

    #[test]
    fn huge_backoff_saturates() {
        let rl = RateLimiter::new();
        rl.set_backoff(Duration::MAX);
        assert!(rl.remaining() > Duration::from_secs(1_000_000));
    }
}
