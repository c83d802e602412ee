//! `IntervalRwLock` borrows in delegated closures, which cannot suspend: a `read`/`write` that must wait parks
//! the worker's thread, so it panics (withdrawing its request, naming `try_*`) when a conflicting borrow it
//! would wait for — held, or queued ahead of it — was taken by a fiber of that same worker, which could never
//! resume to release it; against a plain thread or a fiber of the other worker it waits and succeeds.
//! Everything that could hang runs in a child process with a deadline, and the `apply` under `within`.

#[macro_use]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;

use common::{
    calibrate, child_ok, eight_zeros, rt, spawn_on, trustee_0_serves, wait_for_5s, within,
    write_on_worker_0,
};
use trust_core::interval::IntervalRwLock;

/// A plain thread holds `0..4`, and releases it only once the closure's write of `2..6` is queued: the closure
/// waits for it (worker 0 parked meanwhile), then sees the thread's 1s and its own zeros.
#[test]
fn a_delegated_write_waits_for_a_plain_threads_range() {
    in_child!("a_delegated_write_waits_for_a_plain_threads_range", 20);
    let lock = eight_zeros();
    let (held_tx, held_rx) = mpsc::channel();
    let holder = thread::spawn(move || {
        let mut g = lock.write(0..4);
        held_tx.send(()).unwrap();
        let queued = wait_for_5s(|| lock.queued() == 1);
        g.fill(1);
        queued
    });
    held_rx.recv().unwrap();
    let r = write_on_worker_0(lock, 2..6, 0, 2);
    assert!(
        holder.join().unwrap(),
        "the closure's write never queued behind the thread's"
    );
    assert_eq!(r, Ok(vec![1, 1, 0, 0]));
    assert_eq!(
        lock.try_read(..).map(|g| g.to_vec()).ok(),
        Some(vec![1, 1, 2, 2, 2, 2, 0, 0])
    );
    assert_eq!((lock.held(), lock.queued()), (0, 0));
    trustee_0_serves();
    child_ok();
}

/// A fiber of worker 1 holds `0..4` and releases it once the closure's write of `2..6`, on worker 0, is queued:
/// worker 1 runs on while worker 0 is parked, so the closure waits and succeeds.
#[test]
fn a_delegated_write_waits_for_a_fiber_of_the_other_worker() {
    in_child!(
        "a_delegated_write_waits_for_a_fiber_of_the_other_worker",
        20
    );
    calibrate();
    let lock = eight_zeros();
    let held = Arc::new(AtomicBool::new(false));
    let held2 = held.clone();
    let f = spawn_on(1, move || {
        let mut g = lock.write(0..4);
        held2.store(true, Ordering::SeqCst);
        let queued = wait_for_5s(|| lock.queued() == 1);
        g.fill(1);
        queued
    });
    assert!(wait_for_5s(|| held.load(Ordering::SeqCst)));
    let r = write_on_worker_0(lock, 2..6, 0, 2);
    assert!(
        f.join().unwrap(),
        "the closure's write never queued behind the fiber's"
    );
    assert_eq!(r, Ok(vec![1, 1, 0, 0]));
    assert_eq!(
        lock.try_read(..).map(|g| g.to_vec()).ok(),
        Some(vec![1, 1, 2, 2, 2, 2, 0, 0])
    );
    trustee_0_serves();
    child_ok();
}

