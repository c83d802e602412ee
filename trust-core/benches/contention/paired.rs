//! `paired`: the issue-11 ratios that swing with the machine — to the bare ring, and of the delegation rows to
//! `parking_lot` — with both sides of each measured right after each other, round after round. On this VM the
//! ring's own rate swings severalfold from one second to the next (67 and 434 M ops/s in two runs of one
//! morning; 41 and 365 within one minute), and a contended lock's with it, so a ratio between rows measured
//! seconds apart is off by whatever the machine did in between. A round here takes one sample of every row
//! within about half a second, and the table gives the median of the rounds' ratios, the lowest and the
//! highest, and how many rounds met the target.

use trust_core::{Runtime, Trust};

use crate::counter::{FIBERS_PER_WORKER, count_then, pipelined};
use crate::counters::{parking_counters, pick, seed, trust_counters};
use crate::fiber_ring::{self, Layout};
use crate::harness::{
    Bench, Config, LATENCY_BATCH, Padded, Stop, Unit, check, latency_ops, median_ns, print_result,
};
use crate::latency::on_worker_0;
use crate::limit;
use crate::rng::Rng;

const SCENARIO: &str = "paired";

#[derive(Clone, Copy)]
enum Target {
    AtLeast(f64),
    AtMost(f64),
}

impl Target {
    fn met(self, ratio: f64) -> bool {
        match self {
            Target::AtLeast(t) => ratio >= t,
            Target::AtMost(t) => ratio <= t,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::AtLeast(t) => write!(f, ">= {t}x"),
            Target::AtMost(t) => write!(f, "<= {t}x"),
        }
    }
}

