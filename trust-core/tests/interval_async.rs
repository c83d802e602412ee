//! The async API of `trust_core::interval` on tokio: concurrent disjoint writers, FIFO wake-ups across
//! tasks, and cancellation (`timeout`, `select!`, `abort`) that must not strand the requests queued
//! behind the cancelled one. Runs under Miri too, with fewer rounds.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use tokio::time::{sleep, timeout};
use trust_core::interval::IntervalRwLock;

/// Generous: only a broken implementation comes near it.
const LONG: Duration = Duration::from_secs(if cfg!(miri) { 300 } else { 10 });

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disjoint_async_writers_hold_their_ranges_at_once() {
    const TASKS: usize = 8;
    let lock = Arc::new(IntervalRwLock::new(vec![0usize; TASKS * 16]));
    let barrier = Arc::new(Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (lock, barrier) = (lock.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut mine = lock.write_async(t * 16..(t + 1) * 16).await;
                // Every task waits here while holding its guard: all 8 must be held together.
                barrier.wait().await;
                mine.fill(t);
            })
        })
        .collect();
    for task in tasks {
        timeout(LONG, task)
            .await
            .expect("disjoint writers serialized")
            .unwrap();
    }
    let lock = Arc::into_inner(lock).unwrap();
    let expected: Vec<usize> = (0..TASKS * 16).map(|i| i / 16).collect();
    assert_eq!(lock.into_inner(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_async_writers_take_turns_and_lose_no_update() {
    let (task_count, rounds) = if cfg!(miri) { (4, 3) } else { (16, 200) };
    let lock = Arc::new(IntervalRwLock::new(vec![0u64; 8]));
    let tasks: Vec<_> = (0..task_count)
        .map(|t| {
            let lock = lock.clone();
            tokio::spawn(async move {
                for i in 0..rounds {
                    // Overlapping ranges, so tasks really queue.
                    let start = (t + i) % 4;
                    let mut guard = lock.write_async(start..start + 4).await;
                    for x in guard.iter_mut() {
                        let v = *x;
                        tokio::task::yield_now().await; // a lost update would show if writes overlapped
                        *x = v + 1;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        timeout(LONG, task).await.expect("writers stuck").unwrap();
    }
    let total: u64 = lock.read_async(..).await.iter().sum();
    assert_eq!(total, task_count as u64 * rounds as u64 * 4);
}

#[tokio::test]
async fn a_timed_out_request_does_not_strand_the_requests_behind_it() {
    let lock = IntervalRwLock::new(vec![0u8; 10]);
    let held = lock.read_async(0..5).await;
    // The writer queues behind the held read, and the reader of 6..8 queues behind the writer (FIFO),
    // although nothing it overlaps is held.
    let writer = timeout(Duration::from_millis(20), lock.write_async(0..10));
    let reader = async {
        // Let the writer take its ticket first.
        tokio::task::yield_now().await;
        lock.read_async(6..8).await
    };
    let (writer, reader) = tokio::join!(writer, async {
        let guard = reader.await;
        (guard.range(), lock.queued())
    });
    assert!(writer.is_err(), "the writer cannot get past the held read");
    // The reader completed once the writer was cancelled by `timeout`, with the read still held.
    assert_eq!(reader, (6..8, 0));
    drop(held);
    assert_eq!((lock.held(), lock.queued()), (0, 0));
}

#[tokio::test]
async fn select_cancels_the_losing_branch_cleanly() {
    let lock = IntervalRwLock::new(vec![0u8; 4]);
    let held = lock.write_async(..).await;
    tokio::select! {
        _ = lock.write_async(1..2) => panic!("granted while the whole range is written"),
        _ = sleep(Duration::from_millis(5)) => {}
    }
    assert_eq!((lock.held(), lock.queued()), (1, 0));
    drop(held);
    tokio::select! {
        guard = lock.write_async(1..2) => assert_eq!(guard.range(), 1..2),
        _ = sleep(LONG) => panic!("not granted on a free range"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_a_queued_task_wakes_the_tasks_behind_it() {
    let lock = Arc::new(IntervalRwLock::new(vec![0u8; 8]));
    let gate = lock.try_read(0..4).unwrap();
    let writer = tokio::spawn({
        let lock = lock.clone();
        async move {
            let _w = lock.write_async(0..8).await;
            unreachable!("the gate is never dropped before the abort");
        }
    });
    while lock.queued() < 1 {
        tokio::task::yield_now().await;
    }
    let reader = tokio::spawn({
        let lock = lock.clone();
        async move { lock.read_async(4..8).await.len() }
    });
    while lock.queued() < 2 {
        tokio::task::yield_now().await;
    }
    writer.abort();
    assert!(writer.await.unwrap_err().is_cancelled());
    assert_eq!(
        timeout(LONG, reader)
            .await
            .expect("reader stranded")
            .unwrap(),
        4
    );
    drop(gate);
    assert_eq!((lock.held(), lock.queued()), (0, 0));
}

#[tokio::test]
async fn blocking_and_async_requests_share_one_queue() {
    let lock = Arc::new(IntervalRwLock::new(vec![0u32; 4]));
    let held = lock.write_async(..).await;
    let thread = std::thread::spawn({
        let lock = lock.clone();
        move || lock.write(..)[0] += 1
    });
    while lock.queued() < 1 {
        tokio::task::yield_now().await;
    }
    let task = tokio::spawn({
        let lock = lock.clone();
        async move { lock.read_async(0..1).await[0] }
    });
    while lock.queued() < 2 {
        tokio::task::yield_now().await;
    }
    drop(held);
    // The blocking writer queued first, so the async reader sees its write.
    assert_eq!(timeout(LONG, task).await.unwrap().unwrap(), 1);
    thread.join().unwrap();
}
