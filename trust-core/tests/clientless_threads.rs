//! Threads that entrust, clone and drop handles but never call: their records that answer nothing (a
//! registration, a count) go by mail, since such a thread has no client context and gets none for them. Each
//! value must still be registered, counted and dropped exactly once, whatever order the mail and the other
//! threads' requests arrive in.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::{Tallied, Tally, eventually, rt, settle};
use trust_core::Trust;

/// 4 threads, none of which ever calls, each entrusting 2,000 values to the two trustees and dropping each
/// at once: every value is dropped once, on its trustee.
#[test]
fn values_entrusted_and_dropped_at_once_by_threads_without_a_client_are_dropped_once() {
    let tally = Arc::new(Tally::default());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let tally = tally.clone();
            std::thread::spawn(move || {
                for i in 0..2_000 {
                    drop(rt().trustee((t + i) % 2).entrust(Tallied::new(&tally)));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    eventually("every value is dropped", || {
        tally.dropped.load(Ordering::SeqCst) == 8_000
    });
    assert_eq!(tally.counts(), (8_000, 8_000));
}

/// A thread without a client entrusts a counter and clones it 1,000 times, handing every clone to a thread
/// that calls (its requests go through its slots, the clones' counts by mail), then drops its own handle
/// and the clones it kept: each of the 500 handed clones adds 1, the count ends at 500, and the value is
/// dropped once, after the last handle.
#[test]
fn clones_made_by_a_thread_without_a_client_stay_counted_while_another_thread_calls() {
    let tally = Arc::new(Tally::default());
    let t2 = tally.clone();
    let (tx, rx) = std::sync::mpsc::channel::<Trust<(u64, Tallied)>>();
    let maker = std::thread::spawn(move || {
        let v = rt().trustee(1).entrust((0u64, Tallied::new(&t2)));
        let mut kept = Vec::new();
        for i in 0..1_000 {
            let c = v.clone();
            if i % 2 == 0 {
                tx.send(c).unwrap();
            } else {
                kept.push(c);
            }
        }
        drop(kept);
        v
    });
    let caller = std::thread::spawn(move || {
        let mut last = None;
        for h in rx {
            h.apply(|(n, _)| *n += 1);
            last = Some(h);
        }
        last.unwrap()
    });
    let v = maker.join().unwrap();
    let last = caller.join().unwrap();
    assert_eq!(v.apply(|(n, _)| *n), 500);
    assert_eq!(tally.counts(), (1, 0));
    drop((v, last));
    settle(&rt().trustee(1).entrust(()));
    eventually("the value is dropped", || {
        tally.dropped.load(Ordering::SeqCst) == 1
    });
    assert_eq!(tally.counts(), (1, 1));
}
