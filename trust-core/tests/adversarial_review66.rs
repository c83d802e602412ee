//! Review 66: a hostile look at the lock module driven by user types. It attacks `Poisonable` (poisoning by a
//! value whose `Drop` panics, by a sibling guard whose `Drop` panics, visibility of the flag to a thread blocked
//! in `lock`, every recovery API), the four collections (children nested several containers deep, elements
//! whose `Drop` panics, rejected children that must still be dropped once), `LockContext` under ranks, and
//! `ThreadKey` (given back when a release panics inside `unlock`), with user `Lockable` impls and raw locks,
//! RwLock readers and writers mixed, and 4-8 threads on a 2-core machine. Every `try_*` is checked not to
//! block while another thread holds the locks. Tests that could hang run under a deadline and fail with a
//! message. Everything held at run time; what it found is in the contracts and docs, fixed there:
//! `Lockable`'s safety contract did not say that `raw_locks` must keep reporting the same locks, which every
//! collection relies on (`LockCollection`/`RefLockCollection` list once and cache the list): a user impl that
//! switched locks after construction followed the letter of the contract and got a guard for a lock nobody
//! held (`lockable.rs`, and `RawLock::rank` should be stable too); and the docs said a panic "while a write
//! guard lives" poisons, where a panic caught inside the guard's life does not (as with `std::sync::Mutex`,
//! side by side below): it is a panic that unwinds through the guard (`poison.rs`, `docs/lock.md`).

mod common;

use common::panic_message;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Once, mpsc};
use std::thread;
use std::time::Duration;

use lock_api::{GuardNoSend, RawMutex as _};
use trust_core::lock::{
    LockCollection, LockGuard, Lockable, Mutex, MutexRef, OwnedLockCollection, OwnedLockable,
    Poisonable, RawLock, RefLockCollection, RetryingLockCollection, RwLock, ThreadKey, Unranked,
};
use trust_core::{lock_all, lock_ranks, try_lock_all};

lock_ranks! {
    pub R66Outer;
    pub R66Inner;
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Marks the panics these tests cause on purpose; the hook below keeps them off stderr.
const EXPECTED: &str = "review66: expected panic";

fn quiet_expected_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if !text.contains(EXPECTED) {
                default(info);
            }
        }));
    });
}

/// Runs `f` on a thread of its own and fails with a message if it has not finished after `secs`
/// (a deadlock, a livelock, or a `try_*` that blocked). A panic in `f` is re-raised here.
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(Ok(value)) => {
            handle.join().expect("the worker sent its result");
            value
        }
        Ok(Err(payload)) => resume_unwind(payload),
        Err(_) => {
            panic!("{what}: not finished after {secs} s (a deadlock, a livelock or a blocking try)")
        }
    }
}

/// Counts its drops; panics in `drop` (once, with [`EXPECTED`]) when armed.
#[derive(Debug)]
struct Boom {
    id: u32,
    armed: bool,
    drops: Arc<AtomicUsize>,
}

impl Boom {
    fn new(id: u32, armed: bool, drops: &Arc<AtomicUsize>) -> Self {
        Boom {
            id,
            armed,
            drops: Arc::clone(drops),
        }
    }
}

impl Drop for Boom {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        if self.armed {
            panic!("{EXPECTED}: Boom {} dropped", self.id);
        }
    }
}

/// A user lock: one owned mutex whose guard, when armed, panics in its `Drop` (after which its fields drop,
/// so the mutex is still released).
struct Loud {
    inner: Mutex<i32>,
    armed: AtomicBool,
}

impl Loud {
    fn new(value: i32) -> Self {
        Loud {
            inner: Mutex::new(value),
            armed: AtomicBool::new(false),
        }
    }
}

struct LoudGuard<'a> {
    inner: MutexRef<'a, i32>,
    armed: bool,
}

impl Drop for LoudGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            panic!("{EXPECTED}: loud guard dropped");
        }
    }
}

impl std::ops::Deref for LoudGuard<'_> {
    type Target = i32;
    fn deref(&self) -> &i32 {
        &self.inner
    }
}

impl std::ops::DerefMut for LoudGuard<'_> {
    fn deref_mut(&mut self) -> &mut i32 {
        &mut self.inner
    }
}

// SAFETY: reports its one mutex, always the same one; the guard gives access through that mutex's guard,
// which the caller's hold makes valid and which releases it.
unsafe impl Lockable for Loud {
    type Guard<'g> = LoudGuard<'g>;

    fn raw_locks<'a>(&'a self, out: &mut Vec<&'a dyn RawLock>) {
        self.inner.raw_locks(out);
    }

    unsafe fn guard(&self) -> LoudGuard<'_> {
        LoudGuard {
            // SAFETY: forwarded: the caller holds `inner`, the lock reported above.
            inner: unsafe { self.inner.guard() },
            armed: self.armed.load(Ordering::SeqCst),
        }
    }
}

// SAFETY: it owns its one mutex.
unsafe impl OwnedLockable for Loud {}

