use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::dynamic_config::DynamicConfig;

fn flags(enabled: bool, batch: u64) -> Arc<DynamicFlags> {
    Arc::new(DynamicFlags::new(&DynamicConfig {
        refresh_interval_sec: 300,
        sample_cancel_enabled: enabled,
        sample_cancel_max_batch_size: batch,
    }))
}

/// (ms since `t0`, id) of every call a fake `cancel_future` got; each call
/// takes 100 ms.
type Calls = Arc<Mutex<Vec<(u128, String)>>>;

fn spawn_drain(drain: CancelDrain, t0: Instant) -> (Calls, tokio::task::JoinHandle<()>) {
    let calls: Calls = Arc::default();
    let c = calls.clone();
    let task = tokio::spawn(drain.run(move |id| {
        c.lock()
            .unwrap()
            .push((t0.elapsed().as_millis(), id.to_string()));
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(())
        }
    }));
    (calls, task)
}

/// Call counts per start time, in order.
fn rounds(calls: &Calls) -> Vec<(u128, usize)> {
    let mut out: Vec<(u128, usize)> = Vec::new();
    for (t, _) in calls.lock().unwrap().iter() {
        match out.last_mut() {
            Some((last, n)) if last == t => *n += 1,
            _ => out.push((*t, 1)),
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn queued_ids_go_out_in_rounds_of_the_batch_size() {
    let (announcer, drain) = CancelAnnouncer::new(flags(true, 64));
    for i in 0..150 {
        assert!(announcer.announce(&format!("req-{i}")));
    }
    let t0 = Instant::now();
    let (calls, task) = spawn_drain(drain, t0);
    drop(announcer);
    task.await.unwrap();
    // ceil(150 / 64) = 3 rounds, each after the previous one finished.
    assert_eq!(rounds(&calls), [(0, 64), (100, 64), (200, 22)]);
    let mut ids: Vec<String> = calls.lock().unwrap().iter().map(|c| c.1.clone()).collect();
    ids.sort_by_key(|id| id[4..].parse::<u32>().unwrap());
    let want: Vec<String> = (0..150).map(|i| format!("req-{i}")).collect();
    assert_eq!(ids, want, "every id exactly once");
}

#[tokio::test(start_paused = true)]
async fn ids_queued_during_a_round_wait_for_the_next() {
    let (announcer, drain) = CancelAnnouncer::new(flags(true, 3));
    let t0 = Instant::now();
    let (calls, task) = spawn_drain(drain, t0);
    announcer.announce("a");
    tokio::time::sleep(Duration::from_millis(10)).await;
    for id in ["b", "c", "d", "e", "f"] {
        announcer.announce(id);
    }
    let stats = announcer.stats();
    drop(announcer);
    task.await.unwrap();
    assert_eq!(rounds(&calls), [(0, 1), (100, 3), (200, 2)]);
    assert_eq!(stats.announced, 6);
}

#[tokio::test(start_paused = true)]
async fn the_batch_size_is_read_when_a_round_starts() {
    let f = flags(true, 2);
    let (announcer, drain) = CancelAnnouncer::new(f.clone());
    for i in 0..5 {
        announcer.announce(&i.to_string());
    }
    let (calls, task) = spawn_drain(drain, Instant::now());
    tokio::time::sleep(Duration::from_millis(50)).await;
    f.store(&DynamicConfig {
        sample_cancel_enabled: true,
        sample_cancel_max_batch_size: 10,
        ..DynamicConfig::default()
    });
    drop(announcer);
    task.await.unwrap();
    assert_eq!(rounds(&calls), [(0, 2), (100, 3)]);
}

#[tokio::test(start_paused = true)]
async fn nothing_is_announced_while_disabled_or_without_a_drain() {
    let f = flags(false, 64);
    let (announcer, drain) = CancelAnnouncer::new(f.clone());
    drop(announcer.guard("off"));
    assert_eq!(announcer.stats().announced, 0);
    f.store(&DynamicConfig {
        sample_cancel_enabled: true,
        ..DynamicConfig::default()
    });
    drop(announcer.guard("on"));
    announcer.guard("finished").disarm();
    let (calls, task) = spawn_drain(drain, Instant::now());
    drop(announcer);
    task.await.unwrap();
    let ids: Vec<String> = calls.lock().unwrap().iter().map(|c| c.1.clone()).collect();
    assert_eq!(ids, ["on"]);
    assert!(!CancelAnnouncer::detached(f).announce("nowhere"));
}

#[tokio::test(start_paused = true)]
async fn failed_calls_are_counted_and_do_not_stop_the_drain() {
    let (announcer, drain) = CancelAnnouncer::new(flags(true, 64));
    for id in ["ok-1", "bad", "ok-2"] {
        announcer.announce(id);
    }
    let task = tokio::spawn(drain.run(|id| async move {
        if &*id == "bad" {
            Err(Error::http(422, "no"))
        } else {
            Ok(())
        }
    }));
    tokio::time::sleep(Duration::from_millis(1)).await;
    announcer.announce("ok-3");
    tokio::time::sleep(Duration::from_millis(1)).await;
    let stats = announcer.stats();
    drop(announcer);
    task.await.unwrap();
    assert_eq!(
        stats,
        CancelStats {
            announced: 4,
            sent: 3,
            failed: 1
        }
    );
}

/// Start times (s since the first) of the calls `resend_transient` makes
/// while every call fails with `status`.
async fn resend_times(status: u16, ok_after: usize) -> (Vec<u64>, Result<(), Error>) {
    let t0 = Instant::now();
    let times = Mutex::new(Vec::new());
    let r = resend_transient(&Timings::default(), || {
        let mut t = times.lock().unwrap();
        t.push(t0.elapsed().as_secs());
        let ok = t.len() > ok_after;
        async move {
            if ok {
                Ok(())
            } else {
                Err(Error::http(status, "x"))
            }
        }
    })
    .await;
    (times.into_inner().unwrap(), r)
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_resent_on_the_sdks_schedule() {
    let (times, r) = resend_times(503, 3).await;
    assert_eq!(times, [0, 1, 3, 7]);
    assert!(r.is_ok());

    let (times, r) = resend_times(422, usize::MAX).await;
    assert_eq!(times, [0], "a 422 is not resent");
    assert_eq!(r.unwrap_err().status, Some(422));

    let (times, r) = resend_times(429, usize::MAX).await;
    // 1, 2, 4, 8, 16, then 30 s apart, the last one cut to end at 300 s.
    assert_eq!(&times[..7], [0, 1, 3, 7, 15, 31, 61]);
    assert_eq!(*times.last().unwrap(), 300);
    assert_eq!(r.unwrap_err().status, Some(429));
}
