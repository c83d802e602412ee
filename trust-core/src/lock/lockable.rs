//! The traits every lock and collection implements: [`RawLock`] (one raw lock, object-safe, for
//! collections), [`Lockable`] (anything made of locks: guards for all of them at once),
//! [`Sharable`] (can be read-locked), [`Lock`] (one lock with a rank: what `lock_all!` takes),
//! and their impls for references, smart pointers, tuples, arrays, `Vec` and `Box<[T]>`.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use super::rank::Rank;

/// One raw lock, as collections see it: identified by address, ordered by `(rank, id)`.
///
/// # Safety
///
/// `raw_lock`/`raw_try_lock` (when it returns `true`) must give mutual exclusion against every
/// other holder, and the shared variants shared access that excludes exclusive holders;
/// `lock_id` must be distinct for distinct live locks and stable while the lock lives. (`rank`
/// should be stable too: collections sort by `(rank, lock_id)`, and a lock whose rank changed would
/// be taken in two orders, which breaks deadlock freedom, though not memory safety.)
/// [`Lockable::guard`] hands out `&mut` to the data on the strength of these promises.
pub unsafe trait RawLock {
    /// The lock's address, used to order locks of equal rank and to detect duplicates.
    fn lock_id(&self) -> usize;

    /// The lock's [`Rank::RANK`].
    fn rank(&self) -> u32;

    /// Blocks until this thread holds the lock exclusively.
    ///
    /// # Safety
    ///
    /// The caller takes the lock for a holder of the thread's key (a [`LockKey`](super::LockKey) or
    /// [`NestedKey`](super::NestedKey)), in the order that key allows: a hold taken without one
    /// escapes the lock order, and with it the crate's promise that lock acquisitions never
    /// deadlock. (Memory safety does not rest on it; the guards' exclusivity does not either.)
    unsafe fn raw_lock(&self);

    /// Takes the lock exclusively if nobody holds it; never blocks.
    ///
    /// # Safety
    ///
    /// As for [`raw_lock`](Self::raw_lock).
    unsafe fn raw_try_lock(&self) -> bool;

    /// Releases an exclusive hold.
    ///
    /// # Safety
    ///
    /// The caller holds the lock exclusively (through `raw_lock` or a successful `raw_try_lock`)
    /// and no guard will release it again.
    unsafe fn raw_unlock(&self);

    /// Blocks until this thread holds the lock shared (exclusively, for a mutex).
    ///
    /// # Safety
    ///
    /// As for [`raw_lock`](Self::raw_lock).
    unsafe fn raw_lock_shared(&self);

    /// Takes the lock shared if no writer holds it; never blocks.
    ///
    /// # Safety
    ///
    /// As for [`raw_lock`](Self::raw_lock).
    unsafe fn raw_try_lock_shared(&self) -> bool;

    /// Releases a shared hold.
    ///
    /// # Safety
    ///
    /// The caller holds the lock shared (through `raw_lock_shared` or a successful
    /// `raw_try_lock_shared`) and no guard will release it again.
    unsafe fn raw_unlock_shared(&self);
}

/// Anything made of locks: a lock, a reference to one, or a tuple/array/`Vec` of them.
///
/// # Safety
///
/// `raw_locks` must report every lock `guard` (and, for [`Sharable`], `read_guard`) gives access
/// through, so that holding all of them makes the guards exclusive (or shared-only). It must report the
/// same locks every time it is called on a value that was not mutably borrowed in between: no interior
/// mutability may change which locks `guard` goes through. Collections list the locks before `guard` runs,
/// and [`LockCollection`](super::LockCollection) and [`RefLockCollection`](super::RefLockCollection) list
/// them once, at construction, and lock that list ever after.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not made of locks",
    label = "not a `Mutex`, `RwLock`, or a tuple, array or `Vec` of them",
    note = "lock collections hold `Mutex`es, `RwLock`s, references to them, or tuples, arrays, \
            `Vec`s and `Box<[_]>`s of those"
)]
pub unsafe trait Lockable {
    /// The guard for exclusive access to everything, e.g. a tuple of `MutexRef`s.
    type Guard<'g>
    where
        Self: 'g;

