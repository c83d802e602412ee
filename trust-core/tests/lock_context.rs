//! `LockContext` (happylock 0.5's): the parts of an `OwnedLockCollection` locked one at a time, in order —
//! `lock_N` on tuples, `lock_next` on arrays, `Vec`s and boxed slices — with the key borrowed throughout.

use std::sync::Arc;
use std::thread;

use trust_core::lock::{Mutex, OwnedLockCollection, RwLock, ThreadKey};
use trust_core::{lock_all, lock_ranks};

#[test]
fn tuple_parts_lock_in_order_and_later_parts_may_be_skipped() {
    let mut key = ThreadKey::get().unwrap();
    let locks = OwnedLockCollection::new((Mutex::new(true), Mutex::new(42), Mutex::new(67)));
    for use_last in [true, false] {
        *locks.context(&mut key).lock_0().0 = use_last;
        let ctx = locks.context(&mut key);
        let (flag, ctx) = ctx.lock_0();
        let mut number = if *flag {
            ctx.lock_2().0
        } else {
            ctx.lock_1().0
        };
        *number += 1;
    }
    // Guards outlive their contexts; everything is released once they are dropped.
    let ctx = locks.context(&mut key);
    let (a, ctx) = ctx.lock_0();
    let (b, ctx) = ctx.lock_1();
    let (c, _) = ctx.lock_2();
    assert_eq!((*a, *b, *c), (false, 43, 68));
    drop((a, b, c));
    assert!(!*locks.lock(&mut key).0, "the whole collection locks again");
    assert_eq!(locks.into_inner(), (false, 43, 68));
}

#[test]
fn read_and_try_variants() {
    let mut key = ThreadKey::get().unwrap();
    let locks = OwnedLockCollection::new((RwLock::new(1), Mutex::new(2), RwLock::new(3)));
    let ctx = locks.context(&mut key);
    let (one, ctx) = ctx.read_0();
    let (mut two, ctx) = ctx.try_lock_1().expect("free");
    *two += *one;
    let (three, _) = ctx.try_read_2().expect("no writer");
    assert_eq!((*one, *two, *three), (1, 3, 3));

    // Another thread, while part 1 is held here: part 0 can be read, part 1 cannot be taken, and the
    // failed try gives the context back to go on with part 2.
    thread::scope(|s| {
        s.spawn(|| {
            let mut key = ThreadKey::get().unwrap();
            let ctx = locks.context(&mut key);
            let (zero, ctx) = ctx.try_read_0().expect("readers share");
            assert_eq!(*zero, 1);
            let ctx = ctx
                .try_lock_1()
                .map(|_| ())
                .expect_err("held by the main thread");
            let (three, _) = ctx.try_read_2().expect("readers share");
            assert_eq!(*three, 3);
        });
    });
    drop((one, two, three));
    let ctx = locks.context(&mut key);
    let (mut zero, _) = ctx.lock_0();
    *zero = 10;
    drop(zero);
    assert_eq!(locks.into_inner(), (10, 3, 3));
}

#[test]
fn sequences_lock_next_in_order() {
    let mut key = ThreadKey::get().unwrap();
    let array = OwnedLockCollection::new([Mutex::new(1), Mutex::new(3), Mutex::new(8)]);
    let mut ctx = array.context(&mut key);
    assert_eq!(ctx.remaining(), 3);
    let mut guards = Vec::new();
    while let Some(g) = ctx.lock_next() {
        guards.push(g); // earlier guards stay alive while later parts are locked
    }
    assert_eq!(guards.iter().map(|g| **g).sum::<i32>(), 12);
    assert_eq!(ctx.remaining(), 0);
    assert!(!ctx.skip_next());
    drop(guards);

    let vec = OwnedLockCollection::new(vec![RwLock::new(10), RwLock::new(20), RwLock::new(30)]);
    let mut ctx = vec.context(&mut key);
    assert!(ctx.skip_next());
    let twenty = ctx.read_next().unwrap();
    let mut thirty = ctx.lock_next().unwrap();
    *thirty += *twenty;
    assert!(ctx.lock_next().is_none());
    drop((twenty, thirty));
    assert_eq!(*vec.into_inner(), [10, 20, 50]);

    let boxed: Box<[Mutex<u8>]> = vec![Mutex::new(7)].into_boxed_slice();
    let boxed = OwnedLockCollection::new(boxed);
    let mut ctx = boxed.context(&mut key);
    assert_eq!(ctx.lock_next().as_deref(), Some(&7));
    assert!(ctx.lock_next().is_none());
}

lock_ranks! { Ledger; Account; }

#[test]
fn a_nested_key_locks_parts_ranked_above_what_it_holds() {
    let ledger: Mutex<Vec<u32>, Ledger> = Mutex::ranked(Vec::new());
    let accounts = OwnedLockCollection::new([
        Mutex::<u32, Account>::ranked(5),
        Mutex::ranked(6),
        Mutex::ranked(7),
    ]);
    let mut key = ThreadKey::get().unwrap();
    let (mut log, mut nested) = lock_all!(&mut key, ledger; nest);
    let mut ctx = accounts.context(&mut nested);
    while let Some(mut a) = ctx.lock_next() {
        *a *= 2;
        log.push(*a);
    }
    assert_eq!(*log, [10, 12, 14]);
}

#[test]
fn threads_mixing_contexts_and_whole_collection_locks_never_deadlock_and_lose_nothing() {
    // Part 0 is a counter that picks which of parts 1 and 2 each round also takes; part 3 counts rounds.
    // Half the threads lock part by part with contexts, the others take the whole collection at once.
    let locks = Arc::new(OwnedLockCollection::new((
        Mutex::new(0u64),
        Mutex::new(0u64),
        Mutex::new(0u64),
        Mutex::new(0u64),
    )));
    let threads = 4;
    let rounds = if cfg!(miri) { 100 } else { 20_000 };
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let locks = locks.clone();
            thread::spawn(move || {
                let mut key = ThreadKey::get().unwrap();
                for _ in 0..rounds {
                    if t % 2 == 0 {
                        let ctx = locks.context(&mut key);
                        let (mut n, ctx) = ctx.lock_0();
                        *n += 1;
                        // The two branches leave contexts of different types (after part 1, after part 2).
                        let (mut side, mut total) = if *n % 2 == 0 {
                            let (side, ctx) = ctx.lock_1();
                            (side, ctx.lock_3().0)
                        } else {
                            let (side, ctx) = ctx.lock_2();
                            (side, ctx.lock_3().0)
                        };
                        *side += 1;
                        *total += 1;
                    } else {
                        let mut all = locks.lock(&mut key);
                        let (n, one, two, total) = &mut *all;
                        **n += 1;
                        if **n % 2 == 0 {
                            **one += 1
                        } else {
                            **two += 1
                        }
                        **total += 1;
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let (n, one, two, total) = Arc::into_inner(locks).unwrap().into_inner();
    let all = (threads * rounds) as u64;
    assert_eq!((n, one + two, total), (all, all, all));
    assert_eq!(
        (one, two),
        (all / 2, all / 2),
        "even counts went to part 1, odd ones to part 2"
    );
}
