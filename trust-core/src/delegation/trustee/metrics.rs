//! What a worker counts about itself, for `Runtime::metrics`: requests served, batches answered, fibers
//! alive, parks and the time spent parked. Each counter is written only by its worker's own thread, with a
//! plain load and store (no read-modify-write: nobody else writes it), Relaxed; other threads only load
//! them, so a snapshot is a set of recent values, not one instant. The worker updates them once per batch,
//! per park and per fiber start or end, never per request.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One counter with a single writer (its worker thread).
#[derive(Debug, Default)]
struct Counter(AtomicU64);

impl Counter {
    #[inline]
    fn add(&self, n: u64) {
        // One writer: a load and a store, not an atomic add.
        self.0.store(self.0.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    #[inline]
    fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }

    #[inline]
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The counters of one worker; lives in its `TrusteeShared`, where other threads can read it.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// When the worker started (its loop's first turn).
    started: OnceLock<Instant>,
    requests: Counter,
    batches: Counter,
    fibers: Counter,
    parks: Counter,
    /// Nanoseconds parked, parks ended.
    idle_ns: Counter,
    /// Nanoseconds after `started` when the current park began; 0 when not parked.
    parked_at_ns: Counter,
}

/// A snapshot of one worker's counters (see `Runtime::metrics`, which names the fields for users).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    pub(crate) requests: u64,
    pub(crate) batches: u64,
    pub(crate) fibers: u64,
    pub(crate) parks: u64,
    pub(crate) busy: Duration,
    pub(crate) idle: Duration,
}

impl Metrics {
    fn since_start(&self) -> u64 {
        self.started
            .get()
            .map_or(0, |s| u64::try_from(s.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// The worker's loop starts.
    pub(crate) fn start(&self) {
        let _ = self.started.set(Instant::now());
    }

    /// `requests` records ran in one run of a batch, which was then answered (or paused: `answered` false).
    #[inline]
    pub(crate) fn ran(&self, requests: u64, answered: bool) {
        self.requests.add(requests);
        self.batches.add(u64::from(answered));
    }

    /// Requests that came by mail ran.
    #[inline]
    pub(crate) fn mailed(&self, requests: u64) {
        self.requests.add(requests);
    }

    /// The number of fibers alive on the worker changed.
    #[inline]
    pub(crate) fn set_fibers(&self, live: usize) {
        self.fibers.set(live as u64);
    }

    /// The worker is about to park; the guard counts the park and its duration when dropped.
    pub(crate) fn park(&self) -> Parked<'_> {
        self.parks.add(1);
        self.parked_at_ns.set(self.since_start().max(1));
        Parked { metrics: self }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let now = self.since_start();
        let parked_at = self.parked_at_ns.get();
        let current = if parked_at == 0 { 0 } else { now.saturating_sub(parked_at) };
        let idle = (self.idle_ns.get() + current).min(now);
        Snapshot {
            requests: self.requests.get(),
            batches: self.batches.get(),
            fibers: self.fibers.get(),
            parks: self.parks.get(),
            busy: Duration::from_nanos(now - idle),
            idle: Duration::from_nanos(idle),
        }
    }
}

/// A park in progress (see `Metrics::park`).
#[derive(Debug)]
pub(crate) struct Parked<'a> {
    metrics: &'a Metrics,
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        let m = self.metrics;
        let parked = m.since_start().saturating_sub(m.parked_at_ns.get());
        m.idle_ns.add(parked);
        m.parked_at_ns.set(0);
    }
}
