//! A plain `apply` on a `Trust<Latch<T>>` waits for the fibers launched on it; launches that come while it
//! waits wait behind it, so that overlapping launches cannot starve it (README, "A plain `apply` on a
//! `Trust<Latch<T>>`"), except launches made by a fiber launched on the latch itself, which the apply waits
//! for anyway.

#[macro_use]
mod common;
use common::*;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use trust_core::{Latch, Trust};

/// A fiber on the latch's own worker applies to it inline (it waits for the launched fibers on its
/// worker, not through a channel) while launches overlap: it gets the value (7, set before) within 2 s.
#[test]
fn an_inline_apply_of_a_fiber_on_the_latchs_worker_is_not_starved_by_overlapping_launches() {
    in_child!(
        "an_inline_apply_of_a_fiber_on_the_latchs_worker_is_not_starved_by_overlapping_launches",
        10
    );
    calibrate();
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(7));
    let (stop, _, driver) = overlapping_launches(&l);
    let l2 = l.clone();
    let got = within(2, move || {
        spawn_on(0, move || l2.apply(|l| *l.get_mut()))
            .join()
            .unwrap()
    });
    stop.store(true, Ordering::SeqCst);
    within(5, move || driver.join().unwrap());
    assert_eq!(got, 7);
    child_ok();
}

/// While a plain thread's `apply` waits on the latch, a fiber launched on it launches another (a blocking
/// `launch`, nested): the nested one starts at once (it is not held behind the apply, which waits for its
/// launcher), returns 5, and then the apply gets the value its launcher wrote (1).
#[test]
fn a_fiber_launched_on_a_latch_launches_on_it_while_an_apply_waits() {
    in_child!(
        "a_fiber_launched_on_a_latch_launches_on_it_while_an_apply_waits",
        10
    );
    let l: Trust<Latch<u64>> = rt().trustee(0).entrust(Latch::new(0));
    let go = Arc::new(AtomicBool::new(false));
    let (l2, go2) = (l.clone(), go.clone());
    let outer = std::thread::spawn(move || {
        let l3 = l2.clone();
        l2.launch(move |latch| {
            while !go2.load(Ordering::SeqCst) {
                trust_core::sleep(Duration::from_millis(1));
            }
            let nested = l3.launch(|_| 5u64);
            *latch.lock() = 1;
            nested
        })
    });
    std::thread::sleep(Duration::from_millis(20));
    let l4 = l.clone();
    let apply = std::thread::spawn(move || l4.apply(|l| *l.get_mut()));
    std::thread::sleep(Duration::from_millis(20));
    go.store(true, Ordering::SeqCst);
    assert_eq!(within(3, move || outer.join().unwrap()), 5);
    assert_eq!(within(3, move || apply.join().unwrap()), 1);
    child_ok();
}
