//! # tinkex_core
//!
//! The logic of tinkex_native, in plain Rust so `cargo test` reaches all of
//! it: corrected backoff math, retry configuration, failure classification,
//! the shared 429 backoff, the retry handler (semaphore, counters,
//! watchdog, retry loop), the Tinker sampling executor, the server's
//! dynamic config and the announcer of cancelled samples. The NIF crate
//! `tinkex_nif` only translates terms to and from these types.

#![warn(missing_docs)]

pub mod backoff;
pub mod cancel;
pub mod classify;
pub mod client;
pub mod cluster;
pub mod config;
pub mod dynamic_config;
pub mod error;
pub mod handler;
pub mod http;
pub mod precise_sleep;
pub mod proto;
pub mod rate_limiter;
pub mod registry;
pub mod sampling;
pub mod seq_base;
pub mod session;
pub mod task;
pub mod wire;
