//! Review 65: `lock_all!` / `try_lock_all!` expansion semantics and happylock-user expectations.
//! Every argument (and the key) is evaluated exactly once, in the order written, before any lock is
//! taken; aliases, runtime indices, slices, `Box`/`Arc` and fields naming one lock are caught at run time
//! with the documented message (never a self-deadlock, never two `&mut`); hygiene (arguments named like
//! the expansion's own bindings, `macro_rules!`, generic functions, `async`, `#[no_implicit_prelude]`,
//! shadowed `Option`/`Result`/`core`/`trust_core`); 1/14/15/32/64 locks, mixed ranks and read/write,
//! `; nest` with many arguments, trailing commas; `try_lock_all!` releasing everything on failure.

// Deliberate: `v[0 + 0]` and a closure called where it is written are arguments the compile-time duplicate
// check cannot see through; `is_ok` then `unwrap` is the shape that lets a failed `try_lock_all!`'s key go.
#![allow(
    clippy::identity_op,
    clippy::redundant_closure_call,
    clippy::unnecessary_unwrap
)]

mod common;

use common::panic_message;
use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Barrier, Once};

use trust_core::lock::{LockAfter, LockAllError, LockKey, Mutex, RwLock, ThreadKey};
use trust_core::{lock_all, lock_ranks, try_lock_all};

lock_ranks! {
    pub Ledger;
    pub Account;
    pub Audit;
    pub Top;
}

/// The documented panic of `lock_all!` for a duplicate, 1-based positions after the key.
fn dup_msg(first: usize, second: usize) -> String {
    format!(
        "lock_all!: locks #{first} and #{second} (counting from 1 after the key) are the same lock; a thread \
         would wait for itself forever: pass each lock once"
    )
}

fn dup(first: usize, second: usize) -> Option<LockAllError> {
    Some(LockAllError::Duplicate { first, second })
}

/// Hands out a different lock on each call (round robin over `modulo` of them) and counts the calls.
struct Pool {
    locks: [Mutex<i32>; 3],
    calls: Cell<usize>,
    modulo: usize,
}

impl Pool {
    fn new(modulo: usize) -> Self {
        Pool {
            locks: [Mutex::new(10), Mutex::new(11), Mutex::new(12)],
            calls: Cell::new(0),
            modulo,
        }
    }
    fn next(&self) -> &Mutex<i32> {
        let i = self.calls.get();
        self.calls.set(i + 1);
        &self.locks[i % self.modulo]
    }
}

#[test]
fn key_and_arguments_are_evaluated_once_each_in_the_order_written() {
    let mut key = ThreadKey::get().unwrap();
    let log = RefCell::new(Vec::new());
    let (a, b, c) = (Mutex::new(1), Mutex::new(2), RwLock::new(3));
    {
        let (ga, gc, gb) = lock_all!(
            {
                log.borrow_mut().push("key");
                &mut key
            },
            *{
                log.borrow_mut().push("a");
                &a
            },
            read * {
                log.borrow_mut().push("c");
                &c
            },
            *{
                log.borrow_mut().push("b");
                &b
            },
        );
        assert_eq!((*ga, *gc, *gb), (1, 3, 2));
    }
    assert_eq!(*log.borrow(), ["key", "a", "c", "b"]);
    assert!(!a.is_locked() && !b.is_locked() && !c.is_locked());
}

#[test]
fn an_argument_that_returns_a_different_lock_each_call_is_called_once_per_argument() {
    let mut key = ThreadKey::get().unwrap();
    let pool = Pool::new(3);
    {
        let (x, y, z) = lock_all!(&mut key, *pool.next(), *pool.next(), *pool.next());
        assert_eq!((*x, *y, *z), (10, 11, 12));
    }
    assert_eq!(pool.calls.get(), 3);
    {
        let (x, y) = try_lock_all!(&mut key, *pool.next(), *pool.next()).unwrap();
        assert_eq!((*x, *y), (10, 11));
    }
    assert_eq!(pool.calls.get(), 5);

    // Round robin over two: the third call returns lock 0 again, a run-time duplicate.
    let pool = Pool::new(2);
    let r = catch_unwind(AssertUnwindSafe(|| {
        let _g = lock_all!(&mut key, *pool.next(), *pool.next(), *pool.next());
    }));
    assert_eq!(panic_message(r.unwrap_err()), dup_msg(1, 3));
    assert_eq!(pool.calls.get(), 3);
    assert_eq!(
        try_lock_all!(&mut key, *pool.next(), *pool.next(), *pool.next()).err(),
        dup(0, 2)
    );
    assert_eq!(pool.calls.get(), 6);
    assert!(pool.locks.iter().all(|l| !l.is_locked()));
    let (p, q) = lock_all!(&mut key, pool.locks[1], pool.locks[0]);
    assert_eq!((*p, *q), (11, 10));
}

#[test]
fn a_counter_in_an_argument_is_incremented_once() {
    let mut key = ThreadKey::get().unwrap();
    let v = [Mutex::new(0), Mutex::new(1), Mutex::new(2), Mutex::new(3)];
    let mut i = 0;
    {
        let (a, b) = lock_all!(
            &mut key,
            v[{
                i += 1;
                i
            }],
            v[{
                i += 1;
                i
            }]
        );
        assert_eq!((*a, *b), (1, 2));
    }
    assert_eq!(i, 2);
}

