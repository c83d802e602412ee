//! The per-thread [`ThreadKey`] (no lock without it) and the [`NestedKey`] that `lock_all!(..; nest)`
//! hands out to go one rank level deeper.
//!
//! Every blocking acquisition needs the key: by value (the guard keeps it) or as `&mut` (the guard
//! borrows it). Either way the thread cannot start a second acquisition while the first one's guards
//! live, which is what rules out the "hold one lock, wait for another" step of every deadlock. The
//! only way to hold locks and take more is a [`NestedKey`], whose type names the highest rank held
//! and only accepts strictly higher ranks.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::rank::{NoneHeld, Rank};

thread_local! {
    // `const` init and no destructor: readable even while the thread's other TLS is being torn down,
    // so a `ThreadKey` dropped from another TLS destructor still finds its flag.
    static KEY_TAKEN: Cell<bool> = const { Cell::new(false) };
    /// `Debug` peeks in progress on this thread (see [`Peek`]).
    static PEEKING: Cell<usize> = const { Cell::new(0) };
    /// This thread's number for [`STRANDED`] (0: none yet), never reused by another thread (a `ThreadId`
    /// needs `thread::current()`, which this module avoids in TLS destructors).
    static THREAD_TAG: Cell<u64> = const { Cell::new(0) };
}

/// This thread's number, drawn on first use.
fn thread_tag() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    THREAD_TAG.with(|tag| {
        if tag.get() == 0 {
            tag.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        tag.get()
    })
}

/// A [`Peek`] that ended on another thread than the one it started on: the key it held (if any) and its
/// count belong to thread `origin`, which takes them back itself (a `Cell` of another thread cannot be
/// touched) the next time it finds its key out or its peek count non-zero ([`reclaim_stranded`]).
struct Stranded {
    origin: u64,
    key: bool,
}

/// Peeks that ended on another thread, waiting for their thread to take them back.
static STRANDED: StdMutex<Vec<Stranded>> = StdMutex::new(Vec::new());
/// How many entries `STRANDED` holds: the common case (none) costs one load, no lock.
static STRANDED_LEN: AtomicUsize = AtomicUsize::new(0);

/// Takes back this thread's key and peek counts that a [`Peek`] carried to another thread; whether it took
/// any. Cold: only when the key is out or a peek count is non-zero.
#[cold]
#[inline(never)]
fn reclaim_stranded() -> bool {
    if STRANDED_LEN.load(Ordering::Acquire) == 0 {
        return false;
    }
    let me = thread_tag();
    let (mut peeks, mut key) = (0, false);
    {
        let mut stranded = STRANDED.lock().unwrap_or_else(|e| e.into_inner());
        stranded.retain(|s| {
            let mine = s.origin == me;
            if mine {
                peeks += 1;
                key |= s.key;
            }
            !mine
        });
        STRANDED_LEN.store(stranded.len(), Ordering::Release);
    }
    if peeks == 0 {
        return false;
    }
    PEEKING.with(|p| p.set(p.get() - peeks));
    if key {
        KEY_TAKEN.with(|taken| taken.set(false));
    }
    true
}

/// A lock's `Debug` printing its data under a lock it took without the key (a try, which never blocks): while
/// one lives, no blocking acquisition may start on this thread. The key is out, so the data's own `Debug`
/// cannot take it from the thread; but it could reach a key the program keeps where that code can get it
/// (a thread-local), lock another mutex, and wait, holding this one: the one wait the key rules out.
///
/// It also holds this thread's key meanwhile, if it is free. Both are this thread's: if the data's `Debug`
/// yields a coroutine that goes on on another thread (a `may` coroutine's `apply`), the peek ends there, and
/// gives them back to the thread it started on (see [`Stranded`]) rather than to the one it ends on, whose
/// key may be out (it would become two) and whose count may be 0.
pub(crate) struct Peek {
    /// This peek took the thread's key (it was free).
    key: bool,
    /// The thread it started on ([`thread_tag`]).
    origin: u64,
    _not_send: PhantomData<*const ()>,
}

