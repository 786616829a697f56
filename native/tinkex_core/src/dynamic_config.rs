//! The server's dynamic config: `POST /api/v1/client/dynamic_config`, the
//! flags a live client re-reads (the Python SDK's
//! `ClientDynamicConfigResponse`), unlike `client/config` which is read once.
//!
//! It is fetched once when the client starts (a 404 means the defaults:
//! the server predates the endpoint) and then every
//! `max(refresh_interval_sec, 10 s)`; a failed refresh keeps the last good
//! values. Samples read the flags in force from [`DynamicFlags`] — a few
//! atomics, no lock and no message to any process.
//!
//! ```
//! use tinkex_core::dynamic_config::{DynamicConfig, DynamicFlags};
//! let c: DynamicConfig = serde_json::from_str(r#"{"sample_cancel_enabled":true,"new":1}"#).unwrap();
//! assert_eq!(c.sample_cancel_max_batch_size, 64);
//! let flags = DynamicFlags::new(&c);
//! assert!(flags.cancel_enabled());
//! assert_eq!(flags.get(), c);
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Weak;
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use serde::Deserialize;

use crate::error::{Error, ErrorKind};
use crate::http::Endpoint;
use crate::session::{request_with_retries, SessionRetry};
use crate::wire::ClientConfigRequest;

/// The shortest refresh period, whatever the server asks (the SDK's
/// `MIN_REFRESH_INTERVAL_SEC`).
pub const MIN_REFRESH: Duration = Duration::from_secs(10);

/// Timeout of one fetch (the SDK's 10 s).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The answer of `client/dynamic_config`; missing keys take the SDK's
/// defaults and unknown keys are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DynamicConfig {
    /// How often to re-fetch, in seconds (default 300; at least 10 s apart).
    pub refresh_interval_sec: u64,
    /// Announce abandoned samples on `cancel_future` (default false).
    pub sample_cancel_enabled: bool,
    /// Cancels sent at once per drain round (default 64).
    pub sample_cancel_max_batch_size: u64,
}

impl Default for DynamicConfig {
    fn default() -> DynamicConfig {
        DynamicConfig {
            refresh_interval_sec: 300,
            sample_cancel_enabled: false,
            sample_cancel_max_batch_size: 64,
        }
    }
}

/// The dynamic config in force for one client, readable from any thread
/// without a lock. Each field is updated on its own: a sample may see a
/// refresh half-applied, which is harmless for independent flags.
#[derive(Debug)]
pub struct DynamicFlags {
    refresh_interval_sec: AtomicU64,
    cancel_enabled: AtomicBool,
    cancel_max_batch: AtomicU64,
    /// Successful fetches after the initial one.
    refreshes: AtomicU64,
}

impl Default for DynamicFlags {
    fn default() -> DynamicFlags {
        DynamicFlags::new(&DynamicConfig::default())
    }
}

impl DynamicFlags {
    /// Flags holding `initial`.
    pub fn new(initial: &DynamicConfig) -> DynamicFlags {
        let f = DynamicFlags {
            refresh_interval_sec: AtomicU64::new(0),
            cancel_enabled: AtomicBool::new(false),
            cancel_max_batch: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
        };
        f.store(initial);
        f
    }

    /// Puts `c` in force.
    pub fn store(&self, c: &DynamicConfig) {
        self.refresh_interval_sec
            .store(c.refresh_interval_sec, Ordering::Relaxed);
        self.cancel_enabled
            .store(c.sample_cancel_enabled, Ordering::Relaxed);
        self.cancel_max_batch
            .store(c.sample_cancel_max_batch_size, Ordering::Relaxed);
    }

    /// The config in force.
    pub fn get(&self) -> DynamicConfig {
        DynamicConfig {
            refresh_interval_sec: self.refresh_interval_sec.load(Ordering::Relaxed),
            sample_cancel_enabled: self.cancel_enabled.load(Ordering::Relaxed),
            sample_cancel_max_batch_size: self.cancel_max_batch.load(Ordering::Relaxed),
        }
    }

    /// Whether abandoned samples are announced on `cancel_future`.
    pub fn cancel_enabled(&self) -> bool {
        self.cancel_enabled.load(Ordering::Relaxed)
    }

    /// Cancels sent at once; at least 1 (a server's 0 would stall them).
    pub fn cancel_max_batch(&self) -> usize {
        usize::try_from(self.cancel_max_batch.load(Ordering::Relaxed))
            .unwrap_or(usize::MAX)
            .max(1)
    }

    /// Time until the next refresh: the server's interval, at least `floor`.
    pub fn refresh_every(&self, floor: Duration) -> Duration {
        Duration::from_secs(self.refresh_interval_sec.load(Ordering::Relaxed)).max(floor)
    }