    /// Appends every raw lock this value is made of, in its own (unsorted) order.
    fn raw_locks<'a>(&'a self, out: &mut Vec<&'a dyn RawLock>);

    /// Makes the guards; each releases its lock when dropped.
    ///
    /// It should not panic: a panic here leaves held the locks it had not yet handed to a guard (the
    /// caller cannot tell which those are, so it cannot release them), and every later lock of them waits
    /// forever. Check invariants after locking instead.
    ///
    /// # Safety
    ///
    /// The caller holds every lock `raw_locks` reports, exclusively, and hands the duty of
    /// releasing them to the returned guard.
    unsafe fn guard(&self) -> Self::Guard<'_>;
}

/// A [`Lockable`] that can be locked for reading: `RwLock`s and collections of them.
///
/// # Safety
///
/// `read_guard` must give only shared access to data behind the reported locks.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be locked for reading",
    label = "only `RwLock` (and collections of `RwLock`s) have shared access",
    note = "drop `read` to lock it exclusively, or make it an `RwLock`"
)]
pub unsafe trait Sharable: Lockable {
    /// The guard for shared access to everything.
    type ReadGuard<'g>
    where
        Self: 'g;

    /// Makes the read guards; each releases its shared hold when dropped.
    ///
    /// # Safety
    ///
    /// The caller holds every lock `raw_locks` reports, at least shared, and hands the duty of
    /// releasing them to the returned guard.
    unsafe fn read_guard(&self) -> Self::ReadGuard<'_>;
}

/// A [`Lockable`] that owns its locks, so it cannot contain the same lock twice.
///
/// # Safety
///
/// No two of the locks `raw_locks` reports may be the same lock.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not own its locks",
    label = "references to locks could name one lock twice",
    note = "this needs owned locks (`Mutex`, `RwLock`, or tuples, arrays and `Vec`s of them); over \
            references, build the collection with `try_new` (it checks for duplicates), and to change \
            its child take it out with `into_child` and build again with `try_new`"
)]
pub unsafe trait OwnedLockable: Lockable {}

/// A [`Lockable`] whose data can be taken out by value, consuming the locks.
pub trait LockableIntoInner: Lockable {
    /// The data, e.g. a tuple of the values.
    type Inner;

    /// Consumes the locks and returns their data.
    fn into_inner(self) -> Self::Inner;
}

/// A [`Lockable`] whose data can be reached through `&mut` without locking.
pub trait LockableGetMut: Lockable {
    /// The mutable references, e.g. a tuple of `&mut T`.
    type Inner<'a>
    where
        Self: 'a;

    /// Borrows the data mutably; `&mut self` proves nobody holds the locks.
    fn get_mut(&mut self) -> Self::Inner<'_>;
}

/// One lock with a rank: what `lock_all!` takes (a `Mutex`, an `RwLock`, or a pointer to one).
///
/// # Safety
///
/// `raw_locks` reports exactly one lock, `self` as a [`RawLock`] (same `lock_id`), so that
/// acquiring that raw lock is enough for [`Lockable::guard`]; `Rank::RANK` equals
/// [`RawLock::rank`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a lock `lock_all!` can take",
    label = "expected a `Mutex` or `RwLock` (or a reference, `Box` or `Arc` to one)",
    note = "`lock_all!` takes single locks; lock a collection with its own `lock` method"
)]
pub unsafe trait Lock: Lockable + RawLock {
    /// The rank this lock carries in its type; [`Unranked`](super::Unranked) by default.
    type Rank: Rank;
}

// ---------------------------------------------------------------------------------------------
// Pointers forward to their target: `&m`, `Box<m>` and `Arc<m>` are the same lock as `m`.

