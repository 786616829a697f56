//! Completion queues for `retrieve_futures` (the session-level long poll of
//! SDK 0.38 when `client_config.sample_use_retrieve_futures` is true).
//!
//! One queue per (sampling_session_id, cloned_sampler_id). A new future goes
//! into a min-heap by `ready_at`; a poll moves the ready ones to the event
//! list, each with the next cursor (1, 2, …), and answers the events after
//! its `prev_cursor`. Events at or before `prev_cursor` are dropped (acked).

use crate::future::FutureEntry;
use serde_json::{json, Value};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio::time::Instant;

struct Pending {
    ready_at: Instant,
    n: u64,
    future: Arc<FutureEntry>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, we want the earliest first.
        (other.ready_at, other.n).cmp(&(self.ready_at, self.n))
    }
}

#[derive(Default)]
struct Inner {
    pending: BinaryHeap<Pending>,
    events: VecDeque<(u64, Value)>,
    next_cursor: u64,
    pushed: u64,
}

/// One session's completion queue.
#[derive(Default)]
pub struct SessionQueue {
    inner: Mutex<Inner>,
    /// Woken when a future is added.
    pub notify: Notify,
}

/// What a poll found.
pub struct Poll {
    /// Completions after `prev_cursor`.
    pub completions: Vec<Value>,
    /// The cursor to answer.
    pub cursor: u64,
    /// When the next pending future becomes ready, if any.
    pub next_ready: Option<Instant>,
}

impl SessionQueue {
    /// Adds a future (stuck ones never complete and are not added).
    pub fn push(&self, future: Arc<FutureEntry>) {
        if future.fate.stuck {
            return;
        }
        {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.pushed += 1;
            let n = inner.pushed;
            inner.pending.push(Pending {
                ready_at: future.ready_at,
                n,
                future,
            });
        }
        self.notify.notify_waiters();
    }

    /// Promotes ready futures (unless `stuck`), drops events up to
    /// `prev_cursor`, and returns the rest.
    pub fn poll(&self, prev_cursor: u64, now: Instant, stuck: bool) -> Poll {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !stuck {
            while inner.pending.peek().is_some_and(|p| p.ready_at <= now) {
                let p = inner.pending.pop().expect("peeked");
                inner.next_cursor += 1;
                let cursor = inner.next_cursor;
                inner.events.push_back((cursor, completion(&p.future)));
            }
        }
        while inner.events.front().is_some_and(|(c, _)| *c <= prev_cursor) {
            inner.events.pop_front();
        }
        let completions: Vec<Value> = inner.events.iter().map(|(_, v)| v.clone()).collect();
        let cursor = inner.events.back().map_or(prev_cursor, |(c, _)| *c);
        Poll {
            completions,
            cursor,
            next_ready: if stuck {
                None
            } else {
                inner.pending.peek().map(|p| p.ready_at)
            },
        }
    }
}

fn completion(f: &FutureEntry) -> Value {
    if f.fate.fail.is_some() {
        json!({"state": "failed", "request_id": &*f.request_id})
    } else {
        let size = prost::Message::encoded_len(&f.key.result().to_proto());
        json!({"state": "finished", "request_id": &*f.request_id,
               "response_payload_uncompressed_size": size})
    }
}
