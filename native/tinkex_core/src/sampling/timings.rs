//! Every delay and timeout of one attempt, in one place, so tests can
//! shrink them. The defaults are the protocol's (`shared/PROTOCOL.md`).

use std::time::Duration;

/// Delays and timeouts of submit and poll.
///
/// | field | default | what |
/// |---|---|---|
/// | `submit_timeout` | 60 s | HTTP timeout of one `asample` |
/// | `submit_backoff_base` | 1 s | first resend delay after a transport failure on submit |
/// | `submit_backoff_cap` | 30 s | largest such delay (1, 2, 4 … 30 s) |
/// | `submit_total` | 300 s | resends stop once this much time has passed |
/// | `rate_limit_small` | 1 s | 429 backoff without a usable `Retry-After`, prompt ≤ 128 KiB |
/// | `rate_limit_large` | 5 s | the same, larger prompts |
/// | `billing_pause` | 5 s | sleep after a 402 inside the billing window |
/// | `billing_max` | 3600 s | the billing window: longer 402 incidents fail |
/// | `billing_reset` | 300 s | a 402 after this long without one starts a new incident |
/// | `poll_timeout` | 45 s | HTTP timeout of one `retrieve_future` |
/// | `poll_5xx_initial` | 10 ms | first re-poll delay after a 5xx (doubles) |
/// | `poll_5xx_cap` | 1 s | largest such delay; reset by any 2xx or 408 |
/// | `poll_backoff_base` | 1 s | first delay after 429 / connection error while polling |
/// | `poll_backoff_cap` | 30 s | largest such delay (1, 2, 4 … 30 s) |
/// | `pause_log_interval` | 60 s | at most one "sampling is paused" log per interval |
/// | `dispatch_recent_window` | 10 s | after a 429 backoff ends, submits stay throttled this long |
/// | `futures_poll_timeout` | 45 s | HTTP timeout of one waiting `retrieve_futures` long poll |
/// | `futures_ack_timeout` | 5 s | HTTP timeout of one ack-only `retrieve_futures` poll |
/// | `futures_retry` | 1 s | sleep after a retryable `retrieve_futures` failure (fixed, no backoff) |
///
/// ```
/// use std::time::Duration;
/// use tinkex_core::sampling::Timings;
/// let t = Timings { poll_timeout: Duration::from_millis(200), ..Timings::default() };
/// assert_eq!(t.submit_total, Duration::from_secs(300));
/// assert_eq!(t.submit_backoff(0), Duration::from_secs(1));
/// assert_eq!(t.submit_backoff(10), Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// HTTP timeout of one `asample`.
    pub submit_timeout: Duration,
    /// First resend delay after a transport failure on submit.
    pub submit_backoff_base: Duration,
    /// Largest resend delay on submit.
    pub submit_backoff_cap: Duration,
    /// Total time after which submit failures are returned.
    pub submit_total: Duration,
    /// 429 fallback backoff for prompts of at most 128 KiB.
    pub rate_limit_small: Duration,
    /// 429 fallback backoff for larger prompts.
    pub rate_limit_large: Duration,
    /// Sleep after a 402 inside the billing window.
    pub billing_pause: Duration,
    /// Length of the billing window.
    pub billing_max: Duration,
    /// Quiet time after which a 402 starts a new billing incident.
    pub billing_reset: Duration,
    /// HTTP timeout of one `retrieve_future`.
    pub poll_timeout: Duration,
    /// First re-poll delay after a 5xx.
    pub poll_5xx_initial: Duration,
    /// Largest re-poll delay after 5xx answers.
    pub poll_5xx_cap: Duration,
    /// First delay after a 429 or connection error while polling.
    pub poll_backoff_base: Duration,
    /// Largest such delay.
    pub poll_backoff_cap: Duration,
    /// Minimum time between two "sampling is paused" logs.
    pub pause_log_interval: Duration,
    /// How long after a 429 backoff ends submits stay throttled.
    pub dispatch_recent_window: Duration,
    /// HTTP timeout of a waiting `retrieve_futures` long poll.
    pub futures_poll_timeout: Duration,
    /// HTTP timeout of an ack-only `retrieve_futures` poll.
    pub futures_ack_timeout: Duration,
    /// Sleep after a retryable `retrieve_futures` failure.
    pub futures_retry: Duration,
}

