//! The simulator's shared state.

use crate::config::SimConfig;
use crate::future::FutureTable;
use crate::log::Log;
use crate::outstanding::Outstanding;
use crate::queue::SessionQueue;
use crate::scenario::Settings;
use crate::stats::Stats;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::watch;
use tokio::time::Instant;

/// What the simulator knows about a sampling session.
#[derive(Clone, Debug, Default)]
pub struct SamplerInfo {
    /// `base_model` given at creation.
    pub base_model: Option<String>,
    /// `model_path` given at creation.
    pub model_path: Option<String>,
    /// Clones that joined so far.
    pub joined: i64,
}

/// Everything the handlers share.
pub struct SimState {
    /// Start time: log timestamps count from here.
    pub started: Instant,
    /// The settings in force.
    settings: RwLock<Arc<Settings>>,
    /// The settings restored by `/_sim/reset`.
    initial: Settings,
    /// The global stuck switch (mirrors `settings.stuck`, wakes pending polls).
    pub stuck: watch::Sender<bool>,
    /// Accepted key, or `None` for any `tml-` key.
    pub api_key: Option<String>,
    /// Futures by request id.
    pub futures: FutureTable,
    /// retrieve_futures queues by (sampling_session_id, cloned_sampler_id).
    pub queues: Mutex<HashMap<(String, i64), Arc<SessionQueue>>>,
    /// Sampling sessions by id.
    pub samplers: Mutex<HashMap<String, SamplerInfo>>,
    /// Counter for session ids (never reset, so ids stay unique).
    pub next_session: AtomicU64,
    /// Counters.
    pub stats: Stats,
    /// Futures still being worked on, and their maximum.
    pub outstanding: Outstanding,
    /// The request log.
    pub log: Log,
}

impl SimState {
    /// State for `config`; fails when the scenario file or inline scenario
    /// is invalid or the log file cannot be created.
    pub fn new(config: &SimConfig) -> std::io::Result<Self> {
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let mut settings = Settings::defaults(config.latency, config.hold, config.log);
        if let Some(path) = &config.scenario_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                std::io::Error::new(e.kind(), format!("--scenario {}: {e}", path.display()))
            })?;
            let doc: Value = serde_json::from_str(&text)
                .map_err(|e| invalid(format!("--scenario {}: {e}", path.display())))?;
            settings = settings
                .patch(&doc)
                .map_err(|e| invalid(format!("--scenario {}: {e}", path.display())))?;
        }
        if let Some(doc) = &config.scenario {
            settings = settings
                .patch(doc)
                .map_err(|e| invalid(format!("scenario: {e}")))?;
        }
        let file = match &config.log_file {
            Some(p) => Some(std::fs::File::create(p).map_err(|e| {
                std::io::Error::new(e.kind(), format!("--log {}: {e}", p.display()))
            })?),
            None => None,
        };
        let (stuck, _) = watch::channel(settings.stuck);
        Ok(Self {
            started: Instant::now(),
            settings: RwLock::new(Arc::new(settings.clone())),
            initial: settings,
            stuck,
            api_key: config.api_key.clone(),
            futures: FutureTable::default(),
            queues: Mutex::new(HashMap::new()),
            samplers: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(0),
            stats: Stats::default(),
            outstanding: Outstanding::default(),
            log: Log::new(config.log_capacity, file),
        })
    }

    /// Microseconds since start.
    pub fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn install(&self, settings: Settings) -> Arc<Settings> {
        let mut slot = self.settings.write().unwrap_or_else(|e| e.into_inner());
        *slot = Arc::new(settings);
        let installed = slot.clone();
        drop(slot);
        self.set_stuck(installed.stuck);
        installed
    }

    fn set_stuck(&self, stuck: bool) {
        self.stuck.send_if_modified(|s| {
            let changed = *s != stuck;
            *s = stuck;
            changed
        });
    }

    /// Applies a scenario patch (see `Settings::patch`).
    pub fn apply_scenario(&self, patch: &Value) -> Result<Arc<Settings>, String> {
        let mut slot = self.settings.write().unwrap_or_else(|e| e.into_inner());
        let next = Arc::new(slot.patch(patch)?);
        *slot = next.clone();
        drop(slot);
        self.set_stuck(next.stuck);
        Ok(next)
    }

    /// Clears futures, sessions, log and stats, and restores the start-up
    /// scenario.
    pub fn reset(&self) {
        let mut initial = self.initial.clone();
        initial.rules = Arc::new(crate::matcher::RuleSet::new(
            initial.rules.rules.clone(),
            initial.seed,
        ));
        self.install(initial);
        self.futures.clear();
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.samplers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.stats.clear();
        self.outstanding.clear();
        self.log.clear();
    }

    /// Whether the global stuck switch is on.
    pub fn is_stuck(&self) -> bool {
        *self.stuck.borrow()
    }

    /// The retrieve_futures queue of (session, clone), created on demand.
    pub fn queue(&self, sampling_session_id: &str, clone: i64) -> Arc<SessionQueue> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues
            .entry((sampling_session_id.to_string(), clone))
            .or_default()
            .clone()
    }

    /// The queue of (session, clone) if it exists, or a new one when
    /// `create` is true.
    pub fn queue_if(
        &self,
        sampling_session_id: &str,
        clone: i64,
        create: bool,
    ) -> Option<Arc<SessionQueue>> {
        if create {
            return Some(self.queue(sampling_session_id, clone));
        }
        let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if queues.is_empty() {
            return None;
        }
        queues
            .get(&(sampling_session_id.to_string(), clone))
            .cloned()
    }
}
