//! [`LockContext`]: the parts of an [`OwnedLockCollection`](super::OwnedLockCollection) locked one at a
//! time, in the collection's order (happylock 0.5's `LockContext`), for code that decides what to lock next
//! from what it has already locked.
//!
//! Deadlock freedom, as for the collection's own `lock`: the collection owns its locks, so every
//! acquisition of them goes through it, in positional order (part 0, then part 1, ...); a context can only
//! move forward, which the type checker enforces for tuples (`lock_1` returns a context that has no
//! `lock_0`; calling it is a compile error, see `ui-tests/tests/ui/lock/context-out-of-order.rs`) and the
//! run-time cursor for arrays, `Vec`s and boxed slices (`lock_next`). The context borrows the key for as
//! long as it and its guards live, so nothing else can be locked meanwhile; with a
//! [`NestedKey`](super::NestedKey), every part must rank above the key's held rank, as in `lock_all!`.
//!
//! ```
//! use trust_core::lock::{Mutex, OwnedLockCollection, ThreadKey};
//!
//! let mut key = ThreadKey::get().unwrap();
//! let locks = OwnedLockCollection::new((Mutex::new(true), Mutex::new(42), Mutex::new(67)));
//!
//! let ctx = locks.context(&mut key);
//! let (use_last, ctx) = ctx.lock_0();
//! let number = if *use_last { ctx.lock_2().0 } else { ctx.lock_1().0 }; // part 1 is skipped
//! assert_eq!(*number, 67);
//! drop((use_last, number));
//!
//! let list = OwnedLockCollection::new([Mutex::new(1), Mutex::new(3), Mutex::new(8)]);
//! let mut ctx = list.context(&mut key);
//! let mut sum = 0;
//! while let Some(item) = ctx.lock_next() {
//!     sum += *item; // the guards of earlier items stay alive
//! }
//! assert_eq!(sum, 12);
//! ```

use std::fmt;
use std::marker::PhantomData;

use super::key::LockKey;
use super::lock_all::{acquire, acquire_read, try_acquire, try_acquire_read};
use super::lockable::{Lock, Sharable};
use super::rank::LockAfter;

/// Locks the parts of an owned collection one at a time, in order; made by
/// [`OwnedLockCollection::context`](super::OwnedLockCollection::context). `NEXT` is the first tuple part
/// this context may still lock (tuples), `0` for sequences (which keep a cursor instead).
///
/// Tuples: `lock_N`/`read_N`/`try_lock_N`/`try_read_N` lock part `N` and return its guard with a
/// context that may lock only parts after `N`. Arrays, `Vec`s, `Box<[_]>`: `lock_next`/`read_next`/
/// `skip_next` walk the parts in order. Guards live as long as the collection's and the key's borrows,
/// not the context's, so they can outlive the context that made them.
pub struct LockContext<'a, K: ?Sized, L: ?Sized, const NEXT: usize = 0> {
    locks: &'a L,
    /// The next part `lock_next` takes (sequences).
    cursor: usize,
    _key: PhantomData<&'a mut K>,
}

impl<K: ?Sized, L: ?Sized, const NEXT: usize> fmt::Debug for LockContext<'_, K, L, NEXT> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockContext")
            .field("next", &NEXT.max(self.cursor))
            .finish_non_exhaustive()
    }
}

impl<'a, K: LockKey + ?Sized, L: ?Sized> LockContext<'a, K, L> {
    /// Only for a collection that owns `locks` (so every acquisition of them goes through it, in this
    /// order); borrows the key for `'a`.
    pub(crate) fn new(locks: &'a L, _key: &'a mut K) -> Self {
        LockContext {
            locks,
            cursor: 0,
            _key: PhantomData,
        }
    }
}

impl<'a, K: ?Sized, L: ?Sized, const NEXT: usize> LockContext<'a, K, L, NEXT> {
    fn advance<const TO: usize>(self) -> LockContext<'a, K, L, TO> {
        LockContext {
            locks: self.locks,
            cursor: self.cursor,
            _key: PhantomData,
        }
    }
}

