//! One node's share of a cluster-wide budget of in-flight samples.
//!
//! The cluster layer (Elixir, `TinkexNative.Cluster`) leases this node a
//! number of permits for a limited time; [`Budget::set_lease`] installs
//! each lease. Samples take their permits here, locally, so the hot path
//! never sends a message: [`Budget::acquire`] waits (FIFO) for a permit,
//! and dropping the [`BudgetPermit`] returns it.
//!
//! A lease that is not renewed in time **expires**: no permit is handed
//! out any more, and every permit already out is **revoked**
//! ([`BudgetPermit::revoked`] resolves), so the sample using it can
//! withdraw its request from the server. Shrinking a lease below the
//! permits in use takes nothing away: the excess is not handed out again
//! as permits come back.
//!
//! The owner learns what the cluster needs to know through [`Budget::drive`]:
//! a [`Snapshot`] whenever the budget's [`Level`] changes (starved, idle,
//! surplus, a shrink completed, the lease expired), never once per sample.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! use std::time::Duration;
//! use tinkex_core::cluster::Budget;
//!
//! let budget = std::sync::Arc::new(Budget::new());
//! budget.set_lease(2, Duration::from_secs(5), 1);
//! let a = budget.acquire().await;
//! let _b = budget.acquire().await;
//! assert_eq!(budget.snapshot().used, 2);
//! drop(a);
//! assert_eq!(budget.snapshot().used, 1);
//! # });
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

mod level;
pub use level::Level;

/// What the budget looks like now; sent to the owner on every level change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Permits leased to this node (0 without a lease).
    pub capacity: u32,
    /// Permits held by samples (revoked ones included until dropped).
    pub used: u32,
    /// Samples waiting for a permit.
    pub waiting: u32,
    /// Sequence number of the lease in force (0: none yet).
    pub lease_seq: u64,
    /// Time left on the lease, in microseconds (0 once expired).
    pub valid_us: u64,
    /// The lease ran out without being renewed.
    pub expired: bool,
    /// The level the owner is told about.
    pub level: Level,
    /// Permits revoked since the budget was made.
    pub revoked_total: u64,
    /// Permits handed out since the budget was made.
    pub acquired_total: u64,
}

/// A node's leased share of the cluster budget. Share it in an `Arc`.
#[derive(Debug)]
pub struct Budget {
    /// FIFO queue of waiters. Its permits plus those in use, minus the
    /// debt, always equal the capacity applied (`State::pool`).
    sem: Arc<Semaphore>,
    state: Mutex<State>,
    /// Bumped (under the lock) each time the lease expires; a permit is
    /// revoked when this moved past the value it was handed out under.
    generation: AtomicU64,
    /// Wakes the holders of permits when they are revoked.
    revoked: Notify,
    /// Wakes [`Budget::drive`]: a report is due, or the lease changed.
    wake: Notify,
}

#[derive(Debug)]
struct State {
    capacity: u32,
    /// End of the lease; `None` before the first one.
    expiry: Option<Instant>,
    lease_seq: u64,
    expired: bool,
    /// The capacity applied to the semaphore: `capacity` while the lease
    /// is valid, else 0.
    pool: u32,
    used: u32,
    waiting: u32,
    /// Permits to take out of circulation as they come back (a shrink
    /// below the permits in use).
    debt: u32,
    level: Level,
    report_due: bool,
    closed: bool,
    revoked_total: u64,
    acquired_total: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new()
    }
}

