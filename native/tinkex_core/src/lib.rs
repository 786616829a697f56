//! # tinkex_core
//!
//! The logic of tinkex_native, in plain Rust so `cargo test` reaches all of
//! it: corrected backoff math, retry configuration, failure classification,
//! the shared 429 backoff, the retry handler (semaphore, counters,
//! watchdog, retry loop) and the Tinker sampling executor. The NIF crate
//! `tinkex_nif` only translates terms to and from these types.

pub mod backoff;
pub mod classify;
pub mod client;
pub mod cluster;
pub mod config;
pub mod error;
pub mod handler;
pub mod http;
pub mod precise_sleep;
pub mod proto;
pub mod rate_limiter;
pub mod sampling;
pub mod session;
pub mod wire;
