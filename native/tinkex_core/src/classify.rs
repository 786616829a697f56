//! Which failures the retry handler retries by default.
//!
//! The rule matches the official Python SDK (`RetryHandler._should_retry`):
//! connection errors, timeouts, expired futures (410 while polling) and
//! HTTP 408, 409, 429 and 5xx are retried; failed futures, decode errors,
//! other 4xx, validation errors and the stuck error are not.

use crate::error::{Error, ErrorKind};

/// True when an HTTP status is transient: 408, 409, 429 or 5xx.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 429) || (500..600).contains(&status)
}

/// The default retry rule for an [`Error`].
///
/// ```
/// use tinkex_core::error::{Error, ErrorKind};
/// use tinkex_core::classify::default_retryable;
/// assert!(default_retryable(&Error::http(503, "unavailable")));
/// assert!(!default_retryable(&Error::http(422, "bad field")));
/// assert!(default_retryable(&Error::new(ErrorKind::Expired, "gone")));
/// ```
pub fn default_retryable(e: &Error) -> bool {
    match e.kind {
        ErrorKind::Transport | ErrorKind::Timeout | ErrorKind::Expired => true,
        ErrorKind::Http => e.status.is_some_and(retryable_status),
        ErrorKind::RequestFailed
        | ErrorKind::Decode
        | ErrorKind::Stuck
        | ErrorKind::Validation
        | ErrorKind::Cancelled
        | ErrorKind::Internal => false,
    }
}

/// Formats milliseconds as seconds the way Python prints a float
/// (`2000` → `"2.0"`, `7200000` → `"7200.0"`, `1500` → `"1.5"`,
/// `20` → `"0.02"`).
pub fn format_seconds(ms: u64) -> String {
    let whole = ms / 1000;
    let frac = ms % 1000;
    if frac == 0 {
        format!("{whole}.0")
    } else {
        let s = format!("{frac:03}");
        format!("{whole}.{}", s.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        for s in [408, 409, 429, 500, 502, 503, 599] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [200, 400, 401, 402, 403, 404, 410, 422, 600] {
            assert!(!retryable_status(s), "{s}");
        }
    }

    #[test]
    fn seconds_like_python() {
        assert_eq!(format_seconds(2000), "2.0");
        assert_eq!(format_seconds(7_200_000), "7200.0");
        assert_eq!(format_seconds(1500), "1.5");
        assert_eq!(format_seconds(20), "0.02");
        assert_eq!(format_seconds(0), "0.0");
    }

    #[test]
    fn kinds() {
        assert!(!default_retryable(&Error::new(ErrorKind::Stuck, "x")));
        assert!(!default_retryable(&Error::new(ErrorKind::Decode, "x")));
        assert!(default_retryable(&Error::new(ErrorKind::Timeout, "x")));
        let failed = Error::request_failed(crate::error::Category::Server, "x");
        assert!(!failed.retryable);
        assert!(
            Error::stuck(2000).message == "No progress made in 2.0s. Requests appear to be stuck."
        );
    }
}
