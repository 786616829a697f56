//! The periodic progress line of the Python SDK's `_maybe_log_progress`:
//! at most one every 2 s, or when the handler falls idle, saying how many
//! executions wait, run and have completed, and which errors happened
//! since the last line.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Handler;

/// Minimum time between two progress lines (the SDK's 2 s).
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

/// One progress line's facts.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressReport {
    /// Executions waiting for a permit.
    pub waiting: u64,
    /// Executions holding a permit.
    pub in_flight: u64,
    /// Successful executions.
    pub processed: u64,
    /// Retries started.
    pub retries: u64,
    /// Errors since the last report, most frequent first.
    pub errors: Vec<(String, u64)>,
}

impl ProgressReport {
    /// The SDK's wording: `"[name]: W waiting, I in progress, P completed"`,
    /// plus a second line of retries and errors when there were any.
    pub fn lines(&self, name: &str) -> Vec<String> {
        let mut lines = vec![format!(
            "[{name}]: {} waiting, {} in progress, {} completed",
            self.waiting, self.in_flight, self.processed
        )];
        if !self.errors.is_empty() {
            let errs: Vec<String> = self
                .errors
                .iter()
                .map(|(e, n)| format!("({e:?}, {n})"))
                .collect();
            lines.push(format!(
                "[{name}]: {} total retries, errors since last log: [{}]",
                self.retries,
                errs.join(", ")
            ));
        }
        lines
    }
}

impl Handler {
    /// A report when one is due — 2 s since the last, or the handler is
    /// idle — claimed atomically so concurrent callers print it once.
    /// Cheap when none is due: two atomic loads.
    pub fn progress_report(&self) -> Option<ProgressReport> {
        let now = self.now_us();
        let last = self.last_report_us.load(Ordering::Acquire);
        let c = &self.counters;
        let waiting = c.waiting.load(Ordering::Relaxed);
        let in_flight = c.in_flight.load(Ordering::Relaxed);
        let events = c.processed.load(Ordering::Relaxed)
            + c.failed.load(Ordering::Relaxed)
            + c.retries.load(Ordering::Relaxed);
        // Falling idle is worth a line only if something happened since
        // the last one.
        let idle_news =
            waiting + in_flight == 0 && events != self.reported_events.load(Ordering::Relaxed);
        let due = now.saturating_sub(last) >= PROGRESS_INTERVAL.as_micros() as u64 || idle_news;
        if !due
            || self
                .last_report_us
                .compare_exchange(last, now.max(last + 1), Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return None;
        }
        self.reported_events.store(events, Ordering::Relaxed);
        Some(ProgressReport {
            waiting,
            in_flight,
            processed: c.processed.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            errors: c.take_errors(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetryConfig;
    use crate::error::Error;
    use crate::handler::NoEvents;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn reports_every_two_seconds_and_when_idle() {
        let h = Arc::new(Handler::new("p", RetryConfig::default()));
        let permit = h.acquire().await;
        assert!(h.progress_report().is_none(), "busy, and less than 2 s");
        tokio::time::sleep(PROGRESS_INTERVAL).await;
        let r = h.progress_report().unwrap();
        assert!(h.progress_report().is_none(), "not twice within 2 s");
        assert_eq!((r.waiting, r.in_flight), (0, 1));
        drop(permit);
        h.record_failure("http 503".into(), true);
        h.execute(&NoEvents, |_| async { Ok::<_, Error>(()) })
            .await
            .unwrap();
        // Idle after progress: due at once.
        let r = h.progress_report().unwrap();
        assert_eq!(r.processed, 1);
        assert_eq!(
            r.lines("p"),
            [
                "[p]: 0 waiting, 0 in progress, 1 completed",
                "[p]: 1 total retries, errors since last log: [(\"http 503\", 1)]"
            ]
        );
        assert!(h.progress_report().is_none());
    }
}
