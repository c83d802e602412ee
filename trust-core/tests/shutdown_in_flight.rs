//! `Runtime::shutdown` with work in flight: every request sent before it is answered, or fails naming the
//! shutdown, and nothing waits forever; every value still entrusted is dropped exactly once, however the
//! values hold each other's handles. Each test runs in a process of its own (a runtime cannot be restarted).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::{CountsDrops, is_child, panic_message, rt, run_in_child};
use trust_core::Trust;

/// Runs the test `name` in a child process and checks that it passed.
fn in_child(name: &str) {
    let out = run_in_child(name, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("CHILD-OK"),
        "{stderr}"
    );
}

/// 1,000 tokio tasks each send an `apply_async`, and `shutdown` comes while the trustee runs the first one (for
/// 200 ms), the other 999 waiting in its mailbox. Each task gets its result or a panic naming the shutdown:
/// none hangs (the trustee stopped after the first, leaving the others in its mailbox, neither run nor
/// dropped, their tasks never woken). Every closure that ran gave its task its result, dropped once.
#[test]
fn apply_async_futures_in_flight_at_shutdown_each_answer_or_panic_naming_it() {
    if !is_child() {
        return in_child(
            "apply_async_futures_in_flight_at_shutdown_each_answer_or_panic_naming_it",
        );
    }
    let value = rt().trustee(0).entrust(0u64);
    let (ran, results, sent) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let wait_for = |count: &AtomicUsize, n| {
        while count.load(Ordering::SeqCst) < n {
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let slow_runs = ran.clone();
            let (value, ran, results, sent) =
                (value.clone(), ran.clone(), results.clone(), sent.clone());
            let task = tokio.spawn(async move {
                let mut future = Box::pin(value.apply_async(move |v| {
                    ran.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_micros(if i == 0 { 200_000 } else { 100 }));
                    *v += 1;
                    CountsDrops(results)
                }));
                let mut first = true;
                std::future::poll_fn(move |cx| {
                    let poll = future.as_mut().poll(cx);
                    if std::mem::take(&mut first) {
                        sent.fetch_add(1, Ordering::SeqCst); // the first poll sent the request
                    }
                    poll
                })
                .await
            });
            if i == 0 {
                wait_for(&slow_runs, 1); // the trustee runs the slow one
            }
            task
        })
        .collect();
    wait_for(&sent, 1000);
    rt().shutdown();
    let (answered, failed) = tokio.block_on(async {
        let (mut answered, mut failed) = (0, 0);
        for task in tasks {
            match tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("a task hangs")
            {
                Ok(result) => {
                    drop(result);
                    answered += 1;
                }
                Err(e) => {
                    let message = panic_message(e.into_panic());
                    assert!(message.contains("shut down"), "{message}");
                    failed += 1;
                }
            }
        }
        (answered, failed)
    });
    assert_eq!(answered + failed, 1000);
    assert_eq!(
        ran.load(Ordering::SeqCst),
        answered,
        "each closure that ran answered its task"
    );
    assert_eq!(
        results.load(Ordering::SeqCst),
        answered,
        "each result dropped once"
    );
    println!("CHILD-OK ({answered} answered, {failed} failed)");
}

/// Values that hold the handles of others, on both trustees: a chain of 20 over 6 leaves, built right before
/// `shutdown` (their registrations still in flight), its root handle kept by the caller. Shutdown drops each
/// of the 26 once, the kept handle's drop afterwards does nothing. Two went missing when a worker closed
/// after serving one of the two batches a channel can have in flight.
#[test]
fn shutdown_drops_every_value_of_a_graph_of_handles_once() {
    if !is_child() {
        return in_child("shutdown_drops_every_value_of_a_graph_of_handles_once");
    }
    struct Node {
        id: usize,
        dropped: Arc<Mutex<Vec<usize>>>,
        _holds: Vec<Trust<Node>>,
    }
    impl Drop for Node {
        fn drop(&mut self) {
            self.dropped.lock().unwrap().push(self.id);
        }
    }
    let dropped = Arc::new(Mutex::new(Vec::new()));
    let node = |id: usize, holds| {
        rt().trustee(id % 2).entrust(Node {
            id,
            dropped: dropped.clone(),
            _holds: holds,
        })
    };
    let mut below: Vec<Trust<Node>> = (100..106).map(|id| node(id, Vec::new())).collect();
    for id in 0..20 {
        below = vec![node(id, std::mem::take(&mut below))];
    }
    let root = below.pop().unwrap();
    rt().shutdown();
    drop(root);
    let mut ids = dropped.lock().unwrap().clone();
    ids.sort();
    assert_eq!(ids, (0..20).chain(100..106).collect::<Vec<_>>());
    println!("CHILD-OK");
}