impl Peek {
    pub(crate) fn start() -> Self {
        let mut taken = KEY_TAKEN.with(|taken| taken.replace(true));
        if taken && reclaim_stranded() {
            taken = KEY_TAKEN.with(|taken| taken.replace(true));
        }
        let key = !taken;
        PEEKING.with(|p| p.set(p.get() + 1));
        Peek {
            key,
            origin: thread_tag(),
            _not_send: PhantomData,
        }
    }
}

impl Drop for Peek {
    fn drop(&mut self) {
        if thread_tag() == self.origin {
            PEEKING.with(|p| p.set(p.get() - 1));
            if self.key {
                KEY_TAKEN.with(|taken| taken.set(false));
            }
        } else {
            let mut stranded = STRANDED.lock().unwrap_or_else(|e| e.into_inner());
            stranded.push(Stranded {
                origin: self.origin,
                key: self.key,
            });
            STRANDED_LEN.store(stranded.len(), Ordering::Release);
        }
    }
}

/// Called by every blocking acquisition: panics inside a lock's `Debug` peek (see [`Peek`]).
#[inline]
pub(crate) fn check_not_peeking() {
    if PEEKING.with(Cell::get) != 0 && !(reclaim_stranded() && PEEKING.with(Cell::get) == 0) {
        peeking_panic();
    }
}

#[cold]
#[inline(never)]
fn peeking_panic() -> ! {
    panic!(
        "a blocking lock inside the `Debug` of a `Mutex`'s or `RwLock`'s data (or in a fiber while another fiber \
         of this thread is suspended inside one): `Debug` prints the data under a lock it took without this \
         thread's key, so waiting for another lock here could deadlock; print the data inside `scoped_lock` \
         (which takes the key) instead, or use `try_lock`"
    )
}

/// This thread's permission to lock: at most one exists per thread at a time.
///
/// ```
/// use trust_core::lock::{Mutex, ThreadKey};
///
/// let mut key = ThreadKey::get().expect("one key per thread");
/// assert!(ThreadKey::get().is_none()); // the key is out
///
/// let m = Mutex::new(1);
/// *m.lock(&mut key) += 1; // the guard borrows the key
/// let guard = m.lock(key); // or keeps it
/// let key = Mutex::unlock(guard); // and gives it back
/// drop(key); // dropping the key returns it to the thread
/// assert!(ThreadKey::get().is_some());
/// ```
///
/// It is `!Send`: a key stays on the thread that took it (it guards that thread's lock order). It
/// is `Sync` only so that guards holding `&mut ThreadKey` can be shared; a `&ThreadKey` grants
/// nothing. Forgetting a key (`mem::forget`) loses it for the rest of the thread's life, which can
/// starve that thread but never deadlock it.
///
/// A `ThreadKey` belongs to an OS thread: a coroutine that may resume on another thread (a `may`
/// coroutine with work stealing) must not hold one across a yield.
pub struct ThreadKey {
    _not_send: PhantomData<*const ()>,
}

// SAFETY: every method of `ThreadKey` takes `self` or `&mut self`; a shared `&ThreadKey` can do
// nothing, so sharing one across threads cannot let another thread use this thread's key.
unsafe impl Sync for ThreadKey {}

impl ThreadKey {
    /// Takes this thread's key, or `None` if it is already out (held, or lent to a guard).
    #[must_use]
    pub fn get() -> Option<Self> {
        let mut taken = KEY_TAKEN.with(|taken| taken.replace(true));
        if taken && reclaim_stranded() {
            // A `Debug` peek that ended on another thread held it (see `Peek`): it is back.
            taken = KEY_TAKEN.with(|taken| taken.replace(true));
        }
        // `then`, not `then_some`: an eagerly built key would be dropped when refused, and its `Drop` would
        // clear the flag while the first key is still out.
        (!taken).then(|| ThreadKey {
            _not_send: PhantomData,
        })
    }
}

impl Drop for ThreadKey {
    fn drop(&mut self) {
        // A `ThreadKey` only exists after `get` set the flag on this (its own, `!Send`) thread.
        KEY_TAKEN.with(|taken| taken.set(false));
    }
}

