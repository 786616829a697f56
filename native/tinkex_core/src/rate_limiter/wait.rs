//! Waiting out a backoff: one exact sleep to the deadline, re-armed only
//! when the deadline moved later — never a polling loop.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{RateLimiter, WAKE_HANDOVER};
use crate::precise_sleep::{Callback, Timer};

/// What became of a `done` handed to the timer thread.
enum Back {
    /// The backoff was over: `done` ran.
    Ran,
    /// The deadline moved later meanwhile: `done` comes back, to wait again.
    Moved(Callback),
    /// The timer dropped it unrun (its thread ended): `done` comes back.
    Dropped(Callback),
}

/// `done` on its way through the timer thread; whatever happens there, the
/// waiter hears back (dropping this hands `done` back as [`Back::Dropped`]).
struct HandBack {
    done: Option<Callback>,
    tx: Option<oneshot::Sender<Back>>,
}

impl HandBack {
    fn fire(mut self, limiter: &RateLimiter) {
        let (Some(done), Some(tx)) = (self.done.take(), self.tx.take()) else {
            return;
        };
        let back = match limiter.deadline() {
            None => {
                done();
                Back::Ran
            }
            Some(_) => Back::Moved(done),
        };
        let _ = tx.send(back);
    }
}

impl Drop for HandBack {
    fn drop(&mut self) {
        if let (Some(done), Some(tx)) = (self.done.take(), self.tx.take()) {
            let _ = tx.send(Back::Dropped(done));
        }
    }
}

impl RateLimiter {
    /// Timers armed so far by waits on this limiter (tokio sleeps and
    /// precise-timer registrations).
    #[doc(hidden)]
    pub fn timer_arms(&self) -> u64 {
        self.arms.load(Ordering::Relaxed)
    }

