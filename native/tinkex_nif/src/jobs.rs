//! Work on tokio for an Elixir process: replies as `{tag, ref, payload}`,
//! and the work ends when the process does.
//!
//! Every task the NIF starts goes through [`spawn`] (or [`start_job`],
//! built on it), that is through `tinkex_core::task::spawn_answered`: the
//! caller waits in a `receive` without a timeout, so a task that panics
//! must still answer — with the panic as an `:internal` error.

use rustler::env::SavedTerm;
use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use rustler::{Atom, Encoder, Env, LocalPid, Monitor, OwnedEnv, ResourceArc, Term};
use tinkex_core::error::Error;
use tokio::task::AbortHandle;

use crate::runtime;

/// Spawns `work` on the runtime; `answer` gets its result, or the panic
/// error if it panicked (see the module docs). Nothing is answered if the
/// task is aborted.
pub fn spawn<T, F, A>(work: F, answer: A) -> AbortHandle
where
    T: Send + 'static,
    F: Future<Output = Result<T, Error>> + Send + 'static,
    A: FnOnce(Result<T, Error>) + Send + 'static,
{
    tinkex_core::task::spawn_answered(runtime::get().handle(), work, answer).abort_handle()
}

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

    /// This reply, to be sent once by whichever of several parties (the
    /// work, or the answer to its panic) gets to it first.
    pub fn shared(self) -> SharedReply {
        SharedReply(Arc::new(Mutex::new(Some(self))))
    }
}

/// A [`ReplyTo`] that several closures hold; the first to take it sends.
#[derive(Clone)]
pub struct SharedReply(Arc<Mutex<Option<ReplyTo>>>);

impl SharedReply {
    /// Sends `{tag, ref, payload}` unless the reply went already.
    pub fn send<F>(&self, tag: Atom, payload: F)
    where
        F: for<'a> FnOnce(Env<'a>) -> Term<'a>,
    {
        let reply = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(r) = reply {
            r.send(tag, payload)
        }
    }
}

/// Work running for one Elixir process. It monitors that process: if the
/// process dies, the work is aborted (which drops whatever it held —
/// permits, requests — at once).
pub struct Job {
    abort: Mutex<Option<AbortHandle>>,
    owner: LocalPid,
    /// Who sends the job's last reply: `RUNNING` until the work claims it
    /// (`REPLIED`) or [`Job::cancel`] does (`CANCELLED`), never both.
    state: AtomicU8,
}

const RUNNING: u8 = 0;
const REPLIED: u8 = 1;
const CANCELLED: u8 = 2;

impl Job {
    /// The process the job works for.
    pub fn owner(&self) -> LocalPid {
        self.owner
    }

    /// Stops the job unless its work already claimed its reply; true when
    /// stopped, and then the caller of `cancel` owes the owner that reply.
    pub fn cancel(&self) -> bool {
        if self
            .state
            .compare_exchange(RUNNING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        if let Some(h) = self.abort.lock().unwrap_or_else(|p| p.into_inner()).take() {
            h.abort();
        }
        true
    }
}

#[rustler::resource_impl]
impl rustler::Resource for Job {
    fn down<'a>(&'a self, _env: Env<'a>, _pid: LocalPid, _monitor: Monitor) {
        if let Some(h) = self.abort.lock().unwrap_or_else(|p| p.into_inner()).take() {
            h.abort();
        }
    }
}

/// Replies about one job, naming it by the job's own resource term (which
/// the caller got back from the NIF): no `OwnedEnv` is kept per pending
/// job — each costs about 1.6 KB — only the message's own, made at send.
#[derive(Clone)]
pub struct JobReply {
    pid: LocalPid,
    job: ResourceArc<Job>,
}

impl JobReply {
    /// Claims the job's last reply for its work: false when the job was
    /// cancelled (its reply is sent already; the work must send nothing).
    pub fn claim(&self) -> bool {
        self.job
            .state
            .compare_exchange(RUNNING, REPLIED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// True until the job's last reply is claimed or it is cancelled.
    pub fn is_running(&self) -> bool {
        self.job.state.load(Ordering::Acquire) == RUNNING
    }

    /// Sends `{tag, job, payload}`; ignores a dead receiver. Must run on a
    /// non-scheduler thread (tokio), where `send_and_clear` is allowed.
    pub fn send<F>(&self, tag: Atom, payload: F)
    where
        F: for<'a> FnOnce(Env<'a>) -> Term<'a>,
    {
        let _ = OwnedEnv::new().send_and_clear(&self.pid, |env| {
            (tag, self.job.encode(env), payload(env)).encode(env)
        });
    }
}

/// Spawns `work` on the runtime, tied to the calling process, and returns
/// the job (its term names the job in every reply); `answer` gets the
/// work's result or its panic error, as [`spawn`]. `None`, spawning
/// nothing, when the caller is already dead.
pub fn start_job<T, W, F, A>(env: Env<'_>, work: W, answer: A) -> Option<ResourceArc<Job>>
where
    T: Send + 'static,
    W: FnOnce(JobReply) -> F,
    F: Future<Output = Result<T, Error>> + Send + 'static,
    A: FnOnce(JobReply, Result<T, Error>) + Send + 'static,
{
    let pid = env.pid();
    let job = ResourceArc::new(Job {
        abort: Mutex::new(None),
        owner: pid,
        state: AtomicU8::new(RUNNING),
    });
    job.monitor(Some(env), &pid)?;
    // The reply holds the job, which keeps its monitor alive until the
    // work ends.
    let reply = JobReply {
        pid,
        job: job.clone(),
    };
    let fut = work(reply.clone());
    let task = spawn(fut, move |result| answer(reply, result));
    *job.abort.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    Some(job)
}

/// [`start_job`] for work that answers through a [`ReplyTo`] of its own:
/// `{tag, ref, {:ok, value} | {:error, error}}`.
pub fn spawn_for_caller<T, F>(env: Env<'_>, reply: ReplyTo, tag: Atom, work: F) -> bool
where
    T: Encoder + Send + 'static,
    F: Future<Output = Result<T, Error>> + Send + 'static,
{
    start_job(
        env,
        |_job| work,
        move |_job, result| {
            reply.send(tag, move |env| match result {
                Ok(v) => (crate::atoms::ok(), v).encode(env),
                Err(e) => crate::error::error_result(env, &e),
            })
        },
    )
    .is_some()
}