thread_local! {
    static ARMED_UNLOCK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// parking_lot's raw mutex, except that an unlock armed on this thread releases the lock and then panics.
struct PanicAfterUnlock(parking_lot::RawMutex);

// SAFETY: every operation is parking_lot's; the armed unlock panics only after releasing.
unsafe impl lock_api::RawMutex for PanicAfterUnlock {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = PanicAfterUnlock(parking_lot::RawMutex::INIT);
    type GuardMarker = GuardNoSend;

    fn lock(&self) {
        self.0.lock();
    }

    fn try_lock(&self) -> bool {
        self.0.try_lock()
    }

    unsafe fn unlock(&self) {
        // SAFETY: forwarded: the caller holds the lock.
        unsafe { self.0.unlock() };
        if ARMED_UNLOCK.with(|armed| armed.replace(false)) {
            panic!("{EXPECTED}: raw unlock");
        }
    }
}

type AfterUnlock = Mutex<i32, Unranked, PanicAfterUnlock>;

fn after_unlock(value: i32) -> AfterUnlock {
    Mutex::from_raw(PanicAfterUnlock::INIT, value)
}

fn arm_unlock() {
    ARMED_UNLOCK.with(|armed| armed.set(true));
}

// ---------------------------------------------------------------------------------------------
// Poisoning by user types

#[test]
fn an_overwrite_whose_old_value_panics_in_drop_poisons_releases_and_drops_each_value_once() {
    quiet_expected_panics();
    let mut key = ThreadKey::get().unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let cell = Poisonable::new(Mutex::new(Boom::new(1, true, &drops)));

    let payload = catch_unwind(AssertUnwindSafe(|| {
        let mut guard = cell.lock(&mut key).expect("not poisoned yet");
        **guard = Boom::new(2, false, &drops); // drops Boom 1, which panics
    }))
    .unwrap_err();
    assert_eq!(
        panic_message(payload),
        format!("{EXPECTED}: Boom 1 dropped")
    );
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert!(
        cell.is_poisoned(),
        "a panic under the write guard must poison"
    );
    assert!(!cell.child().is_locked(), "the unwinding released the lock");

    // The new value was written even though dropping the old one panicked.
    let guard = cell.lock(&mut key).unwrap_err().into_inner();
    assert_eq!(guard.id, 2);
    drop(guard);
    let value = cell.into_inner().unwrap_err().into_inner();
    assert_eq!((value.id, drops.load(Ordering::SeqCst)), (2, 1));
    drop(value);
    assert_eq!(drops.load(Ordering::SeqCst), 2);
}

/// Runs `lock` with this thread's key by value; it drops a guard with a loud part, which panics. Checks
/// the panic and that the key came back to the thread.
fn drop_a_loud_guard(what: &str, lock: impl FnOnce(ThreadKey)) {
    let key = ThreadKey::get().unwrap_or_else(|| panic!("{what}: the key is out before"));
    let payload = catch_unwind(AssertUnwindSafe(|| lock(key))).unwrap_err();
    assert_eq!(
        panic_message(payload),
        format!("{EXPECTED}: loud guard dropped"),
        "{what}"
    );
    assert!(
        ThreadKey::get().is_some(),
        "{what}: the by-value key did not come back"
    );
}

#[test]
fn a_sibling_guard_whose_drop_panics_releases_every_lock_and_poisons_exactly_the_poisonables_dropped_after_it()
 {
    quiet_expected_panics();
    let (a, b, c) = (Loud::new(1), Mutex::new(2), Mutex::new(3));
    a.armed.store(true, Ordering::SeqCst);
    let p = Poisonable::new(&c);
    let released = || !a.inner.is_locked() && !b.is_locked() && !c.is_locked();

    // The collection guard is the child's tuple: its fields drop in child order, whatever order the
    // locks were taken in. A `PoisonGuard` dropped after the loud guard began panicking is dropped by that
    // panic, and poisons; one dropped before it does not.
    let loud_first = (&a, &b, &p);
    let loud_last = (&p, &b, &a);

    let sorted = LockCollection::try_new(loud_first).unwrap();
    drop_a_loud_guard("LockCollection, loud first", |key| drop(sorted.lock(key)));
    assert!(released() && p.is_poisoned());
    p.clear_poison();

    let by_ref = RefLockCollection::try_new(&loud_first).unwrap();
    drop_a_loud_guard("RefLockCollection, loud first", |key| {
        drop(by_ref.lock(key))
    });
    assert!(released() && p.is_poisoned());
    p.clear_poison();

    let retrying = RetryingLockCollection::try_new(loud_first).unwrap();
    drop_a_loud_guard("RetryingLockCollection, loud first", |key| {
        drop(retrying.lock(key))
    });
    assert!(released() && p.is_poisoned());
    p.clear_poison();

    let sorted = LockCollection::try_new(loud_last).unwrap();
    drop_a_loud_guard("LockCollection, loud last", |key| drop(sorted.lock(key)));
    assert!(released() && !p.is_poisoned());

    let retrying = RetryingLockCollection::try_new(loud_last).unwrap();
    drop_a_loud_guard("RetryingLockCollection, loud last (scoped)", |key| {
        retrying.scoped_lock(key, |(p, b, a)| {
            ***p.as_mut().unwrap() += 10;
            **b += 10;
            **a += 10;
        })
    });
    assert!(released() && !p.is_poisoned());
    let mut key = ThreadKey::get().unwrap();
    let sums = lock_all!(&mut key, a.inner, b, c);
    assert_eq!((*sums.0, *sums.1, *sums.2), (11, 12, 13));
    drop(sums);
    drop(key);

    // An owned collection: the same, checked through the collection itself.
    let owned =
        OwnedLockCollection::new((Loud::new(1), Mutex::new(2), Poisonable::new(Mutex::new(3))));
    drop_a_loud_guard("OwnedLockCollection, loud first", |key| {
        let mut guard = owned.lock(key);
        guard.0.armed = true;
        ***guard.2.as_mut().unwrap() = 30;
    });
    let mut key = ThreadKey::get().unwrap();
    let guard = owned.try_lock(&mut key).expect("every part released");
    assert_eq!((*guard.0, *guard.1), (1, 2));
    assert_eq!(
        ***guard.2.as_ref().unwrap_err().get_ref(),
        30,
        "poisoned, with the value written"
    );
    drop(guard);

    // A loud lock inside a `Poisonable`: the poison guard's own drop runs first (no panic yet), then the
    // inner guard's release panics. That is a panic in the release, not under the guard: no poison.
    let wrapped = Poisonable::new(Loud::new(5));
    drop(key);
    drop_a_loud_guard("Poisonable<Loud>", |key| {
        let mut guard = wrapped.lock(key).unwrap();
        guard.armed = true;
    });
    assert!(!wrapped.is_poisoned());
    assert_eq!(wrapped.into_child().unwrap().inner.into_inner(), 5);
}

#[test]
fn unlock_functions_give_a_by_value_key_back_to_the_thread_even_when_the_release_panics() {
    quiet_expected_panics();
    let expect_panic_then_key = |what: &str, f: &dyn Fn(ThreadKey)| {
        let key = ThreadKey::get().unwrap_or_else(|| panic!("{what}: key out before"));
        arm_unlock();
        let payload = catch_unwind(AssertUnwindSafe(|| f(key))).unwrap_err();
        assert_eq!(
            panic_message(payload),
            format!("{EXPECTED}: raw unlock"),
            "{what}"
        );
        assert!(
            ThreadKey::get().is_some(),
            "{what}: the key did not come back"
        );
    };

    // Each raw lock released, then panicked: it is marked broken, and the key is back.
    let m = after_unlock(1);
    expect_panic_then_key("Mutex::unlock", &|key| {
        let _key: ThreadKey = Mutex::unlock(m.lock(key));
    });
    assert!(m.is_broken() && !m.is_locked());

    let (x, y) = (after_unlock(2), after_unlock(3));
    let both = LockCollection::try_new((&x, &y)).unwrap();
    expect_panic_then_key("LockGuard::unlock", &|key| {
        let _key: ThreadKey = LockGuard::unlock(both.lock(key));
    });
    // One release panicked; the other guard still released its lock.
    assert_eq!((x.is_locked(), y.is_locked()), (false, false));
    assert_eq!(usize::from(x.is_broken()) + usize::from(y.is_broken()), 1);

    let p = Poisonable::new((after_unlock(4), Mutex::new(5)));
    expect_panic_then_key("PoisonGuard::unlock", &|key| {
        let guard = p.lock(key).unwrap();
        let _key: ThreadKey = trust_core::lock::PoisonGuard::unlock(guard);
    });
    assert!(!p.child().0.is_locked() && !p.child().1.is_locked());
    assert!(p.child().0.is_broken());
    assert!(
        !p.is_poisoned(),
        "a panic in the release is not a panic under the guard"
    );

    let owned = OwnedLockCollection::new([after_unlock(6), after_unlock(7)]);
    expect_panic_then_key("OwnedLockCollection::unlock", &|key| {
        let _key: ThreadKey = OwnedLockCollection::<[AfterUnlock; 2]>::unlock(owned.lock(key));
    });
    let mut key = ThreadKey::get().unwrap();
    // One part is broken now: a try on the collection panics (with nothing left held), it does not block.
    let message = panic_message(
        catch_unwind(AssertUnwindSafe(|| drop(owned.try_lock(&mut key)))).unwrap_err(),
    );
    assert!(message.starts_with("this lock is broken"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// `try_*` never blocks

#[test]
fn every_try_form_returns_at_once_while_another_thread_holds_the_locks() {
    within(60, "try forms against a holder", || {
        let m = Mutex::new(1);
        let free = Mutex::new(2);
        let written = RwLock::new(3);
        let read = RwLock::new(4);
        let p = Poisonable::new(Mutex::new(5));
        let owned = OwnedLockCollection::new((Mutex::new(6), RwLock::new(7)));
        let (held_tx, held_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (m_, written_, read_, p_, owned_) = (&m, &written, &read, &p, &owned);
        thread::scope(|s| {
            s.spawn(move || {
                let (m, written, read, p, owned) = (m_, written_, read_, p_, owned_);
                let mut key = ThreadKey::get().unwrap();
                let guards = lock_all!(&mut key, *m, *written, read * read);
                // `p` and `owned` are separate acquisitions: take them on helper threads.
                thread::scope(|inner| {
                    let (tx1, rx1) = mpsc::channel();
                    let (tx2, rx2) = mpsc::channel();
                    let (done_tx, done_rx) = mpsc::channel::<()>();
                    inner.spawn(move || {
                        let mut key = ThreadKey::get().unwrap();
                        let _g = p.lock(&mut key).unwrap();
                        tx1.send(()).unwrap();
                        let _ = done_rx.recv();
                    });
                    rx1.recv().unwrap();
                    let (done_tx2, done_rx2) = mpsc::channel::<()>();
                    inner.spawn(move || {
                        let mut key = ThreadKey::get().unwrap();
                        let _g = owned.lock(&mut key);
                        tx2.send(()).unwrap();
                        let _ = done_rx2.recv();
                    });
                    rx2.recv().unwrap();
                    held_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    drop(done_tx);
                    drop(done_tx2);
                });
                drop(guards);
            });
            held_rx.recv().unwrap();

            let mut key = ThreadKey::get().unwrap();
            assert!(m.try_lock(&mut key).is_err());
            assert!(m.scoped_try_lock(&mut key, |_| unreachable!()).is_err());
            assert!(written.try_read(&mut key).is_err());
            assert!(written.try_write(&mut key).is_err());
            assert!(
                written
                    .scoped_try_read(&mut key, |_| unreachable!())
                    .is_err()
            );
            assert!(read.try_write(&mut key).is_err());
            assert_eq!(
                read.scoped_try_read(&mut key, |v| *v).ok(),
                Some(4),
                "readers share"
            );
            assert_eq!(
                try_lock_all!(&mut key, free, m).err(),
                Some(trust_core::lock::LockAllError::WouldBlock)
            );
            assert_eq!(
                try_lock_all!(&mut key, read read, free)
                    .map(|(r, f)| *r + *f)
                    .ok(),
                Some(6)
            );
            assert!(p.try_lock(&mut key).is_err());

            let pair = (&free, &m);
            assert!(
                LockCollection::try_new(pair)
                    .unwrap()
                    .try_lock(&mut key)
                    .is_err()
            );
            assert!(
                RefLockCollection::try_new(&pair)
                    .unwrap()
                    .try_lock(&mut key)
                    .is_err()
            );
            assert!(
                RetryingLockCollection::try_new(pair)
                    .unwrap()
                    .try_lock(&mut key)
                    .is_err()
            );
            let readers = (&read, &written);
            assert!(
                LockCollection::try_new(readers)
                    .unwrap()
                    .try_read(&mut key)
                    .is_err()
            );
            assert!(
                RetryingLockCollection::try_new(readers)
                    .unwrap()
                    .try_read(&mut key)
                    .is_err()
            );
            assert!(
                RefLockCollection::try_new(&readers)
                    .unwrap()
                    .scoped_try_read(&mut key, |_| unreachable!())
                    .is_err()
            );
            assert!(owned.try_lock(&mut key).is_err());
            assert!(owned.scoped_try_lock(&mut key, |_| unreachable!()).is_err());
            assert!(owned.context(&mut key).try_lock_0().is_err());
            assert!(owned.context(&mut key).try_read_1().is_err());
            // Nothing that failed kept a lock: `free` is free.
            assert!(!free.is_locked());
            release_tx.send(()).unwrap();
        });
    });
}

// ---------------------------------------------------------------------------------------------
// Poisoning: visibility and recovery

#[test]
fn a_thread_blocked_in_lock_sees_the_poison_of_the_panic_that_released_it_every_round() {
    quiet_expected_panics();
    within(120, "poison hand-over", || {
        let cell = Poisonable::new((RwLock::new(0u32), RwLock::new(0u32)));
        for round in 1..=100u32 {
            let (locked_tx, locked_rx) = mpsc::channel();
            thread::scope(|s| {
                s.spawn(|| {
                    let mut key = ThreadKey::get().unwrap();
                    let _ = catch_unwind(AssertUnwindSafe(|| {
                        let mut guard = cell.lock(&mut key).expect("cleared last round");
                        *guard.0 = round;
                        *guard.1 = round * 2;
                        locked_tx.send(()).unwrap();
                        thread::sleep(Duration::from_micros(200));
                        panic!("{EXPECTED}: half-done update");
                    }));
                });
                locked_rx.recv().unwrap();
                let mut key = ThreadKey::get().unwrap();
                // Blocks until the panicking thread's guard is released, by that panic.
                let guard = match cell.lock(&mut key) {
                    Ok(_) => {
                        panic!("round {round}: the lock after the panic was not reported poisoned")
                    }
                    Err(poisoned) => poisoned.into_inner(),
                };
                assert_eq!((*guard.0, *guard.1), (round, round * 2));
                drop(guard);
                // A read reports the poison too; a panic under it does not add any.
                assert!(cell.read(&mut key).is_err());
                cell.clear_poison();
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    let _reader = cell.read(&mut key).unwrap();
                    panic!("{EXPECTED}: under a read guard");
                }));
                assert!(!cell.is_poisoned(), "round {round}: a read guard poisoned");
            });
        }
    });
}

#[test]
fn every_recovery_api_reports_poison_exactly_and_keeps_the_data_as_left() {
    quiet_expected_panics();
    let mut key = ThreadKey::get().unwrap();
    let poison = |cell: &Poisonable<(Mutex<Vec<u8>>, RwLock<u8>)>, key: &mut ThreadKey| {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let mut guard = cell.lock(&mut *key).unwrap_or_else(|e| e.into_inner());
            guard.0.push(9);
            panic!("{EXPECTED}: poison");
        }));
        assert!(cell.is_poisoned());
    };

    let mut cell = Poisonable::new((Mutex::new(vec![1u8]), RwLock::new(1u8)));
    poison(&cell, &mut key);
    // get_mut: Err, with the data, through `&mut`; the flag stays until cleared.
    let (list, byte) = cell.get_mut().unwrap_err().into_inner();
    list.push(2);
    *byte = 2;
    assert!(cell.is_poisoned());
    // child_mut: Err, with the locks; `try_lock` while poisoned and free: Ok(Err(guard)).
    assert!(cell.child_mut().is_err());
    {
        let guard = cell
            .try_lock(&mut key)
            .expect("free")
            .unwrap_err()
            .into_inner();
        assert_eq!((&*guard.0, *guard.1), (&vec![1, 9, 2], 2));
    }
    cell.clear_poison();
    assert_eq!(
        cell.get_mut().ok().map(|(list, byte)| (list.len(), *byte)),
        Some((3, 2))
    );
    assert!(cell.child_mut().is_ok());
    // child() bypasses the flag both ways: a panic under a child guard poisons nothing.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let _g = cell.child().0.lock(&mut key);
        panic!("{EXPECTED}: under a child guard");
    }));
    assert!(!cell.is_poisoned());

    poison(&cell, &mut key);
    let ((list, byte),) = (cell.into_inner().unwrap_err().into_inner(),);
    assert_eq!((list, byte), (vec![1, 9, 2, 9], 2));

    let cell = Poisonable::new(Mutex::new(0u8));
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let _g = cell.lock(&mut key);
        panic!("{EXPECTED}: poison");
    }));
    let child = cell.into_child().unwrap_err().into_inner();
    assert_eq!(child.into_inner(), 0);

    // A by-value key comes back out of the `PoisonError` and its guard.
    drop(key);
    let cell = Poisonable::new(Mutex::new(1u8));
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let _g = cell.lock(ThreadKey::get().unwrap());
        panic!("{EXPECTED}: poison");
    }));
    let key = ThreadKey::get().expect("the key came back from the unwound guard");
    let guard = cell.lock(key).unwrap_err().into_inner();
    let key = trust_core::lock::PoisonGuard::unlock(guard);
    assert!(cell.is_poisoned(), "unlocking does not clear");
    drop(key);
    assert!(ThreadKey::get().is_some());
}

