//! Review 78: ../shared/DESIGN.md section 3 ("Public API contract") as code. Every name and shape the contract
//! promises is used here, so this file compiles only while the contract holds; the `#[test]`s check, with exact values,
//! the behaviour the contract states and the other test files do not already pin down.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use trust_core::ghost::{
    GhostAliasingError, GhostAtomicBitset, GhostAtomicBool, GhostAtomicU32, GhostAtomicU64,
    GhostAtomicUsize, GhostBorrow, GhostBorrowMut, GhostCell, GhostChaseLevDeque, GhostLazyLock,
    GhostStealer, GhostToken, GhostTreiberStack, static_token, with_static_token,
    with_static_token_mut,
};
use trust_core::interval::IntervalRwLock;
use trust_core::lock::{
    LockAllError, LockCollection, Mutex, OwnedLockCollection, RetryingLockCollection, RwLock,
    ThreadKey,
};
use trust_core::{
    Fiber, Latch, LatchGuard, Runtime, RuntimeBuilder, RuntimeError, Trust, Trustee, entrust,
    local_trustee, lock_all, lock_ranks, runtime, spawn, try_lock_all, wait_pending,
};

// ---------------------------------------------------------------------------------------------------------
// Compile-time checks: signatures (fn-pointer coercions) and generic wrappers with the contract's bounds.

fn is_send_sync<T: Send + Sync>() {}
fn is_clone_copy<T: Clone + Copy>() {}
fn is_clone<T: Clone>() {}

/// Compiles only if `T` is NOT `Sync` (the `assert_not_impl_any` trick: two candidate impls when it is).
macro_rules! assert_not_sync {
    ($t:ty) => {{
        trait AmbiguousIfSync<A> {
            fn some_item() {}
        }
        impl<T: ?Sized> AmbiguousIfSync<()> for T {}
        impl<T: ?Sized + Sync> AmbiguousIfSync<u8> for T {}
        let _ = <$t as AmbiguousIfSync<_>>::some_item;
    }};
}

// 3.1, with the contract's exact bounds: each compiles only if the code accepts at least these bounds.
fn apply_shape<T: Send + 'static, R, F>(t: &Trust<T>, f: F) -> R
where
    F: FnOnce(&mut T) -> R + Send + 'static,
    R: Send + 'static,
{
    t.apply(f)
}

fn apply_with_shape<T: Send + 'static, V, R, F>(t: &Trust<T>, f: F, arg: V) -> R
where
    F: FnOnce(&mut T, V) -> R + Send + 'static,
    V: Send + 'static,
    R: Send + 'static,
{
    t.apply_with(f, arg)
}

fn apply_then_shape<T: Send + 'static, R, F, C>(t: &Trust<T>, f: F, then: C)
where
    F: FnOnce(&mut T) -> R + Send + 'static,
    R: Send + 'static,
    C: FnOnce(R) + 'static,
{
    let () = t.apply_then(f, then);
}

fn trust_trustee_shape<T: Send + 'static>(t: &Trust<T>) -> Trustee {
    t.trustee()
}

fn spawn_shape<F, R>(f: F) -> Fiber<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    spawn(f)
}

fn launch_shape<T: Send + 'static, R, F>(t: &Trust<Latch<T>>, f: F) -> R
where
    F: FnOnce(&Latch<T>) -> R + Send + 'static,
    R: Send + 'static,
{
    t.launch(f)
}

fn latch_lock_shape<T>(l: &Latch<T>) -> LatchGuard<'_, T> {
    l.lock()
}

fn trust_is_send_sync_clone<T: Send + 'static>() {
    is_send_sync::<Trust<T>>();
    is_clone::<Trust<T>>();
}

