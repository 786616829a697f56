//! # tinkex_e2e
//!
//! No code: this crate holds the integration tests (`tests/`) of
//! `tinkex_core`, against scripted mock servers (`tests/common`) and
//! against an in-process `tinker_sim`. They are a crate of their own so
//! that `tinkex_core` depends on neither, and the library's package
//! builds without them.