impl Budget {
    /// A budget with no lease: every acquire waits until one is set.
    pub fn new() -> Budget {
        Budget {
            sem: Arc::new(Semaphore::new(0)),
            state: Mutex::new(State {
                capacity: 0,
                expiry: None,
                lease_seq: 0,
                expired: false,
                pool: 0,
                used: 0,
                waiting: 0,
                debt: 0,
                level: Level::Idle,
                report_due: false,
                closed: false,
                revoked_total: 0,
                acquired_total: 0,
            }),
            generation: AtomicU64::new(0),
            revoked: Notify::new(),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Installs lease `seq`: `capacity` permits for `valid` from now. A
    /// lease older than the one in force (a smaller `seq`) is ignored, so
    /// grants that cross in flight cannot roll the lease back. A `valid`
    /// of zero changes the capacity and keeps the current end of the lease
    /// (a change the cluster sends without renewing). Returns whether it
    /// was installed.
    pub fn set_lease(&self, capacity: u32, valid: Duration, seq: u64) -> bool {
        let mut st = self.lock();
        if seq < st.lease_seq || st.closed {
            return false;
        }
        let now = Instant::now();
        st.lease_seq = seq;
        st.capacity = capacity;
        if !valid.is_zero() {
            st.expiry = Some(now + valid);
            st.expired = false;
        }
        self.refresh(&mut st, now);
        self.apply(&mut st);
        self.relevel(&mut st);
        drop(st);
        self.wake.notify_one();
        true
    }

    /// Ends the lease now (as if it expired): permits out are revoked.
    pub fn expire_now(&self) {
        let mut st = self.lock();
        if st.expiry.is_some() && !st.expired {
            st.expiry = Some(Instant::now());
            self.refresh(&mut st, Instant::now());
            self.relevel(&mut st);
        }
    }

    /// Stops [`Budget::drive`]; the budget hands out no more permits.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.capacity = 0;
        self.apply(&mut st);
        drop(st);
        self.wake.notify_one();
    }

    /// The lease ran out: nothing is handed out, everything out is revoked.
    fn refresh(&self, st: &mut State, now: Instant) {
        let Some(end) = st.expiry else { return };
        if st.expired || now < end {
            return;
        }
        st.expired = true;
        st.revoked_total += u64::from(st.used);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.apply(st);
        self.revoked.notify_waiters();
    }

    /// Brings the semaphore to the capacity the lease allows.
    fn apply(&self, st: &mut State) {
        let target = if st.expired || st.expiry.is_none() || st.closed {
            0
        } else {
            st.capacity
        };
        if target > st.pool {
            let k = target - st.pool;
            let from_debt = k.min(st.debt);
            st.debt -= from_debt;
            self.sem.add_permits((k - from_debt) as usize);
        } else if target < st.pool {
            let k = st.pool - target;
            let forgotten = self.sem.forget_permits(k as usize) as u32;
            st.debt += k - forgotten;
        }
        st.pool = target;
    }

    /// Recomputes the level; a change makes a report due.
    fn relevel(&self, st: &mut State) {
        let next = st.level.next(st.used, st.waiting, st.pool);
        if next != st.level {
            st.level = next;
            st.report_due = true;
            self.wake.notify_one();
        }
    }

    /// A permit goes back: out of circulation if a shrink is owed,
    /// otherwise to the next waiter.
    fn give_back(&self, st: &mut State, permit: OwnedSemaphorePermit) {
        if st.debt > 0 {
            st.debt -= 1;
            permit.forget();
        } else {
            drop(permit);
        }
    }

    /// Waits (FIFO) for a permit of the lease in force. Counts as waiting
    /// meanwhile; dropping the future midway leaves no trace.
    pub async fn acquire(self: &Arc<Self>) -> BudgetPermit {
        let mut waiting = Waiting::new(self);
        loop {
            let permit = self
                .sem
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let mut st = self.lock();
            self.refresh(&mut st, Instant::now());
            if st.expired || st.closed {
                // Handed out just before the lease ran out: not usable.
                self.give_back(&mut st, permit);
                continue;
            }
            waiting.disarm(&mut st);
            st.used += 1;
            st.acquired_total += 1;
            self.relevel(&mut st);
            let generation = self.generation.load(Ordering::Acquire);
            return BudgetPermit {
                budget: Arc::clone(self),
                permit: Some(permit),
                generation,
            };
        }
    }

    /// The state now.
    pub fn snapshot(&self) -> Snapshot {
        let mut st = self.lock();
        let now = Instant::now();
        self.refresh(&mut st, now);
        self.relevel(&mut st);
        Self::snapshot_of(&st, now)
    }

    fn snapshot_of(st: &State, now: Instant) -> Snapshot {
        let valid_us = match st.expiry {
            Some(end) if !st.expired => {
                u64::try_from(end.saturating_duration_since(now).as_micros()).unwrap_or(u64::MAX)
            }
            _ => 0,
        };
        Snapshot {
            capacity: st.capacity,
            used: st.used,
            waiting: st.waiting,
            lease_seq: st.lease_seq,
            valid_us,
            expired: st.expired,
            level: st.level,
            revoked_total: st.revoked_total,
            acquired_total: st.acquired_total,
        }
    }

    /// Enforces the lease's end and reports: calls `report` with a
    /// snapshot whenever the level changes or the lease expires (several
    /// changes close together make one report), and revokes the permits
    /// out at the end of an unrenewed lease even if nobody acquires.
    /// Returns once the budget is closed, `report` returns `false`, or
    /// nothing but this future holds the budget (checked at least every
    /// second). Waits at least `min_gap` between two reports.
    pub async fn drive<F>(self: Arc<Self>, min_gap: Duration, mut report: F)
    where
        F: FnMut(Snapshot) -> bool,
    {
        loop {
            let wake = self.wake.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            let (due, end) = {
                let mut st = self.lock();
                if st.closed || Arc::strong_count(&self) == 1 {
                    return;
                }
                let was_expired = st.expired;
                let now = Instant::now();
                self.refresh(&mut st, now);
                if st.expired && !was_expired {
                    st.report_due = true;
                }
                self.relevel(&mut st);
                let due = std::mem::take(&mut st.report_due).then(|| Self::snapshot_of(&st, now));
                (due, st.expiry.filter(|_| !st.expired))
            };
            if let Some(snap) = due {
                if !report(snap) {
                    return;
                }
                tokio::time::sleep(min_gap).await;
                continue;
            }
            let recheck = Instant::now() + Duration::from_secs(1);
            let until = end.map_or(recheck, |e| e.min(recheck));
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = &mut wake => {}
            }
        }
    }
}