/// Only a thread holds anything (`0..4`), but a fiber of worker 0 is queued for `2..6` behind it, and the
/// closure's write of `4..8` conflicts with that fiber only: it would be granted after the fiber, which cannot
/// run while worker 0 is parked. It panics at once, withdrawn; the fiber is then granted as usual.
#[test]
fn a_delegated_write_behind_a_queued_fiber_of_the_same_worker_panics() {
    in_child!(
        "a_delegated_write_behind_a_queued_fiber_of_the_same_worker_panics",
        20
    );
    calibrate();
    let lock = eight_zeros();
    let mut held = lock.write(0..4);
    let f = spawn_on(0, move || {
        let mut g = lock.write(2..6);
        let before = g.to_vec();
        g.fill(2);
        before
    });
    assert!(wait_for_5s(|| lock.queued() == 1), "the fiber never queued");
    let r = write_on_worker_0(lock, 4..8, 0, 3);
    let msg = r.expect_err("the closure's write had to wait for the queued fiber");
    assert!(
        msg.starts_with("`IntervalRwLock::write(4..8)` must wait") && msg.contains("`try_write`"),
        "unhelpful panic: {msg}"
    );
    // Withdrawn: the thread's borrow and the fiber's request are all that is left.
    assert_eq!((lock.held(), lock.queued()), (1, 1));
    held.fill(1);
    drop(held);
    assert_eq!(within(5, move || f.join().unwrap()), vec![1, 1, 0, 0]);
    assert_eq!(
        lock.try_read(..).map(|g| g.to_vec()).ok(),
        Some(vec![1, 1, 2, 2, 2, 2, 0, 0])
    );
    trustee_0_serves();
    child_ok();
}

/// As above, but the closure asks with priority 5, so it goes ahead of the queued fiber (priority 0) and waits
/// only for the thread: it waits and succeeds, then the fiber is granted and sees the closure's 3s.
#[test]
fn a_prioritized_delegated_write_ahead_of_a_queued_fiber_of_the_same_worker_waits() {
    in_child!(
        "a_prioritized_delegated_write_ahead_of_a_queued_fiber_of_the_same_worker_waits",
        20
    );
    calibrate();
    let lock = eight_zeros();
    let (held_tx, held_rx) = mpsc::channel();
    let holder = thread::spawn(move || {
        let mut g = lock.write(0..6);
        held_tx.send(()).unwrap();
        // The fiber's request, then the closure's.
        let queued = wait_for_5s(|| lock.queued() == 2);
        g.fill(1);
        queued
    });
    held_rx.recv().unwrap();
    let f = spawn_on(0, move || {
        let mut g = lock.write(2..8);
        let before = g.to_vec();
        g.fill(2);
        before
    });
    assert!(wait_for_5s(|| lock.queued() == 1), "the fiber never queued");
    let r = write_on_worker_0(lock, 4..6, 5, 3);
    assert!(holder.join().unwrap(), "the closure's write never queued");
    assert_eq!(r, Ok(vec![1, 1]));
    assert_eq!(within(5, move || f.join().unwrap()), vec![1, 1, 3, 3, 0, 0]);
    assert_eq!(
        lock.try_read(..).map(|g| g.to_vec()).ok(),
        Some(vec![1, 1, 2, 2, 2, 2, 2, 2])
    );
    trustee_0_serves();
    child_ok();
}

/// A fiber of worker 0 reads `0..4` and stays suspended holding it; a closure on worker 0 reads `2..6`: reads
/// share, so it never waits (neither parks nor panics), whoever holds the other read.
#[test]
fn a_delegated_read_beside_a_fibers_read_of_the_same_worker_never_waits() {
    in_child!(
        "a_delegated_read_beside_a_fibers_read_of_the_same_worker_never_waits",
        20
    );
    calibrate();
    let lock: &'static IntervalRwLock<u32> =
        Box::leak(Box::new(IntervalRwLock::new(vec![1, 2, 3, 4, 5, 6, 7, 8])));
    let held = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let (held2, done2) = (held.clone(), done.clone());
    let f = spawn_on(0, move || {
        let g = lock.read(0..4);
        held2.store(true, Ordering::SeqCst);
        assert!(wait_for_5s(|| done2.load(Ordering::SeqCst)));
        g.to_vec()
    });
    assert!(wait_for_5s(|| held.load(Ordering::SeqCst)));
    let on0 = rt().trustee(0).entrust(());
    let r = within(5, move || {
        on0.apply(move |_| {
            let g = lock.read(2..6);
            (g.to_vec(), lock.held(), lock.queued())
        })
    });
    assert_eq!(r, (vec![3, 4, 5, 6], 2, 0));
    done.store(true, Ordering::SeqCst);
    assert_eq!(within(5, move || f.join().unwrap()), vec![1, 2, 3, 4]);
    assert_eq!((lock.held(), lock.queued()), (0, 0));
    child_ok();
}