impl fmt::Debug for ThreadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ThreadKey")
    }
}

/// A key whose owner holds locks up to rank `Held` and may take only strictly higher ranks.
///
/// Made by `lock_all!(key, ..; nest)`: it borrows the key that call used, for as long as that call's
/// guards, so the chain of keys is linear (one level at a time) and the outer key stays unusable.
///
/// ```
/// use trust_core::lock::{Mutex, ThreadKey};
/// use trust_core::{lock_all, lock_ranks};
///
/// lock_ranks! { Outer; Inner; }
/// let outer: Mutex<u32, Outer> = Mutex::ranked(1);
/// let inner: Mutex<u32, Inner> = Mutex::ranked(2);
///
/// let mut key = ThreadKey::get().unwrap();
/// let (o, mut nested) = lock_all!(&mut key, outer; nest); // nested: NestedKey<'_, Outer>
/// let (i,) = lock_all!(&mut nested, inner);
/// assert_eq!(*o + *i, 3);
/// ```
pub struct NestedKey<'k, Held: Rank> {
    _key: PhantomData<&'k mut ThreadKey>,
    _held: PhantomData<fn() -> Held>,
}

impl<'k, Held: Rank> NestedKey<'k, Held> {
    /// Consumes the borrow of the key a `lock_all!` call used; only `lock_all!` makes these.
    pub(crate) fn new<K: LockKey + ?Sized>(_key: &'k mut K) -> Self {
        NestedKey {
            _key: PhantomData,
            _held: PhantomData,
        }
    }
}

impl<Held: Rank> fmt::Debug for NestedKey<'_, Held> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NestedKey<{}>", std::any::type_name::<Held>())
    }
}

/// A field of every guard that holds its key (`K`): it keeps the key in use until the guard drops.
///
/// Without it, a guard whose key is `&mut ThreadKey` would release that borrow at the guard's last use,
/// not at its drop (a `&mut` needs no dropping, and the guard itself has no `Drop`): the thread could then
/// lock again with the same key, or drop the key and get a second one, while the first guard still holds
/// its lock, and two such threads deadlock (review 61). An empty `Drop` generic over `K` makes the borrow
/// checker treat `K` as used when the guard drops, and lets `unlock` still move the key out of the guard.
pub(crate) struct KeyInUse<K>(PhantomData<K>);

impl<K> KeyInUse<K> {
    pub(crate) const fn new() -> Self {
        KeyInUse(PhantomData)
    }
}

impl<K> Drop for KeyInUse<K> {
    fn drop(&mut self) {}
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::ThreadKey {}
    impl Sealed for &mut super::ThreadKey {}
    impl<Held: super::Rank> Sealed for super::NestedKey<'_, Held> {}
}

/// A key accepted by single-lock and collection methods: `ThreadKey` by value (the guard keeps it
/// and `unlock` gives it back) or `&mut ThreadKey` (the guard borrows it).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a thread key",
    label = "expected `ThreadKey` or `&mut ThreadKey`",
    note = "get this thread's key with `ThreadKey::get()` and pass it by value or as `&mut key`"
)]
pub trait Keyable: sealed::Sealed {}

impl Keyable for ThreadKey {}
impl Keyable for &mut ThreadKey {}

/// What `lock_all!` accepts behind its first argument (`&mut key`): a [`ThreadKey`] (nothing held)
/// or a [`NestedKey`] (locks up to `Held` held).
#[diagnostic::on_unimplemented(
    message = "`lock_all!` needs `&mut ThreadKey` or `&mut NestedKey` as its first argument, not `&mut {Self}`",
    label = "not a thread key",
    note = "get this thread's key with `ThreadKey::get()` and pass `&mut key`"
)]
pub trait LockKey: sealed::Sealed {
    /// The highest rank held by the key's owner; [`NoneHeld`] for a bare `ThreadKey`.
    type Held;
}

impl LockKey for ThreadKey {
    type Held = NoneHeld;
}

impl<Held: Rank> LockKey for NestedKey<'_, Held> {
    type Held = Held;
}
