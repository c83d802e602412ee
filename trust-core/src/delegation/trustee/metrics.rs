//! What a worker counts about itself, for `Runtime::metrics`: requests served, batches answered, fibers
//! alive, parks and the time spent parked. Each counter is written only by its worker's own thread, with a
//! plain load and store (no read-modify-write: nobody else writes it), Relaxed; other threads only load
//! them, so a snapshot is a set of recent values, not one instant (but the channel counts, all and cold, are
//! one word, read together; and `batches` is released after `requests` and read before them, so a snapshot
//! never counts a batch without its requests). The worker updates them once per batch (a request that came
//! by mail, in no batch, once each), per change of its channels, per sleep and per fiber start or end, never
//! per request of a batch. The sleep's start and end are the exception: a sequence number around them (a
//! seqlock) makes the time busy and idle, and the parks, one consistent reading, so that neither time ever
//! goes backwards between two snapshots (the examples subtract them), and no idle time is without its park.
//! A reader spins while the worker changes them (a clock read): should the OS take the worker off its core
//! right then, the reader spins until it is back; the worker never waits for a reader.

use std::sync::OnceLock;
use std::sync::atomic::{self, AtomicU64, Ordering};
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

    /// `add`, with a Release store: a reader that loads the new value with Acquire sees what the worker wrote
    /// before it (on x86 the same plain store).
    #[inline]
    fn add_release(&self, n: u64) {
        self.0.store(self.0.load(Ordering::Relaxed) + n, Ordering::Release);
    }

    #[inline]
    fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }

    #[inline]
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    #[inline]
    fn get_acquire(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// Looks a snapshot takes at a park change in progress before it yields its thread between looks (see
/// `Metrics::snapshot`).
const SNAPSHOT_SPINS: u32 = 100;

/// The counters of one worker; lives in its `TrusteeShared`, where other threads can read it.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// When the worker started (its loop's first turn).
    started: OnceLock<Instant>,
    requests: Counter,
    batches: Counter,
    fibers: Counter,
    /// The channels served (high 32 bits) and the cold ones among them (low 32 bits), in one word so that a
    /// snapshot never sees more cold channels than channels (a worker's change of both read half done).
    channels: Counter,
    parks: Counter,
    /// Nanoseconds parked, parks ended.
    idle_ns: Counter,
    /// Nanoseconds after `started` when the current sleep began; 0 when not asleep.
    parked_at_ns: Counter,
    /// Odd while the worker starts or ends a park (and reads the clock for it); see `snapshot`.
    park_seq: AtomicU64,
    /// Nanoseconds after `started` when the worker stopped (its close); 0 while it runs. A stopped worker's
    /// time stands still: before, `busy` (the time since the start, less `idle`) kept growing after a
    /// shutdown (review 47).
    stopped_ns: Counter,
}

/// A snapshot of one worker's counters (see `Runtime::metrics`, which names the fields for users).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    pub(crate) requests: u64,
    pub(crate) batches: u64,
    pub(crate) fibers: u64,
    pub(crate) channels: u64,
    pub(crate) cold_channels: u64,
    pub(crate) parks: u64,
    pub(crate) busy: Duration,
    pub(crate) idle: Duration,
}