// ---------------------------------------------------------------------------------------------
// Children nested several containers deep

#[test]
fn children_nested_several_containers_deep_lock_poison_and_refuse_duplicates_exactly() {
    quiet_expected_panics();
    let mut key = ThreadKey::get().unwrap();
    type Deep = (
        Vec<Mutex<i32>>,
        [Poisonable<Mutex<i32>>; 2],
        Box<[RwLock<i32>]>,
        Vec<Vec<Mutex<i32>>>,
    );
    let mut all: LockCollection<Deep> = LockCollection::new((
        vec![Mutex::new(1), Mutex::new(2)],
        [
            Poisonable::new(Mutex::new(10)),
            Poisonable::new(Mutex::new(20)),
        ],
        vec![RwLock::new(100)].into_boxed_slice(),
        vec![
            vec![Mutex::new(1000)],
            vec![Mutex::new(2000), Mutex::new(3000)],
        ],
    ));
    let sum = |key: &mut ThreadKey, all: &LockCollection<Deep>| -> (i32, [bool; 2]) {
        let g = all.lock(key);
        let (v, p, b, vv) = &*g;
        let poisoned = [p[0].is_err(), p[1].is_err()];
        let p_sum: i32 = p
            .iter()
            .map(|r| match r {
                Ok(g) => ***g,
                Err(e) => ***e.get_ref(),
            })
            .sum();
        let s = v.iter().map(|g| **g).sum::<i32>()
            + p_sum
            + b.iter().map(|g| **g).sum::<i32>()
            + vv.iter()
                .flat_map(|inner| inner.iter().map(|g| **g))
                .sum::<i32>();
        (s, poisoned)
    };
    assert_eq!(sum(&mut key, &all), (6133, [false, false]));

    let _ = catch_unwind(AssertUnwindSafe(|| {
        all.scoped_lock(&mut key, |(v, _, b, vv)| {
            *v[0] += 1;
            *b[0] += 1;
            *vv[1][1] += 1;
            panic!("{EXPECTED}: nested");
        })
    }));
    // Every lock released, both poisonables poisoned, the writes kept.
    assert!(all.child().0.iter().all(|m| !m.is_locked()));
    assert!(all.child().3.iter().flatten().all(|m| !m.is_locked()));
    assert_eq!(sum(&mut key, &all), (6136, [true, true]));
    all.with_child_mut(|(_, p, _, _)| p[0].clear_poison());
    assert_eq!(sum(&mut key, &all), (6136, [false, true]));

    // Reference collections over parts of it, from different depths: a lock reached twice is refused
    // everywhere, distinct parts are taken together with it.
    let child = all.child();
    let twice = (&child.3[1][0], &child.0, &child.3);
    assert!(LockCollection::try_new(twice).is_none());
    assert!(RefLockCollection::try_new(&twice).is_none());
    assert!(RetryingLockCollection::try_new(twice).is_none());
    let poisonable_and_its_lock = (&child.1[1], child.1[1].child());
    assert!(LockCollection::try_new(poisonable_and_its_lock).is_none());
    let distinct = (&child.3[1], &child.0, &child.2, &child.1[1]);
    let parts = RetryingLockCollection::try_new(distinct).unwrap();
    {
        let (vv, v, b, p) = &mut *parts.lock(&mut key);
        assert_eq!(
            (*vv[0], *vv[1], *v[0], *v[1], *b[0]),
            (2000, 3001, 2, 2, 101)
        );
        assert!(p.is_err(), "still poisoned, seen through a reference");
    }
    let read_parts = LockCollection::try_new((&child.2, &child.2[..])).map(|_| ());
    assert_eq!(
        read_parts, None,
        "a boxed slice and the same slice are one set of locks"
    );

    // The same shape owned and consumed: every value comes back, in place.
    let owned = OwnedLockCollection::new((
        vec![Mutex::new(1), Mutex::new(2)],
        vec![RwLock::new(3)].into_boxed_slice(),
        [vec![Mutex::new(4)], vec![]],
    ));
    owned.scoped_lock(&mut key, |(v, b, arr)| {
        *v[1] *= 10;
        *b[0] *= 10;
        *arr[0][0] *= 10;
        assert!(arr[1].is_empty());
    });
    let (v, b, arr) = owned.into_inner();
    assert_eq!(
        (&*v, &*b, &*arr[0], arr[1].len()),
        (&[1, 20][..], &[30][..], &[40][..], 0)
    );
}

