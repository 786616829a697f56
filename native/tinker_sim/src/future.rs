//! Futures: one per accepted (sampling_session_id, seq_id), in a sharded map.
//!
//! Readiness is a deadline (`ready_at`), not a task: a pending
//! `retrieve_future` sleeps until `ready_at` or the end of its hold, and
//! wakes early when the global stuck switch changes (a `watch` channel).
//! So 100k futures in flight cost 100k map entries and no timers beyond the
//! polls actually waiting.

use crate::results::{fnv1a64, ResultKey};
use crate::rule::Fate;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::time::Instant;

const SHARDS: usize = 64;

/// The request id the simulator gives (sampling_session_id, seq_id).
pub fn request_id(sampling_session_id: &str, seq_id: i64) -> String {
    format!("req:{sampling_session_id}:{seq_id}")
}

/// The sequence ids of a request's samples.
pub fn sequence_ids(request_id: &str, num_samples: u32) -> Vec<String> {
    (0..num_samples)
        .map(|i| format!("{request_id}:{i}"))
        .collect()
}

/// Mutable per-future state.
#[derive(Debug, Default)]
pub struct FutureState {
    /// retrieve_future calls so far.
    pub polls: u64,
    /// `try_again` answers still owed by the fate.
    pub try_again_left: u32,
    /// Whether `complete_metadata` was answered.
    pub metadata_sent: bool,
    /// Set by a scripted 410: every later poll answers 410.
    pub expired: bool,
    /// Set by cancel_future.
    pub cancelled: bool,
    /// Whether a result was delivered.
    pub delivered: bool,
    /// Whether a failure was delivered.
    pub failure_reported: bool,
}

/// One future.
#[derive(Debug)]
pub struct FutureEntry {
    /// Its id.
    pub request_id: Arc<str>,
    /// The sampling session.
    pub sampling_session_id: Arc<str>,
    /// The seq_id of the asample that created it.
    pub seq_id: i64,
    /// What determines the result.
    pub key: ResultKey,
    /// Its scripted fate.
    pub fate: Fate,
    /// Index of the rule that set the fate.
    pub fate_rule: Option<usize>,
    /// When the result is ready.
    pub ready_at: Instant,
    state: Mutex<FutureState>,
}

impl FutureEntry {
    /// A new future.
    pub fn new(
        request_id: Arc<str>,
        sampling_session_id: Arc<str>,
        seq_id: i64,
        key: ResultKey,
        fate: Fate,
        fate_rule: Option<usize>,
        ready_at: Instant,
    ) -> Self {
        let state = FutureState {
            try_again_left: fate.try_again,
            ..FutureState::default()
        };
        Self {
            request_id,
            sampling_session_id,
            seq_id,
            key,
            fate,
            fate_rule,
            ready_at,
            state: Mutex::new(state),
        }
    }

    /// Locks the mutable state (held only for a few field updates).
    pub fn state(&self) -> MutexGuard<'_, FutureState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The clone that owns it (`seq_id / 1e9`), for retrieve_futures.
    pub fn cloned_sampler_id(&self) -> i64 {
        self.seq_id.div_euclid(1_000_000_000)
    }
}

/// The futures, sharded by request id.
pub struct FutureTable {
    shards: Vec<Mutex<HashMap<Arc<str>, Arc<FutureEntry>>>>,
}

impl Default for FutureTable {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl FutureTable {
    fn shard(&self, id: &str) -> MutexGuard<'_, HashMap<Arc<str>, Arc<FutureEntry>>> {
        let i = (fnv1a64(id.as_bytes()) % SHARDS as u64) as usize;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The future with this id.
    pub fn get(&self, id: &str) -> Option<Arc<FutureEntry>> {
        self.shard(id).get(id).cloned()
    }

    /// The existing future with this id (`true`), or the one `make` builds,
    /// now inserted (`false`).
    pub fn get_or_insert_with(
        &self,
        id: &str,
        make: impl FnOnce() -> FutureEntry,
    ) -> (Arc<FutureEntry>, bool) {
        let mut shard = self.shard(id);
        if let Some(f) = shard.get(id) {
            return (f.clone(), true);
        }
        let f = Arc::new(make());
        shard.insert(f.request_id.clone(), f.clone());
        (f, false)
    }

    /// Number of futures.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every future.
    pub fn clear(&self) {
        for s in &self.shards {
            s.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }
}