#[test]
fn a_panicking_argument_leaves_nothing_locked_and_the_later_ones_unevaluated() {
    let mut key = ThreadKey::get().unwrap();
    let (a, b, c) = (Mutex::new(1), Mutex::new(2), Mutex::new(3));
    let evaluated = Cell::new(false);
    let r = catch_unwind(AssertUnwindSafe(|| {
        let _g = lock_all!(
            &mut key,
            a,
            *{
                if !evaluated.get() {
                    panic!("argument 2 panicked");
                }
                &b
            },
            *{
                evaluated.set(true);
                &c
            }
        );
    }));
    assert_eq!(panic_message(r.unwrap_err()), "argument 2 panicked");
    assert!(!evaluated.get());
    assert!(!a.is_locked() && !b.is_locked() && !c.is_locked());
    let r = catch_unwind(AssertUnwindSafe(|| {
        let _g = try_lock_all!(&mut key, a, *{
            panic!("try argument panicked");
            #[allow(unreachable_code)]
            &b
        });
    }));
    assert_eq!(panic_message(r.unwrap_err()), "try argument panicked");
    assert!(!a.is_locked());
    let (x, y, z) = lock_all!(&mut key, a, b, c);
    assert_eq!((*x, *y, *z), (1, 2, 3));
}

#[test]
fn aliases_through_references_are_runtime_duplicates() {
    let mut key = ThreadKey::get().unwrap();
    let a = Mutex::new(1);
    let b = Mutex::new(2);
    let r = &a;
    let rr = &r;
    let r = catch_unwind(AssertUnwindSafe(|| {
        let _g = lock_all!(&mut key, a, *r);
    }));
    assert_eq!(panic_message(r.unwrap_err()), dup_msg(1, 2));
    let r2 = &a;
    let res = catch_unwind(AssertUnwindSafe(|| {
        let _g = lock_all!(&mut key, b, r2, a);
    }));
    assert_eq!(panic_message(res.unwrap_err()), dup_msg(2, 3));
    assert_eq!(try_lock_all!(&mut key, a, r2).err(), dup(0, 1));
    assert_eq!(try_lock_all!(&mut key, **rr, b, a).err(), dup(0, 2));
    assert_eq!(try_lock_all!(&mut key, rr, a).err(), dup(0, 1));
    assert!(!a.is_locked() && !b.is_locked());
    let (x, y) = lock_all!(&mut key, b, rr);
    assert_eq!((*x, *y), (2, 1));
}

#[test]
fn runtime_indices_slices_and_vecs_are_runtime_duplicates() {
    let mut key = ThreadKey::get().unwrap();
    let v = [Mutex::new(0), Mutex::new(1), Mutex::new(2), Mutex::new(3)];
    let (i, j) = (2, 2);
    let r = catch_unwind(AssertUnwindSafe(|| {
        let _g = lock_all!(&mut key, v[i], v[j]);
    }));
    assert_eq!(panic_message(r.unwrap_err()), dup_msg(1, 2));
    let s: &[Mutex<i32>] = &v[1..];
    assert_eq!(try_lock_all!(&mut key, v[3], s[2]).err(), dup(0, 1));
    assert_eq!(try_lock_all!(&mut key, s[0], v[0], v[1]).err(), dup(0, 2));
    assert_eq!(
        try_lock_all!(&mut key, v[0], v[1], v[0 + 0]).err(),
        dup(0, 2)
    );
    let ks = [0, 1, 0, 1];
    assert_eq!(
        try_lock_all!(&mut key, v[ks[0]], v[ks[1]], v[ks[2]], v[ks[3]]).err(),
        dup(0, 2)
    );
    let w: Vec<Mutex<i32>> = (0..4).map(Mutex::new).collect();
    assert_eq!(try_lock_all!(&mut key, w[3], w[i + 1]).err(), dup(0, 1));
    assert!(v.iter().chain(&w).all(|m| !m.is_locked()));
    let (a, b) = lock_all!(&mut key, w[i], s[i]);
    assert_eq!((*a, *b), (2, 3));
}

struct Pair {
    x: Mutex<i32>,
    y: Mutex<i32>,
}

#[test]
fn box_arc_and_struct_fields_naming_one_lock_are_runtime_duplicates() {
    let mut key = ThreadKey::get().unwrap();
    let bx = Box::new(Mutex::new(5));
    let p: &Mutex<i32> = &bx;
    assert_eq!(try_lock_all!(&mut key, bx, *p).err(), dup(0, 1));
    assert_eq!(try_lock_all!(&mut key, *bx, p).err(), dup(0, 1));
    let arc = Arc::new(RwLock::new(1));
    let arc2 = Arc::clone(&arc);
    assert_eq!(
        try_lock_all!(&mut key, read arc, read arc2).err(),
        dup(0, 1)
    );
    assert_eq!(try_lock_all!(&mut key, arc, read * arc2).err(), dup(0, 1));
    let r = catch_unwind(AssertUnwindSafe(|| {
        let _g = lock_all!(&mut key, read arc, arc2);
    }));
    assert_eq!(panic_message(r.unwrap_err()), dup_msg(1, 2));
    let s = Pair {
        x: Mutex::new(7),
        y: Mutex::new(8),
    };
    let t = &s;
    assert_eq!(try_lock_all!(&mut key, s.x, t.x).err(), dup(0, 1));
    assert!(!bx.is_locked() && !arc.is_locked() && !s.x.is_locked());
    let (g1, g2, g3, g4) = lock_all!(&mut key, s.y, t.x, bx, read arc2);
    assert_eq!((*g1, *g2, *g3, *g4), (8, 7, 5, 1));
}