#[test]
fn dropping_collections_whose_elements_panic_in_drop_drops_every_element_exactly_once() {
    quiet_expected_panics();
    let drops = Arc::new(AtomicUsize::new(0));
    let child = |drops: &Arc<AtomicUsize>| {
        (
            Mutex::new(Boom::new(1, true, drops)),
            Mutex::new(Boom::new(2, false, drops)),
            RwLock::new(Boom::new(3, false, drops)),
        )
    };
    let expect_boom = |what: &str, f: &dyn Fn()| {
        let before = drops.load(Ordering::SeqCst);
        let payload = catch_unwind(AssertUnwindSafe(f)).unwrap_err();
        assert_eq!(
            panic_message(payload),
            format!("{EXPECTED}: Boom 1 dropped"),
            "{what}"
        );
        assert_eq!(
            drops.load(Ordering::SeqCst) - before,
            3,
            "{what}: each element dropped once"
        );
    };
    expect_boom("LockCollection", &|| {
        drop(LockCollection::new(child(&drops)))
    });
    expect_boom("OwnedLockCollection", &|| {
        drop(OwnedLockCollection::new(child(&drops)))
    });
    expect_boom("RetryingLockCollection", &|| {
        drop(RetryingLockCollection::new(child(&drops)))
    });
    expect_boom("Poisonable", &|| drop(Poisonable::new(child(&drops))));
    expect_boom("LockCollection::into_child", &|| {
        drop(LockCollection::new(child(&drops)).into_child())
    });
    expect_boom("LockCollection::into_inner", &|| {
        drop(LockCollection::new(child(&drops)).into_inner())
    });

    // A child refused for a duplicate is dropped, once, by the refusing constructor.
    let shared = Mutex::new(Boom::new(9, false, &drops));
    let before = drops.load(Ordering::SeqCst);
    let refused =
        LockCollection::try_new((Mutex::new(Boom::new(4, false, &drops)), &shared, &shared));
    assert!(refused.is_none());
    let refused = RetryingLockCollection::try_new((
        Mutex::new(Boom::new(5, false, &drops)),
        &shared,
        &shared,
    ));
    assert!(refused.is_none());
    assert_eq!(drops.load(Ordering::SeqCst) - before, 2);

    // `with_child_mut` whose closure drops a panicking lock: the panic goes through, the order is listed
    // again, and the collection locks what is left.
    let mut key = ThreadKey::get().unwrap();
    let mut list = LockCollection::new(vec![
        Mutex::new(Boom::new(6, false, &drops)),
        Mutex::new(Boom::new(7, true, &drops)),
    ]);
    let before = drops.load(Ordering::SeqCst);
    let payload =
        catch_unwind(AssertUnwindSafe(|| list.with_child_mut(|v| drop(v.pop())))).unwrap_err();
    assert_eq!(
        panic_message(payload),
        format!("{EXPECTED}: Boom 7 dropped")
    );
    assert_eq!(drops.load(Ordering::SeqCst) - before, 1);
    assert_eq!(
        list.scoped_lock(&mut key, |g| g.iter().map(|b| b.id).collect::<Vec<_>>()),
        [6]
    );
    drop(list);
    assert_eq!(drops.load(Ordering::SeqCst) - before, 2);
}

// ---------------------------------------------------------------------------------------------
// Contention: 4-8 threads on 2 cores, every acquisition style over the same locks

#[test]
fn retrying_collections_in_every_child_order_with_sorted_takers_on_six_threads_count_exactly() {
    const ROUNDS: u64 = 400;
    let counts = within(240, "retrying collections in opposite orders", || {
        let locks = [Mutex::new(0u64), Mutex::new(0u64), Mutex::new(0u64)];
        let orders = [
            [0, 1, 2],
            [2, 1, 0],
            [1, 2, 0],
            [2, 0, 1],
            [0, 2, 1],
            [1, 0, 2],
        ];
        let barrier = Barrier::new(orders.len());
        thread::scope(|s| {
            for (t, order) in orders.iter().enumerate() {
                let (locks, barrier) = (&locks, &barrier);
                s.spawn(move || {
                    let mut key = ThreadKey::get().unwrap();
                    let child = (&locks[order[0]], &locks[order[1]], &locks[order[2]]);
                    let retrying = RetryingLockCollection::try_new(child).unwrap();
                    let sorted = LockCollection::try_new(child).unwrap();
                    barrier.wait();
                    for round in 0..ROUNDS {
                        match (t + round as usize) % 4 {
                            0 | 1 => retrying.scoped_lock(&mut key, |(a, b, c)| {
                                **a += 1;
                                **b += 1;
                                **c += 1;
                            }),
                            2 => sorted.scoped_lock(&mut key, |(a, b, c)| {
                                **a += 1;
                                **b += 1;
                                **c += 1;
                            }),
                            _ => {
                                let (mut a, mut b, mut c) =
                                    lock_all!(&mut key, *child.0, *child.1, *child.2);
                                *a += 1;
                                *b += 1;
                                *c += 1;
                            }
                        }
                    }
                });
            }
        });
        locks.map(Mutex::into_inner)
    });
    assert_eq!(counts, [6 * ROUNDS; 3]);
}

