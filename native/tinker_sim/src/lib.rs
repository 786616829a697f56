//! `tinker_sim`: a local HTTP simulator of the Tinker sampling API with
//! scripted faults.
//!
//! It speaks the protocol of `docs/protocol.md` (session set-up, `asample`,
//! long-polled `retrieve_future`, the `retrieve_futures` session poll,
//! protobuf or JSON results) closely enough that the official Python SDK
//! (`tinker==0.38.0`) samples against it; `test/conformance/run` proves it.
//! Results are deterministic (see [`results`]), faults are scripted by a
//! scenario (see [`scenario`] and `native/tinker_sim/README.md`), and every
//! request is observable through `/_sim/log` and `/_sim/stats`.
//!
//! Start it in-process from a test:
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let (addr, sim) = tinker_sim::serve(tinker_sim::SimConfig::default()).await?;
//! sim.set_scenario(&serde_json::json!({"rules": [
//!     {"endpoint": "asample", "match": {"first": 1}, "action": {"status": 429}}
//! ]})).unwrap();
//! // ... point a client at format!("http://{addr}") ...
//! let stats = sim.stats();
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod config;
pub mod encode;
pub mod endpoint;
pub mod future;
pub mod http;
pub mod image;
pub mod log;
pub mod matcher;
pub mod outstanding;
pub mod padded;
pub mod proto;
pub mod queue;
pub mod request;
pub mod results;
mod routes;
pub mod rule;
pub mod scenario;
mod server;
pub mod spec;
pub mod state;
pub mod stats;

pub use config::SimConfig;
pub use results::{expected_tokens, ResultKey, SampleResult};
pub use scenario::Latency;
pub use spec::{SampleSpec, SamplingParams};
pub use state::SimState;

use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running simulator. Dropping it stops the server (like [`SimHandle::shutdown`],
/// without waiting).
pub struct SimHandle {
    addr: SocketAddr,
    state: Arc<SimState>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Binds `config.host:config.port` and serves in a background task of the
/// current tokio runtime. Fails when the address cannot be bound, the
/// scenario is invalid, or the log file cannot be created.
pub async fn serve(config: SimConfig) -> std::io::Result<(SocketAddr, SimHandle)> {
    let state = Arc::new(SimState::new(&config)?);
    let listener = TcpListener::bind((config.host, config.port)).await?;
    let addr = listener.local_addr()?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(server::accept_loop(listener, state.clone(), shutdown_rx));
    Ok((
        addr,
        SimHandle {
            addr,
            state,
            shutdown,
            task,
        },
    ))
}

impl SimHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The shared state (stats, log, futures).
    pub fn state(&self) -> &Arc<SimState> {
        &self.state
    }

    /// Applies a scenario patch, as `POST /_sim/scenario` does.
    pub fn set_scenario(&self, patch: &Value) -> Result<(), String> {
        self.state.apply_scenario(patch).map(|_| ())
    }

    /// Clears state, log and stats, as `POST /_sim/reset` does.
    pub fn reset(&self) {
        self.state.reset();
    }

    /// The `/_sim/stats` document (request and future counters).
    pub fn stats(&self) -> Value {
        let mut v = self.state.stats.to_json();
        v["rules"] = self.state.settings().rules.stats();
        self.state.outstanding.add_to(&mut v);
        v
    }

    /// Every log entry in memory, as `/_sim/log` returns them.
    pub fn log(&self) -> Vec<Value> {
        let (entries, _, _) = self.state.log.since(0, usize::MAX);
        entries
            .iter()
            .map(|e| serde_json::to_value(&**e).unwrap_or(Value::Null))
            .collect()
    }

    /// Stops accepting, closes every connection, and waits for the accept
    /// loop to end.
    pub async fn shutdown(self) {
        let SimHandle { task, shutdown, .. } = self;
        let _ = shutdown.send(true);
        drop(shutdown);
        let _ = task.await;
    }
}
