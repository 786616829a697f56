use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::*;

/// Test-only points inside `enter` and `check`, to force their
/// interleaving.
#[derive(Default)]
pub(super) struct Hooks {
    /// In `enter`, after the execution is counted in flight, before it
    /// gets its progress window and is registered.
    pub(super) entering: Mutex<Option<Hook>>,
    /// In `check`, after it read the progress clock, before it decides.
    pub(super) checking: Mutex<Option<Hook>>,
}

type Hook = Box<dyn Fn() + Send + Sync>;

impl Hooks {
    pub(super) fn run(&self, hook: &Mutex<Option<Hook>>) {
        if let Some(f) = hook.lock().unwrap().as_ref() {
            f()
        }
    }
}

fn fast(extra: impl FnOnce(&mut RetryConfig)) -> RetryConfig {
    let mut c = RetryConfig {
        base_delay_ms: 10,
        max_delay_ms: 40,
        ..Default::default()
    };
    extra(&mut c);
    c
}

#[tokio::test(start_paused = true)]
async fn retries_retryable_errors_with_backoff() {
    let h = Arc::new(Handler::new("t", fast(|c| c.jitter_pct = 0.0)));
    let start = Instant::now();
    let calls = AtomicU64::new(0);
    let r = h
        .execute(&NoEvents, |_| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 3 {
                    Err(Error::http(503, "busy"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
    assert_eq!(r, Ok(3));
    // 10 + 20 + 40 ms of backoff, nothing else.
    assert_eq!(start.elapsed(), Duration::from_millis(70));
    let s = h.stats();
    assert_eq!((s.retries, s.processed, s.in_flight), (3, 1, 0));
    assert_eq!(s.errors, vec![("http 503".to_string(), 3)]);
}

#[tokio::test(start_paused = true)]
async fn does_not_retry_fatal_errors() {
    let h = Arc::new(Handler::new("t", fast(|_| {})));
    let calls = AtomicU64::new(0);
    let r: Result<(), _> = h
        .execute(&NoEvents, |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(Error::http(422, "bad")) }
        })
        .await;
    let e = r.unwrap_err();
    assert_eq!((e.status, e.retryable), (Some(422), false));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(h.stats().failed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_fatal_verdict_survives_the_retry_rule() {
    let h = Arc::new(Handler::new("t", fast(|_| {})));
    assert!(h.config().is_retryable(&Error::http(409, "x")));
    let calls = AtomicU64::new(0);
    let r: Result<(), _> = h
        .execute(&NoEvents, |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(Error::http(409, "polled").into_fatal()) }
        })
        .await;
    let e = r.unwrap_err();
    assert_eq!((e.status, e.retryable), (Some(409), false));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Without the verdict, the rule decides (and retries a 409).
    let calls = AtomicU64::new(0);
    let r = h
        .execute(&NoEvents, |_| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(Error::http(409, "submitted"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
    assert_eq!(r, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn max_retries_bounds_attempts_and_retry_logic_off_is_one_attempt() {
    for (cfg, want) in [
        (fast(|c| c.max_retries = Some(2)), 3),
        (fast(|c| c.enable_retry_logic = false), 1),
        (fast(|c| c.max_retries = Some(0)), 1),
    ] {
        let h = Arc::new(Handler::new("t", cfg));
        let calls = AtomicU64::new(0);
        let r: Result<(), _> = h
            .execute(&NoEvents, |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(Error::new(ErrorKind::Transport, "reset")) }
            })
            .await;
        assert!(r.unwrap_err().retryable);
        assert_eq!(calls.load(Ordering::SeqCst), want);
    }
}

#[tokio::test(start_paused = true)]
async fn semaphore_is_fifo_and_permits_return_on_drop() {
    let h = Arc::new(Handler::new("t", fast(|c| c.max_connections = Some(2))));
    let a = h.acquire().await;
    let b = h.acquire().await;
    assert_eq!(h.stats().available_permits, Some(0));
    let h2 = h.clone();
    let waiter = tokio::spawn(async move { h2.acquire().await });
    tokio::task::yield_now().await;
    assert_eq!(h.stats().waiting, 1);
    drop(a);
    let c = waiter.await.unwrap();
    assert_eq!(h.stats().waiting, 0);
    assert_eq!(h.stats().in_flight, 2);
    drop((b, c));
    let s = h.stats();
    assert_eq!((s.in_flight, s.available_permits), (0, Some(2)));
}

#[tokio::test(start_paused = true)]
async fn cancelled_waiter_leaves_no_trace() {
    let h = Arc::new(Handler::new("t", fast(|c| c.max_connections = Some(1))));
    let held = h.acquire().await;
    let h2 = h.clone();
    let waiter = tokio::spawn(async move {
        let _p = h2.acquire().await;
    });
    tokio::task::yield_now().await;
    assert_eq!(h.stats().waiting, 1);
    waiter.abort();
    let _ = waiter.await;
    assert_eq!(h.stats().waiting, 0);
    drop(held);
    assert_eq!(h.stats().available_permits, Some(1));
}

#[tokio::test(start_paused = true)]
async fn watchdog_fails_all_in_flight_together_and_handler_recovers() {
    let h = Arc::new(Handler::new("t", fast(|c| c.progress_timeout_ms = 2000)));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.execute(&NoEvents, |_| std::future::pending::<Result<(), Error>>())
                .await
        }));
    }
    for t in tasks {
        let e = t.await.unwrap().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Stuck);
        assert!(!e.retryable);
        assert_eq!(
            e.message,
            "No progress made in 2.0s. Requests appear to be stuck."
        );
    }
    assert_eq!(start.elapsed(), Duration::from_millis(2000));
    assert_eq!(h.stats().stuck_events, 1);
    assert_eq!(h.stats().in_flight, 0);
    // The handler keeps serving.
    let r = h.execute(&NoEvents, |_| async { Ok(1) }).await;
    assert_eq!(r, Ok(1));
}

