//! One probe request after a backoff: the rest of the queue follows only
//! once the service took it.
//!
//! A probe's hold on the queue is bounded: every client of the key waits
//! behind it, so a probe that has not answered within its waiters' probe
//! timeout (default [`DEFAULT_PROBE_TIMEOUT`], far below the 60 s submit
//! timeout) lets the next waiter probe in its place. The late probe's
//! answer still counts when it comes.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::RateLimiter;

/// How long waiters let one probe hold the queue by default.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The probe out now.
#[derive(Debug, Default)]
pub(super) struct Slot {
    /// The probe's id and when it was handed out.
    current: Option<(u64, Instant)>,
    next_id: u64,
}

/// The right to send the first request after a backoff expired. Report
/// the outcome with [`Probe::passed`] when the server took the request;
/// on a 429 set a new backoff and drop the probe; dropping it for any
/// other reason hands the probe to the next waiter.
#[must_use = "drop the probe, or call passed(), to release the waiters"]
#[derive(Debug)]
pub struct Probe<'a> {
    limiter: &'a RateLimiter,
    id: u64,
    /// The backoff generation this probe tests.
    trips: u64,
}

impl Probe<'_> {
    /// The probe got through: the backoff it probed is over for everyone.
    /// A 429 that another request met meanwhile still holds: the next
    /// waiter probes again after that backoff.
    pub fn passed(self) {
        self.limiter.settled.fetch_max(self.trips, Ordering::AcqRel);
        self.limiter.emit(super::LimiterEvent::ProbePassed);
        // Drop releases the slot and wakes the waiters.
    }
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        {
            let mut slot = self.limiter.lock_probe();
            // A probe that timed out no longer owns the slot.
            if slot.current.is_some_and(|(id, _)| id == self.id) {
                slot.current = None;
            }
        }
        self.limiter.changed.notify_waiters();
    }
}

impl RateLimiter {
    fn lock_probe(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.probe.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True while a probe request is out.
    pub fn probe_in_flight(&self) -> bool {
        self.lock_probe().current.is_some()
    }

    /// Waits for this request's turn to submit: past the backoff (one
    /// precise sleep), and then — if a 429 tripped the limiter — behind a
    /// single probe. The first waiter to find the backoff expired gets the
    /// [`Probe`] and sends alone; the others go once it passes, or sleep
    /// again if it met another 429, or take the next probe once it has
    /// been out `probe_timeout` without an answer. So a service that is
    /// still overloaded gets one request per backoff window instead of the
    /// whole queue (the Python SDK releases every waiter on its next 1 s
    /// check). Returns `None` when the way is clear.
    pub async fn wait_turn(&self, probe_timeout: Duration) -> Option<Probe<'_>> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Before the deadline: a backoff of this generation has its
            // deadline stored already.
            let trips = self.trips.load(Ordering::Acquire);
            if let Some(deadline) = self.deadline() {
                tokio::select! {
                    _ = crate::precise_sleep::sleep_until(deadline) => {}
                    _ = &mut notified => {}
                }
                continue;
            }
            if trips <= self.settled.load(Ordering::Acquire) {
                return None;
            }
            // While another node probes for the whole cluster, nobody
            // here does, until the cluster layer says `release_remote`
            // (that probe passed) or `end_defer` (the prober went away,
            // has nothing to send, or stayed silent).
            if self.remote_probe.load(Ordering::Acquire) {
                notified.await;
                continue;
            }
            let now = Instant::now();
            let probe_ends = {
                let mut slot = self.lock_probe();
                match slot.current {
                    Some((_, since)) if now < since + probe_timeout => since + probe_timeout,
                    _ => {
                        let id = slot.next_id;
                        slot.next_id += 1;
                        slot.current = Some((id, now));
                        return Some(Probe {
                            limiter: self,
                            id,
                            trips,
                        });
                    }
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(probe_ends) => {}
                _ = &mut notified => {}
            }
        }
    }
}
