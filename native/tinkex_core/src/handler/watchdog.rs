//! One timer per handler that fails every in-flight execution once no
//! execution of the handler has succeeded for `progress_timeout`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::Handler;

impl Handler {
    /// Starts the watchdog on first use. It holds only a weak reference,
    /// so it never keeps a handler alive, and ends when the handler goes.
    pub(super) fn ensure_watchdog(self: &Arc<Self>) {
        if self.watchdog_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        let wake = self.watchdog_wake.clone();
        tokio::spawn(run(weak, wake));
    }

    /// Fires every in-flight execution's stuck signal if the deadline has
    /// passed; returns how long until the next check otherwise (`None`
    /// while idle).
    pub(super) fn check(&self) -> Option<Duration> {
        // Held from reading the count to draining, as `enter` holds it
        // while it counts and registers an execution (see there).
        let mut in_flight = self.lock_in_flight();
        if self.counters.in_flight.load(Ordering::Acquire) == 0 {
            return None;
        }
        let timeout_us = self.config.progress_timeout_ms.saturating_mul(1000);
        let deadline = self
            .last_progress_us
            .load(Ordering::Acquire)
            .saturating_add(timeout_us);
        let now = self.now_us();
        #[cfg(test)]
        self.hooks.run(&self.hooks.checking);
        if now < deadline {
            return Some(Duration::from_micros(deadline - now));
        }
        let stuck: Vec<_> = in_flight.drain().map(|(_, s)| s).collect();
        // A fresh window for whatever comes next: the handler keeps serving.
        self.last_progress_us.fetch_max(now, Ordering::AcqRel);
        drop(in_flight);
        if !stuck.is_empty() {
            self.counters.stuck_events.fetch_add(1, Ordering::Relaxed);
        }
        // Outside the lock: a callback sends a message.
        for s in stuck {
            s.fire();
        }
        Some(Duration::from_micros(timeout_us))
    }
}

async fn run(weak: Weak<Handler>, wake: Arc<Notify>) {
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let next = match weak.upgrade() {
            Some(h) => h.check(),
            None => return,
        };
        match next {
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = &mut notified => {}
                }
            }
            None => notified.await,
        }
    }
}