#[test]
fn duplicates_among_ranked_locks_are_found_inside_their_rank_and_reported_by_position() {
    let mut key = ThreadKey::get().unwrap();
    let ledger: Mutex<i32, Ledger> = Mutex::ranked(1);
    let acct: Mutex<i32, Account> = Mutex::ranked(2);
    let audit: RwLock<i32, Audit> = RwLock::ranked(3);
    let r = &acct;
    assert_eq!(
        try_lock_all!(&mut key, ledger, acct, audit, r).err(),
        dup(1, 3)
    );
    let ra = &audit;
    assert_eq!(
        try_lock_all!(&mut key, read ra, acct, read audit).err(),
        dup(0, 2)
    );
    let r = catch_unwind(AssertUnwindSafe(|| {
        let _g = lock_all!(&mut key, audit, ledger, read ra);
    }));
    assert_eq!(panic_message(r.unwrap_err()), dup_msg(1, 3));
    assert!(!ledger.is_locked() && !acct.is_locked() && !audit.is_locked());
}

#[test]
fn one_duplicate_among_64_locks_names_its_two_positions() {
    let mut key = ThreadKey::get().unwrap();
    let v: Vec<Mutex<usize>> = (0..64).map(Mutex::new).collect();
    // Argument 11 (position 10) is v[53]; argument 51 (position 50) is v[13]. Make position 50 v[53].
    let idx = |k: usize| if k == 13 { 53 } else { k };
    assert_eq!(
        try_lock_all!(
            &mut key,
            v[idx(63)],
            v[idx(62)],
            v[idx(61)],
            v[idx(60)],
            v[idx(59)],
            v[idx(58)],
            v[idx(57)],
            v[idx(56)],
            v[idx(55)],
            v[idx(54)],
            v[idx(53)],
            v[idx(52)],
            v[idx(51)],
            v[idx(50)],
            v[idx(49)],
            v[idx(48)],
            v[idx(47)],
            v[idx(46)],
            v[idx(45)],
            v[idx(44)],
            v[idx(43)],
            v[idx(42)],
            v[idx(41)],
            v[idx(40)],
            v[idx(39)],
            v[idx(38)],
            v[idx(37)],
            v[idx(36)],
            v[idx(35)],
            v[idx(34)],
            v[idx(33)],
            v[idx(32)],
            v[idx(31)],
            v[idx(30)],
            v[idx(29)],
            v[idx(28)],
            v[idx(27)],
            v[idx(26)],
            v[idx(25)],
            v[idx(24)],
            v[idx(23)],
            v[idx(22)],
            v[idx(21)],
            v[idx(20)],
            v[idx(19)],
            v[idx(18)],
            v[idx(17)],
            v[idx(16)],
            v[idx(15)],
            v[idx(14)],
            v[idx(13)],
            v[idx(12)],
            v[idx(11)],
            v[idx(10)],
            v[idx(9)],
            v[idx(8)],
            v[idx(7)],
            v[idx(6)],
            v[idx(5)],
            v[idx(4)],
            v[idx(3)],
            v[idx(2)],
            v[idx(1)],
            v[idx(0)]
        )
        .err(),
        dup(10, 50)
    );
    assert!(v.iter().all(|m| !m.is_locked()));
}

#[test]
fn guards_come_back_in_argument_order_whatever_the_lock_order() {
    let mut key = ThreadKey::get().unwrap();
    let v = [Mutex::new(0), Mutex::new(1), Mutex::new(2)];
    {
        let (mut g2, g0, g1) = lock_all!(&mut key, v[2], v[0], v[1]);
        *g2 += 10;
        assert_eq!((*g2, *g0, *g1), (12, 0, 1));
    }
    let ledger: Mutex<&str, Ledger> = Mutex::ranked("ledger");
    let acct: Mutex<&str, Account> = Mutex::ranked("acct");
    let audit: RwLock<&str, Audit> = RwLock::ranked("audit");
    let (au, le, ac) = lock_all!(&mut key, read audit, ledger, acct);
    assert_eq!((*au, *le, *ac), ("audit", "ledger", "acct"));
    drop((au, le, ac));
    assert_eq!(*v[2].lock(&mut key), 12);
}

#[test]
fn try_lock_all_releases_everything_it_took_and_the_key_is_usable_again() {
    let mut key = ThreadKey::get().unwrap();
    let v = [Mutex::new(0), Mutex::new(1), Mutex::new(2)];
    let c = RwLock::new(7);
    let ledger: Mutex<i32, Ledger> = Mutex::ranked(100);
    let audit: Mutex<i32, Audit> = Mutex::ranked(300);
    let (held, go) = (Barrier::new(2), Barrier::new(2));
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut k = ThreadKey::get().unwrap();
            let _g = lock_all!(&mut k, v[1], read c, audit);
            held.wait();
            go.wait();
        });
        held.wait();
        // Address order: v[0] is taken, then v[1] is busy; v[0] must be released, v[2] never taken.
        assert_eq!(
            try_lock_all!(&mut key, v[2], v[1], v[0]).err(),
            Some(LockAllError::WouldBlock)
        );
        assert!(!v[0].is_locked() && !v[2].is_locked());
        // Rank order: ledger is taken first, then audit is busy.
        assert_eq!(
            try_lock_all!(&mut key, audit, ledger).err(),
            Some(LockAllError::WouldBlock)
        );
        assert!(!ledger.is_locked());
        assert_eq!(
            try_lock_all!(&mut key, audit, ledger; nest).err().unwrap(),
            LockAllError::WouldBlock
        );
        assert!(!ledger.is_locked());
        // A duplicate is reported before anything is tried, even if the lock is busy.
        let i = 1;
        assert_eq!(try_lock_all!(&mut key, v[1], v[i]).err(), dup(0, 1));
        // Shared with the other thread's read hold: succeeds, exact values.
        {
            let (g0, gc, g2) = try_lock_all!(&mut key, v[0], read c, v[2]).unwrap();
            assert_eq!((*g0, *gc, *g2), (0, 7, 2));
        }
        // Exclusive on `c` fails; what was taken is released.
        assert_eq!(
            try_lock_all!(&mut key, v[0], c, v[2]).err(),
            Some(LockAllError::WouldBlock)
        );
        assert!(!v[0].is_locked() && !v[2].is_locked());
        // The key is usable again at once, also inside the `Err` arm of a match.
        // (Not in the `Err` arm of a `match` on it: the `Result` temporary keeps the key borrowed
        // there, E0499; see the report, /tmp/h84scratch/src/bin/ok_try_err_arm.rs.)
        let r = try_lock_all!(&mut key, v[0], v[1]);
        let error = r.as_ref().err().copied();
        drop(r);
        let (a, b) = lock_all!(&mut key, v[0], v[2]);
        assert_eq!((error, *a + *b), (Some(LockAllError::WouldBlock), 2));
        drop((a, b));
        go.wait();
    });
    let (a, b, mut cc, mut key2) = try_lock_all!(&mut key, v[0], v[1], c; nest).unwrap();
    *cc += 1;
    let (au,) = try_lock_all!(&mut key2, audit).unwrap();
    assert_eq!((*a, *b, *cc, *au), (0, 1, 8, 300));
}

