//! Plain threads blocked in `apply` when the runtime shuts down (a process of its own: a runtime cannot be
//! restarted). The trustee is busy in a long closure, so their requests wait unanswered, parked: a request
//! published before the trustee closed still runs in its last round and answers; the next `apply` panics
//! naming the shutdown. No thread hangs, every apply that returned ran exactly once, and none that panicked
//! ran.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

mod common;
use common::{panic_message, rt};

const CALLERS: usize = 4;

#[test]
fn threads_waiting_for_a_trustee_at_shutdown_get_their_answer_or_a_panic_naming_it() {
    let value = rt().trustee(1).entrust(0u64);
    // Counted inside the closures: the applies that ran, whatever their callers saw.
    let ran = Arc::new(AtomicU64::new(0));
    let blocking = Arc::new(AtomicBool::new(false));

    let (done, results) = mpsc::channel();
    // One caller's closure holds the trustee for 300 ms; the others keep applying until they fail.
    {
        let (value, ran, blocking, done) =
            (value.clone(), ran.clone(), blocking.clone(), done.clone());
        std::thread::spawn(move || {
            let r = catch_unwind(AssertUnwindSafe(|| {
                value.apply(move |v| {
                    blocking.store(true, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(300));
                    ran.fetch_add(1, Ordering::SeqCst);
                    *v += 1;
                })
            }));
            done.send((1, r.err().map(panic_message))).unwrap();
        });
    }
    for _ in 0..CALLERS {
        let (value, ran, done) = (value.clone(), ran.clone(), done.clone());
        std::thread::spawn(move || {
            let mut answered = 0u64;
            let err = catch_unwind(AssertUnwindSafe(|| {
                loop {
                    let ran = ran.clone();
                    value.apply(move |v| {
                        ran.fetch_add(1, Ordering::SeqCst);
                        *v += 1;
                    });
                    answered += 1;
                }
            }))
            .unwrap_err();
            done.send((answered, Some(panic_message(err)))).unwrap();
        });
    }
    drop(done);
    while !blocking.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50)); // the callers are waiting behind the long closure now
    rt().shutdown();

    let mut answered = 0;
    for _ in 0..=CALLERS {
        let (count, err) = results
            .recv_timeout(Duration::from_secs(10))
            .expect("a thread waiting for its trustee at shutdown hung");
        answered += count;
        if let Some(err) = err {
            assert!(
                err.contains("shut down"),
                "a caller failed, but not by naming the shutdown: {err}"
            );
        }
    }
    assert_eq!(
        answered,
        ran.load(Ordering::SeqCst),
        "every apply that returned ran exactly once, and none that panicked ran"
    );
    assert!(
        answered >= 1,
        "the long closure, published before the shutdown, ran"
    );
}
