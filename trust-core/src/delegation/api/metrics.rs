//! [`Runtime::metrics`] and [`Trustee::metrics`]: what each worker counts about itself — requests served,
//! batches answered, fibers alive, parks, time busy and idle. Reading them takes no lock and never makes a
//! worker wait: each counter is written by its own worker only, once per batch (a request that came by mail,
//! in no batch, once each), per change of its channels, per sleep and per fiber start or end, and read here
//! with plain loads. (A reader that reads without pause shares the counters' cache lines with their worker,
//! whose next write to one then misses its cache: cheap, not free.)

use std::time::Duration;

use crate::delegation::api::runtime::Runtime;
use crate::delegation::api::trustee::Trustee;
use crate::delegation::worker::context;

/// A snapshot of one trustee's counters, since its worker started (and until it stopped, at
/// [`Runtime::shutdown`], or at the `fork` in a forked child, which has no workers: a stopped worker's counters,
/// its time included, stand still). Counters are read
/// one after another while the worker runs, so they are each recent, not one instant (but a snapshot never
/// counts a batch without its requests, nor more cold channels than channels, nor idle time without its park).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct TrusteeMetrics {
    /// The trustee's index.
    pub trustee: usize,
    /// Requests served: every record that reached the trustee by its slots or its mailbox — `apply`,
    /// `apply_with`, `apply_then`, `apply_async`, `launch`, `launch_then`, `try_unwrap`, `into_inner`, and
    /// the count changes of `clone`, `drop` and `entrust` sent from other threads. Closures that ran inline
    /// (the local shortcut, on the trustee's own thread) are not requests.
    pub requests: u64,
    /// Batches answered: each holds one or more requests from one client.
    pub batches: u64,
    /// Fibers alive on this worker now (spawned or launched, running or suspended). A fiber leaves the count as
    /// it delivers its result (a joiner, or a `launch_then`'s continuation, that looks then does not see it),
    /// but a detached fiber whose result has a destructor counts again until that destructor has returned.
    /// None once the runtime has shut down: fibers suspended then are leaked, never to run again.
    pub fibers: u64,
    /// Clients the trustee serves now: one channel per client that has called it (a plain thread, a worker,
    /// a pooled client of `may` coroutines) and not yet gone away (a thread's goes when the thread exits: the
    /// close wakes the worker, which forgets the channel within its next round). A thread that only mailed the
    /// trustee (`apply_async`s, and `clone`s, `drop`s and `entrust`s before its first call) has none.
    pub channels: u64,
    /// Of those, the channels quiet for a while that the worker no longer looks at on every round of its
    /// loop: with more than 16 clients, one that sent nothing for 4,096 rounds rings the trustee's doorbell
    /// with its next request instead, so a thousand idle client threads cost a busy trustee nothing.
    pub cold_channels: u64,
    /// Times the worker went to sleep for lack of work (not counting its last looks for work before
    /// sleeping that found some).
    pub parks: u64,
    /// Time not asleep: serving, running fibers, and spinning briefly, then looking for work once more,
    /// before sleeping.
    pub busy: Duration,
    /// Time asleep (parked): it grows only while the worker sleeps, each sleep counted in `parks` as it begins.
    pub idle: Duration,
}

impl TrusteeMetrics {
    /// Requests served per batch answered (0 before the first batch). Requests that came by mail, in no
    /// batch (`apply_async`, and a thread's count changes and registrations when its slot was busy or it had
    /// none), count too, so this overstates batching when many did, without bound: 100 `apply_async`s and
    /// one `apply` read as 102 per batch.
    pub fn requests_per_batch(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.requests as f64 / self.batches as f64
        }
    }

    /// Fraction of the worker's time spent busy, in `0.0..=1.0`.
    pub fn busy_fraction(&self) -> f64 {
        let total = (self.busy + self.idle).as_secs_f64();
        if total == 0.0 { 0.0 } else { self.busy.as_secs_f64() / total }
    }
}

impl Trustee {
    /// This trustee's counters now; see [`TrusteeMetrics`]. It allocates nothing. Elsewhere it may spin while
    /// the worker starts or ends a sleep (a clock read); on the worker's own thread it never waits, even in a
    /// signal handler that interrupted the worker there (the time is then as it was, and may lack the sleep
    /// the worker was ending).
    pub fn metrics(&self) -> TrusteeMetrics {
        let on_its_worker = context::worker().is_some_and(|w| std::ptr::eq(w.shared, self.shared));
        let s = self.shared.metrics.snapshot(on_its_worker);
        TrusteeMetrics {
            trustee: self.index(),
            requests: s.requests,
            batches: s.batches,
            fibers: s.fibers,
            channels: s.channels,
            cold_channels: s.cold_channels,
            parks: s.parks,
            busy: s.busy,
            idle: s.idle,
        }
    }
}

impl Runtime {
    /// Every trustee's counters, by index; see [`TrusteeMetrics`]. Fine to call at any rate: it only
    /// reads.
    ///
    /// ```
    /// let rt = trust_core::runtime();
    /// let counter = rt.trustee(0).entrust(0u64);
    /// let before = rt.metrics()[0].requests;
    /// for _ in 0..10 {
    ///     counter.apply(|c| *c += 1);
    /// }
    /// assert!(rt.metrics()[0].requests >= before + 10);
    /// ```
    pub fn metrics(&self) -> Vec<TrusteeMetrics> {
        (0..self.workers()).map(|i| self.trustee(i).metrics()).collect()
    }
}
