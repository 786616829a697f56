//! What the server says about its queue, kept for stats and logged sparingly.
//!
//! Pending polls carry a `queue_state`; the last one is readable at any
//! time ([`QueueObserver::queue_state`]), and a paused queue is logged at
//! most once per interval (the SDK's 60 s) through a [`LogSink`], so the
//! NIF can forward the line to Elixir's `Logger`.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use tinkex_core::sampling::{LogLevel, QueueObserver, QueueState};
//!
//! let lines = Arc::new(Mutex::new(Vec::new()));
//! let sink = lines.clone();
//! let obs = QueueObserver::new("sampler-1", Duration::from_secs(60))
//!     .with_sink(Arc::new(move |_: LogLevel, m: &str| sink.lock().unwrap().push(m.to_owned())));
//! obs.record(QueueState::PausedCapacity, None);
//! obs.record(QueueState::PausedRateLimit, Some("busy"));
//! assert_eq!(obs.queue_state(), QueueState::PausedRateLimit);
//! assert_eq!(
//!     *lines.lock().unwrap(),
//!     ["Sampling is paused for sampler sampler-1. Reason: Tinker backend is running short on capacity, please wait"]
//! );
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// The queue state a pending poll reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum QueueState {
    /// Nothing known (no report yet, or a value this client does not know).
    Unknown = 0,
    /// The request is being worked on.
    Active = 1,
    /// The service is short on capacity.
    PausedCapacity = 2,
    /// The sampler hit its concurrency limit.
    PausedRateLimit = 3,
}

impl QueueState {
    /// Parses the wire value; anything else is [`QueueState::Unknown`].
    pub fn parse(s: &str) -> QueueState {
        match s {
            "active" => QueueState::Active,
            "paused_capacity" => QueueState::PausedCapacity,
            "paused_rate_limit" => QueueState::PausedRateLimit,
            _ => QueueState::Unknown,
        }
    }

    /// The wire/atom name.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueState::Unknown => "unknown",
            QueueState::Active => "active",
            QueueState::PausedCapacity => "paused_capacity",
            QueueState::PausedRateLimit => "paused_rate_limit",
        }
    }

    fn from_u8(v: u8) -> QueueState {
        match v {
            1 => QueueState::Active,
            2 => QueueState::PausedCapacity,
            3 => QueueState::PausedRateLimit,
            _ => QueueState::Unknown,
        }
    }

    fn default_reason(self) -> &'static str {
        match self {
            QueueState::PausedRateLimit => "concurrent sampler weights limit hit",
            QueueState::PausedCapacity => {
                "Tinker backend is running short on capacity, please wait"
            }
            _ => "unknown",
        }
    }
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogLevel {
    /// Diagnostics.
    Debug,
    /// Normal events.
    Info,
    /// Something the user should know (a pause).
    Warning,
    /// Something failed for good.
    Error,
}

/// Where the executor's log lines go (the NIF forwards them to Elixir).
/// Any `Fn(LogLevel, &str)` is a sink.
pub trait LogSink: Send + Sync {
    /// Emits one line.
    fn log(&self, level: LogLevel, message: &str);
}

impl<F: Fn(LogLevel, &str) + Send + Sync> LogSink for F {
    fn log(&self, level: LogLevel, message: &str) {
        self(level, message)
    }
}

const NEVER: u64 = u64::MAX;

/// The queue state last reported for one sampler, and its throttled log.
pub struct QueueObserver {
    /// The sampler named in log lines.
    label: Box<str>,
    /// A `QueueState` as `u8`.
    state: AtomicU8,
    /// Origin of `last_log_ms`.
    epoch: Instant,
    /// When the last pause was logged, ms after `epoch`; `NEVER` if never.
    last_log_ms: AtomicU64,
    /// Minimum time between two pause logs.
    interval: Duration,
    sink: Option<Arc<dyn LogSink>>,
}

impl fmt::Debug for QueueObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueObserver")
            .field("label", &self.label)
            .field("state", &self.queue_state())
            .finish_non_exhaustive()
    }
}

impl QueueObserver {
    /// An observer for sampler `label` logging pauses at most once per
    /// `interval`, with no sink yet.
    pub fn new(label: &str, interval: Duration) -> QueueObserver {
        QueueObserver {
            label: label.into(),
            state: AtomicU8::new(QueueState::Unknown as u8),
            epoch: Instant::now(),
            last_log_ms: AtomicU64::new(NEVER),
            interval,
            sink: None,
        }
    }

    /// Sends log lines to `sink`.
    pub fn with_sink(mut self, sink: Arc<dyn LogSink>) -> QueueObserver {
        self.sink = Some(sink);
        self
    }

    pub(crate) fn sink(&self) -> Option<Arc<dyn LogSink>> {
        self.sink.clone()
    }

    /// The queue state last reported.
    pub fn queue_state(&self) -> QueueState {
        QueueState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Records a report; a paused (or unknown) state is logged unless
    /// another pause was logged less than `interval` ago.
    pub fn record(&self, state: QueueState, reason: Option<&str>) {
        self.state.store(state as u8, Ordering::Relaxed);
        if state == QueueState::Active || self.sink.is_none() {
            return;
        }
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(NEVER - 1);
        let last = self.last_log_ms.load(Ordering::Relaxed);
        let due = last == NEVER || now.saturating_sub(last) >= self.interval.as_millis() as u64;
        // Only the thread that wins the swap logs, so a burst of pending
        // polls across threads still yields one line.
        if !due
            || self
                .last_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let reason = reason
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| state.default_reason());
        self.log(
            LogLevel::Warning,
            &format!(
                "Sampling is paused for sampler {}. Reason: {reason}",
                self.label
            ),
        );
    }

    /// Emits a line through the sink, if any.
    pub fn log(&self, level: LogLevel, message: &str) {
        if let Some(s) = &self.sink {
            s.log(level, message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test(start_paused = true)]
    async fn logs_at_most_once_per_interval() {
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let l = lines.clone();
        let obs = QueueObserver::new("s", Duration::from_secs(60)).with_sink(Arc::new(
            move |_: LogLevel, m: &str| l.lock().unwrap().push(m.into()),
        ));
        obs.record(QueueState::PausedRateLimit, None);
        obs.record(QueueState::Active, None);
        assert_eq!(obs.queue_state(), QueueState::Active);
        tokio::time::advance(Duration::from_secs(59)).await;
        obs.record(QueueState::PausedCapacity, Some("why"));
        tokio::time::advance(Duration::from_secs(1)).await;
        obs.record(QueueState::Unknown, Some("odd"));
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with("Reason: concurrent sampler weights limit hit"));
        assert!(lines[1].ends_with("Reason: odd"));
    }

    #[test]
    fn parse() {
        for s in ["active", "paused_capacity", "paused_rate_limit", "unknown"] {
            assert_eq!(QueueState::parse(s).as_str(), s);
        }
        assert_eq!(QueueState::parse("melting"), QueueState::Unknown);
    }
}