/// The record is where a borrow was *taken*: a fiber of worker 0 writes `0..4` and moves the guard to a plain
/// thread (which will release it), then stays suspended. A closure on worker 0 writing `2..6` still counts the
/// borrow as that fiber's and panics, though it could have waited: the lock cannot follow a moved guard, and a
/// spurious panic naming `try_write` was chosen over a silent hang (the module docs and `docs/interval.md`).
#[test]
fn a_guard_taken_in_a_fiber_and_moved_to_a_thread_still_counts_as_the_fibers() {
    in_child!(
        "a_guard_taken_in_a_fiber_and_moved_to_a_thread_still_counts_as_the_fibers",
        20
    );
    calibrate();
    let lock = eight_zeros();
    let (guard_tx, guard_rx) = mpsc::channel();
    let done = Arc::new(AtomicBool::new(false));
    let done2 = done.clone();
    let f = spawn_on(0, move || {
        guard_tx.send(lock.write(0..4)).unwrap();
        assert!(wait_for_5s(|| done2.load(Ordering::SeqCst)));
    });
    let mut g = guard_rx.recv().unwrap();
    let r = write_on_worker_0(lock, 2..6, 0, 2);
    let msg = r.expect_err("the borrow counts as the fiber's");
    assert!(
        msg.starts_with("`IntervalRwLock::write(2..6)` must wait") && msg.contains("`try_write`"),
        "unhelpful panic: {msg}"
    );
    assert_eq!((lock.held(), lock.queued()), (1, 0));
    g.fill(1);
    drop(g);
    done.store(true, Ordering::SeqCst);
    within(5, move || f.join().unwrap());
    assert_eq!(
        lock.try_read(..).map(|g| g.to_vec()).ok(),
        Some(vec![1, 1, 1, 1, 0, 0, 0, 0])
    );
    trustee_0_serves();
    child_ok();
}

/// Through a blocking request: a fiber of worker 0 holds `0..2` (suspended until told), a plain thread's write
/// of `0..4` is queued behind it, and the closure's write of `2..6` conflicts with the thread's request only.
/// It would be granted after the thread's, which waits for the fiber, which cannot run while worker 0 is
/// parked: it panics, withdrawn; then the fiber and the thread finish as usual.
#[test]
fn a_delegated_write_behind_a_thread_that_waits_for_a_fiber_of_the_same_worker_panics() {
    in_child!(
        "a_delegated_write_behind_a_thread_that_waits_for_a_fiber_of_the_same_worker_panics",
        20
    );
    calibrate();
    let lock = eight_zeros();
    let held = Arc::new(AtomicBool::new(false));
    let go = Arc::new(AtomicBool::new(false));
    let (held2, go2) = (held.clone(), go.clone());
    let f = spawn_on(0, move || {
        let mut g = lock.write(0..2);
        held2.store(true, Ordering::SeqCst);
        assert!(wait_for_5s(|| go2.load(Ordering::SeqCst)));
        g.fill(1);
    });
    assert!(wait_for_5s(|| held.load(Ordering::SeqCst)));
    let waiter = thread::spawn(move || {
        let mut g = lock.write(0..4);
        let before = g.to_vec();
        g.fill(2);
        before
    });
    assert!(
        wait_for_5s(|| lock.queued() == 1),
        "the thread never queued"
    );
    let r = write_on_worker_0(lock, 2..6, 0, 3);
    let msg = r.expect_err("the closure's write waited for the thread, which waited for the fiber");
    assert!(
        msg.starts_with("`IntervalRwLock::write(2..6)` must wait") && msg.contains("`try_write`"),
        "unhelpful panic: {msg}"
    );
    assert_eq!((lock.held(), lock.queued()), (1, 1));
    go.store(true, Ordering::SeqCst);
    within(5, move || f.join().unwrap());
    assert_eq!(waiter.join().unwrap(), vec![1, 1, 0, 0]);
    assert_eq!(
        lock.try_read(..).map(|g| g.to_vec()).ok(),
        Some(vec![2, 2, 2, 2, 0, 0, 0, 0])
    );
    trustee_0_serves();
    child_ok();
}
