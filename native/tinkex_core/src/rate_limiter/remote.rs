//! The shared backoff across the nodes of a cluster (`TinkexNative.Cluster`).
//!
//! A [`Listener`] hears what happens here that other nodes must know: a
//! local 429 that moved the deadline ([`LimiterEvent::Backoff`]) and a
//! probe that got through ([`LimiterEvent::ProbePassed`]). What other
//! nodes report comes back through [`RateLimiter::apply_remote`] (never
//! shortening, and never echoed to the listener),
//! [`RateLimiter::release_remote`] and [`RateLimiter::end_defer`].
//!
//! After a backoff, one probe goes first *cluster-wide*: the nodes that
//! defer to another node's probe ([`RateLimiter::apply_remote`] with
//! `defer_probe`) send nothing once the deadline passes until that probe
//! passed (`release_remote`), met another 429 (a new backoff), or the
//! prober is given up on (`end_defer`).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::RateLimiter;

/// What the limiter tells its listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimiterEvent {
    /// A 429 here moved the deadline later: back off for this long from now.
    Backoff(Duration),
    /// A probe sent from here after a backoff got through.
    ProbePassed,
}

/// Called on the thread where the event happened (a tokio worker for a
/// 429 on submit, a BEAM scheduler for `TinkexNative.RateLimiter.set_backoff/2`):
/// it must be quick and must not block.
pub type Listener = Arc<dyn Fn(LimiterEvent) + Send + Sync>;

/// The limiter's listener, if any.
#[derive(Default)]
pub(super) struct ListenerSlot(Mutex<Option<Listener>>);

impl std::fmt::Debug for ListenerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = self.0.lock().map(|l| l.is_some()).unwrap_or(false);
        f.debug_tuple("ListenerSlot").field(&set).finish()
    }
}

/// Where the limiter is in a backoff's probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeState {
    /// A backoff happened and no probe has got through since.
    pub tripped: bool,
    /// A probe of this node is in flight.
    pub probing: bool,
    /// This node waits for another node's probe.
    pub deferring: bool,
}

impl RateLimiter {
    /// Replaces the listener (`None` removes it).
    pub fn set_listener(&self, listener: Option<Listener>) {
        *self.listener.0.lock().unwrap_or_else(|p| p.into_inner()) = listener;
    }

    pub(super) fn emit(&self, event: LimiterEvent) {
        let listener = self
            .listener
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(l) = listener {
            l(event);
        }
    }

    /// A backoff another node saw: back off for `d` from now unless a later
    /// deadline is set (never shortened). With `defer_probe`, the probe
    /// after it is that node's: nobody here probes until
    /// [`RateLimiter::release_remote`] or [`RateLimiter::end_defer`].
    /// The listener is not told (the event is not echoed back).
    pub fn apply_remote(&self, d: Duration, defer_probe: bool) -> Instant {
        if defer_probe {
            self.remote_probe.store(true, Ordering::Release);
        }
        self.extend(d).0
    }

    /// Another node's probe got through: the backoffs known here are over
    /// too, and every waiter goes without a probe of its own.
    pub fn release_remote(&self) {
        let trips = self.trips.load(Ordering::Acquire);
        self.settled.fetch_max(trips, Ordering::AcqRel);
        self.remote_probe.store(false, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Stops waiting for another node's probe: the next request here
    /// probes for itself (the prober went away, or has nothing to send).
    pub fn end_defer(&self) {
        if self.remote_probe.swap(false, Ordering::AcqRel) {
            self.changed.notify_waiters();
        }
    }

    /// Where the limiter is in a backoff's probe.
    pub fn probe_state(&self) -> ProbeState {
        ProbeState {
            tripped: self.trips.load(Ordering::Acquire) > self.settled.load(Ordering::Acquire),
            probing: self.probe_in_flight(),
            deferring: self.remote_probe.load(Ordering::Acquire),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder(rl: &RateLimiter) -> Arc<Mutex<Vec<LimiterEvent>>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        rl.set_listener(Some(Arc::new(move |e| s.lock().unwrap().push(e))));
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn the_listener_hears_local_backoffs_that_move_the_deadline_only() {
        let rl = RateLimiter::new();
        let seen = recorder(&rl);
        rl.set_backoff(Duration::from_millis(500));
        rl.set_backoff(Duration::from_millis(100));
        rl.apply_remote(Duration::from_millis(900), false);
        rl.set_backoff(Duration::from_millis(600));
        assert_eq!(
            *seen.lock().unwrap(),
            vec![LimiterEvent::Backoff(Duration::from_millis(500))]
        );
        assert!(rl.remaining() > Duration::from_millis(899));
        rl.set_listener(None);
        rl.set_backoff(Duration::from_secs(5));
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_remote_backoff_is_never_shortened_and_defers_the_probe() {
        let rl = Arc::new(RateLimiter::new());
        rl.set_backoff(Duration::from_millis(300));
        rl.apply_remote(Duration::from_millis(100), true);
        assert!(rl.remaining() > Duration::from_millis(299));
        let rl2 = rl.clone();
        let start = Instant::now();
        let waiter = tokio::spawn(async move {
            let probe = rl2
                .wait_turn(crate::rate_limiter::DEFAULT_PROBE_TIMEOUT)
                .await;
            (probe.is_some(), Instant::now())
        });
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            !waiter.is_finished(),
            "past the deadline, waits for the remote probe"
        );
        assert!(rl.probe_state().deferring);
        rl.release_remote();
        let (probed, at) = waiter.await.unwrap();
        assert!(!probed, "released without a probe of its own");
        assert_eq!(at.duration_since(start), Duration::from_millis(400));
        assert_eq!(
            rl.probe_state(),
            ProbeState {
                tripped: false,
                probing: false,
                deferring: false
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ending_the_deferral_lets_one_local_probe_go_and_its_pass_is_heard() {
        let rl = Arc::new(RateLimiter::new());
        let seen = recorder(&rl);
        rl.apply_remote(Duration::from_millis(50), true);
        let rl2 = rl.clone();
        let waiter = tokio::spawn(async move {
            rl2.wait_turn(crate::rate_limiter::DEFAULT_PROBE_TIMEOUT)
                .await
                .map(|p| p.passed())
                .is_some()
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished());
        rl.end_defer();
        assert!(waiter.await.unwrap(), "probes for itself");
        assert_eq!(*seen.lock().unwrap(), vec![LimiterEvent::ProbePassed]);
        assert!(rl
            .wait_turn(crate::rate_limiter::DEFAULT_PROBE_TIMEOUT)
            .await
            .is_none());
    }
}
