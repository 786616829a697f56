//! A budget of bytes that may go negative (the SDK's `BytesSemaphore`): a
//! new reservation waits only while the budget is below zero, so one
//! reservation larger than the whole budget still passes, and waits for
//! nobody once it holds the bytes.
//!
//! Two budgets use it: the prompt bytes in submission
//! ([`super::DispatchLimits`], 10 MiB) and the result bytes being fetched
//! after a `complete_metadata` or a `retrieve_futures` completion announced
//! their size (the [`super::SampleContext`]'s response budget, 50 MiB, the
//! server's `inflight_response_bytes_semaphore_size`).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! use tinkex_core::sampling::BytesBudget;
//! let budget = BytesBudget::new(100);
//! let big = budget.acquire(150).await; // bigger than the budget: passes
//! assert_eq!(budget.available(), -50);
//! drop(big);
//! assert_eq!(budget.available(), 100);
//! # });
//! ```

use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::Notify;

/// Default in-flight response budget (the SDK's 50 MiB).
pub const DEFAULT_INFLIGHT_RESPONSE_BYTES: u64 = 50 * 1024 * 1024;

/// A bytes budget that may go negative; see the module docs.
#[derive(Debug)]
pub struct BytesBudget {
    available: AtomicI64,
    released: Notify,
}

/// Bytes held from a [`BytesBudget`]; returned on drop.
#[must_use = "the bytes are returned when the permit is dropped"]
#[derive(Debug)]
pub struct BytesPermit<'a> {
    budget: &'a BytesBudget,
    n: i64,
}

impl BytesBudget {
    /// A budget of `max_bytes` (saturating at `i64::MAX`).
    pub fn new(max_bytes: u64) -> BytesBudget {
        BytesBudget {
            available: AtomicI64::new(i64::try_from(max_bytes).unwrap_or(i64::MAX)),
            released: Notify::new(),
        }
    }

    /// Waits until the budget is not below zero, then takes `n` bytes
    /// (which may overdraw it). Dropping the future midway takes nothing.
    pub async fn acquire(&self, n: u64) -> BytesPermit<'_> {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Register before reading, so a release in between is not missed.
            released.as_mut().enable();
            let cur = self.available.load(Ordering::Acquire);
            if cur >= 0 {
                if self
                    .available
                    .compare_exchange(
                        cur,
                        cur.saturating_sub(n),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok()
                {
                    // What was actually taken, so the release restores it.
                    let taken = cur - cur.saturating_sub(n);
                    return BytesPermit {
                        budget: self,
                        n: taken,
                    };
                }
                continue;
            }
            released.await;
        }
    }

    /// Bytes left (negative while overdrawn).
    pub fn available(&self) -> i64 {
        self.available.load(Ordering::Acquire)
    }
}

impl BytesPermit<'_> {
    /// The bytes this permit holds.
    pub fn bytes(&self) -> u64 {
        self.n as u64
    }
}

impl Drop for BytesPermit<'_> {
    fn drop(&mut self) {
        self.budget.available.fetch_add(self.n, Ordering::AcqRel);
        self.budget.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn overdrawn_budget_blocks_until_release() {
        let b = Arc::new(BytesBudget::new(100));
        let big = b.acquire(150).await;
        let b2 = b.clone();
        let waiter = tokio::spawn(async move {
            let _p = b2.acquire(1).await;
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(big);
        waiter.await.unwrap();
        assert_eq!(b.available(), 100);
    }

    /// Eight 40-byte fetches of 50 ms each under a 100-byte budget: the
    /// budget admits a new fetch only while it is not overdrawn, so at most
    /// three run at once (40 + 40 + 40 overdraws it to -20; the fourth
    /// waits), and the batch takes three rounds instead of one.
    #[tokio::test(start_paused = true)]
    async fn bounds_concurrent_fetches() {
        let budget = Arc::new(BytesBudget::new(100));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let start = tokio::time::Instant::now();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (budget, running, peak) = (budget.clone(), running.clone(), peak.clone());
                tokio::spawn(async move {
                    let _p = budget.acquire(40).await;
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        assert_eq!(start.elapsed(), Duration::from_millis(150));
        assert_eq!(budget.available(), 100);
    }

    #[tokio::test]
    async fn an_abandoned_wait_takes_nothing() {
        let b = BytesBudget::new(0);
        let held = b.acquire(10).await;
        let mut wait = Box::pin(b.acquire(5));
        assert!(futures_poll_once(wait.as_mut()).await.is_none());
        drop(wait);
        drop(held);
        assert_eq!(b.available(), 0);
        let huge = b.acquire(u64::MAX).await;
        assert_eq!(huge.bytes(), i64::MAX as u64);
        drop(huge);
        assert_eq!(b.available(), 0);
    }

    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            v = f => Some(v),
            _ = std::future::ready(()) => None,
        }
    }
}