    /// Successful refreshes since the client started.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }
}

/// `POST /api/v1/client/dynamic_config` under `policy`; a 404 means the
/// defaults.
pub async fn fetch(ep: &Endpoint, policy: &SessionRetry) -> Result<DynamicConfig, Error> {
    let body = serde_json::to_vec(&ClientConfigRequest {
        sdk_version: ep.sdk_version(),
    })
    .map_err(|e| Error::new(ErrorKind::Internal, format!("encoding a request: {e}")))?;
    let reply = request_with_retries(
        ep,
        Method::POST,
        ep.url("/api/v1/client/dynamic_config", &[])?,
        Some(Bytes::from(body)),
        policy,
    )
    .await?;
    match reply.code() {
        404 => Ok(DynamicConfig::default()),
        _ if reply.status.is_success() => reply.json(),
        _ => Err(reply.to_error()),
    }
}

/// The start-up fetch: the session calls' retry, 10 s per send.
pub fn initial_policy() -> SessionRetry {
    SessionRetry {
        timeout: FETCH_TIMEOUT,
        ..SessionRetry::default()
    }
}

/// A refresh: one send of 10 s, no retry (the next refresh is the retry).
pub fn refresh_policy() -> SessionRetry {
    SessionRetry {
        max_retries: 0,
        timeout: FETCH_TIMEOUT,
        ..SessionRetry::default()
    }
}

/// Refreshes `flags` until they are dropped: sleeps
/// `max(refresh_interval_sec, floor)` (read anew each round, so the server
/// can change its own period), then stores what `fetch` returns;
/// `None` (a failed fetch) keeps the values in force.
pub async fn refresh_loop<F, Fut>(flags: Weak<DynamicFlags>, floor: Duration, mut fetch: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<DynamicConfig>>,
{
    loop {
        let every = match flags.upgrade() {
            Some(f) => f.refresh_every(floor),
            None => return,
        };
        tokio::time::sleep(every).await;
        if flags.strong_count() == 0 {
            return;
        }
        let fetched = fetch().await;
        let Some(f) = flags.upgrade() else { return };
        if let Some(c) = fetched {
            f.store(&c);
            f.refreshes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;

    #[test]
    fn defaults_and_floor() {
        let c: DynamicConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, DynamicConfig::default());
        let f = DynamicFlags::new(&DynamicConfig {
            refresh_interval_sec: 0,
            sample_cancel_enabled: true,
            sample_cancel_max_batch_size: 0,
        });
        assert_eq!(f.refresh_every(MIN_REFRESH), MIN_REFRESH);
        assert_eq!(f.cancel_max_batch(), 1);
        f.store(&DynamicConfig::default());
        assert_eq!(f.refresh_every(MIN_REFRESH), Duration::from_secs(300));
        assert!(!f.cancel_enabled());
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_at_the_servers_period_and_keeps_the_last_good_values() {
        let flags = Arc::new(DynamicFlags::new(&DynamicConfig {
            refresh_interval_sec: 3,
            ..DynamicConfig::default()
        }));
        let t0 = Instant::now();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let c = calls.clone();
        let mut n = 0;
        let task = tokio::spawn(refresh_loop(
            Arc::downgrade(&flags),
            MIN_REFRESH,
            move || {
                n += 1;
                c.lock().unwrap().push(t0.elapsed().as_secs());
                let answer = match n {
                    // The server shortens its own period below the floor…
                    1 => Some(DynamicConfig {
                        refresh_interval_sec: 1,
                        sample_cancel_enabled: true,
                        sample_cancel_max_batch_size: 8,
                    }),
                    // …then fails once: the values stay.
                    2 => None,
                    _ => Some(DynamicConfig {
                        refresh_interval_sec: 20,
                        ..DynamicConfig::default()
                    }),
                };
                async move { answer }
            },
        ));
        tokio::time::sleep(Duration::from_secs(15)).await;
        assert!(flags.cancel_enabled());
        assert_eq!(flags.cancel_max_batch(), 8);
        tokio::time::sleep(Duration::from_secs(10)).await;
        // Second fetch (failed) at 20 s: nothing changed.
        assert!(flags.cancel_enabled());
        assert_eq!(flags.refreshes(), 1);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!flags.cancel_enabled());
        tokio::time::sleep(Duration::from_secs(25)).await;
        // The floor applies to 3 s and 1 s; the server's 20 s is kept.
        assert_eq!(*calls.lock().unwrap(), [10, 20, 30, 50]);
        drop(flags);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(task.is_finished(), "the loop ends once its client is gone");
    }
}
