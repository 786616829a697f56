//! Submission limits, held only while a sample is being submitted (never
//! while its future is polled), as the Python SDK's
//! `sample_dispatch_rate_limit`:
//!
//! - at most `max_submits` submits at once (400);
//! - while a 429 backoff is in force or ended less than 10 s ago, at most
//!   10 submits at once, each charging 20× its bytes, so a backoff that
//!   ends does not release a thundering herd;
//! - a budget of prompt bytes (10 MiB, the server's
//!   `sample_dispatch_bytes_semaphore_size`) that may go negative: a new
//!   submit waits only while the budget is below zero, so one prompt
//!   larger than the budget still passes.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use tinkex_core::sampling::DispatchLimits;
//! let limits = DispatchLimits::new(2, 100);
//! let a = limits.acquire(150, || false).await; // bigger than the budget: passes
//! assert_eq!(limits.available_bytes(), -50);
//! assert_eq!(limits.available_submits(), 1);
//! drop(a);
//! assert_eq!(limits.available_bytes(), 100);
//! # });
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use super::budget::{BytesBudget, BytesPermit};
use crate::wire::ServerFlags;

/// Default concurrent submits (the SDK's fixed 400).
pub const DEFAULT_MAX_SUBMITS: usize = 400;
/// Concurrent submits shortly after a 429 backoff.
pub const THROTTLED_SUBMITS: usize = 10;
/// Bytes charge multiplier shortly after a 429 backoff.
pub const THROTTLED_BYTES_FACTOR: u64 = 20;

/// The submission limits of one sampling client.
#[derive(Debug)]
pub struct DispatchLimits {
    submits: Semaphore,
    throttled: Semaphore,
    bytes: BytesBudget,
    /// Origin of `recent_until_ms`.
    epoch: Instant,
    /// Submits are throttled until this many ms after `epoch`.
    recent_until_ms: AtomicU64,
}

/// Permission to submit; every limit is returned on drop.
#[must_use = "the limits are released when the permit is dropped"]
#[derive(Debug)]
pub struct DispatchPermit<'a> {
    _submit: SemaphorePermit<'a>,
    _throttled: Option<SemaphorePermit<'a>>,
    _bytes: BytesPermit<'a>,
}

impl Default for DispatchLimits {
    fn default() -> DispatchLimits {
        DispatchLimits::from_flags(&ServerFlags::default())
    }
}

impl DispatchLimits {
    /// Limits of `max_submits` concurrent submits and `max_bytes` of
    /// prompt bytes.
    pub fn new(max_submits: usize, max_bytes: u64) -> DispatchLimits {
        DispatchLimits {
            submits: Semaphore::new(max_submits.clamp(1, Semaphore::MAX_PERMITS)),
            throttled: Semaphore::new(THROTTLED_SUBMITS),
            bytes: BytesBudget::new(max_bytes),
            epoch: Instant::now(),
            recent_until_ms: AtomicU64::new(0),
        }
    }

    /// The defaults with the server's bytes budget.
    pub fn from_flags(flags: &ServerFlags) -> DispatchLimits {
        DispatchLimits::new(
            DEFAULT_MAX_SUBMITS,
            flags.sample_dispatch_bytes_semaphore_size,
        )
    }

    /// Waits for a submit slot, then, when `throttled()` says a backoff is
    /// recent (asked once the slot is held, as the SDK does), a throttled
    /// slot too, then `bytes` of budget (×20 when throttled).
    pub async fn acquire(
        &self,
        bytes: u64,
        throttled: impl FnOnce() -> bool,
    ) -> DispatchPermit<'_> {
        // Never closed, so acquiring cannot fail.
        let submit = self.submits.acquire().await.expect("never closed");
        let throttled = throttled();
        let throttle = if throttled {
            Some(self.throttled.acquire().await.expect("never closed"))
        } else {
            None
        };
        let charge = if throttled {
            bytes.saturating_mul(THROTTLED_BYTES_FACTOR)
        } else {
            bytes
        };
        let bytes = self.bytes.acquire(charge).await;
        DispatchPermit {
            _submit: submit,
            _throttled: throttle,
            _bytes: bytes,
        }
    }

    /// Notes a 429 backoff lasting until `deadline`: submits stay
    /// throttled until `window` after it.
    pub fn note_backoff(&self, deadline: Instant, window: Duration) {
        let until = (deadline + window).saturating_duration_since(self.epoch);
        self.recent_until_ms.fetch_max(
            u64::try_from(until.as_millis()).unwrap_or(u64::MAX),
            Ordering::AcqRel,
        );
    }

    /// True while submits are throttled after a backoff noted here.
    pub fn recently_backed_off(&self) -> bool {
        let now = Instant::now()
            .saturating_duration_since(self.epoch)
            .as_millis();
        (now as u64) < self.recent_until_ms.load(Ordering::Acquire)
    }

    /// Prompt bytes left in the budget (negative while overdrawn).
    pub fn available_bytes(&self) -> i64 {
        self.bytes.available()
    }

    /// Free submit slots.
    pub fn available_submits(&self) -> usize {
        self.submits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn overdrawn_budget_blocks_until_release() {
        let l = Arc::new(DispatchLimits::new(10, 100));
        let big = l.acquire(150, || false).await;
        let l2 = l.clone();
        let waiter = tokio::spawn(async move {
            let _p = l2.acquire(1, || false).await;
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(big);
        waiter.await.unwrap();
        assert_eq!(l.available_bytes(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_window() {
        let l = DispatchLimits::new(10, 1000);
        assert!(!l.recently_backed_off());
        l.note_backoff(
            Instant::now() + Duration::from_secs(1),
            Duration::from_secs(10),
        );
        assert!(l.recently_backed_off());
        let p = l.acquire(10, || true).await;
        assert_eq!(l.available_bytes(), 800);
        assert_eq!(l.throttled.available_permits(), THROTTLED_SUBMITS - 1);
        drop(p);
        tokio::time::advance(Duration::from_millis(10_999)).await;
        assert!(l.recently_backed_off());
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(!l.recently_backed_off());
    }
}
