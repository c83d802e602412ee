//! "Evil" raw locks that panic inside their own lock / try_lock / unlock. Whatever path takes
//! them (`lock_all!`, `try_lock_all!`, each collection), the good locks taken before the panic are
//! released, the key survives, and the evil lock is marked broken so later users get a panic with
//! a message instead of waiting forever.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};

use lock_api::{GuardNoSend, RawMutex, RawRwLock};
use trust_core::lock::{
    LockCollection, Mutex, OwnedLockCollection, RefLockCollection, RetryingLockCollection, RwLock,
    ThreadKey, Unranked,
};
use trust_core::{lock_all, try_lock_all};

/// A parking_lot mutex that panics when armed: in `lock`/`try_lock` before taking the lock (armed
/// per lock), and in `unlock` *without* releasing it (armed once, per thread, by `ARMED_UNLOCK`:
/// the nastiest case, as the lock then stays held forever).
struct EvilRawMutex {
    inner: parking_lot::RawMutex,
    panic_on_lock: AtomicBool,
}

thread_local! {
    static ARMED_UNLOCK: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: when it does not panic, every call is forwarded to parking_lot's raw mutex.
unsafe impl RawMutex for EvilRawMutex {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = EvilRawMutex {
        inner: parking_lot::RawMutex::INIT,
        panic_on_lock: AtomicBool::new(false),
    };
    type GuardMarker = GuardNoSend;

    fn lock(&self) {
        if self.panic_on_lock.load(Ordering::Relaxed) {
            panic!("evil lock");
        }
        self.inner.lock();
    }

    fn try_lock(&self) -> bool {
        if self.panic_on_lock.load(Ordering::Relaxed) {
            panic!("evil try_lock");
        }
        self.inner.try_lock()
    }

    unsafe fn unlock(&self) {
        if ARMED_UNLOCK.with(|armed| armed.replace(false)) {
            panic!("evil unlock");
        }
        // SAFETY: forwarded: the caller holds the lock.
        unsafe { self.inner.unlock() }
    }
}

/// The same for a readers-writer lock; it only misbehaves on shared acquisition.
struct EvilRawRwLock {
    inner: parking_lot::RawRwLock,
}

// SAFETY: exclusive operations and the shared release are forwarded to parking_lot.
unsafe impl RawRwLock for EvilRawRwLock {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = EvilRawRwLock {
        inner: parking_lot::RawRwLock::INIT,
    };
    type GuardMarker = GuardNoSend;

    fn lock_shared(&self) {
        panic!("evil read");
    }

    fn try_lock_shared(&self) -> bool {
        panic!("evil try_read");
    }

    unsafe fn unlock_shared(&self) {
        // SAFETY: forwarded.
        unsafe { self.inner.unlock_shared() }
    }

    fn lock_exclusive(&self) {
        self.inner.lock_exclusive()
    }

    fn try_lock_exclusive(&self) -> bool {
        self.inner.try_lock_exclusive()
    }

    unsafe fn unlock_exclusive(&self) {
        // SAFETY: forwarded.
        unsafe { self.inner.unlock_exclusive() }
    }
}

type Evil = Mutex<i32, Unranked, EvilRawMutex>;

fn evil(panic_on_lock: bool) -> Evil {
    let raw = EvilRawMutex::INIT;
    raw.panic_on_lock.store(panic_on_lock, Ordering::Relaxed);
    Mutex::from_raw(raw, 7)
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Both good locks can be taken again, the evil one is broken and says so.
fn assert_released_and_broken(key: &mut ThreadKey, goods: [&Mutex<i32>; 2], evil: &Evil) {
    for good in goods {
        assert!(
            good.try_lock(&mut *key).is_ok(),
            "a good lock was left held"
        );
    }
    assert!(evil.is_broken());
    let message =
        panic_message(catch_unwind(AssertUnwindSafe(|| drop(evil.lock(&mut *key)))).unwrap_err());
    assert!(message.starts_with("this lock is broken"), "{message}");
    let message = panic_message(
        catch_unwind(AssertUnwindSafe(|| {
            let _guards = lock_all!(&mut *key, goods[0], evil);
        }))
        .unwrap_err(),
    );
    assert!(message.starts_with("this lock is broken"), "{message}");
    assert!(goods[0].try_lock(&mut *key).is_ok());
}

#[test]
fn lock_all_releases_the_locks_it_took_when_a_raw_lock_panics() {
    let (a, b, bad) = (Mutex::new(1), Mutex::new(2), evil(true));
    let mut key = ThreadKey::get().unwrap();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        let _guards = lock_all!(&mut key, a, bad, b);
    }));
    assert_eq!(panic_message(caught.unwrap_err()), "evil lock");
    assert_released_and_broken(&mut key, [&a, &b], &bad);
}