/// Runs `op` until the sample stops; returns how many times it ran.
fn until_stopped(stop: &Stop, mut op: impl FnMut()) -> u64 {
    let mut i = 0;
    while stop.running() {
        op();
        i += 1;
    }
    i
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// What a round measures, in this order: (row name, threads, unit).
const MEASURED: [(&str, usize, Unit); 13] = [
    ("ring_pipelined", 2, Unit::Mops),
    ("ring_closures", 2, Unit::Mops),
    ("trust_apply_then", 1, Unit::Mops),
    ("ring_roundtrip", 2, Unit::Ns),
    ("trust_remote", 1, Unit::Ns),
    ("trust_remote_fiber", 1, Unit::Ns),
    ("counter/parking_lot", 2, Unit::Mops),
    ("counter/trust_apply_then", 2, Unit::Mops),
    ("counter/trust_fibers", 2, Unit::Mops),
    ("counter/ring_fibers", 2, Unit::Mops),
    ("counters-1024/parking_lot", 2, Unit::Mops),
    ("counters-1024/trust_fibers", 2, Unit::Mops),
    ("counters-1024/ring_fibers", 2, Unit::Mops),
];
// Their places in a round.
const RING: usize = 0;
const CLOSURES: usize = 1;
const THEN1: usize = 2;
const RING_RT: usize = 3;
const REMOTE: usize = 4;
const REMOTE_FIBER: usize = 5;
const PARKING: usize = 6;
const THEN2: usize = 7;
const FIBERS: usize = 8;
const FLOOR: usize = 9;
const C_PARKING: usize = 10;
const C_FIBERS: usize = 11;
const C_FLOOR: usize = 12;

/// The ratios of the table: name, target, and the places of the two measurements divided.
const RATIOS: [(&str, Option<Target>, usize, usize); 13] = [
    (
        "`trust_apply_then` 1 thread / `ring_pipelined`",
        Some(Target::AtLeast(0.5)),
        THEN1,
        RING,
    ),
    (
        "`trust_apply_then` 1 thread / `ring_closures`",
        None,
        THEN1,
        CLOSURES,
    ),
    ("`ring_closures` / `ring_pipelined`", None, CLOSURES, RING),
    (
        "`trust_remote` / `ring_roundtrip`",
        Some(Target::AtMost(1.15)),
        REMOTE,
        RING_RT,
    ),
    (
        "`trust_remote_fiber` / `ring_roundtrip`",
        Some(Target::AtMost(1.3)),
        REMOTE_FIBER,
        RING_RT,
    ),
    (
        "`counter` 2 x 256 fibers / `parking_lot` 2 threads",
        Some(Target::AtLeast(2.0)),
        FIBERS,
        PARKING,
    ),
    ("`counter` fibers / `ring_fibers`", None, FIBERS, FLOOR),
    (
        "`counter` `ring_fibers` / `parking_lot`",
        None,
        FLOOR,
        PARKING,
    ),
    (
        "`counter` `trust_apply_then` / `parking_lot`, 2 threads",
        Some(Target::AtLeast(1.0)),
        THEN2,
        PARKING,
    ),
    (
        "`ring_closures` / `parking_lot` 2 threads",
        None,
        CLOSURES,
        PARKING,
    ),
    (
        "`counters-1024` fibers / `parking_lot` 2 threads",
        Some(Target::AtLeast(0.5)),
        C_FIBERS,
        C_PARKING,
    ),
    (
        "`counters-1024` fibers / `ring_fibers`",
        None,
        C_FIBERS,
        C_FLOOR,
    ),
    (
        "`counters-1024` `ring_fibers` / `parking_lot`",
        None,
        C_FLOOR,
        C_PARKING,
    ),
];

pub fn run(b: &mut Bench, rt: &Runtime) {
    if rt.workers() < 2 {
        println!("paired: one worker only, so no trustee on another core: skipped");
        return;
    }
    let rounds = if b.cfg.quick { 9 } else { 21 };
    let samples = b.cfg.latency_samples;
    // One sample per measurement, no line printed for it: a round's values only feed the ratios.
    let mut one = Bench::new(Config {
        samples: 1,
        ..b.cfg.clone()
    });
    one.print = false;
    let last = |one: &Bench| one.rows.last().expect("just measured").value;

    let counter: &'static Trust<u64> = Box::leak(Box::new(rt.trustee(0).entrust(0u64)));
    let remote: &'static Trust<u64> = Box::leak(Box::new(rt.trustee(1).entrust(0u64)));
    let parking = Padded(parking_lot::Mutex::new(0u64));
    let c_parking = parking_counters();
    let c_trust = trust_counters(rt);

    let mut raw: Vec<[f64; MEASURED.len()]> = Vec::with_capacity(rounds);
    // Operations each shared value must count at the end.
    let (mut on_counter, mut on_parking, mut on_c_parking, mut on_c_trust) = (0, 0, 0, 0);
    for _ in 0..rounds {
        let mut v = [0.0; MEASURED.len()];
        v[RING] = limit::ring_row(&mut one, SCENARIO);
        v[CLOSURES] = limit::closure_ring_row(&mut one, SCENARIO);
        on_counter += one.threads(SCENARIO, "then1", 1, |_, stop| {
            pipelined(stop, || counter.apply_then(|c| *c += 1, count_then))
        });
        v[THEN1] = last(&one);
        v[RING_RT] = limit::roundtrip(samples);
        v[REMOTE] = median_ns(samples, || remote.apply(|c| *c += 1));
        v[REMOTE_FIBER] = on_worker_0(move || median_ns(samples, || remote.apply(|c| *c += 1)));
        on_parking += one.threads(SCENARIO, "parking", 2, |_, stop| {
            until_stopped(stop, || *parking.lock() += 1)
        });
        v[PARKING] = last(&one);
        on_counter += one.threads(SCENARIO, "then2", 2, |_, stop| {
            pipelined(stop, || counter.apply_then(|c| *c += 1, count_then))
        });
        v[THEN2] = last(&one);
        on_counter += one.fibers(SCENARIO, "fibers", 2, FIBERS_PER_WORKER, move |_, stop| {
            until_stopped(stop, || counter.apply(|c| *c += 1))
        });
        v[FIBERS] = last(&one);
        v[FLOOR] = fiber_ring::row(&mut one, SCENARIO, 2, Layout::One);
        on_c_parking += one.threads(SCENARIO, "c_parking", 2, |t, stop| {
            let mut rng = Rng::new(seed(t));
            until_stopped(stop, || *c_parking[pick(&mut rng)].lock() += 1)
        });
        v[C_PARKING] = last(&one);
        on_c_trust += one.fibers(
            SCENARIO,
            "c_fibers",
            2,
            FIBERS_PER_WORKER,
            move |f, stop| {
                let mut rng = Rng::new(seed(f));
                until_stopped(stop, || c_trust[pick(&mut rng)].apply(|c| *c += 1))
            },
        );
        v[C_FIBERS] = last(&one);
        v[C_FLOOR] = fiber_ring::row(&mut one, SCENARIO, 2, Layout::Spread);
        raw.push(v);
        one.rows.clear();
    }
    check(
        SCENARIO,
        "trust_apply_then and trust_fibers",
        2,
        on_counter,
        counter.apply(|c| *c),
    );
    check(
        SCENARIO,
        "trust_remote",
        1,
        2 * rounds as u64 * latency_ops(samples),
        remote.apply(|c| *c),
    );
    check(SCENARIO, "parking_lot", 2, on_parking, *parking.lock());
    let c_parking_sum: u64 = c_parking.iter().map(|m| *m.lock()).sum();
    check(
        SCENARIO,
        "counters-1024/parking_lot",
        2,
        on_c_parking,
        c_parking_sum,
    );
    let c_trust_sum: u64 = c_trust.iter().map(|t| t.apply(|c| *c)).sum();
    check(
        SCENARIO,
        "counters-1024/trust_fibers",
        2,
        on_c_trust,
        c_trust_sum,
    );

    let column = |i: usize| raw.iter().map(|r| r[i]).collect::<Vec<f64>>();
    let medians: Vec<f64> = (0..MEASURED.len()).map(|i| median(&column(i))).collect();
    for (&(imp, threads, unit), &m) in MEASURED.iter().zip(&medians) {
        print_result(SCENARIO, imp, threads, m, unit);
    }
    println!();
    println!("### paired: ratios measured back to back, median of {rounds} rounds");
    println!(
        "Each round takes one sample of each row ({} ms for throughput; {samples} samples of {LATENCY_BATCH} \
         round trips for latency), as its own scenario measures it: the rings as in `limit`, \
         `trust_apply_then` and the fibers on one counter (and their floor, `ring_fibers`) as in `counter`, the \
         round trips as in `latency`, the 1,024 counters (and their floor) as in `counters-1024`; the ratios are each round's. Medians of the rounds: {}.",
        b.cfg.duration.as_millis(),
        MEASURED
            .iter()
            .zip(&medians)
            .map(|(&(imp, _, unit), m)| match unit {
                Unit::Mops => format!("`{imp}` {m:.1} M ops/s"),
                Unit::Ns => format!("`{imp}` {m:.1} ns"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    println!("| ratio | target | median | lowest | highest | rounds meeting the target |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for (name, target, over, under) in RATIOS {
        let ratios: Vec<f64> = raw.iter().map(|r| r[over] / r[under]).collect();
        let lowest = ratios.iter().copied().fold(f64::MAX, f64::min);
        let highest = ratios.iter().copied().fold(f64::MIN, f64::max);
        let (target, met) = match target {
            Some(t) => (t.to_string(), count_met(t, &ratios)),
            None => ("-".to_owned(), "-".to_owned()),
        };
        println!(
            "| {name} | {target} | {:.2}x | {lowest:.2}x | {highest:.2}x | {met} |",
            median(&ratios)
        );
    }
}

fn count_met(target: Target, rounds: &[f64]) -> String {
    let met = rounds.iter().filter(|&&r| target.met(r)).count();
    format!("{met} of {}", rounds.len())
}
