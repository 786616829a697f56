//! The Rustler NIF of tinkex_native: decodes terms, calls `tinkex_core`,
//! encodes results. No logic lives here; see `tinkex_core`.
//!
//! Long work never runs on a scheduler: every NIF returns within
//! microseconds, and anything that waits (permits, backoff, HTTP) runs on
//! the one tokio runtime and answers with a message.

#![warn(missing_docs)]

mod atoms;
mod backoff;
mod cluster;
mod config;
mod error;
mod handler;
mod jobs;
mod limits;
mod prompt;
mod rate_limiter;
mod runtime;
mod sampling;
mod session;
mod testing;
mod timings;

fn load(_env: rustler::Env, load_info: rustler::Term) -> bool {
    runtime::configure(load_info.decode::<usize>().ok());
    true
}

rustler::init!("Elixir.TinkexNative.Native", load = load);