/// Counts an acquirer as waiting until it gets its permit or gives up.
struct Waiting<'a> {
    budget: &'a Budget,
    armed: bool,
}

impl<'a> Waiting<'a> {
    fn new(budget: &'a Budget) -> Waiting<'a> {
        let mut st = budget.lock();
        st.waiting += 1;
        budget.relevel(&mut st);
        Waiting {
            budget,
            armed: true,
        }
    }

    fn disarm(&mut self, st: &mut State) {
        self.armed = false;
        st.waiting -= 1;
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut st = self.budget.lock();
            st.waiting -= 1;
            self.budget.relevel(&mut st);
        }
    }
}

/// One in-flight sample's place in the budget; returned on drop.
#[must_use = "the permit is returned when dropped"]
#[derive(Debug)]
pub struct BudgetPermit {
    budget: Arc<Budget>,
    /// Always `Some` until drop.
    permit: Option<OwnedSemaphorePermit>,
    /// The budget's generation when this was handed out.
    generation: u64,
}

impl BudgetPermit {
    /// Whether the lease this permit came from has expired since.
    pub fn is_revoked(&self) -> bool {
        self.budget.generation.load(Ordering::Acquire) > self.generation
    }

    /// Resolves when the lease this permit came from expires unrenewed:
    /// the sample must then withdraw its request and give the permit back.
    pub async fn revoked(&self) {
        loop {
            let n = self.budget.revoked.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.is_revoked() {
                return;
            }
            n.await;
        }
    }
}

impl Drop for BudgetPermit {
    fn drop(&mut self) {
        let budget = &self.budget;
        let mut st = budget.lock();
        st.used -= 1;
        if let Some(p) = self.permit.take() {
            budget.give_back(&mut st, p);
        }
        budget.relevel(&mut st);
    }
}

#[cfg(test)]
mod tests;
