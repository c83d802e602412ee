//! A client that goes away with requests in flight (issue 14, item 1): a plain, scoped or tokio worker thread
//! that ends right after `apply_then`, without `wait_pending`. Its requests must still run (their effects
//! happen), the trustee must never write into memory the client freed (run this file under AddressSanitizer,
//! as CI does), and the continuations that can no longer run are dropped exactly once, on the client's side.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

mod common;
use common::*;
use trust_core::Trust;

/// A slow closure keeps the batch in flight while the issuing thread exits.
fn slow_increment(c: &mut u64) -> u64 {
    std::thread::sleep(Duration::from_millis(20));
    *c += 1;
    *c
}

#[test]
fn a_thread_exiting_with_apply_then_in_flight_frees_nothing_the_trustee_writes() {
    let counter = rt().trustee(0).entrust(0u64);
    let dropped = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    for round in 1..=5u64 {
        let (c, dropped, ran) = (counter.clone(), dropped.clone(), ran.clone());
        std::thread::spawn(move || {
            for _ in 0..3 {
                let token = CountsDrops(dropped.clone());
                let ran = ran.clone();
                c.apply_then(slow_increment, move |_| {
                    let _token = token;
                    ran.fetch_add(1, Ordering::SeqCst);
                });
            }
            // The thread ends here: no `wait_pending`.
        })
        .join()
        .unwrap();
        assert_eq!(counter.apply(|c| *c), 3 * round, "every request ran");
    }
    // Continuations that could not run any more were dropped (with their captures), never run elsewhere.
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        15,
        "each continuation dropped exactly once"
    );
    assert!(ran.load(Ordering::SeqCst) <= 15);
}

/// A continuation's capture that panics when it is dropped unrun.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("a continuation's capture panics when dropped");
    }
}

/// `apply_then`s each thread of `exit_with_unrun_continuations` issues.
const PER_THREAD: usize = 40;

/// `threads` threads, one after another, each issue `PER_THREAD` `apply_then`s and exit without
/// `wait_pending`, so most continuations never run. Each result (a `CountsDrops` and a `String`) and each
/// continuation counts its drop; continuation `i` also captures a `PanicsOnDrop` where `bomb(i)`, which it
/// forgets when it does run. Returns the results dropped, the continuations dropped and the continuations
/// run, after checking that every request ran.
fn exit_with_unrun_continuations(threads: usize, bomb: fn(usize) -> bool) -> (usize, usize, usize) {
    let counter = rt().trustee(0).entrust(0u64);
    let results = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..threads {
        let (c, results, tokens, ran) = (
            counter.clone(),
            results.clone(),
            tokens.clone(),
            ran.clone(),
        );
        std::thread::spawn(move || {
            for i in 0..PER_THREAD {
                let (results, token, ran) =
                    (results.clone(), CountsDrops(tokens.clone()), ran.clone());
                let bomb = bomb(i).then(|| PanicsOnDrop);
                c.apply_then(
                    move |c| {
                        *c += 1;
                        (CountsDrops(results), format!("{c}"))
                    },
                    move |(result, text)| {
                        let _ = (token, result, text);
                        std::mem::forget(bomb);
                        ran.fetch_add(1, Ordering::SeqCst);
                    },
                );
            }
            // The thread ends here: no `wait_pending`.
        })
        .join()
        .expect("a destructor's panic is contained");
    }
    let issued = threads * PER_THREAD;
    assert_eq!(counter.apply(|c| *c), issued as u64, "every request ran");
    let load = |n: &AtomicUsize| n.load(Ordering::SeqCst);
    (load(&results), load(&tokens), load(&ran))
}

/// The results of continuations that never ran are dropped too, exactly once: they wait in the client's
/// memory with their continuation (an answered batch), and the thread's exit discards both.
#[test]
fn results_of_continuations_that_never_ran_are_dropped_once() {
    let (results, continuations, ran) = exit_with_unrun_continuations(20, |_| false);
    // A continuation that ran dropped its result and token itself; the others were discarded with theirs.
    assert_eq!(results, 800, "each result dropped exactly once");
    assert_eq!(continuations, 800, "each continuation dropped exactly once");
    assert!(ran < 800, "the thread exited before running them all");
}

/// A continuation that never ran and whose capture panics when dropped: the panic is contained (the
/// thread exits normally), and every other continuation and result of its batch is still dropped once.
#[test]
fn a_panicking_destructor_among_unrun_continuations_loses_nothing() {
    let (results, continuations, ran) = exit_with_unrun_continuations(10, |i| i % 8 == 0);
    assert_eq!(results, 400, "each result dropped exactly once");
    assert_eq!(continuations, 400, "each continuation dropped exactly once");
    assert!(ran < 400, "the thread exited before running them all");
}

#[test]
fn scoped_threads_sharing_one_handle_exit_with_requests_in_flight() {
    let counter: Arc<Trust<u64>> = Arc::new(rt().trustee(1).entrust(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|s| {
        for _ in 0..4 {
            let (counter, dropped) = (&counter, &dropped);
            s.spawn(move || {
                for _ in 0..50 {
                    let token = CountsDrops(dropped.clone());
                    counter.apply_then(|c| *c += 1, move |()| drop(token));
                }
                counter.apply_then(slow_increment, |_| {});
            });
        }
    });
    // A scoped thread's thread-locals (its client) are destroyed after `scope` returns, so what it still held
    // arrives shortly after: wait for it, with a deadline.
    eventually(|| counter.apply(|c| *c) == 4 * 51 && dropped.load(Ordering::SeqCst) == 200);
    assert_eq!(counter.apply(|c| *c), 4 * 51);
    assert_eq!(dropped.load(Ordering::SeqCst), 200);
}

#[test]
fn tokio_worker_threads_exit_with_requests_in_flight() {
    let counter = rt().trustee(0).entrust(0u64);
    let dropped = Arc::new(AtomicUsize::new(0));
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    for _ in 0..8 {
        let (c, dropped) = (counter.clone(), dropped.clone());
        tokio.spawn(async move {
            let token = CountsDrops(dropped);
            c.apply_then(slow_increment, move |_| drop(token));
            // A request still pending when the tokio runtime goes away.
            c.apply_async(slow_increment).await;
        });
    }
    std::thread::sleep(Duration::from_millis(5));
    drop(tokio); // its worker threads exit, some with requests in flight
    // Every apply_then ran; each apply_async ran if its task got to send it.
    eventually(|| dropped.load(Ordering::SeqCst) == 8);
    let total = counter.apply(|c| *c);
    assert!((8..=16).contains(&total), "total {total}");
    assert_eq!(dropped.load(Ordering::SeqCst), 8);
}

/// Waits up to 10 s for `done`.
fn eventually(done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}
