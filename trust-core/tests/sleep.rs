//! `trust_core::sleep`: a fiber asleep suspends only itself (its worker serves and runs the other fibers
//! meanwhile, and idles when nothing else is left), and wakes no earlier than asked; outside a fiber it sleeps
//! the thread.

use std::time::{Duration, Instant};

use trust_core::{sleep, spawn};

mod common;
use common::*;

#[test]
fn a_thousand_sleeping_fibers_wake_on_time_and_their_workers_serve_and_idle_meanwhile() {
    let counter = rt().trustee(0).entrust(0u64);
    let fibers: Vec<_> = (0..1000)
        .map(|i| {
            let counter = counter.clone();
            spawn(move || {
                let asleep = Instant::now();
                sleep(Duration::from_millis(1000 + i % 7));
                let slept = asleep.elapsed();
                counter.apply(|v| *v += 1);
                slept
            })
        })
        .collect();
    // Both trustees serve while the fibers sleep: none has woken yet.
    let other = rt().trustee(1).entrust(0u64);
    for _ in 0..1000 {
        other.apply(|v| *v += 1);
    }
    assert_eq!(counter.apply(|v| *v), 0, "a fiber woke early");
    // And the workers do not spin while their fibers sleep.
    let before = worker_cpu_ticks();
    std::thread::sleep(Duration::from_millis(500));
    let spent = worker_cpu_ticks() - before;
    assert!(
        spent <= 10,
        "the workers used {spent} ticks of 10 ms in 500 ms"
    );
    for (i, fiber) in fibers.into_iter().enumerate() {
        let slept = fiber.join().unwrap();
        assert!(
            slept >= Duration::from_millis(1000 + i as u64 % 7),
            "fiber {i} slept {slept:?}"
        );
    }
    assert_eq!(counter.apply(|v| *v), 1000);
    assert_eq!(other.apply(|v| *v), 1000);
}

#[test]
fn a_fiber_asleep_for_ever_holds_up_nobody() {
    let counter = rt().trustee(0).entrust(0u64);
    let forever = {
        let counter = counter.clone();
        spawn(move || {
            sleep(Duration::MAX);
            counter.apply(|v| *v += 1);
        })
    };
    let zero = spawn(|| sleep(Duration::ZERO));
    zero.join().unwrap();
    let served = within(20, {
        let counter = counter.clone();
        move || {
            (0..100)
                .map(|_| {
                    let counter = counter.clone();
                    spawn(move || counter.apply(|v| *v += 10))
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|f| f.join().unwrap())
                .count()
        }
    });
    assert_eq!(served, 100);
    assert_eq!(counter.apply(|v| *v), 1000, "the sleeper never woke");
    assert!(!forever.is_finished());
}

#[test]
fn outside_a_fiber_sleep_sleeps_the_thread() {
    let asleep = Instant::now();
    sleep(Duration::from_millis(30));
    assert!(asleep.elapsed() >= Duration::from_millis(30));
    // Inside a delegated closure: the trustee's own thread, which serves nothing meanwhile.
    let slept = rt().trustee(1).entrust(()).apply(|_| {
        let asleep = Instant::now();
        sleep(Duration::from_millis(30));
        asleep.elapsed()
    });
    assert!(slept >= Duration::from_millis(30));
}
