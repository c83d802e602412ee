//! `Trust::clone` never blocks and never panics (a fire-and-forget increment), while the value is still dropped
//! exactly once, after its last handle, however clones and drops race across channels.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::*;
use trust_core::{Trust, spawn};

/// Waits up to 10 s for `done`.
fn eventually(done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn clone_inside_another_trustees_closure_works() {
    let drops = Arc::new(AtomicUsize::new(0));
    let value = rt().trustee(0).entrust(CountsDrops(drops.clone()));
    let keeper: Trust<Vec<Trust<CountsDrops>>> = rt().trustee(1).entrust(Vec::new());
    let v = value.clone();
    // A clone inside a closure that trustee 1 applies: it used to be a blocking round trip, hence a panic.
    keeper.apply(move |kept| {
        for _ in 0..100 {
            kept.push(v.clone());
        }
    });
    assert_eq!(keeper.apply(|kept| kept.len()), 100);
    drop(value);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        drops.load(Ordering::SeqCst),
        0,
        "100 clones are still alive on trustee 1"
    );
    keeper.apply(|kept| kept.clear());
    eventually(|| drops.load(Ordering::SeqCst) == 1);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
fn clones_sent_to_other_threads_and_dropped_there_drop_the_value_once() {
    // Each round: a value, cloned on one thread, the clones moved to other threads that drop them (their
    // decrements race the increments still on their way), the original dropped last on yet another thread.
    let drops = Arc::new(AtomicUsize::new(0));
    let rounds = 300;
    for round in 0..rounds {
        let value = rt().trustee(round % 2).entrust(CountsDrops(drops.clone()));
        let clones: Vec<_> = (0..8).map(|_| value.clone()).collect();
        let droppers: Vec<_> = clones
            .into_iter()
            .map(|c| std::thread::spawn(move || drop(c)))
            .collect();
        std::thread::spawn(move || drop(value)).join().unwrap();
        for d in droppers {
            d.join().unwrap();
        }
    }
    eventually(|| drops.load(Ordering::SeqCst) == rounds);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        rounds,
        "each value dropped exactly once"
    );
}

#[test]
fn a_clone_still_in_use_keeps_the_value_alive() {
    // The clone's decrement-first race: the original is dropped on another thread right away, while this
    // thread keeps using its clone; every use must see the value.
    let drops = Arc::new(AtomicUsize::new(0));
    for i in 0..200u64 {
        let value = rt().trustee(1).entrust((i, CountsDrops(drops.clone())));
        let mine = value.clone();
        std::thread::spawn(move || drop(value)).join().unwrap();
        assert_eq!(mine.apply(|v| v.0), i);
        drop(mine);
    }
    eventually(|| drops.load(Ordering::SeqCst) == 200);
    assert_eq!(drops.load(Ordering::SeqCst), 200);
}

#[test]
fn the_last_handle_dropped_inside_its_own_closure_keeps_the_value_until_the_closure_ends() {
    let drops = Arc::new(AtomicUsize::new(0));
    for i in 0..1000 {
        // Its own count too: the previous values are dropped by their trustees whenever they get to it.
        let mine = Arc::new(AtomicUsize::new(0));
        let value = rt().trustee(i % 2).entrust((
            CountsDrops(drops.clone()),
            CountsDrops(mine.clone()),
            vec![1u8; 64],
        ));
        let in_closure = value.clone();
        let sum = Rc::new(Cell::new(0));
        let s = sum.clone();
        // The closure drops the last handle, then still reads the value (AddressSanitizer would see a use
        // after free): the other handle is dropped by another thread, whose exit waits until its trustee has
        // counted the drop, while this request waits unpublished.
        value.apply_then(
            move |v| {
                drop(in_closure);
                assert_eq!(
                    mine.load(Ordering::SeqCst),
                    0,
                    "dropped only after the closure"
                );
                v.2.iter().map(|&b| u32::from(b)).sum::<u32>()
            },
            move |x| s.set(x),
        );
        std::thread::spawn(move || drop(value)).join().unwrap();
        trust_core::wait_pending();
        assert_eq!(sum.get(), 64);
    }
    eventually(|| drops.load(Ordering::SeqCst) == 1000);
    assert_eq!(drops.load(Ordering::SeqCst), 1000);
}

#[test]
fn fibers_clone_and_drop_across_workers() {
    let drops = Arc::new(AtomicUsize::new(0));
    let value = rt().trustee(0).entrust(CountsDrops(drops.clone()));
    let fibers: Vec<_> = (0..64)
        .map(|_| {
            let v = value.clone();
            spawn(move || {
                let mine: Vec<_> = (0..10).map(|_| v.clone()).collect();
                mine.len()
            })
        })
        .collect();
    let total: usize = fibers.into_iter().map(|f| f.join().unwrap()).sum();
    assert_eq!(total, 640);
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(value);
    eventually(|| drops.load(Ordering::SeqCst) == 1);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
fn an_increment_behind_a_long_backlog_keeps_the_value_alive() {
    // Worker 0 queues 2,000 requests to trustee 1 (a backlog many batches long), then clones `value`: that
    // increment waits at the end of the backlog. The original goes back to this thread, whose decrement
    // reaches trustee 1 first: the count touches zero while the clone is alive. The value must survive.
    let drops = Arc::new(AtomicUsize::new(0));
    for round in 0..20u64 {
        let value = rt().trustee(1).entrust((round, CountsDrops(drops.clone())));
        let flood = rt().trustee(1).entrust(0u64);
        let keeper: Trust<Option<Trust<(u64, CountsDrops)>>> = rt().trustee(0).entrust(None);
        let (back, original) = std::sync::mpsc::channel();
        let back = std::sync::Mutex::new(back);
        keeper.apply(move |kept| {
            for _ in 0..2000 {
                flood.apply_then(|c| *c += 1, |_| {});
            }
            *kept = Some(value.clone());
            back.lock().unwrap().send(value).unwrap();
        });
        drop(original.recv().unwrap());
        let kept = keeper.apply(Option::take).expect("kept a clone");
        assert_eq!(
            kept.apply(|v| v.0),
            round,
            "the value outlived the early zero"
        );
        assert_eq!(drops.load(Ordering::SeqCst), round as usize);
        drop(kept);
        eventually(|| drops.load(Ordering::SeqCst) == round as usize + 1);
    }
    assert_eq!(drops.load(Ordering::SeqCst), 20);
}

#[test]
fn clone_does_not_wait_behind_a_slow_request_in_flight() {
    // The first `apply_then` on an idle channel is published at once, alone; its closure takes 300 ms: this
    // thread's slot to trustee 1 is busy (the 31 behind it wait in the next batch). Cloning (and dropping) a handle of that trustee must not
    // wait for it.
    let value = rt().trustee(1).entrust(0u64);
    let inside = Arc::new(AtomicBool::new(false));
    let now_inside = inside.clone();
    value.apply_then(
        move |_| {
            now_inside.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(300));
        },
        |()| {},
    );
    for _ in 0..31 {
        value.apply_then(|v| *v += 1, |()| {});
    }
    eventually(|| inside.load(Ordering::SeqCst)); // the trustee is now inside the slow closure
    assert!(inside.load(Ordering::SeqCst));
    let started = Instant::now();
    let clones: Vec<_> = (0..100).map(|_| value.clone()).collect();
    drop(clones);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(150),
        "100 clones and drops took {waited:?}"
    );
    trust_core::wait_pending();
    assert_eq!(value.apply(|v| *v), 31);
}