#[test]
fn try_lock_all_releases_the_locks_it_took_when_a_raw_try_lock_panics() {
    let (a, b, bad) = (Mutex::new(1), Mutex::new(2), evil(true));
    let mut key = ThreadKey::get().unwrap();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        let _guards = try_lock_all!(&mut key, a, b, bad);
    }));
    assert_eq!(panic_message(caught.unwrap_err()), "evil try_lock");
    assert_released_and_broken(&mut key, [&a, &b], &bad);
}

#[test]
fn a_panicking_unlock_does_not_stop_the_other_guards() {
    let (a, b, bad) = (Mutex::new(1), Mutex::new(2), evil(false));
    let mut key = ThreadKey::get().unwrap();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        let guards = lock_all!(&mut key, a, bad, b);
        ARMED_UNLOCK.with(|armed| armed.set(true));
        drop(guards);
    }));
    assert_eq!(panic_message(caught.unwrap_err()), "evil unlock");
    // The evil lock is still held by nobody alive: without the broken flag, this would hang.
    assert_released_and_broken(&mut key, [&a, &b], &bad);
}

#[test]
fn every_collection_releases_what_it_took_and_keeps_the_key() {
    let mut key = ThreadKey::get().unwrap();
    for strategy in ["sorted", "ref", "owned", "retrying"] {
        let (a, b, bad) = (Mutex::new(1), Mutex::new(2), evil(true));
        let caught = catch_unwind(AssertUnwindSafe(|| match strategy {
            "sorted" => drop(
                LockCollection::try_new((&a, &bad, &b))
                    .unwrap()
                    .lock(&mut key),
            ),
            "ref" => drop(
                RefLockCollection::try_new(&(&a, &bad, &b))
                    .unwrap()
                    .lock(&mut key),
            ),
            "retrying" => drop(
                RetryingLockCollection::try_new((&a, &b, &bad))
                    .unwrap()
                    .lock(&mut key),
            ),
            _ => {
                // The owned collection owns its locks, so it gets its own evil one.
                let owned = OwnedLockCollection::new((Mutex::new(1), evil(true), Mutex::new(2)));
                drop(owned.lock(&mut key));
            }
        }));
        // The retrying collection blocks on its first lock and only *tries* the others.
        let message = panic_message(caught.unwrap_err());
        assert!(
            message == "evil lock" || message == "evil try_lock",
            "{strategy}: {message}"
        );
        if strategy != "owned" {
            assert_released_and_broken(&mut key, [&a, &b], &bad);
        }
    }
    // A key passed by value into a panicking collection lock is returned to the thread.
    drop(key);
    let (a, bad) = (Mutex::new(1), evil(true));
    let collection = LockCollection::try_new((&a, &bad)).unwrap();
    assert!(
        catch_unwind(AssertUnwindSafe(|| drop(
            collection.lock(ThreadKey::get().unwrap())
        )))
        .is_err()
    );
    assert!(ThreadKey::get().is_some());
    assert!(!a.is_locked());
}

#[test]
fn an_evil_read_releases_the_other_readers() {
    let good = RwLock::new(1);
    let bad: RwLock<i32, Unranked, EvilRawRwLock> = RwLock::from_raw(EvilRawRwLock::INIT, 2);
    let mut key = ThreadKey::get().unwrap();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        let _guards = lock_all!(&mut key, read good, read bad);
    }));
    assert_eq!(panic_message(caught.unwrap_err()), "evil read");
    assert!(good.try_write(&mut key).is_ok());
    assert!(bad.is_broken());
    // Through a collection too, for a lock that is not broken yet.
    let fresh: RwLock<i32, Unranked, EvilRawRwLock> = RwLock::from_raw(EvilRawRwLock::INIT, 3);
    let both = LockCollection::try_new((&good, &fresh)).unwrap();
    assert!(catch_unwind(AssertUnwindSafe(|| drop(both.read(&mut key)))).is_err());
    assert!(good.try_write(&mut key).is_ok());
    // Data is still reachable through `&mut`.
    let mut bad = bad;
    assert_eq!(*bad.get_mut(), 2);
}

/// A user's `Lockable` whose `raw_locks` panics, holding a value that counts its drops.
struct PanicsWhenListed(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for PanicsWhenListed {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

// SAFETY: it reports no lock and never hands out a guard (`raw_locks` panics first).
unsafe impl trust_core::lock::Lockable for PanicsWhenListed {
    type Guard<'g> = ();

    fn raw_locks<'a>(&'a self, _out: &mut Vec<&'a dyn trust_core::lock::RawLock>) {
        panic!("raw_locks refuses");
    }

    unsafe fn guard(&self) -> Self::Guard<'_> {}
}

#[test]
fn a_collection_whose_lockable_panics_when_listed_drops_it_once() {
    let drops = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let built = catch_unwind(AssertUnwindSafe(|| {
        LockCollection::try_new(PanicsWhenListed(drops.clone()))
    }));
    assert_eq!(
        panic_message(built.err().expect("raw_locks panicked")),
        "raw_locks refuses"
    );
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "the value is dropped once, not leaked"
    );
}
