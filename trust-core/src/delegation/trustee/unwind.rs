//! Panics that user code raises where the runtime runs or drops it — a closure, a destructor, a waker — are
//! caught where they happen and never unwind into the runtime's loops. Their payloads need the same care: a
//! payload is any value (`std::panic::panic_any`), and its destructor can panic too, so a payload the runtime
//! drops itself is dropped here, and each value is dropped on its own (a second panic while the first unwinds
//! aborts the process).

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};

/// Runs `f`; true when it panicked. The panic's payload is dropped (`drop_payload`).
#[inline]
pub(crate) fn panicked(f: impl FnOnce()) -> bool {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => false,
        Err(payload) => {
            drop_payload(payload);
            true
        }
    }
}

/// Drops `value`; true when its destructor panicked (contained, as in `panicked`).
#[inline]
pub(crate) fn drop_quietly<T>(value: T) -> bool {
    panicked(move || drop(value))
}

/// Drops a panic's payload that nobody will see. If its destructor panics, that second panic's payload is
/// leaked, not dropped: it could panic in turn, without end.
pub(crate) fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
        eprintln!("trust: the payload of a panic panicked when dropped; its own payload is leaked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        static DROPS: Cell<u32> = const { Cell::new(0) };
    }

    /// A payload whose destructor panics with another such payload, without end.
    struct Bomb;

    impl Drop for Bomb {
        fn drop(&mut self) {
            DROPS.set(DROPS.get() + 1);
            panic::panic_any(Bomb);
        }
    }

    #[test]
    fn a_payload_that_panics_when_dropped_is_contained() {
        DROPS.set(0);
        assert!(panicked(|| panic::panic_any(Bomb)));
        // The first payload was dropped (and panicked); the second one is leaked.
        assert_eq!(DROPS.get(), 1);
        // The value, then the payload of its panic; that one's payload is leaked.
        assert!(drop_quietly(Bomb));
        assert_eq!(DROPS.get(), 3);
        assert!(!drop_quietly(7u8));
        assert!(!panicked(|| ()));
    }
}