    pub(super) fn count_arm(&self) {
        self.arms.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits out the backoff: one sleep to the deadline, again only if the
    /// deadline moved later meanwhile; returns at once when there is none,
    /// and early when the backoff is cleared. Uses tokio's timer (1 ms
    /// granularity, so it follows a paused test clock); the NIF uses the
    /// more precise [`RateLimiter::wait_then`], submits
    /// [`RateLimiter::wait_turn`].
    pub async fn wait(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Register for `clear` before reading the deadline, so a clear
            // between the read and the sleep is not missed.
            notified.as_mut().enable();
            let Some(deadline) = self.deadline() else {
                return;
            };
            self.count_arm();
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = &mut notified => {}
            }
        }
    }

    /// Calls `done` once the backoff is over: at once when there is none,
    /// else from the precise timer thread at the deadline (re-armed if the
    /// deadline moved later), so a message sent by `done` leaves within
    /// microseconds of it, without a hop through a tokio worker. Clearing
    /// the backoff ends the wait early, except in its last
    /// [`WAKE_HANDOVER`]. If the timer thread ends meanwhile, tokio's
    /// timer finishes the wait and `done` runs on a tokio worker: later by
    /// a millisecond, never early, never lost.
    pub async fn wait_then<F>(self: &Arc<Self>, done: F)
    where
        F: FnOnce() + Send + 'static,
    {
        self.wait_then_on(crate::precise_sleep::global(), Box::new(done))
            .await
    }

    pub(crate) async fn wait_then_on(self: &Arc<Self>, timer: &'static Timer, done: Callback) {
        let mut done = done;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let Some(deadline) = self.deadline() else {
                return done();
            };
            let handover = deadline.checked_sub(WAKE_HANDOVER);
            if let Some(coarse) = handover.filter(|c| *c > Instant::now()) {
                self.count_arm();
                tokio::select! {
                    _ = tokio::time::sleep_until(coarse) => {}
                    _ = &mut notified => {}
                }
                continue;
            }
            let (tx, rx) = oneshot::channel();
            let me = Arc::clone(self);
            let hand = HandBack {
                done: Some(done),
                tx: Some(tx),
            };
            self.count_arm();
            timer.call_at(deadline.into_std(), Box::new(move || hand.fire(&me)));
            match rx.await {
                Ok(Back::Moved(f)) => done = f,
                Ok(Back::Dropped(f)) => {
                    done = f;
                    self.count_arm();
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => {}
                        _ = &mut notified => {}
                    }
                }
                // `done` ran, or panicked on the timer thread (and is gone).
                Ok(Back::Ran) | Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn wait_sleeps_until_deadline_with_one_timer() {
        let rl = RateLimiter::new();
        let start = Instant::now();
        // Not a multiple of any polling period (10, 50, 100 ms, 1 s).
        rl.set_backoff(Duration::from_millis(737));
        rl.wait().await;
        assert_eq!(start.elapsed(), Duration::from_millis(737));
        assert_eq!(rl.timer_arms(), 1, "one sleep, no polling");
    }

    /// One exact wait, no polling: a deadline that is no multiple of any
    /// polling period is met within a few ms (a 100 ms poller wakes 63 ms
    /// late, a 1 s one 263 ms), with two timers (the coarse tokio sleep and
    /// the precise hand-over), where a 100 ms poller arms eight.
    #[tokio::test]
    async fn wait_then_is_one_exact_wait_not_a_polling_loop() {
        let rl = Arc::new(RateLimiter::new());
        let deadline = rl.set_backoff(Duration::from_millis(737));
        let before = crate::precise_sleep::registrations();
        let (tx, rx) = oneshot::channel();
        rl.wait_then(move || {
            let _ = tx.send(Instant::now());
        })
        .await;
        let woke = rx.await.unwrap();
        assert!(woke >= deadline, "woke {:?} early", deadline - woke);
        let late = woke - deadline;
        assert!(late < Duration::from_millis(50), "woke {late:?} late");
        assert_eq!(rl.timer_arms(), 2, "one coarse sleep, one precise timer");
        assert!(crate::precise_sleep::registrations() > before);
    }

    #[tokio::test]
    async fn wait_then_calls_at_the_deadline_and_follows_extensions() {
        let rl = Arc::new(RateLimiter::new());
        let (tx, rx) = std::sync::mpsc::channel();
        let tx2 = tx.clone();
        rl.wait_then(move || tx2.send(Instant::now()).unwrap())
            .await;
        assert!(rx.try_recv().is_ok(), "no backoff: called at once");
        rl.set_backoff(Duration::from_millis(60));
        let rl2 = rl.clone();
        let waiter = tokio::spawn(async move {
            rl2.wait_then(move || tx.send(Instant::now()).unwrap())
                .await;
        });
        // Moved later long before the first deadline, whatever the load:
        // the call must follow the new deadline.
        let later = rl.set_backoff(Duration::from_millis(120));
        waiter.await.unwrap();
        let woke = rx.recv().unwrap();
        assert!(woke >= later, "woke {:?} before the deadline", later - woke);
    }

    /// The timer thread dies while a wait is handed to it: the wait still
    /// ends, at (never before) the deadline, and `done` runs once.
    #[tokio::test]
    async fn wait_then_survives_the_timer_thread_dying() {
        let timer = Timer::leaked();
        // The thread this wait starts dies at once, with the wait's
        // callback pending.
        timer.kill();
        let rl = Arc::new(RateLimiter::new());
        // Inside the hand-over window: straight to the timer thread.
        let deadline = rl.set_backoff(Duration::from_millis(15));
        let (tx, rx) = std::sync::mpsc::channel();
        let wait = rl.wait_then_on(timer, Box::new(move || tx.send(Instant::now()).unwrap()));
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("the wait hung on a dead timer");
        let woke = rx.recv().unwrap();
        assert!(woke >= deadline, "woke {:?} early", deadline - woke);
        assert!(rx.try_recv().is_err(), "done ran once");
        assert_eq!(timer.threads(), (false, 1), "its thread is gone");
    }
}
