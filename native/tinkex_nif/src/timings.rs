//! Overrides of the protocol's delays, as a keyword list of milliseconds
//! (`TinkexNative.SamplingClient`'s `:timings` option; tests shrink them).

use std::time::Duration;

use tinkex_core::sampling::Timings;

/// Applies `[{name, ms}]` to the defaults, or names the unknown field.
pub fn from_overrides(overrides: Vec<(String, u64)>) -> Result<Timings, String> {
    let mut t = Timings::default();
    for (name, ms) in overrides {
        let d = Duration::from_millis(ms);
        let field = match name.as_str() {
            "submit_timeout" => &mut t.submit_timeout,
            "submit_backoff_base" => &mut t.submit_backoff_base,
            "submit_backoff_cap" => &mut t.submit_backoff_cap,
            "submit_total" => &mut t.submit_total,
            "rate_limit_small" => &mut t.rate_limit_small,
            "rate_limit_large" => &mut t.rate_limit_large,
            "billing_pause" => &mut t.billing_pause,
            "billing_max" => &mut t.billing_max,
            "billing_reset" => &mut t.billing_reset,
            "poll_timeout" => &mut t.poll_timeout,
            "poll_5xx_initial" => &mut t.poll_5xx_initial,
            "poll_5xx_cap" => &mut t.poll_5xx_cap,
            "poll_backoff_base" => &mut t.poll_backoff_base,
            "poll_backoff_cap" => &mut t.poll_backoff_cap,
            "pause_log_interval" => &mut t.pause_log_interval,
            "dispatch_recent_window" => &mut t.dispatch_recent_window,
            "futures_poll_timeout" => &mut t.futures_poll_timeout,
            "futures_ack_timeout" => &mut t.futures_ack_timeout,
            "futures_retry" => &mut t.futures_retry,
            other => return Err(format!("unknown timing {other:?}")),
        };
        *field = d;
    }
    Ok(t)
}
