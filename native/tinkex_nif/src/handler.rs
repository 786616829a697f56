//! `TinkexNative.RetryHandler`: the handler resource and permit leases for
//! Elixir functions run under it.

use std::sync::{Arc, Mutex};

use rustler::{Atom, Env, LocalPid, Monitor, NifMap, ResourceArc, Term};
use tinkex_core::handler::{live_handlers, Handler, Permit};
use tokio::task::AbortHandle;

use crate::atoms;
use crate::config::NativeConfig;
use crate::error::{self, decode_arg};
use crate::jobs::{self, ReplyTo};

/// A handle on a cached handler; holding it keeps the handler (and its
/// semaphore) alive.
pub struct HandlerRes(pub Arc<Handler>);

#[rustler::resource_impl]
impl rustler::Resource for HandlerRes {}

/// One execution's claim on a permit, owned by the Elixir caller. The
/// permit is returned by `lease_release/2`, when the lease is garbage
/// collected, or when the caller process dies — whichever comes first.
pub struct Lease {
    slot: Arc<Mutex<Slot>>,
}

#[derive(Default)]
struct Slot {
    permit: Option<Permit>,
    acquiring: Option<AbortHandle>,
    released: bool,
}

impl Lease {
    fn release(&self) -> Option<Permit> {
        let mut s = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        s.released = true;
        if let Some(t) = s.acquiring.take() {
            t.abort();
        }
        s.permit.take()
    }
}

#[rustler::resource_impl]
impl rustler::Resource for Lease {
    fn down<'a>(&'a self, _env: Env<'a>, _pid: LocalPid, _monitor: Monitor) {
        drop(self.release());
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.release());
    }
}

/// `{:ok, handler}` or `{:error, message}`; a config of the wrong shape
/// raises `ArgumentError`.
#[rustler::nif]
fn handler_get<'a>(
    name: String,
    config: Term<'a>,
) -> rustler::NifResult<(Atom, ResourceArc<HandlerRes>)> {
    let config: NativeConfig = decode_arg(config)?;
    let config = config
        .into_core()
        .map_err(|m| rustler::Error::Term(Box::new(m)))?;
    Ok((
        atoms::ok(),
        ResourceArc::new(HandlerRes(Handler::get(&name, config))),
    ))
}

#[derive(NifMap)]
struct StatsMap {
    waiting: u64,
    in_flight: u64,
    processed: u64,
    failed: u64,
    retries: u64,
    stuck_events: u64,
    available_permits: Option<u64>,
    max_connections: Option<u64>,
    ms_since_progress: u64,
    errors: Vec<(String, u64)>,
}

#[rustler::nif]
fn handler_stats(h: ResourceArc<HandlerRes>) -> StatsMap {
    let s = h.0.stats();
    StatsMap {
        waiting: s.waiting,
        in_flight: s.in_flight,
        processed: s.processed,
        failed: s.failed,
        retries: s.retries,
        stuck_events: s.stuck_events,
        available_permits: s.available_permits,
        max_connections: s.max_connections,
        ms_since_progress: s.ms_since_progress,
        errors: s.errors,
    }
}

/// Registers the caller as a waiter and returns a lease at once. The grant
/// arrives as `{:tinkex_permit, ref, :ok}` (or `{:tinkex_permit, ref,
/// {:error, error}}` should the native side fail); if the watchdog later
/// declares the execution stuck, `{:tinkex_stuck, ref, :stuck}` follows.
#[rustler::nif]
fn handler_acquire<'a>(
    env: Env<'a>,
    h: ResourceArc<HandlerRes>,
    reference: Term<'a>,
) -> ResourceArc<Lease> {
    let pid = env.pid();
    let granted = ReplyTo::new(pid, reference).shared();
    let stuck = ReplyTo::new(pid, reference);
    let slot = Arc::new(Mutex::new(Slot::default()));
    let lease = ResourceArc::new(Lease { slot: slot.clone() });
    let handler = h.0.clone();
    let failed = granted.clone();
    let task = jobs::spawn(
        async move {
            let permit = handler.acquire().await;
            permit.on_stuck(Box::new(move || {
                stuck.send(atoms::tinkex_stuck(), |env| atoms::stuck().to_term(env))
            }));
            let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
            if s.released {
                return Ok(()); // the caller is gone; the permit drops here
            }
            s.permit = Some(permit);
            s.acquiring = None;
            drop(s);
            granted.send(atoms::tinkex_permit(), |env| atoms::ok().to_term(env));
            Ok(())
        },
        move |result| {
            if let Err(e) = result {
                failed.send(atoms::tinkex_permit(), |env| error::error_result(env, &e));
            }
        },
    );
    {
        let mut s = lease.slot.lock().unwrap_or_else(|p| p.into_inner());
        if !s.released && s.permit.is_none() {
            s.acquiring = Some(task);
        }
    }
    lease.monitor(Some(env), &pid);
    lease
}

/// Returns the lease's permit; `success` advances the progress clock.
/// Answers `:stuck_sent` when a `{:tinkex_stuck, ref, :stuck}` message is
/// on its way (the caller must drain it), else `:ok`.
#[rustler::nif]
fn lease_release(lease: ResourceArc<Lease>, success: bool) -> Atom {
    let Some(permit) = lease.release() else {
        return atoms::ok();
    };
    if success {
        permit.handler().record_success();
    }
    if permit.disarm_stuck() {
        atoms::stuck_sent()
    } else {
        atoms::ok()
    }
}

/// Counts a failed attempt of an Elixir execution.
#[rustler::nif]
fn handler_record_failure(h: ResourceArc<HandlerRes>, label: String, retried: bool) -> Atom {
    h.0.record_failure(label, retried);
    atoms::ok()
}

/// Live cached handlers in the VM.
#[rustler::nif]
fn handler_live_count() -> usize {
    live_handlers()
}

/// The handler's progress lines when one is due (every 2 s, or on falling
/// idle), else `[]`; `TinkexNative.RetryHandler` logs them at debug level.
#[rustler::nif]
fn handler_progress(h: ResourceArc<HandlerRes>) -> Vec<String> {
    h.0.progress_report()
        .map(|r| r.lines(h.0.name()))
        .unwrap_or_default()
}
