//! The live counters of a handler, readable at any time without a lock on
//! the hot path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Counters of one handler. All are monotonic except `waiting` and
/// `in_flight`, which go up and down with the executions.
#[derive(Debug, Default)]
pub struct Counters {
    /// Executions waiting for a permit.
    pub(crate) waiting: AtomicU64,
    /// Executions holding a permit (in the retry loop).
    pub(crate) in_flight: AtomicU64,
    /// Executions that succeeded.
    pub(crate) processed: AtomicU64,
    /// Executions that failed for good.
    pub(crate) failed: AtomicU64,
    /// Retries started, over all executions.
    pub(crate) retries: AtomicU64,
    /// Times the watchdog interrupted in-flight executions.
    pub(crate) stuck_events: AtomicU64,
    /// Errors since the last progress report, by `"kind"` or `"http 503"`.
    /// Touched only on failures, never on the success path.
    pub(crate) errors: Mutex<HashMap<String, u64>>,
}

impl Counters {
    pub(crate) fn note_error(&self, label: String) {
        let mut map = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(label).or_insert(0) += 1;
    }

    /// Errors since the last call, most frequent first; clears them.
    pub(crate) fn take_errors(&self) -> Vec<(String, u64)> {
        let mut map = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        sorted(std::mem::take(&mut *map))
    }

    pub(crate) fn peek_errors(&self) -> Vec<(String, u64)> {
        let map = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        sorted(map.clone())
    }
}

fn sorted(map: HashMap<String, u64>) -> Vec<(String, u64)> {
    let mut v: Vec<_> = map.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// Increments a counter for as long as it lives; the decrement on drop
/// keeps `waiting` right when an acquire is cancelled midway.
pub(crate) struct Gauge<'a>(&'a AtomicU64);

impl<'a> Gauge<'a> {
    pub(crate) fn up(c: &'a AtomicU64) -> Gauge<'a> {
        c.fetch_add(1, Ordering::Relaxed);
        Gauge(c)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A snapshot of a handler's counters, as `stats/1` returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Executions waiting for a permit.
    pub waiting: u64,
    /// Executions holding a permit.
    pub in_flight: u64,
    /// Successful executions.
    pub processed: u64,
    /// Executions that failed for good.
    pub failed: u64,
    /// Retries started.
    pub retries: u64,
    /// Watchdog firings.
    pub stuck_events: u64,
    /// Free permits; `None` without a semaphore.
    pub available_permits: Option<u64>,
    /// The semaphore's size; `None` without one.
    pub max_connections: Option<u64>,
    /// Milliseconds since the last success (or since the handler last
    /// became busy).
    pub ms_since_progress: u64,
    /// Errors since the last progress report, most frequent first.
    pub errors: Vec<(String, u64)>,
}