#[test]
fn try_lock_all_with_nest_gives_a_usable_nested_key() {
    let mut key = ThreadKey::get().unwrap();
    let ledger: Mutex<Vec<i32>, Ledger> = Mutex::ranked(vec![]);
    let alice: Mutex<i32, Account> = Mutex::ranked(10);
    let bob: Mutex<i32, Account> = Mutex::ranked(0);
    let (mut log, mut nk) = try_lock_all!(&mut key, ledger; nest).unwrap();
    assert_eq!(format!("{nk:?}"), "NestedKey<adversarial_review65::Ledger>");
    let (mut a, mut b) = try_lock_all!(&mut nk, alice, bob).unwrap();
    *a -= 3;
    *b += 3;
    log.push(*a);
    assert_eq!((log.clone(), *a, *b), (vec![7], 7, 3));
}

#[test]
fn one_lock_gives_a_one_tuple() {
    let mut key = ThreadKey::get().unwrap();
    let m = Mutex::new(41);
    let (mut g,) = lock_all!(&mut key, m);
    *g += 1;
    drop(g);
    let (g,) = try_lock_all!(&mut key, m,).unwrap();
    assert_eq!(*g, 42);
}

#[test]
fn fourteen_and_fifteen_locks() {
    let mut key = ThreadKey::get().unwrap();
    let v: Vec<Mutex<usize>> = (0..15).map(Mutex::new).collect();
    {
        let (g0, g1, g2, g3, g4, g5, g6, g7, g8, g9, g10, g11, g12, g13) = lock_all!(
            &mut key, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11],
            v[12], v[13]
        );
        assert_eq!(
            [
                *g0, *g1, *g2, *g3, *g4, *g5, *g6, *g7, *g8, *g9, *g10, *g11, *g12, *g13
            ],
            std::array::from_fn::<usize, 14, _>(|i| i)
        );
    }
    {
        let (g0, g1, g2, g3, g4, g5, g6, g7, g8, g9, g10, g11, g12, g13, g14) = try_lock_all!(
            &mut key, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11],
            v[12], v[13], v[14],
        )
        .unwrap();
        assert_eq!(
            [
                *g0, *g1, *g2, *g3, *g4, *g5, *g6, *g7, *g8, *g9, *g10, *g11, *g12, *g13, *g14
            ],
            std::array::from_fn::<usize, 15, _>(|i| i)
        );
    }
}

#[test]
fn thirty_two_locks_named_in_reverse_with_try() {
    let mut key = ThreadKey::get().unwrap();
    let v: Vec<Mutex<usize>> = (0..32).map(Mutex::new).collect();
    {
        let (
            g0,
            g1,
            g2,
            g3,
            g4,
            g5,
            g6,
            g7,
            g8,
            g9,
            g10,
            g11,
            g12,
            g13,
            g14,
            g15,
            g16,
            g17,
            g18,
            g19,
            g20,
            g21,
            g22,
            g23,
            g24,
            g25,
            g26,
            g27,
            g28,
            g29,
            g30,
            g31,
        ) = try_lock_all!(
            &mut key, v[31], v[30], v[29], v[28], v[27], v[26], v[25], v[24], v[23], v[22], v[21],
            v[20], v[19], v[18], v[17], v[16], v[15], v[14], v[13], v[12], v[11], v[10], v[9],
            v[8], v[7], v[6], v[5], v[4], v[3], v[2], v[1], v[0]
        )
        .unwrap();
        assert_eq!(
            [
                *g0, *g1, *g2, *g3, *g4, *g5, *g6, *g7, *g8, *g9, *g10, *g11, *g12, *g13, *g14,
                *g15, *g16, *g17, *g18, *g19, *g20, *g21, *g22, *g23, *g24, *g25, *g26, *g27, *g28,
                *g29, *g30, *g31
            ],
            std::array::from_fn::<usize, 32, _>(|i| 31 - i)
        );
    }
    // One of them busy on another thread: nothing stays held.
    let (held, go) = (Barrier::new(2), Barrier::new(2));
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut k = ThreadKey::get().unwrap();
            let _g = v[20].lock(&mut k);
            held.wait();
            go.wait();
        });
        held.wait();
        assert_eq!(
            try_lock_all!(
                &mut key, v[31], v[30], v[29], v[28], v[27], v[26], v[25], v[24], v[23], v[22],
                v[21], v[20], v[19], v[18], v[17], v[16], v[15], v[14], v[13], v[12], v[11], v[10],
                v[9], v[8], v[7], v[6], v[5], v[4], v[3], v[2], v[1], v[0]
            )
            .err(),
            Some(LockAllError::WouldBlock)
        );
        let locked: Vec<usize> = (0..32).filter(|&i| v[i].is_locked()).collect();
        assert_eq!(locked, [20]);
        go.wait();
    });
}