#[test]
fn rwlock_readers_and_writers_mixed_in_every_collection_kind_on_eight_threads_keep_the_invariant() {
    const ROUNDS: u64 = 300;
    let (values, stamps) = within(240, "readers and writers mixed", || {
        let (a, b, c) = (
            RwLock::new(100i64),
            RwLock::new(100i64),
            RwLock::new(100i64),
        );
        let stamp = RwLock::new(0u64);
        let torn = AtomicUsize::new(0);
        let (moved_ab, moved_bc, stamped) = (
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        );
        let barrier = Barrier::new(8);
        thread::scope(|s| {
            for t in 0..8usize {
                let (a, b, c, stamp, torn, barrier) = (&a, &b, &c, &stamp, &torn, &barrier);
                let (moved_ab, moved_bc, stamped) = (&moved_ab, &moved_bc, &stamped);
                s.spawn(move || {
                    let mut key = ThreadKey::get().unwrap();
                    let all = (a, b, c);
                    let sorted = LockCollection::try_new(all).unwrap();
                    let by_ref = RefLockCollection::try_new(&all).unwrap();
                    let retrying = RetryingLockCollection::try_new((c, a, b)).unwrap();
                    let check = |x: i64, y: i64, z: i64| {
                        if x + y + z != 300 {
                            torn.fetch_add(1, Ordering::SeqCst);
                        }
                    };
                    barrier.wait();
                    for round in 0..ROUNDS {
                        match (t * 7 + round as usize) % 8 {
                            // Writers: move a unit, every style.
                            0 => {
                                let (mut x, mut y, _z) = lock_all!(&mut key, a, b, read c);
                                *x -= 1;
                                *y += 1;
                                moved_ab.fetch_add(1, Ordering::SeqCst);
                            }
                            1 => {
                                let mut g = sorted.lock(&mut key);
                                *g.1 -= 1;
                                *g.2 += 1;
                                moved_bc.fetch_add(1, Ordering::SeqCst);
                            }
                            2 => retrying.scoped_lock(&mut key, |(z, x, y)| {
                                **x -= 1;
                                **y += 1;
                                check(**x, **y, **z);
                                moved_ab.fetch_add(1, Ordering::SeqCst);
                            }),
                            // Readers: check the sum, every style.
                            3 => by_ref.scoped_read(&mut key, |(x, y, z)| check(**x, **y, **z)),
                            4 => {
                                let g = retrying.read(&mut key);
                                check(*g.1, *g.2, *g.0);
                            }
                            5 => {
                                let (x, y, z) = lock_all!(&mut key, read a, read b, read c);
                                check(*x, *y, *z);
                            }
                            // Mixed: read the three, write the stamp, in one call.
                            6 => {
                                let (x, mut st, y, z) =
                                    lock_all!(&mut key, read a, stamp, read b, read c);
                                check(*x, *y, *z);
                                *st += 1;
                                stamped.fetch_add(1, Ordering::SeqCst);
                            }
                            _ => {
                                let g = sorted.read(&mut key);
                                check(*g.0, *g.1, *g.2);
                                // A try under contention either gets all three shared or nothing.
                                drop(g);
                                if let Ok(g) = by_ref.try_read(&mut key) {
                                    check(*g.0, *g.1, *g.2);
                                }
                            }
                        }
                    }
                });
            }
        });
        assert_eq!(
            torn.load(Ordering::SeqCst),
            0,
            "a reader saw a half-done move"
        );
        let (ab, bc) = (
            moved_ab.load(Ordering::SeqCst) as i64,
            moved_bc.load(Ordering::SeqCst) as i64,
        );
        assert_eq!(
            [a.into_inner(), b.into_inner(), c.into_inner()],
            [100 - ab, 100 + ab - bc, 100 + bc]
        );
        (
            (ab + bc) as u64,
            (stamp.into_inner(), stamped.load(Ordering::SeqCst) as u64),
        )
    });
    // Each of the 8 threads ran its 300 rounds over the 8 styles: 3/8 of the rounds were moves.
    assert_eq!(values, 8 * ROUNDS * 3 / 8);
    assert_eq!(stamps, (8 * ROUNDS / 8, 8 * ROUNDS / 8));
}

#[test]
fn six_philosophers_each_with_another_acquisition_style_all_eat_and_never_deadlock() {
    const MEALS: u64 = 300;
    let forks = within(240, "dining philosophers", || {
        let forks: [Mutex<u64>; 6] = std::array::from_fn(|_| Mutex::new(0));
        let barrier = Barrier::new(6);
        thread::scope(|s| {
            for seat in 0..6usize {
                let (forks, barrier) = (&forks, &barrier);
                s.spawn(move || {
                    let mut key = ThreadKey::get().unwrap();
                    let (left, right) = (&forks[seat], &forks[(seat + 1) % 6]);
                    let pair = (left, right);
                    let sorted = LockCollection::try_new(pair).unwrap();
                    let by_ref = RefLockCollection::try_new(&pair).unwrap();
                    let retrying = RetryingLockCollection::try_new((right, left)).unwrap();
                    let poisonable =
                        LockCollection::try_new((Poisonable::new(left), Poisonable::new(right)))
                            .unwrap();
                    barrier.wait();
                    for _ in 0..MEALS {
                        match seat {
                            0 => {
                                let (mut l, mut r) = lock_all!(&mut key, *left, *right);
                                *l += 1;
                                *r += 1;
                            }
                            1 => sorted.scoped_lock(&mut key, |(l, r)| {
                                **l += 1;
                                **r += 1;
                            }),
                            2 => by_ref.scoped_lock(&mut key, |(l, r)| {
                                **l += 1;
                                **r += 1;
                            }),
                            3 => retrying.scoped_lock(&mut key, |(r, l)| {
                                **l += 1;
                                **r += 1;
                            }),
                            4 => {
                                let mut g = poisonable.lock(&mut key);
                                let (l, r) = &mut *g;
                                ***l.as_mut().expect("nobody panicked") += 1;
                                ***r.as_mut().expect("nobody panicked") += 1;
                            }
                            _ => loop {
                                // Try, and wait only for one fork at a time when that fails.
                                match try_lock_all!(&mut key, *left, *right).map(
                                    |(mut l, mut r)| {
                                        *l += 1;
                                        *r += 1;
                                    },
                                ) {
                                    Ok(()) => break,
                                    Err(_) => drop(right.lock(&mut key)),
                                }
                            },
                        }
                    }
                });
            }
        });
        forks.map(Mutex::into_inner)
    });
    assert_eq!(
        forks,
        [2 * MEALS; 6],
        "every fork was used by its two philosophers' meals"
    );
}

#[test]
fn ranked_nesting_into_owned_contexts_against_whole_collection_locks_on_five_threads() {
    const ROUNDS: u64 = 300;
    let totals = within(240, "nested contexts under contention", || {
        let outer: Mutex<u64, R66Outer> = Mutex::ranked(0);
        let tuple: OwnedLockCollection<(Mutex<u64, R66Inner>, RwLock<u64, R66Inner>)> =
            OwnedLockCollection::new((Mutex::ranked(0), RwLock::ranked(0)));
        let list: OwnedLockCollection<Vec<Mutex<u64, R66Inner>>> =
            OwnedLockCollection::new((0..4).map(|_| Mutex::ranked(0)).collect());
        let barrier = Barrier::new(5);
        thread::scope(|s| {
            for t in 0..5usize {
                let (outer, tuple, list, barrier) = (&outer, &tuple, &list, &barrier);
                s.spawn(move || {
                    let mut key = ThreadKey::get().unwrap();
                    barrier.wait();
                    for _ in 0..ROUNDS {
                        match t {
                            0 => {
                                let (mut o, mut nested) = lock_all!(&mut key, *outer; nest);
                                let ctx = tuple.context(&mut nested);
                                let (mut first, ctx) = ctx.lock_0();
                                let (mut second, _) = ctx.lock_1();
                                *first += 1;
                                *second += 1;
                                *o += 1;
                            }
                            1 => tuple.scoped_lock(&mut key, |(first, second)| {
                                **first += 1;
                                **second += 1;
                            }),
                            2 => {
                                let (mut o, mut nested) = lock_all!(&mut key, *outer; nest);
                                let mut ctx = list.context(&mut nested);
                                let mut guards = Vec::new();
                                while let Some(g) = ctx.lock_next() {
                                    guards.push(g);
                                }
                                guards.iter_mut().for_each(|g| **g += 1);
                                *o += 1;
                            }
                            3 => {
                                list.scoped_lock(&mut key, |g| g.iter_mut().for_each(|g| **g += 1))
                            }
                            _ => {
                                // Skip part 0, read part 1, by a try first and then blocking.
                                let ctx = tuple.context(&mut key);
                                let seen = match ctx.try_read_1() {
                                    Ok((g, _)) => *g,
                                    Err(ctx) => *ctx.read_1().0,
                                };
                                assert!(seen <= 2 * ROUNDS);
                                let mut ctx = list.context(&mut key);
                                assert!(ctx.skip_next());
                                let g = ctx.lock_next().unwrap();
                                assert_eq!(ctx.remaining(), 2);
                                drop(g);
                            }
                        }
                    }
                });
            }
        });
        (
            outer.into_inner(),
            tuple.into_inner(),
            list.into_inner().into_vec(),
        )
    });
    assert_eq!(
        totals,
        (2 * ROUNDS, (2 * ROUNDS, 2 * ROUNDS), vec![2 * ROUNDS; 4])
    );
}

// ---------------------------------------------------------------------------------------------
// The `Lockable` contract: what a user impl must keep stable

/// A user lock group whose *current* lock is chosen at run time: `raw_locks` reports the current one and
/// `guard` guards the current one, so at any instant it does what the old contract asked ("report every
/// lock `guard` gives access through"). It breaks the new sentence: the reported lock changes while the
/// value is shared.
struct Switching {
    locks: [Mutex<i32>; 2],
    current: AtomicUsize,
}

// SAFETY: deliberately outside the contract now written on `Lockable` (the reported lock must not change
// while the value is borrowed): this test shows why that sentence is there. Only `is_locked` is observed;
// no data is touched through a guard whose lock is not held.
unsafe impl Lockable for Switching {
    type Guard<'g> = MutexRef<'g, i32>;

