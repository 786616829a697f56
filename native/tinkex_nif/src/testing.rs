//! Hidden NIFs for the test suite: they look inside the native state, or
//! drive a path no real input reaches (a panicking task). Nothing in the
//! library calls them.

use rustler::{Atom, Binary, Env, NewBinary, ResourceArc, Term};
use tinkex_core::error::Error;
use tinkex_core::rate_limiter::RateLimiter;

use crate::atoms;
use crate::jobs::{spawn_for_caller, ReplyTo};
use crate::rate_limiter::Limiter;

/// Runs a task through the one spawn helper of every NIF task; it panics
/// with `message` unless that is empty. Answers `{:tinkex_test_job, ref,
/// :ok | {:error, error}}`.
#[rustler::nif]
fn test_spawn_job<'a>(env: Env<'a>, message: String, reference: Term<'a>) -> Atom {
    let reply = ReplyTo::new(env.pid(), reference);
    spawn_for_caller(env, reply, atoms::tinkex_test_job(), async move {
        if !message.is_empty() {
            // A panic that skips the panic hook: the same unwinding for the
            // spawn helper to catch, without a backtrace on the test's stderr.
            std::panic::resume_unwind(Box::new(message));
        }
        Ok::<Atom, Error>(atoms::ok())
    });
    atoms::ok()
}

/// The rate-limiter registry's keys of the limiters in use, as binaries:
/// what the VM keeps about each `{base_url, api_key}`.
#[rustler::nif]
fn test_rate_limiter_keys<'a>(env: Env<'a>) -> Vec<Binary<'a>> {
    RateLimiter::registry_keys()
        .iter()
        .map(|k| {
            let mut b = NewBinary::new(env, k.len());
            b.as_mut_slice().copy_from_slice(k);
            b.into()
        })
        .collect()
}

/// Timers the limiter's waits have armed so far.
#[rustler::nif]
fn test_rate_limiter_timer_arms(l: ResourceArc<Limiter>) -> u64 {
    l.0.timer_arms()
}