#[test]
fn sixty_four_locks_named_in_reverse() {
    let mut key = ThreadKey::get().unwrap();
    let v: Vec<Mutex<usize>> = (0..64).map(Mutex::new).collect();
    {
        let (
            mut g0,
            mut g1,
            mut g2,
            mut g3,
            mut g4,
            mut g5,
            mut g6,
            mut g7,
            mut g8,
            mut g9,
            mut g10,
            mut g11,
            mut g12,
            mut g13,
            mut g14,
            mut g15,
            mut g16,
            mut g17,
            mut g18,
            mut g19,
            mut g20,
            mut g21,
            mut g22,
            mut g23,
            mut g24,
            mut g25,
            mut g26,
            mut g27,
            mut g28,
            mut g29,
            mut g30,
            mut g31,
            mut g32,
            mut g33,
            mut g34,
            mut g35,
            mut g36,
            mut g37,
            mut g38,
            mut g39,
            mut g40,
            mut g41,
            mut g42,
            mut g43,
            mut g44,
            mut g45,
            mut g46,
            mut g47,
            mut g48,
            mut g49,
            mut g50,
            mut g51,
            mut g52,
            mut g53,
            mut g54,
            mut g55,
            mut g56,
            mut g57,
            mut g58,
            mut g59,
            mut g60,
            mut g61,
            mut g62,
            mut g63,
        ) = lock_all!(
            &mut key, v[63], v[62], v[61], v[60], v[59], v[58], v[57], v[56], v[55], v[54], v[53],
            v[52], v[51], v[50], v[49], v[48], v[47], v[46], v[45], v[44], v[43], v[42], v[41],
            v[40], v[39], v[38], v[37], v[36], v[35], v[34], v[33], v[32], v[31], v[30], v[29],
            v[28], v[27], v[26], v[25], v[24], v[23], v[22], v[21], v[20], v[19], v[18], v[17],
            v[16], v[15], v[14], v[13], v[12], v[11], v[10], v[9], v[8], v[7], v[6], v[5], v[4],
            v[3], v[2], v[1], v[0]
        );
        *g0 += 1000;
        *g1 += 1000;
        *g2 += 1000;
        *g3 += 1000;
        *g4 += 1000;
        *g5 += 1000;
        *g6 += 1000;
        *g7 += 1000;
        *g8 += 1000;
        *g9 += 1000;
        *g10 += 1000;
        *g11 += 1000;
        *g12 += 1000;
        *g13 += 1000;
        *g14 += 1000;
        *g15 += 1000;
        *g16 += 1000;
        *g17 += 1000;
        *g18 += 1000;
        *g19 += 1000;
        *g20 += 1000;
        *g21 += 1000;
        *g22 += 1000;
        *g23 += 1000;
        *g24 += 1000;
        *g25 += 1000;
        *g26 += 1000;
        *g27 += 1000;
        *g28 += 1000;
        *g29 += 1000;
        *g30 += 1000;
        *g31 += 1000;
        *g32 += 1000;
        *g33 += 1000;
        *g34 += 1000;
        *g35 += 1000;
        *g36 += 1000;
        *g37 += 1000;
        *g38 += 1000;
        *g39 += 1000;
        *g40 += 1000;
        *g41 += 1000;
        *g42 += 1000;
        *g43 += 1000;
        *g44 += 1000;
        *g45 += 1000;
        *g46 += 1000;
        *g47 += 1000;
        *g48 += 1000;
        *g49 += 1000;
        *g50 += 1000;
        *g51 += 1000;
        *g52 += 1000;
        *g53 += 1000;
        *g54 += 1000;
        *g55 += 1000;
        *g56 += 1000;
        *g57 += 1000;
        *g58 += 1000;
        *g59 += 1000;
        *g60 += 1000;
        *g61 += 1000;
        *g62 += 1000;
        *g63 += 1000;
        assert_eq!(
            [
                *g0, *g1, *g2, *g3, *g4, *g5, *g6, *g7, *g8, *g9, *g10, *g11, *g12, *g13, *g14,
                *g15, *g16, *g17, *g18, *g19, *g20, *g21, *g22, *g23, *g24, *g25, *g26, *g27, *g28,
                *g29, *g30, *g31, *g32, *g33, *g34, *g35, *g36, *g37, *g38, *g39, *g40, *g41, *g42,
                *g43, *g44, *g45, *g46, *g47, *g48, *g49, *g50, *g51, *g52, *g53, *g54, *g55, *g56,
                *g57, *g58, *g59, *g60, *g61, *g62, *g63
            ],
            std::array::from_fn::<usize, 64, _>(|i| 1063 - i)
        );
    }
    assert!(v.iter().all(|m| !m.is_locked()));
    assert_eq!(*v[63].lock(&mut key), 1063);
}

