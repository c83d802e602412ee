//! [`LatchCell`]: a `Latch`'s value and whether a guard holds it, on one thread (`!Sync`, no atomics). The one
//! guard a cell has at a time reaches the value; the `Latch` around it (`api::latch`) decides who waits and who
//! is next, and may hand the cell, still locked, to that next holder.

use std::cell::{Cell, UnsafeCell};
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    /// A guard exists.
    Held,
    /// Locked, no guard: handed over to the next holder, who takes it with `take_handed`.
    HandedOver,
}

pub(crate) struct LatchCell<T> {
    state: OnItsThread<Cell<State>>,
    value: OnItsThread<UnsafeCell<T>>,
    /// The one reason `LatchCell` is `!Sync`, the same as `Latch`'s: a guard sent across threads is one error
    /// naming `Cell<()>`, not one per field (see `Latch::_not_sync`).
    _not_sync: PhantomData<Cell<()>>,
}

/// A field of `LatchCell`, which only its own thread touches: `Sync` by itself so that the marker above is the
/// only reason `LatchCell` is not.
struct OnItsThread<X>(X);

// SAFETY: `OnItsThread` is only a field of `LatchCell`, which is `!Sync` (`_not_sync`): no `&OnItsThread`
// crosses threads.
unsafe impl<X: Send> Sync for OnItsThread<X> {}

impl<T> LatchCell<T> {
    pub(crate) fn new(value: T) -> Self {
        LatchCell {
            state: OnItsThread(Cell::new(State::Free)),
            value: OnItsThread(UnsafeCell::new(value)),
            _not_sync: PhantomData,
        }
    }

    /// True while a guard holds the cell, or it is handed over to its next holder.
    pub(crate) fn is_locked(&self) -> bool {
        self.state.0.get() != State::Free
    }

    /// The guard, if the cell is free.
    pub(crate) fn try_lock(&self) -> Option<CellGuard<'_, T>> {
        self.guard_from(State::Free)
    }

    /// The guard of a cell handed over (`CellGuard::hand_over_on_drop`) and not taken since.
    pub(crate) fn take_handed(&self) -> Option<CellGuard<'_, T>> {
        self.guard_from(State::HandedOver)
    }

    fn guard_from(&self, state: State) -> Option<CellGuard<'_, T>> {
        (self.state.0.get() == state).then(|| {
            self.state.0.set(State::Held);
            CellGuard {
                cell: self,
                hand_over: false,
            }
        })
    }

    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.value.0.get_mut()
    }

    pub(crate) fn into_inner(self) -> T {
        self.value.0.into_inner()
    }
}

/// The one guard of a [`LatchCell`]: a guard exists exactly while the state is `Held` (only `guard_from` makes
/// one, from a state without a guard; only its drop leaves `Held`).
pub(crate) struct CellGuard<'a, T> {
    cell: &'a LatchCell<T>,
    hand_over: bool,
}

impl<T> CellGuard<'_, T> {
    /// Dropped, the guard leaves the cell locked, for its next holder to take (`take_handed`).
    pub(crate) fn hand_over_on_drop(&mut self) {
        self.hand_over = true;
    }
}

impl<T> Deref for CellGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this is the cell's one guard (see the type's doc), and `&mut LatchCell` cannot exist while it
        // borrows the cell: no other reference to the value exists but through this guard.
        unsafe { &*self.cell.value.0.get() }
    }
}

impl<T> DerefMut for CellGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and the guard is borrowed mutably.
        unsafe { &mut *self.cell.value.0.get() }
    }
}

impl<T> Drop for CellGuard<'_, T> {
    fn drop(&mut self) {
        let next = if self.hand_over { State::HandedOver } else { State::Free };
        self.cell.state.0.set(next);
    }
}

impl<T> fmt::Debug for CellGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CellGuard").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_guard_at_a_time_and_a_handed_over_cell_waits_for_its_taker() {
        let cell = LatchCell::new(1);
        let mut guard = cell.try_lock().expect("free");
        assert!(cell.try_lock().is_none() && cell.take_handed().is_none());
        *guard += 1;
        guard.hand_over_on_drop();
        drop(guard);
        assert!(cell.is_locked() && cell.try_lock().is_none());
        let guard = cell.take_handed().expect("handed over");
        assert_eq!(*guard, 2);
        drop(guard);
        assert!(!cell.is_locked());
        assert_eq!(cell.into_inner(), 2);
    }
}