macro_rules! forward_pointer {
    ($($ptr:ty => [$($gen:tt)*]),* $(,)?) => {$(
        // SAFETY: every method forwards to the target, which upholds `RawLock`.
        unsafe impl<$($gen)* T: RawLock + ?Sized> RawLock for $ptr {
            fn lock_id(&self) -> usize { (**self).lock_id() }
            fn rank(&self) -> u32 { (**self).rank() }
            unsafe fn raw_lock(&self) {
                // SAFETY: forwarded contract: the caller holds the key.
                unsafe { (**self).raw_lock() }
            }
            unsafe fn raw_try_lock(&self) -> bool {
                // SAFETY: as above.
                unsafe { (**self).raw_try_lock() }
            }
            unsafe fn raw_unlock(&self) {
                // SAFETY: forwarded contract: the caller holds the target exclusively.
                unsafe { (**self).raw_unlock() }
            }
            unsafe fn raw_lock_shared(&self) {
                // SAFETY: as above.
                unsafe { (**self).raw_lock_shared() }
            }
            unsafe fn raw_try_lock_shared(&self) -> bool {
                // SAFETY: as above.
                unsafe { (**self).raw_try_lock_shared() }
            }
            unsafe fn raw_unlock_shared(&self) {
                // SAFETY: forwarded contract: the caller holds the target shared.
                unsafe { (**self).raw_unlock_shared() }
            }
        }

        // SAFETY: reports and guards exactly the target's locks.
        unsafe impl<$($gen)* T: Lockable + ?Sized> Lockable for $ptr {
            type Guard<'g> = T::Guard<'g> where Self: 'g;

            fn raw_locks<'a>(&'a self, out: &mut Vec<&'a dyn RawLock>) {
                (**self).raw_locks(out)
            }

            unsafe fn guard(&self) -> Self::Guard<'_> {
                // SAFETY: forwarded contract: the caller holds the target's locks.
                unsafe { (**self).guard() }
            }
        }

        // SAFETY: forwards to the target's shared guards.
        unsafe impl<$($gen)* T: Sharable + ?Sized> Sharable for $ptr {
            type ReadGuard<'g> = T::ReadGuard<'g> where Self: 'g;

            unsafe fn read_guard(&self) -> Self::ReadGuard<'_> {
                // SAFETY: forwarded contract: the caller holds the target's locks shared.
                unsafe { (**self).read_guard() }
            }
        }

        // SAFETY: the target is one lock and reports itself; the pointer adds nothing.
        unsafe impl<$($gen)* T: Lock + ?Sized> Lock for $ptr {
            type Rank = T::Rank;
        }
    )*};
}

forward_pointer! {
    &T => ['r,],
    &mut T => ['r,],
    Box<T> => [],
    Arc<T> => [],
}

// SAFETY: `&mut` is unique, so the target's locks are as unique as the target says.
unsafe impl<T: OwnedLockable + ?Sized> OwnedLockable for &mut T {}
// SAFETY: a `Box` owns its target.
unsafe impl<T: OwnedLockable + ?Sized> OwnedLockable for Box<T> {}

impl<T: LockableGetMut + ?Sized> LockableGetMut for &mut T {
    type Inner<'a>
        = T::Inner<'a>
    where
        Self: 'a;

    fn get_mut(&mut self) -> Self::Inner<'_> {
        (**self).get_mut()
    }
}

impl<T: LockableGetMut + ?Sized> LockableGetMut for Box<T> {
    type Inner<'a>
        = T::Inner<'a>
    where
        Self: 'a;

    fn get_mut(&mut self) -> Self::Inner<'_> {
        (**self).get_mut()
    }
}

// ---------------------------------------------------------------------------------------------
// Tuples (up to 14 elements, as `happylock`): a guard per element, in element order.