#[test]
fn many_mixed_ranked_locks_with_nest() {
    let mut key = ThreadKey::get().unwrap();
    let cfg = RwLock::new(String::from("cfg"));
    let ledger: Mutex<i32, Ledger> = Mutex::ranked(-1);
    let accts: Vec<Mutex<usize, Account>> = (0..61).map(Mutex::ranked).collect();
    let audit: RwLock<i32, Audit> = RwLock::ranked(-3);
    let top: Mutex<i32, Top> = Mutex::ranked(-4);
    {
        // 64 arguments: accounts in reverse, the ledger and the config in the middle, audit read.
        let (
            h0,
            h1,
            h2,
            h3,
            h4,
            h5,
            h6,
            h7,
            h8,
            h9,
            h10,
            h11,
            h12,
            h13,
            h14,
            h15,
            h16,
            h17,
            h18,
            h19,
            h20,
            h21,
            h22,
            h23,
            h24,
            h25,
            h26,
            h27,
            h28,
            h29,
            ledg,
            h30,
            h31,
            h32,
            h33,
            h34,
            h35,
            h36,
            h37,
            h38,
            h39,
            h40,
            h41,
            h42,
            h43,
            h44,
            h45,
            h46,
            h47,
            h48,
            h49,
            h50,
            h51,
            h52,
            h53,
            h54,
            h55,
            h56,
            h57,
            h58,
            h59,
            h60,
            cfgg,
            aud,
            mut nk,
        ) = lock_all!(&mut key, accts[60], accts[59], accts[58], accts[57], accts[56], accts[55], accts[54], accts[53], accts[52], accts[51], accts[50], accts[49], accts[48], accts[47], accts[46], accts[45], accts[44], accts[43], accts[42], accts[41], accts[40], accts[39], accts[38], accts[37], accts[36], accts[35], accts[34], accts[33], accts[32], accts[31], ledger, accts[30], accts[29], accts[28], accts[27], accts[26], accts[25], accts[24], accts[23], accts[22], accts[21], accts[20], accts[19], accts[18], accts[17], accts[16], accts[15], accts[14], accts[13], accts[12], accts[11], accts[10], accts[9], accts[8], accts[7], accts[6], accts[5], accts[4], accts[3], accts[2], accts[1], accts[0], read cfg, read audit; nest);
        assert_eq!(format!("{nk:?}"), "NestedKey<adversarial_review65::Audit>");
        assert_eq!((*ledg, cfgg.len(), *aud), (-1, 3, -3));
        assert_eq!(
            [
                *h0, *h1, *h2, *h3, *h4, *h5, *h6, *h7, *h8, *h9, *h10, *h11, *h12, *h13, *h14,
                *h15, *h16, *h17, *h18, *h19, *h20, *h21, *h22, *h23, *h24, *h25, *h26, *h27, *h28,
                *h29, *h30, *h31, *h32, *h33, *h34, *h35, *h36, *h37, *h38, *h39, *h40, *h41, *h42,
                *h43, *h44, *h45, *h46, *h47, *h48, *h49, *h50, *h51, *h52, *h53, *h54, *h55, *h56,
                *h57, *h58, *h59, *h60
            ],
            std::array::from_fn::<usize, 61, _>(|i| 60 - i)
        );
        let (t,) = lock_all!(&mut nk, top);
        assert_eq!(*t, -4);
    }
    {
        // 15 arguments with `; nest` and a trailing comma before it, through try.
        let (ledg, h0, h1, h2, h3, h4, h5, h6, h7, h8, h9, h10, h11, h12, cfgg, nk) = try_lock_all!(&mut key, ledger, accts[0], accts[1], accts[2], accts[3], accts[4], accts[5], accts[6], accts[7], accts[8], accts[9], accts[10], accts[11], accts[12], read cfg, ; nest).unwrap();
        assert_eq!(
            format!("{nk:?}"),
            "NestedKey<adversarial_review65::Account>"
        );
        assert_eq!(
            (
                *ledg,
                [
                    *h0, *h1, *h2, *h3, *h4, *h5, *h6, *h7, *h8, *h9, *h10, *h11, *h12
                ]
            ),
            (-1, std::array::from_fn::<usize, 13, _>(|i| i))
        );
        drop(cfgg);
    }
}

#[test]
fn read_and_write_are_contextual_words_not_reserved() {
    let mut key = ThreadKey::get().unwrap();
    let read = Mutex::new(1);
    let write = RwLock::new(2);
    let c = RwLock::new(3);
    let pair = (RwLock::new(4), 5);
    let v = [RwLock::new(6)];
    {
        let (a, b) = lock_all!(&mut key, read, read write);
        assert_eq!((*a, *b), (1, 2));
    }
    {
        let (mut a, b) = lock_all!(&mut key, write read, write);
        *a += 10;
        assert_eq!((*a, *b), (11, 2));
    }
    {
        // (`read &c` does not compile when the guards are used: E0716, see the report.)
        let rc = &c;
        let (a, b, d, e) = lock_all!(&mut key, read *rc, read pair.0, read v[0], read write,);
        assert_eq!((*a, *b, *d, *e), (3, 4, 6, 2));
    }
    {
        let rc = &c;
        let (a, b) = try_lock_all!(&mut key, read *rc, read write).unwrap();
        assert_eq!((*a, *b), (3, 2));
    }
}

#[test]
fn arguments_named_like_the_expansion_s_own_bindings() {
    let mut __trust_key = ThreadKey::get().unwrap();
    let key = Mutex::new(1);
    let guard = Mutex::new(2);
    let plan = Mutex::new(3);
    let order = Mutex::new(4);
    let error = Mutex::new(5);
    let l0 = Mutex::new(6);
    let g0 = Mutex::new(7);
    let __trust_l0 = Mutex::new(8);
    let __trust_l1 = Mutex::new(9);
    #[allow(non_snake_case)]
    let K = Mutex::new(10);
    {
        let got = lock_all!(
            &mut __trust_key,
            key,
            guard,
            plan,
            order,
            error,
            l0,
            g0,
            __trust_l1,
            __trust_l0,
            K
        );
        assert_eq!(
            [
                *got.0, *got.1, *got.2, *got.3, *got.4, *got.5, *got.6, *got.7, *got.8, *got.9
            ],
            [1, 2, 3, 4, 5, 6, 7, 9, 8, 10]
        );
    }
    let (a, b, c) = try_lock_all!(&mut __trust_key, guard, __trust_l1, error).unwrap();
    assert_eq!((*a, *b, *c), (2, 9, 5));
}