    fn raw_locks<'a>(&'a self, out: &mut Vec<&'a dyn RawLock>) {
        self.locks[self.current.load(Ordering::SeqCst)].raw_locks(out);
    }

    unsafe fn guard(&self) -> MutexRef<'_, i32> {
        // SAFETY: (see the impl) the caller took what `raw_locks` reported when it asked.
        unsafe { self.locks[self.current.load(Ordering::SeqCst)].guard() }
    }
}

#[test]
fn the_sorting_collections_cache_the_reported_locks_so_lockable_must_keep_reporting_the_same_ones()
{
    let mut key = ThreadKey::get().unwrap();
    let switching = || Switching {
        locks: [Mutex::new(0), Mutex::new(1)],
        current: AtomicUsize::new(0),
    };

    // The collections that list the locks on every acquisition follow the switch.
    let retrying = RetryingLockCollection::try_new(switching()).unwrap();
    retrying.child().current.store(1, Ordering::SeqCst);
    let guard = retrying.lock(&mut key);
    assert_eq!(**guard, 1);
    assert!(retrying.child().locks[1].is_locked() && !retrying.child().locks[0].is_locked());
    drop(guard);

    // `LockCollection` and `RefLockCollection` list them once, at construction: after a switch they take
    // lock 0 and hand out a guard for lock 1, which nobody holds. That is why `Lockable`'s safety contract
    // now requires the reported locks to stay the same while the value is borrowed.
    let sorted = LockCollection::try_new(switching()).unwrap();
    sorted.child().current.store(1, Ordering::SeqCst);
    let guard = sorted.lock(&mut key);
    let (held0, held1) = (
        sorted.child().locks[0].is_locked(),
        sorted.child().locks[1].is_locked(),
    );
    // Release what was taken (lock 0) without touching lock 1: forget the wrong guard and unlock by hand.
    std::mem::forget(guard);
    // SAFETY: `sorted.lock` took lock 0 (its cached list), and the forgotten guard will never release it.
    unsafe { sorted.child().locks[0].raw_unlock() };
    assert_eq!((held0, held1), (true, false));

    let owner = switching();
    let by_ref = RefLockCollection::try_new(&owner).unwrap();
    owner.current.store(1, Ordering::SeqCst);
    let guard = by_ref.lock(&mut key);
    let (held0, held1) = (owner.locks[0].is_locked(), owner.locks[1].is_locked());
    std::mem::forget(guard);
    // SAFETY: as above: the collection took lock 0, and nothing else will release it.
    unsafe { owner.locks[0].raw_unlock() };
    assert_eq!((held0, held1), (true, false));
}

#[test]
fn readers_of_a_poisonable_pair_never_see_it_torn_unless_told_while_writers_panic_and_repair() {
    quiet_expected_panics();
    const WRITER_ROUNDS: u64 = 200;
    let (pair, panics, repairs, poisoned_reads) =
        within(240, "poison, repair and read on six threads", || {
            let p = Poisonable::new((RwLock::new(0u64), RwLock::new(0u64)));
            let other = RwLock::new(7u8);
            let (panics, repairs, poisoned_reads, torn) = (
                AtomicUsize::new(0),
                AtomicUsize::new(0),
                AtomicUsize::new(0),
                AtomicUsize::new(0),
            );
            let barrier = Barrier::new(6);
            thread::scope(|s| {
                for t in 0..6usize {
                    let (p, other, barrier) = (&p, &other, &barrier);
                    let (panics, repairs, poisoned_reads, torn) =
                        (&panics, &repairs, &poisoned_reads, &torn);
                    s.spawn(move || {
                        let mut key = ThreadKey::get().unwrap();
                        let with_other = LockCollection::try_new((p, other)).unwrap();
                        barrier.wait();
                        if t < 2 {
                            for round in 0..WRITER_ROUNDS {
                                let _ = catch_unwind(AssertUnwindSafe(|| {
                                    let mut g = match p.lock(&mut key) {
                                        Ok(g) => g,
                                        Err(poisoned) => {
                                            let mut g = poisoned.into_inner();
                                            *g.1 = *g.0;
                                            p.clear_poison();
                                            repairs.fetch_add(1, Ordering::SeqCst);
                                            g
                                        }
                                    };
                                    *g.0 += 1;
                                    if round % 10 == 9 {
                                        panics.fetch_add(1, Ordering::SeqCst);
                                        panic!("{EXPECTED}: torn pair");
                                    }
                                    *g.1 += 1;
                                }));
                            }
                        } else {
                            for round in 0..400usize {
                                let seen = if round % 2 == 0 {
                                    p.read(&mut key).map(|g| (*g.0, *g.1)).map_err(|_| ())
                                } else {
                                    let g = with_other.read(&mut key);
                                    assert_eq!(*g.1, 7);
                                    g.0.as_ref().map(|g| (*g.0, *g.1)).map_err(|_| ())
                                };
                                match seen {
                                    Ok((a, b)) if a != b => {
                                        torn.fetch_add(1, Ordering::SeqCst);
                                    }
                                    Ok(_) => {}
                                    Err(()) => {
                                        poisoned_reads.fetch_add(1, Ordering::SeqCst);
                                    }
                                }
                            }
                        }
                    });
                }
            });
            assert_eq!(torn.load(Ordering::SeqCst), 0, "an Ok read saw a torn pair");
            let poisoned = p.is_poisoned();
            let mut p = p;
            let (a, b) = p
                .get_mut()
                .map_or_else(|e| (*e.get_ref().0, *e.get_ref().1), |(a, b)| (*a, *b));
            (
                (a, b, poisoned),
                panics.load(Ordering::SeqCst),
                repairs.load(Ordering::SeqCst),
                poisoned_reads.load(Ordering::SeqCst),
            )
        });
    // The last panic of the run may be left unrepaired (no writer came after it).
    let total = 2 * WRITER_ROUNDS;
    assert_eq!(panics, 2 * (WRITER_ROUNDS as usize / 10));
    match pair {
        (a, b, false) => assert_eq!((a, b, repairs), (total, total, panics)),
        (a, b, true) => assert_eq!((a, b + 1, repairs + 1), (total, total, panics)),
    }
    let _ = poisoned_reads; // how many reads met the poison depends on the schedule
}

#[test]
fn debug_of_guards_collections_and_poisonables_prints_what_it_can_take_and_never_waits() {
    quiet_expected_panics();
    let text = within(60, "debug while another thread holds", || {
        let m = Mutex::new(1);
        let p = Poisonable::new(RwLock::new(String::from("two")));
        let owned = OwnedLockCollection::new((Mutex::new(3), RwLock::new(4)));
        let (held_tx, held_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let mut key = ThreadKey::get().unwrap();
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let _g = p.lock(&mut key);
            panic!("{EXPECTED}: poison for the printout");
        }));
        let free = format!("{m:?} | {p:?} | {owned:?}");
        let m_ = &m;
        thread::scope(|s| {
            s.spawn(move || {
                let mut key = ThreadKey::get().unwrap();
                let _m = m_.lock(&mut key);
                held_tx.send(()).unwrap();
                let _ = release_rx.recv();
            });
            held_rx.recv().unwrap();
            let sorted = LockCollection::try_new((&m, &p)).unwrap();
            let held = format!("{sorted:?}");
            // This thread's own guards: printed through the guard, while the collection shows `<locked>`.
            let guard = owned.lock(&mut key);
            let own = format!("{guard:?} | {owned:?}");
            drop(guard);
            release_tx.send(()).unwrap();
            [free, held, own]
        })
    });
    assert_eq!(
        text,
        [
            "Mutex { data: 1, .. } | Poisonable { inner: RwLock { data: \"two\", .. }, poisoned: true } | \
             OwnedLockCollection { child: (Mutex { data: 3, .. }, RwLock { data: 4, .. }) }",
            "LockCollection { child: (Mutex { data: <locked>, .. }, Poisonable { inner: RwLock { data: \"two\", .. }, \
             poisoned: true }), .. }",
            "(3, 4) | OwnedLockCollection { child: (Mutex { data: <locked>, .. }, RwLock { data: <locked>, .. }) }",
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// A lock written by a user against the public unsafe traits

/// A spin lock implementing `RawLock`, `Lockable`, `Lock` (rank `R66Inner`) and `OwnedLockable` by hand:
/// `lock_all!`, nesting, contexts and every collection must take it like their own locks.
struct Spin<T> {
    held: AtomicBool,
    data: std::cell::UnsafeCell<T>,
}

// SAFETY: the flag gives one holder at a time access to `data`, moving `T` between threads.
unsafe impl<T: Send> Sync for Spin<T> {}

impl<T> Spin<T> {
    fn new(value: T) -> Self {
        Spin {
            held: AtomicBool::new(false),
            data: std::cell::UnsafeCell::new(value),
        }
    }
}

struct SpinGuard<'a, T>(&'a Spin<T>, std::marker::PhantomData<*const ()>);

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.0.held.store(false, Ordering::Release);
    }
}

