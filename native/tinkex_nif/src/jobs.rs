//! Work on tokio for an Elixir process: replies as `{tag, ref, payload}`,
//! and the work ends when the process does.

use rustler::env::SavedTerm;
use std::future::Future;
use std::sync::Mutex;

use rustler::{Atom, Encoder, Env, LocalPid, Monitor, OwnedEnv, ResourceArc, Term};
use tokio::task::AbortHandle;

use crate::runtime;

/// Where one reply goes: the caller's pid and its ref, saved out of the
/// NIF call so a tokio thread can send later.
pub struct ReplyTo {
    owned: OwnedEnv,
    saved: SavedTerm,
    pid: LocalPid,
}

impl ReplyTo {
    /// Saves `reference` for a reply to `pid`. Call inside the NIF.
    pub fn new(pid: LocalPid, reference: Term<'_>) -> ReplyTo {
        let owned = OwnedEnv::new();
        let saved = owned.save(reference);
        ReplyTo { owned, saved, pid }
    }

    /// Sends `{tag, ref, payload}`; ignores a dead receiver. Must run on a
    /// non-scheduler thread (tokio), where `send_and_clear` is allowed.
    pub fn send<F>(mut self, tag: Atom, payload: F)
    where
        F: for<'a> FnOnce(Env<'a>) -> Term<'a>,
    {
        let saved = self.saved;
        let _ = self.owned.send_and_clear(&self.pid, |env| {
            (tag, saved.load(env), payload(env)).encode(env)
        });
    }
}

impl ReplyTo {
    /// Sends `{tag, ref, payload}` and keeps the destination for more:
    /// the ref is copied into each message's own env.
    pub fn send_again<F>(&self, tag: Atom, payload: F)
    where
        F: for<'a> FnOnce(Env<'a>) -> Term<'a>,
    {
        let mut msg = OwnedEnv::new();
        let copied = self.owned.run(|env| msg.save(self.saved.load(env)));
        let _ = msg.send_and_clear(&self.pid, |env| {
            (tag, copied.load(env), payload(env)).encode(env)
        });
    }
}

/// Work running for one Elixir process. It monitors that process: if the
/// process dies, the work is aborted (which drops whatever it held —
/// permits, requests — at once).
pub struct Job {
    abort: Mutex<Option<AbortHandle>>,
}

#[rustler::resource_impl]
impl rustler::Resource for Job {
    fn down<'a>(&'a self, _env: Env<'a>, _pid: LocalPid, _monitor: Monitor) {
        if let Some(h) = self.abort.lock().unwrap_or_else(|p| p.into_inner()).take() {
            h.abort();
        }
    }
}

/// Spawns `work` on the runtime, tied to the calling process. Returns
/// `false`, spawning nothing, when the caller is already dead.
pub fn spawn_for_caller<F>(env: Env<'_>, work: F) -> bool
where
    F: Future<Output = ()> + Send + 'static,
{
    let pid = env.pid();
    let job = ResourceArc::new(Job {
        abort: Mutex::new(None),
    });
    if job.monitor(Some(env), &pid).is_none() {
        return false;
    }
    let keep = job.clone();
    let task = runtime::get().spawn(async move {
        // Holding the job keeps its monitor alive until the work ends.
        let _job = keep;
        work.await
    });
    *job.abort.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
    true
}
