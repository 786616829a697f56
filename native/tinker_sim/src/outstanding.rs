//! Futures outstanding at the server: created by an asample and still being
//! worked on. A future stops being outstanding when its result (or its
//! scripted failure) is ready (`ready_at`, its latency), when it is
//! cancelled by `cancel_future`, or when a scripted 410 expires it;
//! whichever comes first. A `stuck` fate stays outstanding until cancelled.
//! The global `stuck` switch is not taken into account (it holds answers
//! back; the work is still done at `ready_at`).
//!
//! This is the server's load, which is what a concurrency limit protects:
//! a future whose result is ready but not yet fetched costs the service
//! no more work, and the result of a client that died is never fetched.
//!
//! Readiness is a deadline, so ready futures are swept lazily, before each
//! new future is counted and before each read: the maximum is exact,
//! because it can only grow at a creation.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::time::Instant;

/// The count of outstanding futures and its maximum since start or reset.
#[derive(Default)]
pub struct Outstanding {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Outstanding now.
    current: u64,
    /// Largest `current` seen.
    max: u64,
    /// Ready deadlines of counted futures, earliest first; an entry whose
    /// id left `live` early (cancelled, expired) is skipped when popped.
    due: BinaryHeap<Reverse<(Instant, Arc<str>)>>,
    /// Request ids counted in `current`.
    live: HashSet<Arc<str>>,
}

impl Inner {
    fn sweep(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.due.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, id))) = self.due.pop() else {
                break;
            };
            if self.live.remove(&id) {
                self.current -= 1;
            }
        }
    }
}

impl Outstanding {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new future, ready at `ready_at` (`None`: never, a stuck fate).
    pub fn created(&self, id: &Arc<str>, ready_at: Option<Instant>) {
        let mut inner = self.lock();
        let now = Instant::now();
        inner.sweep(now);
        if let Some(at) = ready_at {
            if at <= now {
                // Ready at once (no latency): it is never outstanding for
                // longer than its own request, and never overlaps another.
                inner.max = inner.max.max(inner.current + 1);
                return;
            }
            inner.due.push(Reverse((at, id.clone())));
        }
        if inner.live.insert(id.clone()) {
            inner.current += 1;
            inner.max = inner.max.max(inner.current);
        }
    }

    /// The future was cancelled or expired before it was ready.
    pub fn settled(&self, id: &str) {
        let mut inner = self.lock();
        if inner.live.remove(id) {
            inner.current -= 1;
        }
    }

    /// `(outstanding now, maximum since start or reset)`.
    pub fn snapshot(&self) -> (u64, u64) {
        let mut inner = self.lock();
        inner.sweep(Instant::now());
        (inner.current, inner.max)
    }

    /// Adds `futures_outstanding` and `max_futures_outstanding` to a
    /// stats document.
    pub fn add_to(&self, stats: &mut serde_json::Value) {
        let (now, max) = self.snapshot();
        stats["futures_outstanding"] = serde_json::json!(now);
        stats["max_futures_outstanding"] = serde_json::json!(max);
    }

    /// Forgets every future and the maximum.
    pub fn clear(&self) {
        *self.lock() = Inner::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[tokio::test(start_paused = true)]
    async fn counts_until_ready_cancelled_or_expired() {
        let o = Outstanding::default();
        let now = Instant::now();
        o.created(&id("a"), Some(now + Duration::from_millis(100)));
        o.created(&id("b"), Some(now + Duration::from_millis(200)));
        o.created(&id("c"), None);
        assert_eq!(o.snapshot(), (3, 3));
        o.settled("c");
        assert_eq!(o.snapshot(), (2, 3));
        tokio::time::advance(Duration::from_millis(150)).await;
        assert_eq!(o.snapshot(), (1, 3));
        o.settled("b");
        o.settled("b");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(o.snapshot(), (0, 3));
        o.clear();
        assert_eq!(o.snapshot(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn ready_futures_make_room_before_a_new_one_counts() {
        let o = Outstanding::default();
        let now = Instant::now();
        o.created(&id("a"), Some(now + Duration::from_millis(10)));
        o.created(&id("b"), Some(now + Duration::from_millis(10)));
        tokio::time::advance(Duration::from_millis(10)).await;
        o.created(&id("c"), Some(Instant::now() + Duration::from_millis(10)));
        assert_eq!(o.snapshot(), (1, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_future_without_latency_counts_as_one_at_its_creation() {
        let o = Outstanding::default();
        o.created(&id("x"), Some(Instant::now()));
        assert_eq!(o.snapshot(), (0, 1));
    }
}