macro_rules! tuple_impls {
    ($($name:ident $index:tt),+) => {
        // SAFETY: reports every element's locks; the guard is made of the elements' guards.
        unsafe impl<$($name: Lockable),+> Lockable for ($($name,)+) {
            type Guard<'g> = ($($name::Guard<'g>,)+) where Self: 'g;

            fn raw_locks<'a>(&'a self, out: &mut Vec<&'a dyn RawLock>) {
                $(self.$index.raw_locks(out);)+
            }

            unsafe fn guard(&self) -> Self::Guard<'_> {
                // SAFETY: the caller holds every element's locks (they are all reported above).
                unsafe { ($(self.$index.guard(),)+) }
            }
        }

        // SAFETY: every element gives shared access only.
        unsafe impl<$($name: Sharable),+> Sharable for ($($name,)+) {
            type ReadGuard<'g> = ($($name::ReadGuard<'g>,)+) where Self: 'g;

            unsafe fn read_guard(&self) -> Self::ReadGuard<'_> {
                // SAFETY: the caller holds every element's locks shared.
                unsafe { ($(self.$index.read_guard(),)+) }
            }
        }

        // SAFETY: owned elements are distinct values, each unique inside.
        unsafe impl<$($name: OwnedLockable),+> OwnedLockable for ($($name,)+) {}

        impl<$($name: LockableIntoInner),+> LockableIntoInner for ($($name,)+) {
            type Inner = ($($name::Inner,)+);

            fn into_inner(self) -> Self::Inner {
                ($(self.$index.into_inner(),)+)
            }
        }

        impl<$($name: LockableGetMut),+> LockableGetMut for ($($name,)+) {
            type Inner<'a> = ($($name::Inner<'a>,)+) where Self: 'a;

            fn get_mut(&mut self) -> Self::Inner<'_> {
                ($(self.$index.get_mut(),)+)
            }
        }
    };
}

tuple_impls!(A 0);
tuple_impls!(A 0, B 1);
tuple_impls!(A 0, B 1, C 2);
tuple_impls!(A 0, B 1, C 2, D 3);
tuple_impls!(A 0, B 1, C 2, D 3, E 4);
tuple_impls!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_impls!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_impls!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
tuple_impls!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
tuple_impls!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9);
tuple_impls!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10);
tuple_impls!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11);
tuple_impls!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12);
tuple_impls!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12, N 13);

// ---------------------------------------------------------------------------------------------
// Arrays, slices in boxes, and vectors: a guard per element, in index order.

// SAFETY: reports every element's locks; the guard array is made of the elements' guards.
unsafe impl<T: Lockable, const N: usize> Lockable for [T; N] {
    type Guard<'g>
        = [T::Guard<'g>; N]
    where
        Self: 'g;

    fn raw_locks<'a>(&'a self, out: &mut Vec<&'a dyn RawLock>) {
        self.iter().for_each(|lock| lock.raw_locks(out));
    }

    unsafe fn guard(&self) -> Self::Guard<'_> {
        // SAFETY: the caller holds every element's locks.
        std::array::from_fn(|i| unsafe { self[i].guard() })
    }
}

// SAFETY: every element gives shared access only.
unsafe impl<T: Sharable, const N: usize> Sharable for [T; N] {
    type ReadGuard<'g>
        = [T::ReadGuard<'g>; N]
    where
        Self: 'g;

    unsafe fn read_guard(&self) -> Self::ReadGuard<'_> {
        // SAFETY: the caller holds every element's locks shared.
        std::array::from_fn(|i| unsafe { self[i].read_guard() })
    }
}

// SAFETY: array elements are distinct owned values.
unsafe impl<T: OwnedLockable, const N: usize> OwnedLockable for [T; N] {}

impl<T: LockableIntoInner, const N: usize> LockableIntoInner for [T; N] {
    type Inner = [T::Inner; N];

    fn into_inner(self) -> Self::Inner {
        self.map(T::into_inner)
    }
}

impl<T: LockableGetMut, const N: usize> LockableGetMut for [T; N] {
    type Inner<'a>
        = [T::Inner<'a>; N]
    where
        Self: 'a;

    fn get_mut(&mut self) -> Self::Inner<'_> {
        self.each_mut().map(T::get_mut)
    }
}

/// The guards of a slice, `Vec` or `Box<[_]>` of locks, in order: used as a slice (`guards[0]`, `iter_mut`,
/// `for g in &mut guards`). Not a `Box<[G]>`, which `mem::take` could move out whole, leaving an empty box:
/// the locks would then stay held past the collection guard's `unlock`, with the key free again, and lock
/// ordering (what makes collections deadlock-free) would no longer hold. Nothing can stand in for a
/// `Guards`: it cannot be made, taken or replaced outside this module.
pub struct Guards<G>(Box<[G]>);

impl<G> Deref for Guards<G> {
    type Target = [G];
    fn deref(&self) -> &[G] {
        &self.0
    }
}