/// The state of a tuple context whose next lockable part is `N`.
#[derive(Debug, Clone, Copy)]
pub struct Next<const N: usize>;

/// `Next<K>: Reaches<N>` when `K <= N`: a context at part `K` may still lock part `N`.
#[diagnostic::on_unimplemented(
    message = "parts of a `LockContext` are locked in order: part {N} comes before a part this context already passed",
    label = "this context can only lock parts after the ones it locked or skipped",
    note = "lock parts in increasing order (`lock_0`, then `lock_1`, ...); a context never goes back, \
            which is what keeps every thread's order the same. To lock an earlier part, take it first, or \
            drop this context and its guards and start again with `context(&mut key)`"
)]
pub trait Reaches<const N: usize> {}

macro_rules! reaches {
    ($($n:literal: $($k:literal)*;)*) => {$($(impl Reaches<$n> for Next<$k> {})*)*};
}

reaches! {
    0: 0;
    1: 0 1;
    2: 0 1 2;
    3: 0 1 2 3;
    4: 0 1 2 3 4;
    5: 0 1 2 3 4 5;
    6: 0 1 2 3 4 5 6;
    7: 0 1 2 3 4 5 6 7;
    8: 0 1 2 3 4 5 6 7 8;
    9: 0 1 2 3 4 5 6 7 8 9;
    10: 0 1 2 3 4 5 6 7 8 9 10;
    11: 0 1 2 3 4 5 6 7 8 9 10 11;
    12: 0 1 2 3 4 5 6 7 8 9 10 11 12;
    13: 0 1 2 3 4 5 6 7 8 9 10 11 12 13;
}

macro_rules! tuple_context {
    (@impl $tuple:ty [$($T:ident)+] $($idx:tt $next:tt $P:ident $lock:ident $read:ident $try_lock:ident $try_read:ident;)+) => {
        impl<'a, K: LockKey + ?Sized, $($T,)+ const NEXT: usize> LockContext<'a, K, $tuple, NEXT> {
            $(
                #[doc = concat!("Locks part ", stringify!($idx), " (blocking) and returns its guard and a context for the parts after it.")]
                #[track_caller]
                pub fn $lock(self) -> ($P::Guard<'a>, LockContext<'a, K, $tuple, $next>)
                where
                    Next<NEXT>: Reaches<$idx>,
                    $P: Lock,
                    <$P as Lock>::Rank: LockAfter<K::Held>,
                {
                    let guard = acquire(&self.locks.$idx);
                    (guard, self.advance())
                }

                #[doc = concat!("Locks part ", stringify!($idx), " for reading (blocking); as `lock_", stringify!($idx), "`.")]
                #[track_caller]
                pub fn $read(self) -> ($P::ReadGuard<'a>, LockContext<'a, K, $tuple, $next>)
                where
                    Next<NEXT>: Reaches<$idx>,
                    $P: Lock + Sharable,
                    <$P as Lock>::Rank: LockAfter<K::Held>,
                {
                    let guard = acquire_read(&self.locks.$idx);
                    (guard, self.advance())
                }

                #[doc = concat!("Locks part ", stringify!($idx), " if it is free; else gives this context back unchanged.")]
                #[track_caller]
                #[allow(clippy::type_complexity)]
                pub fn $try_lock(self) -> Result<($P::Guard<'a>, LockContext<'a, K, $tuple, $next>), Self>
                where
                    Next<NEXT>: Reaches<$idx>,
                    $P: Lock,
                    <$P as Lock>::Rank: LockAfter<K::Held>,
                {
                    match try_acquire(&self.locks.$idx) {
                        Some(guard) => Ok((guard, self.advance())),
                        None => Err(self),
                    }
                }

                #[doc = concat!("Locks part ", stringify!($idx), " for reading if no writer holds it; else gives this context back.")]
                #[track_caller]
                #[allow(clippy::type_complexity)]
                pub fn $try_read(self) -> Result<($P::ReadGuard<'a>, LockContext<'a, K, $tuple, $next>), Self>
                where
                    Next<NEXT>: Reaches<$idx>,
                    $P: Lock + Sharable,
                    <$P as Lock>::Rank: LockAfter<K::Held>,
                {
                    match try_acquire_read(&self.locks.$idx) {
                        Some(guard) => Ok((guard, self.advance())),
                        None => Err(self),
                    }
                }
            )+
        }
    };
}

