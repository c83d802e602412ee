//! A fiber whose request is the only thing its worker has going sends it on its own and watches for the
//! answer in place (`fiber::call_alone`): the request published at once as a batch of its own, its result read
//! straight from the response slot. These tests hold that path to what the general one promises: every
//! result exact, of every size; a panic comes back to the fiber and the trustee goes on; and a fiber whose
//! answer is slow gives its worker back, so that the worker's own trustee keeps serving others meanwhile.
//! Each test runs alone in a child process, so that its fiber is alone on its worker and takes that path
//! (other tests' fibers on the same worker would send it down the general one).

#[macro_use]
mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use trust_core::Trust;

use common::{CountsDrops, calibrate, child_ok, panic_message, rt, spawn_on};

/// 20,000 requests one after another from a fiber on worker 0 to trustee 1, each the only one in flight:
/// every result is the value the request left.
#[test]
fn a_lone_fibers_round_trips_each_return_their_own_result() {
    in_child!("a_lone_fibers_round_trips_each_return_their_own_result", 30);
    calibrate();
    let counter: &'static Trust<u64> = Box::leak(Box::new(rt().trustee(1).entrust(0)));
    let wrong = spawn_on(0, move || {
        (1..=20_000u64)
            .filter(|&i| {
                counter.apply(|c| {
                    *c += 1;
                    *c
                }) != i
            })
            .count()
    })
    .join()
    .unwrap();
    assert_eq!((wrong, counter.apply(|c| *c)), (0, 20_000));
    child_ok();
}

/// Results of every size through the lone path: none, one byte, a word, 64 bytes, 600 bytes (past the 512 a
/// result keeps inline), and heap-owning values.
#[test]
fn results_of_every_size_come_back_exact_from_a_lone_fiber() {
    in_child!(
        "results_of_every_size_come_back_exact_from_a_lone_fiber",
        30
    );
    calibrate();
    let t: &'static Trust<Vec<u8>> =
        Box::leak(Box::new(rt().trustee(1).entrust((0..=255).collect())));
    let (byte, len, words, big, text, tail) = spawn_on(0, move || {
        t.apply(|v| v.push(7));
        (
            t.apply(|v| v[3]),
            t.apply(|v| v.len() as u64),
            t.apply(|v| {
                let mut a = [0u64; 8];
                for (i, x) in a.iter_mut().enumerate() {
                    *x = v[i * 2] as u64 * 1000;
                }
                a
            }),
            t.apply(|v| {
                let mut a = [0u8; 600];
                for (i, x) in a.iter_mut().enumerate() {
                    *x = v[i % v.len()];
                }
                a
            }),
            t.apply(|v| format!("{}-{}", v[10], v[256])),
            t.apply(|v| v[250..].to_vec()),
        )
    })
    .join()
    .unwrap();
    let held: Vec<u8> = (0..=255).chain([7]).collect();
    assert_eq!((byte, len), (3, 257));
    assert_eq!(words, [0, 2000, 4000, 6000, 8000, 10000, 12000, 14000]);
    assert!(big.iter().enumerate().all(|(i, &x)| x == held[i % 257]));
    assert_eq!(text, "10-7");
    assert_eq!(tail, vec![250, 251, 252, 253, 254, 255, 7]);
    child_ok();
}

/// A lone fiber's request that panics: the panic comes back out of its `apply`, with its message; the
/// trustee goes on, and the next lone request is answered with the value the first left.
#[test]
fn a_lone_fibers_request_that_panics_comes_back_as_its_panic() {
    in_child!(
        "a_lone_fibers_request_that_panics_comes_back_as_its_panic",
        30
    );
    calibrate();
    let t: &'static Trust<u64> = Box::leak(Box::new(rt().trustee(1).entrust(5)));
    let (message, after) = spawn_on(0, move || {
        let caught = catch_unwind(AssertUnwindSafe(|| {
            t.apply(|c| {
                *c += 1;
                if *c == 6 {
                    panic!("lone request {c}");
                }
                *c
            })
        }));
        let message = panic_message(caught.expect_err("the request panicked"));
        (message, t.apply(|c| *c))
    })
    .join()
    .unwrap();
    assert_eq!((message.as_str(), after), ("lone request 6", 6));
    child_ok();
}

/// A lone fiber on worker 0 whose request blocks trustee 1 until the main thread has had ten requests to
/// trustee 0 answered: it must give worker 0 back while it waits (it watches for its answer in place only
/// while the worker has nothing else to do), or the closure gives up after 10 s and says so.
#[test]
fn a_lone_fiber_waiting_for_a_slow_answer_lets_its_worker_serve_others() {
    in_child!(
        "a_lone_fiber_waiting_for_a_slow_answer_lets_its_worker_serve_others",
        30
    );
    calibrate();
    let on_zero: &'static Trust<u64> = Box::leak(Box::new(rt().trustee(0).entrust(0)));
    let on_one: &'static Trust<u64> = Box::leak(Box::new(rt().trustee(1).entrust(0)));
    let main_done: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let waiting: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let fiber = spawn_on(0, move || {
        on_one.apply(move |c| {
            waiting.store(true, Ordering::Release);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !main_done.load(Ordering::Acquire) && Instant::now() < deadline {
                std::thread::yield_now();
            }
            *c += 1;
            main_done.load(Ordering::Acquire)
        })
    });
    while !waiting.load(Ordering::Acquire) {
        std::thread::yield_now();
    }
    let served: Vec<u64> = (0..10)
        .map(|_| {
            on_zero.apply(|c| {
                *c += 1;
                *c
            })
        })
        .collect();
    main_done.store(true, Ordering::Release);
    let saw_main_done = fiber.join().unwrap();
    assert_eq!(served, (1..=10).collect::<Vec<u64>>());
    assert!(
        saw_main_done,
        "trustee 1's closure waited 10 s: worker 0 served nothing while its fiber waited"
    );
    assert_eq!(on_one.apply(|c| *c), 1);
    child_ok();
}

/// The runtime shuts down while a lone fiber waits for a slow answer (it gave up watching and suspended,
/// `Outbox::await_alone`): the plain thread joining it gets its result or the shutdown's panic, within 10 s,
/// and the entrusted value is dropped exactly once, by the shutdown.
#[test]
fn a_lone_fiber_waiting_at_shutdown_is_joined_and_its_value_dropped_once() {
    in_child!(
        "a_lone_fiber_waiting_at_shutdown_is_joined_and_its_value_dropped_once",
        30
    );
    calibrate();
    let drops = Arc::new(AtomicUsize::new(0));
    let slow: &'static Trust<CountsDrops> = Box::leak(Box::new(
        rt().trustee(1).entrust(CountsDrops(drops.clone())),
    ));
    let started: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let fiber = spawn_on(0, move || {
        slow.apply(move |_| {
            started.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(300));
            7u32
        })
    });
    let joiner = std::thread::spawn(move || {
        catch_unwind(AssertUnwindSafe(|| fiber.join()))
            .map(|r| r.map_err(panic_message))
            .map_err(panic_message)
    });
    while !started.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    rt().shutdown();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !joiner.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        joiner.is_finished(),
        "HUNG: the lone fiber's join did not return after the shutdown"
    );
    let joined = joiner.join().unwrap();
    // Measured: the shutdown's panic, five runs of five (the worker abandons its suspended fibers).
    assert!(
        matches!(&joined, Ok(Ok(7)))
            || matches!(&joined, Ok(Err(m)) if m.contains("has been shut down")),
        "the join returned {joined:?}"
    );
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "the entrusted value dropped once"
    );
    child_ok();
}