impl<G> DerefMut for Guards<G> {
    fn deref_mut(&mut self) -> &mut [G] {
        &mut self.0
    }
}

impl<'a, G> IntoIterator for &'a Guards<G> {
    type Item = &'a G;
    type IntoIter = std::slice::Iter<'a, G>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'a, G> IntoIterator for &'a mut Guards<G> {
    type Item = &'a mut G;
    type IntoIter = std::slice::IterMut<'a, G>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter_mut()
    }
}

impl<G: fmt::Debug> fmt::Debug for Guards<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

// SAFETY: reports every element's locks; the guard is made of the elements' guards.
unsafe impl<T: Lockable> Lockable for [T] {
    type Guard<'g>
        = Guards<T::Guard<'g>>
    where
        Self: 'g;

    fn raw_locks<'a>(&'a self, out: &mut Vec<&'a dyn RawLock>) {
        self.iter().for_each(|lock| lock.raw_locks(out));
    }

    unsafe fn guard(&self) -> Self::Guard<'_> {
        // SAFETY: the caller holds every element's locks.
        Guards(self.iter().map(|lock| unsafe { lock.guard() }).collect())
    }
}

// SAFETY: every element gives shared access only.
unsafe impl<T: Sharable> Sharable for [T] {
    type ReadGuard<'g>
        = Guards<T::ReadGuard<'g>>
    where
        Self: 'g;

    unsafe fn read_guard(&self) -> Self::ReadGuard<'_> {
        // SAFETY: the caller holds every element's locks shared.
        Guards(
            self.iter()
                .map(|lock| unsafe { lock.read_guard() })
                .collect(),
        )
    }
}

// SAFETY: slice elements are distinct owned values.
unsafe impl<T: OwnedLockable> OwnedLockable for [T] {}

impl<T: LockableGetMut> LockableGetMut for [T] {
    type Inner<'a>
        = Box<[T::Inner<'a>]>
    where
        Self: 'a;

    fn get_mut(&mut self) -> Self::Inner<'_> {
        self.iter_mut().map(T::get_mut).collect()
    }
}

// `Box<[T]>` is covered by the pointer impls above, except for taking the data out.
impl<T: LockableIntoInner> LockableIntoInner for Box<[T]> {
    type Inner = Box<[T::Inner]>;

    fn into_inner(self) -> Self::Inner {
        self.into_iter().map(T::into_inner).collect()
    }
}

// SAFETY: reports every element's locks, as the slice does.
unsafe impl<T: Lockable> Lockable for Vec<T> {
    type Guard<'g>
        = Guards<T::Guard<'g>>
    where
        Self: 'g;

    fn raw_locks<'a>(&'a self, out: &mut Vec<&'a dyn RawLock>) {
        self.as_slice().raw_locks(out);
    }

    unsafe fn guard(&self) -> Self::Guard<'_> {
        // SAFETY: the caller holds every element's locks.
        unsafe { self.as_slice().guard() }
    }
}

// SAFETY: as for the slice.
unsafe impl<T: Sharable> Sharable for Vec<T> {
    type ReadGuard<'g>
        = Guards<T::ReadGuard<'g>>
    where
        Self: 'g;

    unsafe fn read_guard(&self) -> Self::ReadGuard<'_> {
        // SAFETY: the caller holds every element's locks shared.
        unsafe { self.as_slice().read_guard() }
    }
}

// SAFETY: the elements are distinct owned values.
unsafe impl<T: OwnedLockable> OwnedLockable for Vec<T> {}

impl<T: LockableIntoInner> LockableIntoInner for Vec<T> {
    type Inner = Box<[T::Inner]>;

    fn into_inner(self) -> Self::Inner {
        self.into_iter().map(T::into_inner).collect()
    }
}

impl<T: LockableGetMut> LockableGetMut for Vec<T> {
    type Inner<'a>
        = Box<[T::Inner<'a>]>
    where
        Self: 'a;

    fn get_mut(&mut self) -> Self::Inner<'_> {
        LockableGetMut::get_mut(self.as_mut_slice())
    }
}
