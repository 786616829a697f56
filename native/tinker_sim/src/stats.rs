//! Counters behind `GET /_sim/stats`.

use crate::endpoint::Endpoint;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Request and future counters. Every update is an atomic add or a brief
/// per-endpoint lock.
#[derive(Default)]
pub struct Stats {
    by_endpoint: [Mutex<BTreeMap<u16, u64>>; 16],
    requests_total: AtomicU64,
    not_found: AtomicU64,
    /// Futures created by asample (duplicates excluded).
    pub futures_created: AtomicU64,
    /// Futures whose result was delivered at least once.
    pub futures_completed: AtomicU64,
    /// Futures answered as failed at least once.
    pub futures_failed: AtomicU64,
    /// asample calls that named an existing (sampling_session_id, seq_id).
    pub duplicate_submissions: AtomicU64,
    /// Futures cancelled by cancel_future.
    pub futures_cancelled: AtomicU64,
    /// Futures expired by a scripted 410.
    pub futures_expired: AtomicU64,
    /// Sessions finished by sessions/{id}/finish.
    pub sessions_finished: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    /// Counts one answered request (status 0 = no answer).
    pub fn record(&self, endpoint: Option<Endpoint>, status: u16) {
        bump(&self.requests_total);
        match endpoint {
            Some(e) => {
                let mut m = self.by_endpoint[e.index()]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                *m.entry(status).or_insert(0) += 1;
            }
            None => bump(&self.not_found),
        }
    }

    /// Adds 1 to `counter`.
    pub fn bump(&self, counter: &AtomicU64) {
        bump(counter);
    }

    /// How many answers `endpoint` gave with `status`.
    pub fn count(&self, endpoint: Endpoint, status: u16) -> u64 {
        let m = self.by_endpoint[endpoint.index()]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        m.get(&status).copied().unwrap_or(0)
    }

    /// Sets every counter to 0.
    pub fn clear(&self) {
        for m in &self.by_endpoint {
            m.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
        for c in [
            &self.requests_total,
            &self.not_found,
            &self.futures_created,
            &self.futures_completed,
            &self.futures_failed,
            &self.duplicate_submissions,
            &self.futures_cancelled,
            &self.futures_expired,
            &self.sessions_finished,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// The JSON document of `/_sim/stats` (without the `rules`, `log` and
    /// `uptime_us` parts, which the caller adds).
    pub fn to_json(&self) -> Value {
        let mut endpoints = Map::new();
        for e in Endpoint::ALL {
            let m = self.by_endpoint[e.index()]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if m.is_empty() {
                continue;
            }
            let counts: Map<String, Value> =
                m.iter().map(|(s, n)| (s.to_string(), json!(n))).collect();
            endpoints.insert(e.name().to_string(), Value::Object(counts));
        }
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "endpoints": endpoints,
            "requests_total": load(&self.requests_total),
            "not_found": load(&self.not_found),
            "futures_created": load(&self.futures_created),
            "futures_completed": load(&self.futures_completed),
            "futures_failed": load(&self.futures_failed),
            "futures_cancelled": load(&self.futures_cancelled),
            "futures_expired": load(&self.futures_expired),
            "duplicate_submissions": load(&self.duplicate_submissions),
            "sessions_finished": load(&self.sessions_finished),
        })
    }
}
