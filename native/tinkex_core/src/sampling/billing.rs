//! The billing pause: a 402 means the account cannot pay right now. Like
//! the Python SDK (`_should_pause_on_billing`), requests wait and resend
//! while the incident is younger than `billing_max` (1 h); an incident ends
//! after `billing_reset` (5 min) without a 402. Shared by all requests of a
//! [`super::SampleContext`].

use std::sync::Mutex;

use tokio::time::Instant;

use super::observer::{LogLevel, QueueObserver};
use super::timings::Timings;

#[derive(Debug, Default)]
struct Incident {
    first: Option<Instant>,
    last_seen: Option<Instant>,
    last_logged: Option<Instant>,
}

/// The current billing incident of a sampling client.
#[derive(Debug, Default)]
pub struct BillingWindow(Mutex<Incident>);

impl BillingWindow {
    /// A window with no incident.
    pub fn new() -> BillingWindow {
        BillingWindow::default()
    }

    /// Records a 402 with the server's `detail`; true while the caller may
    /// pause and resend, false once the incident is too old (it logs why).
    pub fn on_402(&self, detail: &str, t: &Timings, obs: &QueueObserver) -> bool {
        let now = Instant::now();
        let mut i = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if i.last_seen.is_some_and(|l| now - l > t.billing_reset) {
            *i = Incident::default();
        }
        i.last_seen = Some(now);
        let first = *i.first.get_or_insert(now);
        if now - first > t.billing_max {
            drop(i);
            obs.log(
                LogLevel::Error,
                &format!(
                    "The job was paused due to billing status for {} seconds. This has been happening for too long. Aborting.",
                    (now - first).as_secs()
                ),
            );
            return false;
        }
        let log = i.last_logged.is_none_or(|l| now - l > t.pause_log_interval);
        if log {
            i.last_logged = Some(now);
            drop(i);
            obs.log(
                LogLevel::Warning,
                &format!("The job is paused due to billing status. Error: {detail}"),
            );
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn window_bounds_and_resets() {
        let t = Timings {
            billing_max: Duration::from_secs(10),
            billing_reset: Duration::from_secs(5),
            ..Timings::default()
        };
        let obs = QueueObserver::new("s", Duration::from_secs(60));
        let w = BillingWindow::new();
        for _ in 0..4 {
            assert!(w.on_402("pay", &t, &obs));
            tokio::time::advance(Duration::from_secs(3)).await;
        }
        // 12 s into an incident, longer than 10 s: give up.
        assert!(!w.on_402("pay", &t, &obs));
        // A quiet spell longer than billing_reset starts a new incident.
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(w.on_402("pay", &t, &obs));
    }
}