impl Metrics {
    fn since_start(&self) -> u64 {
        let stopped = self.stopped_ns.get();
        if stopped != 0 {
            return stopped;
        }
        self.started
            .get()
            .map_or(0, |s| u64::try_from(s.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// The worker's loop starts.
    pub(crate) fn start(&self) {
        let _ = self.started.set(Instant::now());
    }

    /// The worker's loop has stopped for good: its time stops too.
    pub(crate) fn stop(&self) {
        self.park_change(|now| self.stopped_ns.set(now.max(1)));
    }

    /// In the child of a `fork` (its atfork handler), where the worker thread was not copied: a park the worker
    /// was starting or ending at the instant of the fork left the sequence number odd for good, and every
    /// snapshot spun on it for ever (review 48: 3 of 3,000 children forked while the workers parked and woke
    /// hung in `Runtime::metrics`). Evens it (nothing else writes it here any more), and stops the clock at
    /// the fork, as the close does. Atomics and `clock_gettime` only: async-signal-safe.
    pub(crate) fn stop_in_forked_child(&self) {
        let seq = self.park_seq.load(Ordering::Relaxed);
        if seq % 2 == 1 {
            self.park_seq.store(seq + 1, Ordering::Relaxed);
        }
        if self.stopped_ns.get() == 0 {
            self.stop();
        }
    }

    /// `requests` records ran in one run of a batch, which was then answered (or paused: `answered` false).
    #[inline]
    pub(crate) fn ran(&self, requests: u64, answered: bool) {
        self.requests.add(requests);
        // Released after the requests, and read first (`snapshot`): a snapshot never counts a batch without
        // its requests. Read the other way, one did, now and then: more batches than requests (review 47).
        self.batches.add_release(u64::from(answered));
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

    /// The channels the worker serves changed: `all` of them, `cold` of which it no longer looks at every
    /// round.
    pub(crate) fn set_channels(&self, all: usize, cold: usize) {
        debug_assert!(cold <= all && all <= u32::MAX as usize);
        self.channels.set((all as u64) << 32 | cold as u64);
    }

    /// The worker is about to park: it looks for work once more first (`slept` if it found none); the guard
    /// ends the park's idle time, if any, when dropped.
    pub(crate) fn park(&self) -> Parked<'_> {
        Parked { metrics: self }
    }

    /// The worker's last look found no work: it goes to sleep now, and its time is idle from here. Not from
    /// `park`: the last look (a `membarrier` system call first) takes microseconds, and when it found work the
    /// worker never slept, yet that time counted as idle, with no park counted (review 95: read from the
    /// worker's own closures around such a look, 1.2-49 us more idle and no park, every time). The park is
    /// counted in the same change, so that a snapshot never has idle time without its park.
    pub(crate) fn slept(&self) {
        self.park_change(|now| {
            self.parks.add(1);
            self.parked_at_ns.set(now.max(1));
        });
    }

    /// Starts or ends a park at the current time: the sequence number is odd from before the clock is read
    /// until the change is written. (Odd only after the clock read, a reader could read its clock later than
    /// the worker, yet the state from before the change: the time between counted as idle, then as busy.)
    fn park_change(&self, change: impl FnOnce(u64)) {
        let seq = self.park_seq.load(Ordering::Relaxed);
        self.park_seq.store(seq + 1, Ordering::Relaxed);
        // Seen odd by every reader before the clock below is read (a store could wait in the store buffer).
        atomic::fence(Ordering::SeqCst);
        change(self.since_start());
        self.park_seq.store(seq + 2, Ordering::Release);
    }

    /// The counters now. `on_its_worker`: the caller runs on this worker's own thread.
    pub(crate) fn snapshot(&self, on_its_worker: bool) -> Snapshot {
        // A seqlock read: the park state and the clock, again until no park started or ended meanwhile.
        let mut spins = 0u32;
        let (now, idle, parks) = loop {
            let seq = self.park_seq.load(Ordering::Acquire);
            if seq % 2 == 1 && on_its_worker {
                // The worker's own thread sees a change in progress only from a signal handler that interrupted
                // it: the change cannot end while the handler waits, and the worker hung for good (review 95: a
                // handler reading its worker's metrics, every time the signal came at the change's clock read;
                // 1 run in 10 of 3 s under a flood). It reads the time as it is, without the sleep being started
                // or ended (its idle time may lack the sleep that is ending: the worker is awake, and
                // `Parked::drop` adds it first thing).
                let now = self.since_start();
                break (now, self.idle_ns.get().min(now), self.parks.get());
            }
            if seq % 2 == 1 {
                // A change takes nanoseconds, unless the worker was descheduled in the middle of it: then the
                // core this reader spins on may be the one the worker waits for.
                spins += 1;
                if spins < SNAPSHOT_SPINS {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
            let parked_at = self.parked_at_ns.get();
            let idle = self.idle_ns.get();
            let parks = self.parks.get();
            let now = self.since_start();
            atomic::fence(Ordering::SeqCst);
            if self.park_seq.load(Ordering::Relaxed) == seq {
                let current = if parked_at == 0 { 0 } else { now.saturating_sub(parked_at) };
                break (now, (idle + current).min(now), parks);
            }
        };
        let channels = self.channels.get();
        // Batches first, with Acquire: the requests of every batch counted are then counted too (see `ran`).
        let batches = self.batches.get_acquire();
        Snapshot {
            requests: self.requests.get(),
            batches,
            fibers: self.fibers.get(),
            channels: channels >> 32,
            cold_channels: channels & u64::from(u32::MAX),
            parks,
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
        // The worker's own counter: a park whose last look found work never slept, and has no idle time.
        if m.parked_at_ns.get() == 0 {
            return;
        }
        m.park_change(|now| {
            // The park ends first: a child forked between the two stores (its fork handler evens the sequence
            // number, `stop_in_forked_child`) then lacks this sleep in its idle time, rather than counting it
            // twice (as ended, and as still going on).
            let parked_at = m.parked_at_ns.get();
            m.parked_at_ns.set(0);
            m.idle_ns.add(now.saturating_sub(parked_at));
        });
    }
}
