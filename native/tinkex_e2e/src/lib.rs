//! # tinkex_e2e
//!
//! No code: this crate holds the end-to-end tests (`tests/`) that drive
//! `tinkex_core` against an in-process `tinker_sim`. They are a crate of
//! their own so that `tinkex_core` has no dependency on the simulator, and
//! the library's package builds without it.
