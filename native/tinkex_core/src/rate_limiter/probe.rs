//! One probe request after a backoff: the rest of the queue follows only
//! once the service took it.

use std::sync::atomic::Ordering;

use super::RateLimiter;

/// The right to send the first request after a backoff expired. Report
/// the outcome with [`Probe::passed`] when the server took the request;
/// on a 429 set a new backoff and drop the probe; dropping it for any
/// other reason hands the probe to the next waiter.
#[must_use = "drop the probe, or call passed(), to release the waiters"]
#[derive(Debug)]
pub struct Probe<'a> {
    limiter: &'a RateLimiter,
}

impl Probe<'_> {
    /// The probe got through: the backoff is over for everyone.
    pub fn passed(self) {
        self.limiter.tripped.store(false, Ordering::Release);
        self.limiter.emit(super::LimiterEvent::ProbePassed);
        // Drop releases `probing` and wakes the waiters.
    }
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        self.limiter.probing.store(false, Ordering::Release);
        self.limiter.changed.notify_waiters();
    }
}

impl RateLimiter {
    /// Waits for this request's turn to submit: past the backoff (one
    /// precise sleep), and then — if a 429 tripped the limiter — behind a
    /// single probe. The first waiter to find the backoff expired gets the
    /// [`Probe`] and sends alone; the others go once it passes, or sleep
    /// again if it met another 429. So a service that is still overloaded
    /// gets one request per backoff window instead of the whole queue
    /// (the Python SDK releases every waiter on its next 1 s check).
    /// Returns `None` when the way is clear.
    pub async fn wait_turn(&self) -> Option<Probe<'_>> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(deadline) = self.deadline() {
                tokio::select! {
                    _ = crate::precise_sleep::sleep_until(deadline) => {}
                    _ = &mut notified => {}
                }
                continue;
            }
            if !self.tripped.load(Ordering::Acquire) {
                return None;
            }
            // While another node probes for the cluster, nobody here does.
            if !self.remote_probe.load(Ordering::Acquire)
                && self
                    .probing
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                return Some(Probe { limiter: self });
            }
            notified.await;
        }
    }
}
