//! A held permit of a handler: the right to be in flight.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use super::signal::{OnStuck, StuckSignal};
use super::Handler;

/// Proof that an execution is in flight under a handler. Dropping it
/// returns the semaphore permit and leaves the handler, on every path —
/// success, error, panic, cancellation or the owner process dying.
#[must_use = "the execution leaves the handler when the permit is dropped"]
pub struct Permit {
    handler: Arc<Handler>,
    id: u64,
    signal: Arc<StuckSignal>,
    /// Returned to the semaphore on drop; `None` without a semaphore.
    _sem: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("handler", &self.handler.name())
            .field("id", &self.id)
            .finish()
    }
}

impl Permit {
    pub(super) fn new(
        handler: Arc<Handler>,
        id: u64,
        signal: Arc<StuckSignal>,
        sem: Option<OwnedSemaphorePermit>,
    ) -> Permit {
        Permit {
            handler,
            id,
            signal,
            _sem: sem,
        }
    }

    /// The handler this permit belongs to.
    pub fn handler(&self) -> &Arc<Handler> {
        &self.handler
    }

    /// Resolves when the watchdog declares this execution stuck; never
    /// when stuck detection is off.
    pub async fn stuck(&self) {
        self.signal.wait().await
    }

    /// Whether the watchdog has declared this execution stuck.
    pub fn is_stuck(&self) -> bool {
        self.signal.is_fired()
    }

    /// Runs `cb` once when this execution is declared stuck (at once if it
    /// already was). The NIF uses this to message an Elixir caller.
    pub fn on_stuck(&self, cb: OnStuck) {
        self.signal.on_fire(cb)
    }
}

impl Permit {
    /// Cancels the [`Permit::on_stuck`] callback. Returns `true` when it
    /// already ran (or is running): its effect, such as a message, is
    /// certain to happen, so the caller can wait for it instead of leaving
    /// it behind.
    pub fn disarm_stuck(&self) -> bool {
        self.signal.disarm()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.handler.leave(self.id);
    }
}