/// `tuple_context!` for every prefix of the parts listed: tuples of 1, 2, ... up to all of them.
macro_rules! tuple_contexts {
    (@prefix [$($T:ident)*] [$($done:tt)*]) => {};
    (@prefix [$($T:ident)*] [$($done:tt)*]
        $idx:tt $next:tt $P:ident $lock:ident $read:ident $try_lock:ident $try_read:ident; $($rest:tt)*) => {
        tuple_context!(@impl ($($T,)* $P,) [$($T)* $P] $($done)* $idx $next $P $lock $read $try_lock $try_read;);
        tuple_contexts!(@prefix [$($T)* $P] [$($done)* $idx $next $P $lock $read $try_lock $try_read;] $($rest)*);
    };
    ($($row:tt)+) => {
        tuple_contexts!(@prefix [] [] $($row)+);
    };
}

tuple_contexts! {
    0 1 T0 lock_0 read_0 try_lock_0 try_read_0;
    1 2 T1 lock_1 read_1 try_lock_1 try_read_1;
    2 3 T2 lock_2 read_2 try_lock_2 try_read_2;
    3 4 T3 lock_3 read_3 try_lock_3 try_read_3;
    4 5 T4 lock_4 read_4 try_lock_4 try_read_4;
    5 6 T5 lock_5 read_5 try_lock_5 try_read_5;
    6 7 T6 lock_6 read_6 try_lock_6 try_read_6;
    7 8 T7 lock_7 read_7 try_lock_7 try_read_7;
    8 9 T8 lock_8 read_8 try_lock_8 try_read_8;
    9 10 T9 lock_9 read_9 try_lock_9 try_read_9;
    10 11 T10 lock_10 read_10 try_lock_10 try_read_10;
    11 12 T11 lock_11 read_11 try_lock_11 try_read_11;
    12 13 T12 lock_12 read_12 try_lock_12 try_read_12;
    13 14 T13 lock_13 read_13 try_lock_13 try_read_13;
}

macro_rules! sequence_context {
    ($($ty:ty => [$($gen:tt)*]),* $(,)?) => {$(
        impl<'a, K: LockKey + ?Sized, P: Lock, $($gen)*> LockContext<'a, K, $ty> {
            /// Locks the next part (blocking) and returns its guard, or `None` after the last part.
            #[track_caller]
            pub fn lock_next(&mut self) -> Option<P::Guard<'a>>
            where
                P::Rank: LockAfter<K::Held>,
            {
                let part = self.locks.get(self.cursor)?;
                self.cursor += 1;
                Some(acquire(part))
            }

            /// Locks the next part for reading (blocking), or `None` after the last part.
            #[track_caller]
            pub fn read_next(&mut self) -> Option<P::ReadGuard<'a>>
            where
                P: Sharable,
                P::Rank: LockAfter<K::Held>,
            {
                let part = self.locks.get(self.cursor)?;
                self.cursor += 1;
                Some(acquire_read(part))
            }

            /// Passes over the next part without locking it (it can no longer be locked through this
            /// context); false after the last part.
            pub fn skip_next(&mut self) -> bool {
                let more = self.cursor < self.locks.len();
                self.cursor += usize::from(more);
                more
            }

            /// How many parts are left to lock or skip.
            pub fn remaining(&self) -> usize {
                self.locks.len() - self.cursor
            }
        }
    )*};
}

sequence_context! {
    [P; M] => [const M: usize],
    Vec<P> => [],
    Box<[P]> => [],
}
