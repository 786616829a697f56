//! `TinkexNative.Cluster`'s native pieces: the node's budget resource
//! (leased permits, taken by samples without a message) and the hooks of
//! the shared backoff. Every NIF here returns in microseconds; reports to
//! the cluster's member process are messages sent from tokio.
//!
//! Messages to the watcher:
//! - `{:tinkex_budget, %{capacity, used, waiting, lease_seq, valid_us,
//!   expired, level, revoked_total, acquired_total}}` when the budget's
//!   level changes or its lease expires;
//! - `{:tinkex_limiter, {:backoff, remaining_us}}` when a 429 here moved
//!   the backoff of the key, `{:tinkex_limiter, :probe_passed}` when a
//!   probe from here got through.

use std::sync::Arc;
use std::time::Duration;

use rustler::{Atom, Encoder, LocalPid, NifMap, OwnedEnv, ResourceArc};
use tinkex_core::cluster::{Budget, Level, Snapshot};
use tinkex_core::rate_limiter::{LimiterEvent, Listener};

use crate::rate_limiter::Limiter;
use crate::runtime;

mod atoms {
    rustler::atoms! {
        ok,
        tinkex_budget,
        tinkex_limiter,
        backoff,
        probe_passed,
        idle,
        surplus,
        fits,
        starved,
        draining,
    }
}

/// Least time between two budget reports: changes closer together make
/// one message.
const REPORT_GAP: Duration = Duration::from_millis(2);

/// A node's share of the cluster budget of one key.
pub struct BudgetRes(pub Arc<Budget>);

#[rustler::resource_impl]
impl rustler::Resource for BudgetRes {}

#[derive(NifMap)]
struct SnapshotOut {
    capacity: u32,
    used: u32,
    waiting: u32,
    lease_seq: u64,
    valid_us: u64,
    expired: bool,
    level: Atom,
    revoked_total: u64,
    acquired_total: u64,
}

fn level_atom(l: Level) -> Atom {
    match l {
        Level::Idle => atoms::idle(),
        Level::Surplus => atoms::surplus(),
        Level::Fits => atoms::fits(),
        Level::Starved(_) => atoms::starved(),
        Level::Draining => atoms::draining(),
    }
}

impl From<Snapshot> for SnapshotOut {
    fn from(s: Snapshot) -> SnapshotOut {
        SnapshotOut {
            capacity: s.capacity,
            used: s.used,
            waiting: s.waiting,
            lease_seq: s.lease_seq,
            valid_us: s.valid_us,
            expired: s.expired,
            level: level_atom(s.level),
            revoked_total: s.revoked_total,
            acquired_total: s.acquired_total,
        }
    }
}

/// The cluster-wide name of `{base_url, api_key}` (a SHA-256; the key
/// never crosses nodes).
#[rustler::nif]
fn cluster_key<'a>(env: rustler::Env<'a>, base_url: &str, api_key: &str) -> rustler::Term<'a> {
    let digest = tinkex_core::cluster::key_digest(base_url, api_key);
    let mut bin = rustler::NewBinary::new(env, digest.len());
    bin.as_mut_slice().copy_from_slice(&digest);
    bin.into()
}

/// A budget with no lease yet.
#[rustler::nif]
fn budget_new() -> ResourceArc<BudgetRes> {
    ResourceArc::new(BudgetRes(Arc::new(Budget::new())))
}

/// Installs lease `seq`: `capacity` permits for `valid_us` from now (0:
/// keep the lease's end). `false` when an newer lease is in force.
#[rustler::nif]
fn budget_set_lease(b: ResourceArc<BudgetRes>, capacity: u32, valid_us: u64, seq: u64) -> bool {
    b.0.set_lease(capacity, Duration::from_micros(valid_us), seq)
}

/// The budget now.
#[rustler::nif]
fn budget_snapshot(b: ResourceArc<BudgetRes>) -> SnapshotOut {
    b.0.snapshot().into()
}

/// Sends `{:tinkex_budget, snapshot}` to `pid` on every level change, and
/// enforces the lease's end, until the budget is closed or `pid` is gone.
#[rustler::nif]
fn budget_watch(b: ResourceArc<BudgetRes>, pid: LocalPid) -> Atom {
    let budget = b.0.clone();
    runtime::get().spawn(budget.drive(REPORT_GAP, move |snap| {
        let out = SnapshotOut::from(snap);
        OwnedEnv::new()
            .send_and_clear(&pid, |env| (atoms::tinkex_budget(), out).encode(env))
            .is_ok()
    }));
    atoms::ok()
}

/// Hands out no more permits and stops the watcher.
#[rustler::nif]
fn budget_close(b: ResourceArc<BudgetRes>) -> Atom {
    b.0.close();
    atoms::ok()
}

fn send_event(pid: LocalPid, event: LimiterEvent) {
    let _ = OwnedEnv::new().send_and_clear(&pid, |env| {
        let body = match event {
            LimiterEvent::Backoff(d) => {
                let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
                (atoms::backoff(), us).encode(env)
            }
            LimiterEvent::ProbePassed => atoms::probe_passed().encode(env),
        };
        (atoms::tinkex_limiter(), body).encode(env)
    });
}

/// Sends `{:tinkex_limiter, event}` to `pid` for every local backoff that
/// moves the deadline and every probe that gets through (replacing any
/// earlier watcher).
#[rustler::nif]
fn limiter_watch(l: ResourceArc<Limiter>, pid: LocalPid) -> Atom {
    let listener: Listener = Arc::new(move |event| {
        if rustler::thread::is_scheduler_thread() {
            // `send_and_clear` may not run on a scheduler (a backoff set
            // from Elixir): the message leaves from tokio instead.
            runtime::get().spawn(async move { send_event(pid, event) });
        } else {
            send_event(pid, event);
        }
    });
    l.0.set_listener(Some(listener));
    atoms::ok()
}

/// Removes the watcher.
#[rustler::nif]
fn limiter_unwatch(l: ResourceArc<Limiter>) -> Atom {
    l.0.set_listener(None);
    atoms::ok()
}

/// A backoff another node saw (never shortened, not echoed); with
/// `defer_probe` the probe after it is that node's. Returns the
/// microseconds left.
#[rustler::nif]
fn limiter_apply_remote(l: ResourceArc<Limiter>, us: u64, defer_probe: bool) -> u64 {
    l.0.apply_remote(Duration::from_micros(us), defer_probe);
    u64::try_from(l.0.remaining().as_micros()).unwrap_or(u64::MAX)
}

/// Another node's probe got through: the backoff is over here too.
#[rustler::nif]
fn limiter_release_remote(l: ResourceArc<Limiter>) -> Atom {
    l.0.release_remote();
    atoms::ok()
}

/// Stops waiting for another node's probe.
#[rustler::nif]
fn limiter_end_defer(l: ResourceArc<Limiter>) -> Atom {
    l.0.end_defer();
    atoms::ok()
}

#[derive(NifMap)]
struct ProbeStateOut {
    tripped: bool,
    probing: bool,
    deferring: bool,
    remaining_us: u64,
}

/// Where the limiter is in a backoff's probe.
#[rustler::nif]
fn limiter_probe_state(l: ResourceArc<Limiter>) -> ProbeStateOut {
    let s = l.0.probe_state();
    ProbeStateOut {
        tripped: s.tripped,
        probing: s.probing,
        deferring: s.deferring,
        remaining_us: u64::try_from(l.0.remaining().as_micros()).unwrap_or(u64::MAX),
    }
}
