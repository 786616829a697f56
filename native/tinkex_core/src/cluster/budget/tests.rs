use super::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Lets spawned acquirers run until they block.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn no_lease_no_permit_until_one_is_set() {
    let b = Arc::new(Budget::new());
    let b2 = b.clone();
    let waiter = tokio::spawn(async move { b2.acquire().await });
    settle().await;
    assert!(!waiter.is_finished());
    assert_eq!(b.snapshot().waiting, 1);
    assert!(b.set_lease(1, secs(5), 1));
    let p = waiter.await.unwrap();
    let s = b.snapshot();
    assert_eq!((s.used, s.waiting, s.capacity), (1, 0, 1));
    drop(p);
    assert_eq!(b.snapshot().used, 0);
}

#[tokio::test(start_paused = true)]
async fn a_shrink_below_use_is_worked_off_as_permits_come_back() {
    let b = Arc::new(Budget::new());
    b.set_lease(3, secs(5), 1);
    let p1 = b.acquire().await;
    let p2 = b.acquire().await;
    let p3 = b.acquire().await;
    b.set_lease(1, secs(5), 2);
    assert_eq!(b.snapshot().level, Level::Draining);
    let b2 = b.clone();
    let waiter = tokio::spawn(async move { b2.acquire().await });
    drop(p1);
    settle().await;
    assert!(!waiter.is_finished(), "2 in use, lease of 1");
    drop(p2);
    settle().await;
    assert!(!waiter.is_finished(), "1 in use, lease of 1");
    drop(p3);
    let p4 = waiter.await.unwrap();
    assert_eq!(b.snapshot().used, 1);
    b.set_lease(2, secs(5), 3);
    let _p5 = b.acquire().await;
    assert_eq!(b.snapshot().used, 2);
    drop(p4);
}

#[tokio::test(start_paused = true)]
async fn an_unrenewed_lease_expires_and_revokes_the_permits_out() {
    let b = Arc::new(Budget::new());
    b.set_lease(2, Duration::from_millis(100), 1);
    let p = b.acquire().await;
    assert!(!p.is_revoked());
    let driver = tokio::spawn(b.clone().drive(Duration::ZERO, |_| true));
    let start = Instant::now();
    p.revoked().await;
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    let s = b.snapshot();
    assert!(s.expired);
    assert_eq!(
        (s.capacity, s.used, s.valid_us, s.revoked_total),
        (2, 1, 0, 1)
    );
    let b2 = b.clone();
    let waiter = tokio::spawn(async move { b2.acquire().await });
    drop(p);
    settle().await;
    assert!(!waiter.is_finished(), "nothing is handed out after expiry");
    b.set_lease(2, secs(1), 2);
    let q = waiter.await.unwrap();
    assert!(!q.is_revoked(), "a permit of the new lease");
    b.close();
    driver.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn older_leases_are_ignored_and_a_zero_validity_keeps_the_end() {
    let b = Budget::new();
    assert!(b.set_lease(5, secs(1), 7));
    assert!(!b.set_lease(9, secs(10), 6));
    assert_eq!(b.snapshot().capacity, 5);
    assert!(b.set_lease(8, Duration::ZERO, 8));
    let s = b.snapshot();
    assert_eq!(s.capacity, 8);
    assert!(s.valid_us <= 1_000_000);
    tokio::time::advance(secs(1)).await;
    assert!(b.snapshot().expired);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_acquire_leaves_no_waiter() {
    let b = Arc::new(Budget::new());
    let b2 = b.clone();
    let waiter = tokio::spawn(async move { b2.acquire().await });
    settle().await;
    assert_eq!(b.snapshot().waiting, 1);
    waiter.abort();
    let _ = waiter.await;
    assert_eq!(b.snapshot().waiting, 0);
    assert_eq!(b.snapshot().level, Level::Idle);
}

#[tokio::test(start_paused = true)]
async fn reports_levels_not_samples() {
    let b = Arc::new(Budget::new());
    b.set_lease(4, secs(60), 1);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(
        b.clone()
            .drive(Duration::from_millis(1), move |s| tx.send(s.level).is_ok()),
    );
    // 100 samples through a half-used lease: surplus, once.
    let _held = b.acquire().await;
    for _ in 0..100 {
        drop(b.acquire().await);
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut seen = Vec::new();
    while let Ok(l) = rx.try_recv() {
        seen.push(l);
    }
    assert_eq!(seen, vec![Level::Surplus]);
    // Starved: more acquirers than permits.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(b.acquire().await);
    }
    let b2 = b.clone();
    let w = tokio::spawn(async move { b2.acquire().await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut seen = Vec::new();
    while let Ok(l) = rx.try_recv() {
        seen.push(l);
    }
    assert_eq!(seen.last(), Some(&Level::Starved(2)));
    w.abort();
    b.close();
    driver.await.unwrap();
}
