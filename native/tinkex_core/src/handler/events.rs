//! What the handler reports about failed attempts (telemetry hooks).

use std::time::Duration;

use crate::error::Error;

/// One failed attempt, as reported to [`Events::attempt_failed`].
#[derive(Debug)]
pub struct RetryEvent<'a> {
    /// The handler's name.
    pub handler: &'a str,
    /// The error, with `retryable` as the handler decided it: the
    /// config's rule, unless the layer that saw it made it fatal.
    pub error: &'a Error,
    /// Which attempt failed, from 1.
    pub attempt: u64,
    /// The backoff before the next attempt; `None` when the execution
    /// fails for good.
    pub delay_ms: Option<u64>,
    /// Time since the execution's first attempt.
    pub elapsed: Duration,
}

impl RetryEvent<'_> {
    /// `"warning"` when retried or the user's fault, else `"error"` — the
    /// Python SDK's severity rule.
    pub fn severity(&self) -> &'static str {
        if self.delay_ms.is_some() || self.error.is_user_error() {
            "warning"
        } else {
            "error"
        }
    }
}

/// Receives the handler's events (and the sampler's, which runs under
/// it). Methods have no-op defaults.
pub trait Events: Send + Sync {
    /// An attempt failed; a retry follows when `delay_ms` is set.
    fn attempt_failed(&self, _event: &RetryEvent<'_>) {}

    /// A 429 on submit set the shared backoff of the service and key;
    /// `backoff` is the time until the backoff in force ends.
    fn backoff_set(&self, _backoff: Duration) {}
}

/// Ignores every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEvents;

impl Events for NoEvents {}
