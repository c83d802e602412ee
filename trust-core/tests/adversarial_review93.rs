//! Review 93: misuse of the public API that compiles. Nothing unsound compiled (the misuse that the types can
//! refuse is in `ui-tests/`, two cases added for `Latch`); found at run time:
//! - `a_fiber_that_joins_its_own_handle_panics_naming_the_mistake` (hung for good before: the fiber waited
//!   for its own end, silently; std's thread panics when it joins itself). Now `Fiber::join` panics there,
//!   naming the mistake.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::channel;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use trust_core::Fiber;

fn within<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = channel();
    std::thread::spawn(move || tx.send(f()).unwrap());
    rx.recv_timeout(Duration::from_secs(10))
        .expect("hung: a fiber waited for its own end")
}

#[test]
fn a_fiber_that_joins_its_own_handle_panics_naming_the_mistake() {
    let message = within(|| {
        let slot: Arc<Mutex<Option<Fiber<u64>>>> = Arc::default();
        let (handed, inner) = (Arc::new(Barrier::new(2)), slot.clone());
        let (gate, (tx, rx)) = (handed.clone(), channel());
        // Detached: its handle goes into it.
        let fiber = trust_core::spawn(move || {
            gate.wait();
            let me = inner.lock().unwrap().take().expect("its own handle");
            let joined = catch_unwind(AssertUnwindSafe(move || me.join()));
            let payload = joined.expect_err("a fiber cannot wait for its own end");
            tx.send(payload.downcast_ref::<String>().cloned()).unwrap();
            1
        });
        *slot.lock().unwrap() = Some(fiber);
        handed.wait();
        rx.recv().unwrap()
    });
    assert_eq!(
        message.as_deref(),
        Some(
            "a fiber joined its own handle: it would wait for its own end for good. Join it from another \
             fiber or thread, or let the handle go (a fiber runs to its end unjoined)"
        )
    );
    // The runtime goes on.
    assert_eq!(trust_core::spawn(|| 41 + 1).join().unwrap(), 42);
}

/// Another fiber's join of a running fiber is not refused: it waits, and gets the result.
#[test]
fn a_fiber_joining_another_running_fiber_waits_for_its_result() {
    let got = within(|| {
        let first = trust_core::spawn(|| {
            trust_core::sleep(Duration::from_millis(30));
            5u64
        });
        trust_core::spawn(move || first.join().unwrap() + 1)
            .join()
            .unwrap()
    });
    assert_eq!(got, 6);
}
