//! The per-execution stuck signal the watchdog fires.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

/// Callback run (once, on the watchdog's thread) when an execution is
/// declared stuck; the NIF uses it to message the Elixir caller.
pub type OnStuck = Box<dyn FnOnce() + Send>;

/// Fired at most once; waiters and an optional callback learn of it.
#[derive(Default)]
pub(crate) struct StuckSignal {
    fired: AtomicBool,
    notify: Notify,
    callback: Mutex<Option<OnStuck>>,
}

impl StuckSignal {
    pub(crate) fn fire(&self) {
        if self.fired.swap(true, Ordering::AcqRel) {
            return;
        }
        self.notify.notify_waiters();
        let cb = self
            .callback
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(cb) = cb {
            cb();
        }
    }

    pub(crate) fn is_fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// Installs `cb`; runs it at once if the signal already fired.
    pub(crate) fn on_fire(&self, cb: OnStuck) {
        let mut slot = self.callback.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_fired() {
            drop(slot);
            cb();
        } else {
            *slot = Some(cb);
        }
    }

    /// Removes a pending callback. Returns `true` when the signal fired
    /// and the callback was (or is being) run, so its message will arrive.
    pub(crate) fn disarm(&self) -> bool {
        let mut slot = self.callback.lock().unwrap_or_else(|p| p.into_inner());
        let had_callback = slot.take().is_some();
        self.is_fired() && !had_callback
    }

    pub(crate) async fn wait(&self) {
        loop {
            let n = self.notify.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.is_fired() {
                return;
            }
            n.await;
        }
    }
}
