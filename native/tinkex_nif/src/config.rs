//! `%TinkexNative.RetryConfig{}` as it crosses into Rust: decoded once, when a
//! handler is fetched.

use rustler::NifMap;
use tinkex_core::config::RetryConfig;

use crate::error::kind_of;

/// The native form built by `TinkexNative.RetryConfig.to_native/1`.
#[derive(NifMap)]
pub struct NativeConfig {
    max_retries: Option<u64>,
    base_delay_ms: u64,
    max_delay_ms: u64,
    jitter_pct: f64,
    progress_timeout_ms: u64,
    max_connections: Option<u64>,
    enable_retry_logic: bool,
    enable_stuck_detection: bool,
    retry_statuses: Vec<(u16, u16)>,
    retry_kinds: Vec<String>,
}

impl NativeConfig {
    /// The validated core config, or a message naming the bad field.
    pub fn into_core(self) -> Result<RetryConfig, String> {
        let retry_kinds = self
            .retry_kinds
            .iter()
            .map(|k| kind_of(k).ok_or_else(|| format!("retry_kinds: unknown error type {k:?}")))
            .collect::<Result<Vec<_>, _>>()?;
        RetryConfig {
            max_retries: self.max_retries,
            base_delay_ms: self.base_delay_ms,
            max_delay_ms: self.max_delay_ms,
            jitter_pct: self.jitter_pct,
            progress_timeout_ms: self.progress_timeout_ms,
            max_connections: self.max_connections,
            enable_retry_logic: self.enable_retry_logic,
            enable_stuck_detection: self.enable_stuck_detection,
            retry_statuses: self.retry_statuses,
            retry_kinds,
        }
        .validate()
        .map_err(|e| e.message)
    }
}