fn generic_pair<K: Copy, L0: Copy>(key: &mut ThreadKey, a: &Mutex<K>, b: &Mutex<L0>) -> (K, L0) {
    let (x, y) = lock_all!(key, *a, *b);
    (*x, *y)
}

fn generic_rank<R: trust_core::lock::Rank>(
    key: &mut ThreadKey,
    a: &Mutex<i32, R>,
    b: &Mutex<i32, R>,
) -> i32 {
    let (x, y) = lock_all!(key, a, b);
    *x * 10 + *y
}

fn generic_key<G0: LockKey>(key: &mut G0, audit: &Mutex<i32, Audit>) -> i32
where
    Audit: LockAfter<G0::Held>,
{
    let (x,) = lock_all!(key, audit);
    *x
}

#[test]
fn inside_generic_functions_with_clashing_parameter_names() {
    let mut key = ThreadKey::get().unwrap();
    assert_eq!(
        generic_pair(&mut key, &Mutex::new('x'), &Mutex::new(2u8)),
        ('x', 2)
    );
    let (a, b): (Mutex<i32, Account>, Mutex<i32, Account>) = (Mutex::ranked(1), Mutex::ranked(2));
    assert_eq!(generic_rank(&mut key, &a, &b), 12);
    assert_eq!(generic_rank(&mut key, &Mutex::new(3), &Mutex::new(4)), 34);
    let audit: Mutex<i32, Audit> = Mutex::ranked(5);
    assert_eq!(generic_key(&mut key, &audit), 5);
    let ledger: Mutex<i32, Ledger> = Mutex::ranked(6);
    let (l, mut nk) = lock_all!(&mut key, ledger; nest);
    assert_eq!(generic_key(&mut nk, &audit) + *l, 11);
}

#[test]
fn inside_an_async_block() {
    let v = [Mutex::new(1), Mutex::new(2)];
    let fut = async {
        let mut key = ThreadKey::get().unwrap();
        let (a, b) = lock_all!(&mut key, v[1], v[0]);
        std::future::ready(()).await;
        let r = *a * 10 + *b;
        drop((a, b));
        let (c,) = try_lock_all!(&mut key, v[0]).unwrap();
        r + *c
    };
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert_eq!(fut.as_mut().poll(&mut cx), std::task::Poll::Ready(22));
}

macro_rules! both {
    ($key:expr, $a:expr, $b:expr) => {{
        let (x, y) = lock_all!($key, $a, $b);
        *x * 10 + *y
    }};
}

macro_rules! try_both {
    ($key:expr, $($l:expr),+ $(,)?) => {
        try_lock_all!($key, $($l),+).map(|g| *g.0 * 10 + *g.1)
    };
}

#[test]
fn inside_macro_rules() {
    let mut key = ThreadKey::get().unwrap();
    let v = [Mutex::new(1), Mutex::new(2)];
    assert_eq!(both!(&mut key, v[1], v[0]), 21);
    let i = 1;
    let r = catch_unwind(AssertUnwindSafe(|| both!(&mut key, v[i], v[1])));
    assert_eq!(panic_message(r.unwrap_err()), dup_msg(1, 2));
    assert_eq!(try_both!(&mut key, v[0], v[1],), Ok(12));
    assert_eq!(try_both!(&mut key, v[0], v[i - 1]).err(), dup(0, 1));
}

#[no_implicit_prelude]
mod bare {
    pub fn run() -> (i32, bool) {
        let mut key = ::trust_core::lock::ThreadKey::get().unwrap();
        let a = ::trust_core::lock::Mutex::new(1);
        let b = ::trust_core::lock::RwLock::new(2);
        let sum = {
            let (x, y) = ::trust_core::lock_all!(&mut key, a, read b);
            *x + *y
        };
        let ok = ::trust_core::try_lock_all!(&mut key, b, a; nest).is_ok();
        (sum, ok)
    }
}

#[allow(dead_code, non_camel_case_types)]
mod shadow {
    // Everything the expansion could name without a path, shadowed.
    pub struct Option;
    pub struct Result;
    pub struct Some;
    pub struct None;
    pub struct Ok;
    pub struct Err;
    pub struct Vec;
    pub struct Sized;
    pub struct Plan;
    pub struct usize;
    pub mod core {}
    pub mod trust_core {}
    pub mod std {}
    pub fn run() -> i32 {
        let mut key = ::trust_core::lock::ThreadKey::get().unwrap();
        type Mutex = ::trust_core::lock::Mutex<i32>;
        let (a, b) = (Mutex::new(3), Mutex::new(4));
        let (x, y) = ::trust_core::lock_all!(&mut key, a, b);
        let sum = *x + *y;
        ::core::mem::drop((x, y));
        let both = ::trust_core::try_lock_all!(&mut key, b, a);
        sum * 10 + both.map(|(x, y)| *x - *y).unwrap_or(-100)
    }
}

#[test]
fn without_the_prelude_and_with_shadowed_names() {
    assert_eq!(bare::run(), (3, true));
    std::thread::spawn(|| assert_eq!(shadow::run(), 71))
        .join()
        .unwrap();
}

