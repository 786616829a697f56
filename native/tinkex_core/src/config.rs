//! The retry configuration, mirrored from `%TinkexNative.RetryConfig{}`.
//!
//! The Elixir side validates user input and produces the friendly messages;
//! [`RetryConfig::validate`] checks the same rules again so that no invalid
//! value can reach the handler through the NIF. Defaults are the official
//! Python SDK's (`tinker.lib.retry_handler.RetryConfig`).

use std::hash::{Hash, Hasher};

use crate::backoff::Backoff;
use crate::error::{Error, ErrorKind};

/// How the handler retries and limits one sampling session's requests.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Retries after the first attempt; `None` is unlimited (the watchdog
    /// bounds the time instead).
    pub max_retries: Option<u64>,
    /// Delay before the first retry, ms.
    pub base_delay_ms: u64,
    /// Cap of every retry delay, ms; `>= base_delay_ms`.
    pub max_delay_ms: u64,
    /// Jitter fraction in `[0, 1]`.
    pub jitter_pct: f64,
    /// Time without any success after which in-flight requests fail as
    /// stuck, ms; `> 0`.
    pub progress_timeout_ms: u64,
    /// Permits of the handler's semaphore; `None` means no semaphore.
    pub max_connections: Option<u64>,
    /// `false`: one attempt only (still under the semaphore and watchdog).
    pub enable_retry_logic: bool,
    /// `false`: no watchdog.
    pub enable_stuck_detection: bool,
    /// Inclusive HTTP status ranges that are retried.
    pub retry_statuses: Vec<(u16, u16)>,
    /// Error kinds retried whatever their status.
    pub retry_kinds: Vec<ErrorKind>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: None,
            base_delay_ms: 500,
            max_delay_ms: 10_000,
            jitter_pct: 0.25,
            progress_timeout_ms: 7_200_000,
            max_connections: Some(1000),
            enable_retry_logic: true,
            enable_stuck_detection: true,
            retry_statuses: vec![(408, 409), (429, 429), (500, 599)],
            retry_kinds: vec![ErrorKind::Transport, ErrorKind::Timeout, ErrorKind::Expired],
        }
    }
}

// `f64` is not `Hash`; hashing its bits is sound here because validation
// rejects NaN, and `0.0`/`-0.0` are normalised by `validate`.
impl Eq for RetryConfig {}
impl Hash for RetryConfig {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.max_retries.hash(h);
        self.base_delay_ms.hash(h);
        self.max_delay_ms.hash(h);
        self.jitter_pct.to_bits().hash(h);
        self.progress_timeout_ms.hash(h);
        self.max_connections.hash(h);
        self.enable_retry_logic.hash(h);
        self.enable_stuck_detection.hash(h);
        self.retry_statuses.hash(h);
        self.retry_kinds.hash(h);
    }
}

impl RetryConfig {
    /// Checks every rule; returns the config with `-0.0` jitter made `0.0`.
    ///
    /// ```
    /// use tinkex_core::config::RetryConfig;
    /// let bad = RetryConfig { base_delay_ms: 20_000, ..RetryConfig::default() };
    /// let err = bad.validate().unwrap_err();
    /// assert!(err.message.contains("base_delay_ms"));
    /// ```
    pub fn validate(mut self) -> Result<RetryConfig, Error> {
        let invalid = |m: String| Err(Error::new(ErrorKind::Validation, m));
        if !(0.0..=1.0).contains(&self.jitter_pct) {
            return invalid(format!(
                "jitter_pct must be a number in [0, 1], got: {}",
                self.jitter_pct
            ));
        }
        self.jitter_pct += 0.0; // -0.0 + 0.0 == +0.0
        if self.base_delay_ms > self.max_delay_ms {
            return invalid(format!(
                "base_delay_ms ({}) must not exceed max_delay_ms ({})",
                self.base_delay_ms, self.max_delay_ms
            ));
        }
        if self.progress_timeout_ms == 0 {
            return invalid("progress_timeout_ms must be a positive integer, got: 0".into());
        }
        if self.max_connections == Some(0) {
            return invalid("max_connections must be a positive integer or nil, got: 0".into());
        }
        if let Some(&(lo, hi)) = self.retry_statuses.iter().find(|(lo, hi)| lo > hi) {
            return invalid(format!("retry_statuses has an empty range {lo}..{hi}"));
        }
        Ok(self)
    }

    /// The backoff of this config.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.base_delay_ms, self.max_delay_ms, self.jitter_pct)
    }

    /// Whether this config's rule retries `e`.
    ///
    /// ```
    /// use tinkex_core::config::RetryConfig;
    /// use tinkex_core::error::Error;
    /// let c = RetryConfig::default();
    /// assert!(c.is_retryable(&Error::http(503, "x")));
    /// assert!(!c.is_retryable(&Error::http(404, "x")));
    /// ```
    pub fn is_retryable(&self, e: &Error) -> bool {
        if self.retry_kinds.contains(&e.kind) {
            return true;
        }
        e.kind == ErrorKind::Http
            && e.status.is_some_and(|s| {
                self.retry_statuses
                    .iter()
                    .any(|&(lo, hi)| (lo..=hi).contains(&s))
            })
    }

    /// Whether another retry is allowed after `retries` retries.
    pub fn may_retry(&self, retries: u64) -> bool {
        self.enable_retry_logic && self.max_retries.is_none_or(|m| retries < m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn hash_of(c: &RetryConfig) -> u64 {
        let mut h = DefaultHasher::new();
        c.hash(&mut h);
        h.finish()
    }

    #[test]
    fn defaults_are_python_sdk_defaults() {
        let c = RetryConfig::default().validate().unwrap();
        assert_eq!(c.max_retries, None);
        assert_eq!((c.base_delay_ms, c.max_delay_ms), (500, 10_000));
        assert_eq!(c.jitter_pct, 0.25);
        assert_eq!(c.progress_timeout_ms, 7_200_000);
        assert_eq!(c.max_connections, Some(1000));
    }

    #[test]
    fn equal_configs_hash_equal() {
        let a = RetryConfig {
            jitter_pct: -0.0,
            ..RetryConfig::default()
        }
        .validate()
        .unwrap();
        let b = RetryConfig {
            jitter_pct: 0.0,
            ..RetryConfig::default()
        };
        assert_eq!(a, b);
        assert_eq!(hash_of(&a), hash_of(&b));
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            RetryConfig {
                jitter_pct: f64::NAN,
                ..Default::default()
            },
            RetryConfig {
                jitter_pct: 1.5,
                ..Default::default()
            },
            RetryConfig {
                progress_timeout_ms: 0,
                ..Default::default()
            },
            RetryConfig {
                max_connections: Some(0),
                ..Default::default()
            },
            RetryConfig {
                retry_statuses: vec![(500, 400)],
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err());
        }
    }

    #[test]
    fn retry_budget() {
        let c = RetryConfig {
            max_retries: Some(2),
            ..Default::default()
        };
        assert!(c.may_retry(1));
        assert!(!c.may_retry(2));
        let off = RetryConfig {
            enable_retry_logic: false,
            ..Default::default()
        };
        assert!(!off.may_retry(0));
    }
}
