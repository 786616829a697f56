//! `TinkexNative.RateLimiter`: the shared 429 backoff as a resource.

use std::sync::Arc;
use std::time::Duration;

use rustler::{Atom, Env, ResourceArc, Term};
use tinkex_core::rate_limiter::RateLimiter;

use crate::atoms;
use crate::error;
use crate::jobs::{self, ReplyTo};

/// A handle on the limiter of one `{base_url, api_key}`.
pub struct Limiter(pub Arc<RateLimiter>);

#[rustler::resource_impl]
impl rustler::Resource for Limiter {}

#[rustler::nif]
fn rate_limiter_for_key(base_url: String, api_key: String) -> ResourceArc<Limiter> {
    ResourceArc::new(Limiter(RateLimiter::for_key(&base_url, &api_key)))
}

#[rustler::nif]
fn rate_limiter_set_backoff(l: ResourceArc<Limiter>, ms: u64) -> u64 {
    l.0.set_backoff(Duration::from_millis(ms));
    ceil_ms(l.0.remaining())
}

#[rustler::nif]
fn rate_limiter_clear(l: ResourceArc<Limiter>) -> Atom {
    l.0.clear();
    atoms::ok()
}

#[rustler::nif]
fn rate_limiter_remaining_ms(l: ResourceArc<Limiter>) -> u64 {
    ceil_ms(l.0.remaining())
}

/// `:ok` when there is no backoff; otherwise `:wait`, and
/// `{:tinkex_backoff_over, ref, :ok}` arrives when it ends (one exact timer,
/// re-armed only if the deadline moves later), or `{:tinkex_backoff_over,
/// ref, {:error, error}}` should the native side fail.
#[rustler::nif]
fn rate_limiter_wait<'a>(env: Env<'a>, l: ResourceArc<Limiter>, reference: Term<'a>) -> Atom {
    if l.0.deadline().is_none() {
        return atoms::ok();
    }
    let over = ReplyTo::new(env.pid(), reference).shared();
    let failed = over.clone();
    let limiter = l.0.clone();
    jobs::spawn(
        async move {
            // The message leaves from the precise timer thread at the deadline.
            limiter
                .wait_then(move || {
                    over.send(atoms::tinkex_backoff_over(), |env| atoms::ok().to_term(env))
                })
                .await;
            Ok(())
        },
        move |result| {
            if let Err(e) = result {
                failed.send(atoms::tinkex_backoff_over(), |env| {
                    error::error_result(env, &e)
                });
            }
        },
    );
    atoms::wait()
}

#[rustler::nif]
fn rate_limiter_count() -> usize {
    RateLimiter::registry_len()
}

fn ceil_ms(d: Duration) -> u64 {
    u64::try_from(d.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
}