#[test]
fn the_contract_compiles() {
    // 3.1 Runtime.
    let _: fn() -> RuntimeBuilder = Runtime::builder;
    let _: fn(RuntimeBuilder, usize) -> RuntimeBuilder = RuntimeBuilder::workers;
    let _: fn(RuntimeBuilder) -> Result<&'static Runtime, RuntimeError> = RuntimeBuilder::build;
    let _: fn(&Runtime) -> usize = Runtime::workers;
    let _: fn(&Runtime, usize) -> Trustee = Runtime::trustee;
    let _: fn() -> &'static Runtime = runtime;
    // Trustee.
    is_clone_copy::<Trustee>();
    is_send_sync::<Trustee>();
    let _: fn(&Trustee, String) -> Trust<String> = Trustee::entrust::<String>;
    let _: fn(&Trustee) -> usize = Trustee::index;
    let _: fn() -> Trustee = local_trustee;
    let _: fn(Vec<u8>) -> Trust<Vec<u8>> = entrust::<Vec<u8>>;
    // Trust<T>: Send + Sync + Clone, also over a `T` that is `Send` but not `Sync`.
    trust_is_send_sync_clone::<u64>();
    trust_is_send_sync_clone::<Cell<u64>>();
    let _ = apply_shape::<u64, u64, fn(&mut u64) -> u64>;
    let _ = apply_with_shape::<u64, Vec<u8>, usize, fn(&mut u64, Vec<u8>) -> usize>;
    let _ = apply_then_shape::<u64, u64, fn(&mut u64) -> u64, fn(u64)>;
    let _ = trust_trustee_shape::<u64>;
    let _ = spawn_shape::<fn() -> u8, u8>;
    let _: fn(Fiber<u8>) -> std::thread::Result<u8> = Fiber::join;
    let _: fn() = wait_pending;
    // Latch.
    let _: fn(u8) -> Latch<u8> = Latch::new;
    let _ = latch_lock_shape::<u8>;
    let _ = launch_shape::<u8, u8, fn(&Latch<u8>) -> u8>;

    // 3.3 keys and locks, by value or `&mut`.
    let _: fn() -> Option<ThreadKey> = ThreadKey::get;

    // 3.4 GhostCell<T>: Sync iff T: Send + Sync; Send iff T: Send.
    is_send_sync::<GhostCell<'static, u32>>();
    assert_not_sync!(GhostCell<'static, Cell<u32>>); // Send, not Sync
    assert_not_sync!(GhostCell<'static, std::sync::MutexGuard<'static, u32>>); // Sync, not Send
    let _: fn(u32) -> GhostCell<'static, u32> = GhostCell::new;
    let _: fn(GhostCell<'static, u32>) -> u32 = GhostCell::into_inner;
    let _: for<'a> fn(&'a mut u32) -> &'a mut GhostCell<'static, u32> = GhostCell::from_mut;

    // 3.6 net.
    let _: fn(&str) -> std::io::Result<trust_core::net::TcpListener> =
        |a| trust_core::net::TcpListener::bind(a);
    let _: fn(
        &trust_core::net::TcpListener,
    ) -> std::io::Result<(trust_core::net::TcpStream, std::net::SocketAddr)> =
        trust_core::net::TcpListener::accept;
    let _: fn(&str) -> std::io::Result<trust_core::net::TcpStream> =
        |a| trust_core::net::TcpStream::connect(a);
    fn read_write<S: std::io::Read + std::io::Write>() {}
    read_write::<trust_core::net::TcpStream>();

    // 3.7 halo parity.
    let _ = (
        GhostAtomicBool::new(false),
        GhostAtomicU32::new(0),
        GhostAtomicU64::new(0),
        GhostAtomicUsize::new(0),
    );
    let _: fn() -> &'static GhostToken<'static> = static_token;
    is_send_sync::<GhostToken<'static>>();
    is_send_sync::<GhostAtomicBitset<'static>>();
    is_send_sync::<GhostTreiberStack<'static>>();
    is_send_sync::<GhostStealer<'static>>();
    is_clone::<GhostStealer<'static>>();
    fn is_send<T: Send>() {}
    is_send::<GhostChaseLevDeque<'static>>();
    assert_not_sync!(GhostChaseLevDeque<'static>); // the owner handle moves, never shared
    let _: fn(&GhostTreiberStack<'static>, &[usize]) = GhostTreiberStack::push_batch;
    let _: fn(&GhostChaseLevDeque<'static>) -> GhostStealer<'static> = GhostChaseLevDeque::stealer;
    let _: fn(&GhostStealer<'static>) -> Option<usize> = GhostStealer::steal;
}

// ---------------------------------------------------------------------------------------------------------
// 3.1 behaviour.

#[test]
fn trustees_are_numbered_and_out_of_range_panics_clearly() {
    let rt = common::rt();
    assert_eq!(rt.workers(), 2);
    assert_eq!((rt.trustee(0).index(), rt.trustee(1).index()), (0, 1));
    let msg = std::panic::catch_unwind(|| rt.trustee(2)).map_err(common::panic_message);
    let msg = msg.unwrap_err();
    assert!(msg.contains('2'), "{msg}");
    // From a plain thread: one of the runtime's trustees.
    assert!(local_trustee().index() < 2);
    // One runtime per process: `runtime()` is the one built, and a second build fails.
    assert!(std::ptr::eq(runtime(), rt));
    assert!(matches!(
        Runtime::builder().workers(1).build(),
        Err(RuntimeError::AlreadyStarted)
    ));
}

#[test]
fn entrust_from_a_fiber_lands_on_its_own_worker() {
    common::rt();
    let (here, on) = spawn(|| {
        let t = entrust(5u32);
        (local_trustee(), t.trustee())
    })
    .join()
    .unwrap();
    assert_eq!(here, on);
    let t = common::rt().trustee(1).entrust(7u8);
    assert_eq!(t.trustee().index(), 1);
}

#[test]
fn apply_with_and_apply_then_give_exact_results() {
    common::rt();
    let t = common::rt().trustee(0).entrust(Vec::<u32>::new());
    let len = t.apply_with(
        |v, more: Vec<u32>| {
            v.extend(more);
            v.len()
        },
        vec![1, 2, 3],
    );
    assert_eq!(len, 3);
    let issuer = std::thread::current().id();
    let seen = Rc::new(RefCell::new(Vec::new()));
    for i in 0..4u32 {
        let s = seen.clone();
        t.apply_then(
            move |v| {
                v.push(i);
                v.iter().sum::<u32>()
            },
            move |sum| {
                s.borrow_mut()
                    .push((sum, std::thread::current().id() == issuer))
            },
        );
    }
    wait_pending();
    assert_eq!(
        *seen.borrow(),
        [(6, true), (7, true), (9, true), (12, true)]
    );
}

#[test]
fn a_fiber_joins_with_its_result_or_its_panic() {
    common::quiet();
    assert_eq!(spawn(|| 6 * 7).join().unwrap(), 42);
    let err = spawn(|| -> u8 { panic!("fiber says no") })
        .join()
        .unwrap_err();
    assert_eq!(common::panic_message(err), "fiber says no");
}

#[test]
fn the_last_trust_drops_the_value_once_on_its_trustee() {
    common::rt();
    struct OnDrop(Arc<AtomicUsize>, Arc<std::sync::Mutex<Option<String>>>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            *self.1.lock().unwrap() = std::thread::current().name().map(str::to_owned);
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let at = Arc::new(std::sync::Mutex::new(None));
    let t = common::rt()
        .trustee(1)
        .entrust(OnDrop(drops.clone(), at.clone()));
    let clones: Vec<_> = (0..5).map(|_| t.clone()).collect();
    drop(t);
    drop(clones);
    common::eventually("the property is dropped", || {
        drops.load(Ordering::SeqCst) == 1
    });
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    let name = at.lock().unwrap().clone().unwrap_or_default();
    assert!(name.starts_with("trust-worker"), "dropped on {name:?}");
}

#[test]
fn launched_fibers_share_the_latch_and_apply_sees_their_work() {
    common::rt();
    let l = common::rt().trustee(0).entrust(Latch::new(10u32));
    let r = l.launch(|latch| {
        let mut g = latch.lock();
        *g += 1;
        *g
    });
    assert_eq!(r, 11);
    assert_eq!(l.apply(|latch| *latch.lock()), 11);
}

// ---------------------------------------------------------------------------------------------------------
// 3.2 `#[entrust]`: the contract's example, verbatim, in a module of its own (stubs need no import).

mod bank {
    use trust_core::entrust;

    #[entrust]
    pub struct Account {
        pub(crate) balance: i64,
        pub(crate) memo: String,
    }

    #[entrust]
    impl Account {
        pub fn deposit(&mut self, amount: i64) -> i64 {
            self.balance += amount;
            self.balance
        }
        pub fn balance(&self) -> i64 {
            self.balance
        }
        pub fn set_memo(&mut self, memo: &str) {
            self.memo = memo.to_owned()
        }
        /// Cannot be delegated (`self` by value): left out.
        #[entrust(skip)]
        pub fn close(self) -> i64 {
            self.balance
        }
    }
}

#[test]
fn entrust_stubs_as_in_the_contract() {
    common::rt();
    let acct: Trust<bank::Account> = entrust(bank::Account {
        balance: 0,
        memo: String::new(),
    });
    let d: i64 = acct.deposit(10);
    assert_eq!(d, 10);
    let now = Rc::new(Cell::new(0));
    let n = now.clone();
    acct.deposit_then(5, move |b| n.set(b));
    wait_pending();
    assert_eq!(now.get(), 15);
    let () = acct.set_memo("rent");
    assert_eq!(acct.balance(), 15);
    assert_eq!(acct.apply(|a| a.memo.clone()), "rent");
    let skipped = bank::Account {
        balance: 3,
        memo: String::new(),
    };
    assert_eq!(skipped.close(), 3, "a skipped method stays a plain method");
}

// ---------------------------------------------------------------------------------------------------------
// 3.3 locks.

#[test]
fn lock_all_as_in_the_contract() {
    let mut key = ThreadKey::get().expect("one key per thread");
    assert!(ThreadKey::get().is_none(), "the key is out");
    let (a, b, c) = (Mutex::new(1), Mutex::new(2), RwLock::new(String::new()));
    {
        let (mut ga, gb, gc) = lock_all!(&mut key, a, b, read c);
        *ga += *gb;
        assert_eq!((*ga, *gb, gc.as_str()), (3, 2, ""));
    }
    let g = a.lock(&mut key);
    assert_eq!(*g, 3);
}

#[test]
fn happylock_parity() {
    let key = ThreadKey::get().unwrap();
    let (m, rw) = (Mutex::new(1u32), RwLock::new(5u32));
    // Keys by value: the guard keeps the key, `unlock` gives it back.
    let g = m.lock(key);
    let key = Mutex::unlock(g);
    let g = m.try_lock(key).unwrap();
    let key = Mutex::unlock(g);
    let r = rw.read(key);
    let key = RwLock::unlock_read(r);
    let r = rw.try_read(key).unwrap();
    let key = RwLock::unlock_read(r);
    let mut w = rw.write(key);
    *w += 1;
    let key = RwLock::unlock_write(w);
    let w = rw.try_write(key).unwrap();
    let mut key = RwLock::unlock_write(w);
    assert_eq!(*rw.read(&mut key), 6);

    // Collections: owned, by reference, checked for duplicates, retrying.
    let owned = LockCollection::new((Mutex::new(1u8), Mutex::new(2u8)));
    {
        let mut g = owned.lock(&mut key);
        *g.0 += *g.1;
        assert_eq!(*g.0, 3);
    }
    let pair = (Mutex::new(4u8), Mutex::new(5u8));
    let by_ref = LockCollection::new_ref(&pair);
    assert_eq!(*by_ref.lock(&mut key).1, 5);
    assert!(LockCollection::try_new((&m, &m)).is_none(), "duplicate");
    assert!(LockCollection::try_new((&m, &pair.0)).is_some());
    let o = OwnedLockCollection::new([Mutex::new(7u8), Mutex::new(8u8)]);
    assert_eq!(*o.lock(&mut key)[1], 8);
    let rc = RetryingLockCollection::new((Mutex::new(1u8), Mutex::new(2u8)));
    let g = rc.try_lock(&mut key).unwrap();
    assert_eq!(*g.0 + *g.1, 3);
    drop(g);

    // The same lock twice through references the macro cannot see through: an error, nothing held.
    let (r1, r2) = (&m, &m);
    let e = try_lock_all!(&mut key, *r1, *r2).err();
    assert_eq!(
        e,
        Some(LockAllError::Duplicate {
            first: 0,
            second: 1
        })
    );
    assert!(!m.is_locked());

    // `lock_all!` (blocking) on the same: a clear runtime error, nothing left held.
    let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _g = lock_all!(&mut key, *r1, *r2);
    }))
    .map_err(common::panic_message)
    .unwrap_err();
    assert!(p.starts_with("lock_all!"), "{p}");
    assert!(!m.is_locked());
    assert_eq!(*m.lock(&mut key), 1);
}

lock_ranks! {
    pub Ledger;
    pub Account;
}

#[test]
fn ranked_locks_nest_upward() {
    let ledger: RwLock<Vec<i64>, Ledger> = RwLock::ranked(Vec::new());
    let (alice, bob): (Mutex<i64, Account>, Mutex<i64, Account>) =
        (Mutex::ranked(10), Mutex::ranked(0));
    let mut key = ThreadKey::get().unwrap();
    let (mut l, mut nested) = lock_all!(&mut key, ledger; nest);
    let (mut a, mut b) = lock_all!(&mut nested, alice, bob);
    *a -= 5;
    *b += 5;
    l.push(5);
    assert_eq!((*a, *b, l.len()), (5, 5, 1));
}

// ---------------------------------------------------------------------------------------------------------
// 3.4 ghost.

#[test]
fn ghost_cell_parity() {
    GhostToken::new(|mut token| {
        let a = GhostCell::new(1u32);
        assert_eq!(*a.borrow(&token), 1);
        *a.borrow_mut(&mut token) += 1;
        assert_eq!(a.replace(10, &mut token), 2);
        assert_eq!(a.take(&mut token), 10);
        let b = GhostCell::new(7u32);
        a.swap(&b, &mut token).unwrap();
        // As in ghost-cell 0.2: a cell swapped with itself is a no-op.
        a.swap(&a, &mut token).unwrap();
        assert_eq!((*a.borrow(&token), *b.borrow(&token)), (7, 0));
        let mut c = GhostCell::new(3u32);
        *c.get_mut() = 4;
        assert_eq!(c.into_inner(), 4);
        let mut raw = [1u32, 2, 3];
        let cells = GhostCell::from_mut(&mut raw[..]).as_slice_of_cells();
        *cells[2].borrow_mut(&mut token) = 30;
        let (x, y) = (&cells[0], &cells[1]).borrow_mut(&mut token).unwrap();
        std::mem::swap(x, y);
        let err: GhostAliasingError = (&a, &b, &a).borrow_mut(&mut token).unwrap_err();
        assert_eq!((err.first(), err.second()), (0, 2));
        let (p, q) = (&a, &b).borrow(&token);
        assert_eq!((*p, *q), (7, 0));
        assert_eq!(raw, [2, 1, 30]);
    });
}

// ---------------------------------------------------------------------------------------------------------
// 3.5 interval.

#[test]
fn interval_try_fails_holding_nothing_and_async_is_cancellable() {
    let lock = IntervalRwLock::new(vec![0u32; 8]);
    let boxed: IntervalRwLock<u8> = IntervalRwLock::new(vec![1u8; 3].into_boxed_slice());
    assert_eq!(&*boxed.read(..), &[1, 1, 1]);
    {
        let mut w = lock.write(2..5);
        w.fill(9);
        assert!(lock.try_read(4..6).is_err());
        assert!(lock.try_write(0..3).is_err());
        assert_eq!(lock.held(), 1, "a failed try leaves nothing held");
        assert_eq!(lock.queued(), 0, "nor queued");
        let mut fut = lock.write_async(3..4);
        let polled = futures_lite::future::block_on(futures_lite::future::poll_once(&mut fut));
        assert!(polled.is_none());
        assert_eq!(lock.queued(), 1);
        drop(fut);
        assert_eq!(lock.queued(), 0, "a dropped future withdraws its request");
        let r = lock.try_read(5..8).unwrap();
        assert_eq!(&*r, &[0, 0, 0]);
    }
    let r = futures_lite::future::block_on(lock.read_async(0..8));
    assert_eq!(&*r, &[0, 0, 9, 9, 9, 0, 0, 0]);
}

// ---------------------------------------------------------------------------------------------------------
// 3.6 net: a fiber echoes over loopback.

#[test]
fn a_fiber_serves_a_tcp_echo() {
    use std::io::{Read, Write};
    common::rt();
    let listener = trust_core::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        buf
    });
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    c.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    assert_eq!(&server.join().unwrap(), b"ping");
}

// ---------------------------------------------------------------------------------------------------------
// 3.7 halo parity.

#[test]
fn halo_parity() {
    GhostToken::new(|token| {
        let bits = GhostAtomicBitset::new(100);
        assert_eq!(bits.len_bits(), 100);
        assert!(!bits.test_and_set(64));
        assert!(bits.test_and_set(64));
        assert_eq!(bits.count_ones(), 1);

        let stack = GhostTreiberStack::new(8);
        stack.push(1);
        stack.push_batch(&[2, 3, 4]);
        let popped: Vec<_> = std::iter::from_fn(|| stack.pop()).collect();
        assert_eq!(popped.len(), 4);
        assert_eq!(popped[3], 1, "the first push comes out last");

        let owner = GhostChaseLevDeque::new(4);
        let stealer = owner.stealer();
        let thief = stealer.clone();
        for j in 1..=3 {
            owner.push_bottom(j).unwrap();
        }
        assert_eq!(stealer.steal(), Some(1));
        assert_eq!(thief.steal(), Some(2));
        assert_eq!(owner.pop_bottom(), Some(3));
        assert_eq!(owner.pop_bottom(), None);

        let calls = Cell::new(0);
        let lazy = GhostLazyLock::new(|| {
            calls.set(calls.get() + 1);
            41 + 1
        });
        assert_eq!(lazy.get(&token), None);
        assert_eq!((*lazy.force(&token), *lazy.force(&token)), (42, 42));
        assert_eq!(calls.get(), 1);

        let n = GhostAtomicUsize::new(1);
        assert_eq!(n.fetch_add(2, Ordering::SeqCst), 1);
        assert_eq!(n.load(Ordering::SeqCst), 3);
    });
    static CELL: GhostCell<'static, u32> = GhostCell::new(5);
    assert_eq!(*CELL.borrow(static_token()), 5);
    assert_eq!(with_static_token(|t| *CELL.borrow(t)), 5);
    // SAFETY: no other thread of this test binary touches the static token.
    let v = unsafe { with_static_token_mut(|t| *CELL.borrow_mut(t) + 1) };
    assert_eq!(v, 6);
}

/// `trust_core::prelude::*` names the delegation API (and both `entrust`s) without clashing with std's.
#[test]
fn the_prelude_names_the_delegation_api() {
    mod user {
        use std::sync::Mutex;
        use trust_core::prelude::*;

        #[entrust]
        pub struct Bag(Vec<u32>);

        #[entrust]
        impl Bag {
            pub fn put(&mut self, n: u32) -> usize {
                self.0.push(n);
                self.0.len()
            }
        }

        pub fn run() -> (usize, Vec<u32>, u32) {
            let rt: &Runtime = runtime();
            let trustee: Trustee = local_trustee();
            assert!(trustee.index() < rt.workers());
            let bag: Trust<Bag> = entrust(Bag(Vec::new()));
            let fiber: Fiber<usize> = spawn({
                let bag = bag.clone();
                move || bag.put(7)
            });
            let first = fiber.join().unwrap();
            bag.put_then(8, |_| {});
            wait_pending();
            let latched: Trust<Latch<u32>> = entrust(Latch::new(5));
            let std_mutex = Mutex::new(latched.launch(|l| *l.lock() + 1));
            (
                first,
                bag.apply(|b| b.0.clone()),
                *std_mutex.lock().unwrap(),
            )
        }
    }
    assert_eq!(user::run(), (1, vec![7, 8], 6));
}
