//! Shared by the interval lock storms (reviews 79, 81, 82): a deadline, a 2-thread tokio runtime, a seeded
//! generator, a waker that counts its wakes, one poll by hand, and the held write and read the storms of
//! reviews 79 and 81 run.

#![allow(dead_code)] // each test binary uses part of it

use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

/// Deadline for anything that waits: a hang fails the test instead of stalling it.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

/// A seeded xorshift generator.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A waker that counts its wakes.
#[derive(Default)]
pub struct Count(pub AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

pub fn counting() -> (Arc<Count>, Waker) {
    let count = Arc::new(Count::default());
    (count.clone(), Waker::from(count))
}

pub fn poll_once<F: Future + Unpin>(f: &mut F, waker: &Waker) -> Poll<F::Output> {
    std::pin::Pin::new(f).poll(&mut Context::from_waker(waker))
}

/// What the stress test records of completed writes: (id, start, end).
pub type Log = Mutex<Vec<(u32, usize, usize)>>;

/// A held write: append `id` to every element and note the write, with no await in between (so a
/// cancellation cannot split it); then hold the guard across an await and check that nobody else wrote.
pub async fn write_and_hold(
    mut guard: trust_core::interval::WriteGuard<'_, Vec<(u32, u64)>>,
    id: u32,
    seq: &AtomicU64,
    log: &Log,
    hold: u64,
) {
    let n = seq.fetch_add(1, Ordering::SeqCst);
    for element in guard.iter_mut() {
        element.push((id, n));
    }
    let range = guard.range();
    log.lock().unwrap().push((id, range.start, range.end));
    if hold == 0 {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(Duration::from_millis(hold)).await;
    }
    for element in guard.iter() {
        assert_eq!(
            element.last().map(|&(i, _)| i),
            Some(id),
            "a write overlapped a held write"
        );
    }
}

/// A held read: snapshot, await, compare.
pub async fn read_and_hold(guard: trust_core::interval::ReadGuard<'_, Vec<(u32, u64)>>, hold: u64) {
    let before: Vec<_> = guard.iter().map(Vec::len).collect();
    if hold == 0 {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(Duration::from_millis(hold)).await;
    }
    let after: Vec<_> = guard.iter().map(Vec::len).collect();
    assert_eq!(before, after, "a write overlapped a held read");
}