impl<T> std::ops::Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the flag.
        unsafe { &*self.0.data.get() }
    }
}

impl<T> std::ops::DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the flag, and `&mut self` is the only way in.
        unsafe { &mut *self.0.data.get() }
    }
}

// SAFETY: mutual exclusion through the flag (shared holds are exclusive too); the id is the address of a
// value that is never zero-sized (it holds an `AtomicBool`).
unsafe impl<T> RawLock for Spin<T> {
    fn lock_id(&self) -> usize {
        self as *const Self as *const () as usize
    }
    fn rank(&self) -> u32 {
        <R66Inner as trust_core::lock::Rank>::RANK
    }
    unsafe fn raw_lock(&self) {
        while self
            .held
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            thread::yield_now();
        }
    }
    unsafe fn raw_try_lock(&self) -> bool {
        self.held
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }
    unsafe fn raw_unlock(&self) {
        self.held.store(false, Ordering::Release);
    }
    unsafe fn raw_lock_shared(&self) {
        // SAFETY: forwarded contract.
        unsafe { self.raw_lock() }
    }
    unsafe fn raw_try_lock_shared(&self) -> bool {
        // SAFETY: forwarded contract.
        unsafe { self.raw_try_lock() }
    }
    unsafe fn raw_unlock_shared(&self) {
        // SAFETY: forwarded contract.
        unsafe { self.raw_unlock() }
    }
}

// SAFETY: reports itself, the one lock guarding `data`, always.
unsafe impl<T> Lockable for Spin<T> {
    type Guard<'g>
        = SpinGuard<'g, T>
    where
        T: 'g;
    fn raw_locks<'a>(&'a self, out: &mut Vec<&'a dyn RawLock>) {
        out.push(self);
    }
    unsafe fn guard(&self) -> SpinGuard<'_, T> {
        SpinGuard(self, std::marker::PhantomData)
    }
}

// SAFETY: one lock, itself; its rank is `R66Inner`, which `rank` reports.
unsafe impl<T> trust_core::lock::Lock for Spin<T> {
    type Rank = R66Inner;
}

// SAFETY: it owns its one lock.
unsafe impl<T> OwnedLockable for Spin<T> {}

#[test]
fn a_users_own_lock_type_goes_through_lock_all_nesting_contexts_and_every_collection_under_contention()
 {
    const ROUNDS: u64 = 300;
    let totals = within(240, "a user lock under contention", || {
        let outer: Mutex<u64, R66Outer> = Mutex::ranked(0);
        let spins = [Spin::new(0u64), Spin::new(0u64)];
        let owned = OwnedLockCollection::new((Spin::new(0u64), Spin::new(0u64)));
        let barrier = Barrier::new(4);
        thread::scope(|s| {
            for t in 0..4usize {
                let (outer, spins, owned, barrier) = (&outer, &spins, &owned, &barrier);
                s.spawn(move || {
                    let mut key = ThreadKey::get().unwrap();
                    let sorted = LockCollection::try_new((&spins[1], &spins[0])).unwrap();
                    let retrying = RetryingLockCollection::new_ref(spins);
                    barrier.wait();
                    for round in 0..ROUNDS {
                        match (t + round as usize) % 4 {
                            0 => {
                                let (mut o, mut nested) = lock_all!(&mut key, *outer; nest);
                                {
                                    let (mut a, mut b) = lock_all!(&mut nested, spins[1], spins[0]);
                                    *a += 1;
                                    *b += 1;
                                }
                                let (first, ctx) = owned.context(&mut nested).lock_0();
                                let (second, _) = ctx.lock_1();
                                *o += 1;
                                drop((first, second));
                            }
                            1 => sorted.scoped_lock(&mut key, |(b, a)| {
                                **a += 1;
                                **b += 1;
                            }),
                            2 => {
                                let mut g = retrying.lock(&mut key);
                                *g[0] += 1;
                                *g[1] += 1;
                            }
                            _ => owned.scoped_lock(&mut key, |(x, y)| {
                                **x += 1;
                                **y += 1;
                            }),
                        }
                    }
                });
            }
        });
        let mut key = ThreadKey::get().unwrap();
        let (a, b) = {
            let (a, b) = lock_all!(&mut key, spins[0], spins[1]);
            (*a, *b)
        };
        let (x, y) = owned.scoped_lock(&mut key, |(x, y)| (**x, **y));
        // Every lock is free again: a try on the user lock takes it.
        assert!(try_lock_all!(&mut key, spins[0]).is_ok());
        (outer.into_inner(), a, b, x, y)
    });
    let per_style = 4 * ROUNDS / 4;
    assert_eq!(
        totals,
        (
            per_style,
            3 * per_style,
            3 * per_style,
            per_style,
            per_style
        )
    );
}

// ---------------------------------------------------------------------------------------------
// When exactly a panic poisons: side by side with `std::sync::Mutex`

/// Anything held: a guard of either kind, boxed.
trait Held {}
impl<T> Held for T {}

/// Takes the scenario's guard (a `Poisonable`'s or a `std::sync::Mutex`'s), boxed.
type Take<'a> = dyn FnMut() -> Box<dyn Held + 'a> + 'a;

/// Runs one scenario on a `Poisonable` and on a `std::sync::Mutex`; returns whether each ended poisoned.
fn poisoned_after(scenario: for<'a, 't> fn(&'t mut Take<'a>)) -> (bool, bool) {
    let ours = Poisonable::new(Mutex::new(0));
    let std_mutex = std::sync::Mutex::new(0);
    {
        let mut key = Some(ThreadKey::get().unwrap());
        let mut take = || -> Box<dyn Held + '_> {
            Box::new(
                ours.lock(key.take().expect("one guard per scenario"))
                    .unwrap_or_else(|e| e.into_inner()),
            )
        };
        scenario(&mut take);
    }
    {
        let mut take = || -> Box<dyn Held + '_> {
            Box::new(std_mutex.lock().unwrap_or_else(|e| e.into_inner()))
        };
        scenario(&mut take);
    }
    (ours.is_poisoned(), std_mutex.is_poisoned())
}

#[test]
fn poisoning_matches_std_in_every_way_a_panic_can_meet_a_guard() {
    quiet_expected_panics();
    // A panic caught while the guard lives does not unwind through it: no poison.
    let caught_inside = poisoned_after(|take| {
        let guard = take();
        let _ = catch_unwind(|| panic!("{EXPECTED}: caught inside"));
        drop(guard);
    });
    assert_eq!(caught_inside, (false, false));

    // A panic that drops the guard: poison.
    let unwound = poisoned_after(|take| {
        let guard = take();
        let _ = catch_unwind(AssertUnwindSafe(move || {
            let _guard = guard;
            panic!("{EXPECTED}: unwinds through the guard");
        }));
    });
    assert_eq!(unwound, (true, true));

    // A guard taken and dropped inside a `Drop` that runs during an unwind: no new panic under it.
    struct LocksInDrop<'t, 'a>(&'t mut Take<'a>);
    impl Drop for LocksInDrop<'_, '_> {
        fn drop(&mut self) {
            assert!(thread::panicking());
            drop((self.0)());
        }
    }
    let in_drop = poisoned_after(|take| {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let _locks = LocksInDrop(take);
            panic!("{EXPECTED}: the drop locks during this unwind");
        }));
    });
    assert_eq!(in_drop, (false, false));

    // A forgotten guard is never dropped: no poison, whatever panics later. (It kept the key by value, so
    // that thread's key is gone for good: run it on a thread of its own.)
    let forgotten = thread::spawn(|| {
        let poisoned = poisoned_after(|take| {
            std::mem::forget(take());
            let _ = catch_unwind(|| panic!("{EXPECTED}: after the forget"));
        });
        (poisoned, ThreadKey::get().is_none())
    })
    .join()
    .unwrap();
    assert_eq!(forgotten, ((false, false), true));
    let forgotten = forgotten.0;
    assert_eq!(forgotten, (false, false));

    // Another thread's panic while this thread's guard lives: no poison.
    let other_thread = poisoned_after(|take| {
        let guard = take();
        let _ = thread::spawn(|| panic!("{EXPECTED}: on another thread")).join();
        drop(guard);
    });
    assert_eq!(other_thread, (false, false));
}