#[tokio::test(start_paused = true)]
async fn progress_anywhere_pushes_the_deadline() {
    let h = Arc::new(Handler::new("t", fast(|c| c.progress_timeout_ms = 1000)));
    let slow = {
        let h = h.clone();
        tokio::spawn(async move {
            h.execute(&NoEvents, |_| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Ok::<_, Error>(())
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    h.execute(&NoEvents, |_| async { Ok::<_, Error>(()) })
        .await
        .unwrap();
    // The success at 800 ms moved the deadline to 1800 ms: the slow one
    // finishes at 1500 ms.
    assert!(slow.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn stuck_detection_off_means_no_watchdog() {
    let h = Arc::new(Handler::new(
        "t",
        fast(|c| {
            c.progress_timeout_ms = 10;
            c.enable_stuck_detection = false;
        }),
    ));
    let r = h
        .execute(&NoEvents, |_| async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok::<_, Error>(7)
        })
        .await;
    assert_eq!(r, Ok(7));
}

#[tokio::test(start_paused = true)]
async fn idle_time_does_not_count() {
    let h = Arc::new(Handler::new("t", fast(|c| c.progress_timeout_ms = 100)));
    h.execute(&NoEvents, |_| async { Ok::<_, Error>(()) })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let r = h
        .execute(&NoEvents, |_| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, Error>(())
        })
        .await;
    assert!(r.is_ok());
}

#[tokio::test(start_paused = true)]
async fn on_stuck_callback_runs_once() {
    let h = Arc::new(Handler::new("t", fast(|c| c.progress_timeout_ms = 50)));
    let p = h.acquire().await;
    let hits = Arc::new(AtomicU64::new(0));
    let hits2 = hits.clone();
    p.on_stuck(Box::new(move || {
        hits2.fetch_add(1, Ordering::SeqCst);
    }));
    p.stuck().await;
    assert!(p.is_stuck());
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let hits3 = hits.clone();
    p.on_stuck(Box::new(move || {
        hits3.fetch_add(1, Ordering::SeqCst);
    }));
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[test]
fn cache_shares_equal_configs_and_frees_unused() {
    let a = Handler::get("cache-test", RetryConfig::default());
    let b = Handler::get("cache-test", RetryConfig::default());
    let c = Handler::get(
        "cache-test",
        RetryConfig {
            max_connections: Some(5),
            ..Default::default()
        },
    );
    assert!(Arc::ptr_eq(&a, &b));
    assert!(!Arc::ptr_eq(&a, &c));
    let weak = Arc::downgrade(&a);
    drop((a, b, c));
    assert!(weak.upgrade().is_none());
}

#[test]
fn huge_max_connections_is_clamped() {
    let h = Handler::new(
        "t",
        RetryConfig {
            max_connections: Some(u64::MAX),
            ..Default::default()
        },
    );
    assert!(h.stats().available_permits.unwrap() > 1_000_000);
}

#[test]
fn cache_keeps_only_handlers_in_use() {
    let held = Handler::get("cache-held", RetryConfig::default());
    for i in 0..10_000 {
        drop(Handler::get(&format!("cache-{i}"), RetryConfig::default()));
    }
    // Other tests of this binary may hold a few handlers meanwhile.
    assert!(cache::entries() < 200, "{} entries", cache::entries());
    assert!(Arc::ptr_eq(
        &held,
        &Handler::get("cache-held", RetryConfig::default())
    ));
}

/// The watchdog must never fail an execution that is just entering an
/// idle handler: forced interleaving of `enter` (stopped after counting
/// itself in flight) and `check` (stopped after reading the stale progress
/// clock of a handler idle for 10 s). `check` cannot get between the steps
/// of `enter`; if it could, it would drain the new execution as stuck.
#[test]
fn a_check_never_sees_an_entering_execution_half_entered() {
    let mut h = Handler::new("t", fast(|c| c.progress_timeout_ms = 1000));
    h.epoch = h.epoch.checked_sub(Duration::from_secs(10)).unwrap();
    // No watchdog task: this test runs `check` itself, at the chosen point.
    h.watchdog_started.store(true, Ordering::Release);
    let h = Arc::new(h);
    let (bumped_tx, bumped_rx) = mpsc::channel::<()>();
    let (read_tx, read_rx) = mpsc::channel::<()>();
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (bumped_tx, read_rx) = (Mutex::new(bumped_tx), Mutex::new(read_rx));
    let (read_tx, entered_rx) = (Mutex::new(read_tx), Mutex::new(entered_rx));
    *h.hooks.entering.lock().unwrap() = Some(Box::new(move || {
        bumped_tx.lock().unwrap().send(()).unwrap();
        // Lets a check that can run now read the clock; one that cannot
        // (it waits for this `enter`) never will, so stop waiting.
        let _ = read_rx
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_millis(500));
    }));
    *h.hooks.checking.lock().unwrap() = Some(Box::new(move || {
        let _ = read_tx.lock().unwrap().send(());
        // Decide only once `enter` has returned.
        let _ = entered_rx
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(30));
    }));
    let checker = {
        let h = h.clone();
        std::thread::spawn(move || {
            bumped_rx.recv().unwrap();
            h.check()
        })
    };
    let permit = h.enter(None);
    entered_tx.send(()).unwrap();
    let next = checker.join().unwrap();
    assert!(!permit.is_stuck(), "failed on entry");
    assert_eq!(h.stats().stuck_events, 0);
    assert!(
        next.is_some_and(|d| d > Duration::from_millis(400)),
        "{next:?}"
    );
}