mod renamed {
    extern crate trust_core as tc;
    pub fn run() -> i32 {
        let mut key = tc::lock::ThreadKey::get().unwrap();
        let a = tc::lock::Mutex::new(5);
        let (g,) = tc::lock_all!(&mut key, a);
        *g
    }
}

#[test]
fn through_extern_crate_alias() {
    assert_eq!(renamed::run(), 5);
}

fn pick<const I: usize, const J: usize>(v: &[Mutex<i32>; 3]) -> &Mutex<i32> {
    &v[I + J]
}

#[test]
fn arguments_with_commas_inside() {
    let mut key = ThreadKey::get().unwrap();
    let v = [Mutex::new(0), Mutex::new(1), Mutex::new(2)];
    let (a, b, c) = lock_all!(
        &mut key,
        *pick::<1, 1>(&v),
        *(|i: usize, _j: usize| &v[i])(1, 7),
        v[[0, 9][0]],
    );
    assert_eq!((*a, *b, *c), (2, 1, 0));
}

// The panic location of a duplicate is the caller's line (the functions are `#[track_caller]`).
thread_local! {
    static LAST_PANIC: Cell<Option<(&'static str, u32)>> = const { Cell::new(None) };
}

fn record_panic_locations() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(location) = info.location() {
                // `&'static str` file: leak is fine, a handful of panics.
                let file: &'static str = Box::leak(location.file().to_owned().into_boxed_str());
                LAST_PANIC.with(|last| last.set(Some((file, location.line()))));
            }
            previous(info);
        }));
    });
}

#[test]
fn a_duplicate_panics_at_the_callers_line() {
    record_panic_locations();
    let mut key = ThreadKey::get().unwrap();
    let v = [Mutex::new(0), Mutex::new(1)];
    let i = 0;
    let line = line!() + 2;
    let r = catch_unwind(AssertUnwindSafe(|| {
        let _g = lock_all!(&mut key, v[0], v[i]);
    }));
    assert_eq!(panic_message(r.unwrap_err()), dup_msg(1, 2));
    let (file, at) = LAST_PANIC.with(Cell::get).unwrap();
    assert!(file.ends_with("adversarial_review65.rs"), "{file}");
    assert_eq!(at, line);
}

#[test]
fn two_threads_naming_the_same_locks_in_opposite_orders_through_aliases() {
    let v = [Mutex::new(0u64), Mutex::new(0u64)];
    let (r0, r1) = (&v[0], &v[1]);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut key = ThreadKey::get().unwrap();
            for _ in 0..20_000 {
                let (mut a, mut b) = lock_all!(&mut key, v[0], r1);
                *a += 1;
                *b += 1;
            }
        });
        s.spawn(|| {
            let mut key = ThreadKey::get().unwrap();
            for _ in 0..20_000 {
                let (mut b, mut a) = lock_all!(&mut key, *r1, v[0]);
                *a += 1;
                *b += 1;
            }
        });
        s.spawn(|| {
            let mut key = ThreadKey::get().unwrap();
            for _ in 0..20_000 {
                let r = try_lock_all!(&mut key, v[1], *r0);
                let (mut b, mut a) = if r.is_ok() {
                    r.unwrap()
                } else {
                    drop(r);
                    lock_all!(&mut key, v[1], *r0)
                };
                *a += 1;
                *b += 1;
            }
        });
    });
    let mut key = ThreadKey::get().unwrap();
    let (a, b) = lock_all!(&mut key, v[0], v[1]);
    assert_eq!((*a, *b), (60_000, 60_000));
}

// ---------------------------------------------------------------------------------------------
// Review 65's compile-time findings, fixed: `&a` as an argument names `a` (it gave E0716), the expansion's
// bindings no longer meet the caller's `const`s (a `const order` made `let order = ..` a pattern), and a
// helper returns guards of its reference parameters named `*a`.

mod consts_named_like_the_expansions_old_bindings {
    #![allow(non_upper_case_globals, dead_code)]
    pub const order: u8 = 0;
    pub const plan: u8 = 0;
    pub const error: u8 = 0;
    pub const guard: u8 = 0;
    pub const key: u8 = 0;
    pub const g0: u8 = 0;
    pub const l0: u8 = 0;
}

#[test]
fn a_borrowed_argument_names_its_lock_and_the_callers_consts_are_left_alone() {
    #[allow(unused_imports)]
    use consts_named_like_the_expansions_old_bindings::*;
    let (a, b, c) = (Mutex::new(1), Mutex::new(2), RwLock::new(3));
    let mut k = ThreadKey::get().unwrap();
    {
        let (mut ga, gc) = lock_all!(&mut k, &a, read & c);
        *ga += 10;
        assert_eq!((*ga, *gc), (11, 3));
    }
    {
        let (gb, gc) = try_lock_all!(&mut k, &&b, read & c).expect("all free");
        assert_eq!((*gb, *gc), (2, 3));
    }
    let total = match try_lock_all!(&mut k, a, b).map(|(x, y)| *x + *y) {
        Ok(total) => total,
        Err(_) => *lock_all!(&mut k, a).0,
    };
    assert_eq!(total, 13);
}

fn guards_of<'a>(
    k: &'a mut ThreadKey,
    a: &'a Mutex<i32>,
    b: &'a Mutex<i32>,
) -> (
    trust_core::lock::MutexRef<'a, i32>,
    trust_core::lock::MutexRef<'a, i32>,
) {
    lock_all!(k, *a, *b)
}

#[test]
fn a_helper_returns_guards_of_its_reference_parameters_named_through_them() {
    let (a, b) = (Mutex::new(4), Mutex::new(5));
    let mut k = ThreadKey::get().unwrap();
    let (x, y) = guards_of(&mut k, &a, &b);
    assert_eq!(*x * *y, 20);
}
