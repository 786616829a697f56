//! Replies from tokio to an Elixir process: `{tag, ref, payload}`.

use rustler::env::SavedTerm;
use rustler::{Atom, Encoder, Env, LocalPid, OwnedEnv, Term};

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
