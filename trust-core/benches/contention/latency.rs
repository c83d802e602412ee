//! `latency`: one thread, no contention. What one operation costs when nobody else wants the data: a lock's
//! uncontended lock/unlock, `apply` on the caller's own trustee (the local shortcut: the closure runs inline),
//! and `apply` to another worker's trustee (a full round trip through the slots, the client waiting).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use trust_core::{Runtime, Trust};

use crate::harness::{Bench, Padded, Unit, check, latency_ops, median_ns};

const SCENARIO: &str = "latency";

/// Runs `f` in a fiber on worker 0 and returns its result. Spawn is round-robin: a fiber that lands
/// elsewhere returns at once, and another is spawned.
pub fn on_worker_0<R: Send + 'static>(f: impl FnOnce() -> R + Clone + Send + 'static) -> R {
    loop {
        let f = f.clone();
        let fiber = trust_core::spawn(move || (trust_core::local_trustee().index() == 0).then(f));
        if let Some(r) = fiber
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        {
            return r;
        }
    }
}

pub fn run(b: &mut Bench, rt: &Runtime) {
    let samples = b.cfg.latency_samples;

    let std_mutex = Padded(Mutex::new(0u64));
    b.latency(SCENARIO, "std_mutex", || *std_mutex.lock().unwrap() += 1);
    check(
        SCENARIO,
        "std_mutex",
        1,
        latency_ops(samples),
        *std_mutex.lock().unwrap(),
    );

    let parking = Padded(parking_lot::Mutex::new(0u64));
    b.latency(SCENARIO, "parking_lot", || *parking.lock() += 1);
    check(
        SCENARIO,
        "parking_lot",
        1,
        latency_ops(samples),
        *parking.lock(),
    );

    let spin = Padded(spin::Mutex::new(0u64));
    b.latency(SCENARIO, "spin", || *spin.lock() += 1);
    check(SCENARIO, "spin", 1, latency_ops(samples), *spin.lock());

    let atomic = Padded(AtomicU64::new(0));
    b.latency(SCENARIO, "atomic", || {
        atomic.fetch_add(1, Ordering::Relaxed);
    });
    check(
        SCENARIO,
        "atomic",
        1,
        latency_ops(samples),
        atomic.load(Ordering::Relaxed),
    );

    // From a fiber on worker 0: `apply` to trustee 0 runs inline, `apply` to trustee 1 suspends the fiber
    // while its worker sends the request.
    let local: &'static Trust<u64> = Box::leak(Box::new(rt.trustee(0).entrust(0)));
    let remote: Option<&'static Trust<u64>> =
        (rt.workers() >= 2).then(|| &*Box::leak(Box::new(rt.trustee(1).entrust(0))));
    // The ring's round trip again, right before the round-trip rows: on a shared VM the cross-core latency
    // drifts within a run, so `vs ring` compares rows measured seconds apart, not half a minute.
    if remote.is_some()
        && let Some(ring) = &mut b.ring
    {
        let ns = crate::limit::roundtrip(samples);
        ring.roundtrip_ns = ns;
        b.record(SCENARIO, "ring_roundtrip", 2, ns, Unit::Ns);
    }
    let (local_ns, fiber_remote_ns) = on_worker_0(move || {
        (
            median_ns(samples, || local.apply(|c| *c += 1)),
            remote.map(|r| median_ns(samples, || r.apply(|c| *c += 1))),
        )
    });
    b.record(SCENARIO, "trust_local", 1, local_ns, Unit::Ns);
    check(
        SCENARIO,
        "trust_local",
        1,
        latency_ops(samples),
        local.apply(|c| *c),
    );
    match (remote, fiber_remote_ns) {
        (Some(remote), Some(ns)) => {
            b.record(SCENARIO, "trust_remote_fiber", 1, ns, Unit::Ns);
            b.latency(SCENARIO, "trust_remote", || remote.apply(|c| *c += 1));
            check(
                SCENARIO,
                "trust_remote",
                1,
                2 * latency_ops(samples),
                remote.apply(|c| *c),
            );
        }
        _ => {
            println!("latency: one worker only, so no remote trustee: the remote rows are skipped")
        }
    }

    b.table(
        SCENARIO,
        "`trust_local`: `apply` from a fiber on worker 0 to a property of trustee 0 (local shortcut, runs \
         inline). `trust_remote_fiber`: from that fiber to trustee 1 (the fiber suspends for the round trip). \
         `trust_remote`: blocking `apply` from the main thread to trustee 1, one request in flight. For these \
         two round-trip rows, `vs ring` is the runtime's cost over the bare ring's round trip.",
    );
}