#[test]
fn children_swapped_or_replaced_between_collections_through_with_child_mut_lock_the_right_locks() {
    let mut key = ThreadKey::get().unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let make = |ids: [u32; 2]| ids.map(|id| Mutex::new(Boom::new(id, false, &drops)));
    let mut first = LockCollection::new(Vec::from(make([1, 2])));
    let mut second = LockCollection::new(Vec::from(make([3, 4])));
    let ids = |c: &LockCollection<Vec<Mutex<Boom>>>, key: &mut ThreadKey| {
        c.scoped_lock(key, |g| g.iter().map(|b| b.id).collect::<Vec<_>>())
    };

    // Swap the two children from inside both closures: each collection lists its new child again.
    first.with_child_mut(|a| second.with_child_mut(|b| std::mem::swap(a, b)));
    assert_eq!(
        (ids(&first, &mut key), ids(&second, &mut key)),
        (vec![3, 4], vec![1, 2])
    );
    // The cached order points into the right child: a lock held through one collection is busy for it.
    {
        let held = first.child()[0].lock(&mut key);
        assert_eq!(held.id, 3);
        assert!(ThreadKey::get().is_none(), "the key is lent to `held`");
    }
    thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let first_ = &first;
        let holder = s.spawn(move || {
            let mut key = ThreadKey::get().unwrap();
            let _g = first_.child()[1].lock(&mut key);
            tx.send(()).unwrap();
            // Held until the main thread has looked (a timed hold could end before it looks).
            release_rx.recv().unwrap();
        });
        rx.recv().unwrap();
        assert!(
            first.try_lock(&mut key).is_err(),
            "the cache must see the swapped-in lock 4 busy"
        );
        assert!(second.try_lock(&mut key).is_ok());
        release_tx.send(()).unwrap();
        holder.join().unwrap();
    });

    // Replace a child outright; the old one comes out whole and is dropped once, by its new owner.
    let old = first.with_child_mut(|a| std::mem::replace(a, Vec::from(make([5, 6]))));
    assert_eq!(
        old.iter().map(|m| m.lock(&mut key).id).collect::<Vec<_>>(),
        [3, 4]
    );
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(old);
    assert_eq!(drops.load(Ordering::SeqCst), 2);
    assert_eq!(ids(&first, &mut key), [5, 6]);
    drop((first, second));
    assert_eq!(drops.load(Ordering::SeqCst), 6);
}

#[test]
fn closures_that_panic_under_every_collection_kind_on_six_threads_lose_no_update_and_no_key() {
    quiet_expected_panics();
    const ROUNDS: u64 = 250;
    let (values, panics, lost_keys) = within(240, "panicking closures under contention", || {
        let parts = [
            Poisonable::new(Mutex::new(0u64)),
            Poisonable::new(Mutex::new(0u64)),
            Poisonable::new(Mutex::new(0u64)),
        ];
        let (panics, lost_keys) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let barrier = Barrier::new(6);
        thread::scope(|s| {
            for t in 0..6usize {
                let (parts, barrier, panics, lost_keys) = (&parts, &barrier, &panics, &lost_keys);
                s.spawn(move || {
                    let [a, b, c] = parts;
                    let sorted = LockCollection::try_new((a, b, c)).unwrap();
                    let child = (c, a, b);
                    let by_ref = RefLockCollection::try_new(&child).unwrap();
                    let retrying = RetryingLockCollection::try_new((b, c, a)).unwrap();
                    barrier.wait();
                    type Part<'g> = trust_core::lock::PoisonResult<
                        trust_core::lock::PoisonGuard<'g, MutexRef<'g, u64>>,
                    >;
                    // Adds one to each part, clearing poison it meets (the data is never half-done: the
                    // panic comes after all three writes).
                    let bump = |parts: [&mut Part<'_>; 3], panic_now: bool| {
                        for (part, poisonable) in parts.into_iter().zip([a, b, c]) {
                            let guard = match part {
                                Ok(g) => g,
                                Err(e) => {
                                    poisonable.clear_poison();
                                    e.get_mut()
                                }
                            };
                            ***guard += 1;
                        }
                        if panic_now {
                            panics.fetch_add(1, Ordering::SeqCst);
                            panic!("{EXPECTED}: after the writes");
                        }
                    };
                    for round in 0..ROUNDS {
                        let panic_now = (round + t as u64).is_multiple_of(7);
                        let key = ThreadKey::get().expect("the key came back after the last panic");
                        let _ = catch_unwind(AssertUnwindSafe(|| match (t + round as usize) % 3 {
                            0 => sorted.scoped_lock(key, |(x, y, z)| bump([x, y, z], panic_now)),
                            1 => by_ref.scoped_lock(key, |(z, x, y)| bump([x, y, z], panic_now)),
                            _ => {
                                let mut g = retrying.lock(key);
                                let (y, z, x) = &mut *g;
                                bump([x, y, z], panic_now);
                            }
                        }));
                        if ThreadKey::get().is_none() {
                            lost_keys.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        let mut key = ThreadKey::get().unwrap();
        let values = parts
            .each_ref()
            .map(|p| **p.lock(&mut key).unwrap_or_else(|e| e.into_inner()));
        (values, panics.into_inner(), lost_keys.into_inner())
    });
    assert_eq!(
        values,
        [6 * ROUNDS; 3],
        "every update landed, panicking or not"
    );
    let expected_panics = (0..6u64)
        .map(|t| (0..ROUNDS).filter(|r| (r + t).is_multiple_of(7)).count())
        .sum::<usize>();
    assert_eq!((panics, lost_keys), (expected_panics, 0));
}

// ---------------------------------------------------------------------------------------------
// A collection inside a collection, through a user `Lockable`

/// A user type that is a `LockCollection` and a lock group at once: collections are not children of
/// collections, but a user impl may forward to the inner collection's child.
struct Ledger(LockCollection<(Mutex<u64>, RwLock<u64>)>);

// SAFETY: forwards to the inner collection's child, which never changes (it is only reachable through
// `&self`), so it reports the same locks every time.
unsafe impl Lockable for Ledger {
    type Guard<'g> = <(Mutex<u64>, RwLock<u64>) as Lockable>::Guard<'g>;

    fn raw_locks<'a>(&'a self, out: &mut Vec<&'a dyn RawLock>) {
        self.0.child().raw_locks(out);
    }

    unsafe fn guard(&self) -> Self::Guard<'_> {
        // SAFETY: forwarded: the caller holds every lock of the child.
        unsafe { self.0.child().guard() }
    }
}

#[test]
fn a_collection_wrapped_as_a_child_of_other_collections_is_sorted_with_them_and_never_deadlocks() {
    const ROUNDS: u64 = 300;
    let totals = within(240, "collections of collections", || {
        let ledger = Ledger(LockCollection::new((Mutex::new(0u64), RwLock::new(0u64))));
        let audit = Mutex::new(0u64);
        let barrier = Barrier::new(4);
        thread::scope(|s| {
            for t in 0..4usize {
                let (ledger, audit, barrier) = (&ledger, &audit, &barrier);
                s.spawn(move || {
                    let mut key = ThreadKey::get().unwrap();
                    let outer = LockCollection::try_new((&audit, ledger)).unwrap();
                    let retrying = RetryingLockCollection::try_new((ledger, &audit)).unwrap();
                    // The ledger's own locks twice over: refused, like any duplicate.
                    assert!(LockCollection::try_new((ledger, &ledger.0.child().0)).is_none());
                    barrier.wait();
                    for round in 0..ROUNDS {
                        match (t + round as usize) % 4 {
                            0 => outer.scoped_lock(&mut key, |(audit, (a, b))| {
                                **a += 1;
                                **b += 1;
                                **audit += 1;
                            }),
                            1 => retrying.scoped_lock(&mut key, |((a, b), audit)| {
                                **a += 1;
                                **b += 1;
                                **audit += 1;
                            }),
                            2 => ledger.0.scoped_lock(&mut key, |(a, b)| {
                                **a += 1;
                                **b += 1;
                            }),
                            _ => {
                                let (mut audit, b, mut a) =
                                    lock_all!(&mut key, audit, read ledger.0.child().1, ledger.0.child().0);
                                assert!(*a >= *b, "the pair moves together");
                                *a += 1;
                                *audit += 1;
                            }
                        }
                    }
                });
            }
        });
        let (a, b) = ledger.0.into_inner();
        (a, b, audit.into_inner())
    });
    assert_eq!(totals, (4 * ROUNDS, 3 * ROUNDS, 3 * ROUNDS));
}