impl Default for Timings {
    fn default() -> Timings {
        Timings {
            submit_timeout: Duration::from_secs(60),
            submit_backoff_base: Duration::from_secs(1),
            submit_backoff_cap: Duration::from_secs(30),
            submit_total: Duration::from_secs(300),
            rate_limit_small: Duration::from_secs(1),
            rate_limit_large: Duration::from_secs(5),
            billing_pause: Duration::from_secs(5),
            billing_max: Duration::from_secs(3600),
            billing_reset: Duration::from_secs(300),
            poll_timeout: Duration::from_secs(45),
            poll_5xx_initial: Duration::from_millis(10),
            poll_5xx_cap: Duration::from_secs(1),
            poll_backoff_base: Duration::from_secs(1),
            poll_backoff_cap: Duration::from_secs(30),
            pause_log_interval: Duration::from_secs(60),
            dispatch_recent_window: Duration::from_secs(10),
            futures_poll_timeout: Duration::from_secs(45),
            futures_ack_timeout: Duration::from_secs(5),
            futures_retry: Duration::from_secs(1),
        }
    }
}

/// Prompts above this many estimated bytes get the long 429 fallback.
pub const LARGE_PROMPT_BYTES: u64 = 128 * 1024;

fn doubling(base: Duration, cap: Duration, n: u32) -> Duration {
    base.checked_mul(1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX))
        .map_or(cap, |d| d.min(cap))
}

impl Timings {
    /// These timings with the server's billing window
    /// (`billing_exception_max_pause_duration_sec`) when it is a valid
    /// duration.
    pub fn with_server_flags(mut self, flags: &crate::wire::ServerFlags) -> Timings {
        if let Ok(d) = Duration::try_from_secs_f64(flags.billing_exception_max_pause_duration_sec) {
            self.billing_max = d;
        }
        self
    }

    /// Delay before submit resend `n` (0 = first): `min(base·2^n, cap)`.
    pub fn submit_backoff(&self, n: u32) -> Duration {
        doubling(self.submit_backoff_base, self.submit_backoff_cap, n)
    }

    /// Delay after the `n`-th consecutive 429 or connection error while
    /// polling (0 = first): `min(base·2^n, cap)`.
    pub fn poll_backoff(&self, n: u32) -> Duration {
        doubling(self.poll_backoff_base, self.poll_backoff_cap, n)
    }

    /// The 429 backoff when the server named no usable delay.
    pub fn rate_limit_fallback(&self, estimated_bytes: u64) -> Duration {
        if estimated_bytes <= LARGE_PROMPT_BYTES {
            self.rate_limit_small
        } else {
            self.rate_limit_large
        }
    }

    /// The next 5xx re-poll delay after `current` (none yet: the initial).
    pub fn next_5xx_delay(&self, current: Option<Duration>) -> Duration {
        match current {
            None => self.poll_5xx_initial.min(self.poll_5xx_cap),
            Some(d) => d.saturating_mul(2).min(self.poll_5xx_cap),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let t = Timings::default();
        let secs: Vec<u64> = (0..7).map(|n| t.submit_backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(t.poll_backoff(u32::MAX), Duration::from_secs(30));
        assert_eq!(t.rate_limit_fallback(128 * 1024), Duration::from_secs(1));
        assert_eq!(
            t.rate_limit_fallback(128 * 1024 + 1),
            Duration::from_secs(5)
        );
        let mut d = None;
        let mut seen = vec![];
        for _ in 0..9 {
            let next = t.next_5xx_delay(d);
            seen.push(next.as_millis());
            d = Some(next);
        }
        assert_eq!(seen, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
    }
}
