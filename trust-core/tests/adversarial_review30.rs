//! Review 30: programs written to break the promises of "cold channels" (commit ba7c19c, README "Idle clients
//! cost nothing", `protocol/cold.rs`, `Worker::{cool_quiet, answer_doorbell, warm_pending, serve, has_work}`):
//! a worker with more than 16 channels stops looking at those quiet for 4,096 rounds, and their clients ring
//! its doorbell when they publish (or close) again.
//!
//! Attacked here: a cold client of a trustee that sleeps (only the doorbell and its wake can tell it; a lost
//! ring would hang, a lost wake would cost the 100 ms safety net: latencies are measured), a thousand cold
//! clients ringing at once, cold clients exiting in bulk while their trustee sleeps (the channel counts must
//! come back exactly, without anyone calling it), the 16-channel threshold and the metrics' exact counts,
//! the order of one client's requests across cold/warm transitions (with records left unpublished while the
//! channel cools), a value whose last handle is dropped (or taken with `into_inner`) while a cold client
//! still holds unpublished requests on it (the retire logic must wait for them, and drop it exactly once),
//! shutdown while cold channels hold published and unpublished batches, a batch paused on a held `Latch`
//! among channels that cool, `may` coroutine clients (pooled) and a worker's fibers calling another trustee
//! whose channel from that worker went cold.
//!
//! Findings (both failing on ba7c19c, fixed since: a client announcing unpublished records on a cold channel
//! rings too, a retire answers the doorbell and then reads only the hot channels, and a sweep cools whenever
//! more than 16 channels exist):
//! - `idle_clients_cost_nothing_to_a_values_last_drop`: `Worker::retire_with` still reads every channel, cold
//!   ones included, so 1,000 idle client threads make each last-handle drop (and each `try_unwrap`,
//!   `into_inner`, count dipping to zero) 35-75x slower (release: 0.12 us -> 4.3-9.1 us).
//! - `seventeen_channels_cool_every_quiet_one`: `Worker::cool_quiet` compares the *hot* count with 16, so the
//!   channels not yet quiet at the first sweep past 16 stay hot for good, however long they are quiet (the
//!   metrics' "with more than 16 clients, one that sent nothing for 4,096 rounds rings" does not hold).
//!
//! Every test runs in a child process of its own (the channel counts are the runtime's), one at a time
//! (`SERIAL`: the timing tests must not share the two cores with another child), under a watchdog.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

#[macro_use]
mod common;
use common::*;
use trust_core::{Latch, Trust, wait_pending};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Trustee 1's channel counts now: all of them, and the cold ones.
fn channels() -> (u64, u64) {
    channel_counts(1)
}

/// Waits until every channel of trustee 1 but `hot` of them is cold (someone keeps the trustee busy).
fn wait_all_cold_but(hot: u64) {
    wait_until(
        &format!("all channels of trustee 1 but {hot} cold"),
        30,
        || {},
        || {
            let (all, cold) = channels();
            all >= hot && cold == all - hot
        },
    );
}

type Cmd = Box<dyn FnOnce(&Trust<u64>) + Send>;

/// Plain client threads of trustee 1: each calls `c` once (its channel), then runs the commands sent to it,
/// one after another, with its own handle of `c` (so that the main thread clones nothing meanwhile: a clone
/// is a request on its own channel), until the sender is dropped.
struct Clients {
    tx: Vec<mpsc::Sender<Cmd>>,
    threads: Vec<JoinHandle<()>>,
}

impl Clients {
    fn new(n: usize, c: &Trust<u64>) -> Self {
        let called = Arc::new(Barrier::new(n + 1));
        let (mut tx, mut threads) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let (t, rx) = mpsc::channel::<Cmd>();
            let (c, called) = (c.clone(), called.clone());
            let h = thread::Builder::new()
                .stack_size(128 << 10)
                .spawn(move || {
                    c.apply(|c| *c += 1);
                    called.wait();
                    while let Ok(cmd) = rx.recv() {
                        cmd(&c);
                    }
                })
                .expect("a client thread");
            tx.push(t);
            threads.push(h);
        }
        called.wait();
        Clients { tx, threads }
    }

    fn run(&self, i: usize, f: impl FnOnce(&Trust<u64>) + Send + 'static) {
        self.tx[i]
            .send(Box::new(f))
            .expect("the client thread runs");
    }

    /// Every thread runs `f(i)` at once (released together); returns once all are done (bounded).
    fn all(&self, secs: u64, f: impl Fn(usize, &Trust<u64>) + Send + Sync + 'static) {
        let f = Arc::new(f);
        let go = Arc::new(Barrier::new(self.tx.len()));
        let (done_tx, done_rx) = mpsc::channel();
        for i in 0..self.tx.len() {
            let (f, go, done) = (f.clone(), go.clone(), done_tx.clone());
            self.run(i, move |c| {
                go.wait();
                f(i, c);
                done.send(()).unwrap();
            });
        }
        let deadline = Instant::now() + Duration::from_secs(secs);
        for _ in 0..self.tx.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            done_rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("HUNG: clients not done within {secs} s"));
        }
    }

    /// The threads exit (all at once), and are joined.
    fn exit(self) {
        drop(self.tx);
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

/// Channels kept hot by [`keep_busy`]: more than 16 (written when a sweep cooled only while more than 16 were
/// hot, see `seventeen_channels_cool_every_quiet_one`; the counts below hold either way).
const BUSY: usize = 17;

/// Keeps trustee 1 busy without any channel of its own being ever quiet, so that the channel counts are
/// exact: a fiber launched on a latch there holds it and yields in a loop (its worker runs round after round,
/// never sleeps), and `BUSY` plain threads' `apply`s on the latch wait behind it, each a batch paused on its
/// channel (hot for good: a paused channel never cools). Once `stop` is set, the latch is released, every
/// waiter gets its answer (checked) and exits, and the handle returns 0 (no request on `c`: the totals'
/// "busy" term). Busy client threads would not do: a busy thread the OS leaves off the cores for 4,096
/// rounds (a few ms) has its channel cooled like any.
fn keep_busy(_c: &Trust<u64>, stop: &Arc<AtomicBool>) -> JoinHandle<u64> {
    let l = rt().trustee(1).entrust(Latch::new(0u64));
    let (held, release) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let holder = {
        let (l, held, release) = (l.clone(), held.clone(), release.clone());
        thread::spawn(move || {
            l.launch(move |latch| {
                let mut g = latch.lock();
                held.store(true, Ordering::SeqCst);
                while !release.load(Ordering::SeqCst) {
                    trust_core::yield_now();
                }
                *g += 1;
            })
        })
    };
    wait_until("the latch held", 30, || {}, || held.load(Ordering::SeqCst));
    let before = channels().0;
    let waiters: Vec<_> = (0..BUSY)
        .map(|_| {
            let l = l.clone();
            thread::Builder::new()
                .stack_size(128 << 10)
                .spawn(move || l.apply(|l| *l.get_mut()))
                .unwrap()
        })
        .collect();
    wait_until(
        &format!("the latch's waiters' channels: {before} + {BUSY} at least"),
        30,
        || {},
        || channels().0 >= before + BUSY as u64,
    );
    thread::sleep(Duration::from_millis(10));
    let stop = stop.clone();
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(1));
        }
        release.store(true, Ordering::SeqCst);
        holder.join().unwrap();
        for w in waiters {
            assert_eq!(w.join().unwrap(), 1, "a waiter on the latch");
        }
        drop(l);
        0
    })
}

/// A real busy thread (blocking applies on `c` one after another) until `stop`; returns its applies.
fn keep_busy_with(threads: usize, c: &Trust<u64>, stop: &Arc<AtomicBool>) -> JoinHandle<u64> {
    // Each has made its channel (its first call) before this returns.
    let started = Arc::new(Barrier::new(threads + 1));
    let busy: Vec<_> = (0..threads)
        .map(|_| {
            let (c, stop, started) = (c.clone(), stop.clone(), started.clone());
            thread::spawn(move || {
                c.apply(|c| *c += 1);
                started.wait();
                let mut n = 1;
                while !stop.load(Ordering::Relaxed) {
                    c.apply(|c| *c += 1);
                    n += 1;
                }
                n
            })
        })
        .collect();
    started.wait();
    thread::spawn(move || busy.into_iter().map(|b| b.join().unwrap()).sum())
}

/// Keeps trustee 1 busy until every channel but the busy threads' is cold, then stops and joins the busy
/// threads, waits until their channels are gone, and lets the worker fall asleep. Returns the busy applies.
fn cool_all_then_sleep(c: &Trust<u64>) -> u64 {
    let stop = Arc::new(AtomicBool::new(false));
    let busy = keep_busy(c, &stop);
    wait_all_cold_but(BUSY as u64);
    stop.store(true, Ordering::Relaxed);
    let n = busy.join().unwrap();
    wait_until(
        "the busy thread's channel gone, every other one cold",
        20,
        || {},
        || {
            let (all, cold) = channels();
            all == cold
        },
    );
    thread::sleep(Duration::from_millis(30));
    n
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Promise: a cold client of a trustee that sleeps is served at once ("their clients ring its doorbell with
/// their next request"; the ring wakes the worker: a worker about to sleep looks only at hot channels and the
/// doorbell). 200 idle threads go cold, the trustee falls asleep, and each thread in turn (3 ms apart, so
/// the worker sleeps again) makes one blocking `apply`: a lost ring would hang (10 s bound per call), a lost
/// wake would cost the 100 ms safety net. Bound: median under 20 ms and at most a tenth of the calls over
/// 90 ms (measured: median 60-120 us, max 1-3 ms). Then all 200 ring at once, 5 applies each; exact total.
#[test]
fn a_sleeping_trustee_serves_each_cold_client_at_once() {
    let _s = serial();
    in_child!("a_sleeping_trustee_serves_each_cold_client_at_once", 90);
    let far = rt().trustee(1).entrust(0u64);
    far.apply(|c| *c += 1);
    let n = 200;
    let clients = Clients::new(n, &far);
    let busy = cool_all_then_sleep(&far);
    let (all, cold) = channels();
    assert_eq!(all, cold);
    assert!(cold >= n as u64, "{cold} cold");
    let mut lat = Vec::new();
    for i in 0..n {
        thread::sleep(Duration::from_millis(3));
        let (tx, rx) = mpsc::channel();
        clients.run(i, move |c| {
            let t = Instant::now();
            c.apply(|c| *c += 1);
            tx.send(t.elapsed()).unwrap();
        });
        lat.push(
            rx.recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("HUNG: cold client {i}'s apply not served in 10 s")),
        );
    }
    let slow = lat
        .iter()
        .filter(|d| **d >= Duration::from_millis(90))
        .count();
    let max = *lat.iter().max().unwrap();
    let med = median(&mut lat);
    eprintln!(
        "cold client's apply to a sleeping trustee: median {med:?}, max {max:?}, {slow} of {n} >= 90 ms"
    );
    assert!(
        med < Duration::from_millis(20),
        "median {med:?}: the ring's wake was lost"
    );
    assert!(
        slow <= n / 10,
        "{slow} of {n} calls waited for the safety net"
    );
    // All at once, asleep and cold again.
    let busy2 = cool_all_then_sleep(&far);
    clients.all(20, move |_, c| {
        for _ in 0..5 {
            c.apply(|c| *c += 1);
        }
    });
    clients.exit();
    assert_eq!(
        far.apply(|c| *c),
        1 + n as u64 + busy + n as u64 + busy2 + 5 * n as u64
    );
    child_ok();
}

/// Promise (metrics: "a thread's [channel] goes when the thread exits"; cold ones too, "their close rings the
/// doorbell"): 300 cold client threads of a sleeping trustee exit all at once, and nobody calls that trustee
/// afterwards. Its channel counts must come back exactly (300 fewer, all of them cold ones), by the rings alone.
#[test]
fn cold_threads_exiting_in_bulk_leave_no_channel_on_a_sleeping_trustee() {
    let _s = serial();
    in_child!(
        "cold_threads_exiting_in_bulk_leave_no_channel_on_a_sleeping_trustee",
        90
    );
    let far = rt().trustee(1).entrust(0u64);
    far.apply(|c| *c += 1);
    let (base, _) = channels();
    let clients = Clients::new(300, &far);
    assert_eq!(channels().0, base + 300, "a channel per new client");
    cool_all_then_sleep(&far);
    assert_eq!(channels(), (base + 300, base + 300));
    clients.exit();
    wait_until(
        "the exited threads' cold channels gone",
        20,
        || {},
        || channels() == (base, base),
    );
    // And nothing comes back later.
    thread::sleep(Duration::from_millis(50));
    assert_eq!(channels(), (base, base));
    child_ok();
}

/// Sets up exactly 16 channels on trustee 1 (`base` before, then idle threads, then one busy thread), and
/// keeps the busy one going for 100,000 more batches (a hundred thousand rounds of its worker: 24 sweeps).
/// Returns the idle clients, the busy thread's stop flag and handle, and the most cold channels seen.
fn sixteen_channels(far: &Trust<u64>) -> (Clients, Arc<AtomicBool>, JoinHandle<u64>, u64) {
    let (base, cold) = channels();
    assert_eq!(cold, 0);
    assert!((1..=4).contains(&base), "{base} channels before any client");
    let clients = Clients::new(15 - base as usize, far);
    let stop = Arc::new(AtomicBool::new(false));
    let busy = keep_busy_with(1, far, &stop);
    wait_until(
        "the busy thread's channel",
        10,
        || {},
        || channels().0 == 16,
    );
    let batches = rt().trustee(1).metrics().batches;
    let mut max_cold = 0;
    wait_until(
        "100,000 batches",
        30,
        || max_cold = max_cold.max(channels().1),
        || rt().trustee(1).metrics().batches >= batches + 100_000,
    );
    (clients, stop, busy, max_cold)
}

/// Promise: "Programs with 16 channels or fewer per trustee never cool one" (docs/performance.md). Exactly 16
/// channels on trustee 1, one kept busy for 100,000 batches (24 sweeps): the metrics never show a cold one.
#[test]
fn sixteen_channels_never_cool() {
    let _s = serial();
    in_child!("sixteen_channels_never_cool", 60);
    let far = rt().trustee(1).entrust(0u64);
    far.apply(|c| *c += 1);
    let (clients, stop, busy, max_cold) = sixteen_channels(&far);
    assert_eq!(max_cold, 0, "16 channels, and some cooled");
    assert_eq!(channels(), (16, 0));
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
    clients.exit();
    child_ok();
}

/// Failed on ba7c19c (review 30), fixed since: the metrics promise that "with more than 16 clients, one that sent nothing for 4,096
/// rounds rings the trustee's doorbell with its next request" (`TrusteeMetrics::cold_channels`; README: "With
/// more than 16, it stops looking at those quiet for 4,096 rounds"). `Worker::cool_quiet` returned at once
/// when 16 or fewer channels were *hot* (it now looks at how many exist): its first sweep past 16 cools the channels quiet then, and a channel that was not quiet yet (here
/// the 17th client's, registered less than 4,096 rounds before; or any warmed by a call later) stays hot
/// for good, however long it is quiet. Here: 16 channels, a 17th client calls once, and the busy thread goes
/// on for 100,000 more batches: 16 of the 17 are quiet for ~100,000 rounds, and the metrics show 14 or 15
/// cold, never 16.
#[test]
fn seventeen_channels_cool_every_quiet_one() {
    let _s = serial();
    in_child!("seventeen_channels_cool_every_quiet_one", 60);
    let far = rt().trustee(1).entrust(0u64);
    far.apply(|c| *c += 1);
    let (clients, stop, busy, _) = sixteen_channels(&far);
    let last = Clients::new(1, &far);
    let batches = rt().trustee(1).metrics().batches;
    wait_until(
        "100,000 batches",
        30,
        || {},
        || rt().trustee(1).metrics().batches >= batches + 100_000,
    );
    let seen = channels();
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
    last.exit();
    clients.exit();
    // 16 at least: the busy thread's channel may cool too, when the OS keeps it off the cores 4,096 rounds.
    assert!(
        seen.0 == 17 && seen.1 >= 16,
        "17 channels, 16 quiet for 100,000 rounds: (channels, cold) = {seen:?}"
    );
    child_ok();
}

/// Promise: the metrics count cold channels exactly, and a cold client's call warms its channel (only its
/// own). 40 idle threads and the main thread's channel go cold (17 busy threads keep more than 16 hot);
/// then one idle thread calls: right after its call returns, the metrics show exactly one cold channel fewer,
/// and one idle thread exiting (cold, by its close's ring) exactly one channel fewer, of the cold ones.
#[test]
fn a_cold_clients_call_warms_exactly_its_channel_and_its_exit_removes_it() {
    let _s = serial();
    in_child!(
        "a_cold_clients_call_warms_exactly_its_channel_and_its_exit_removes_it",
        60
    );
    let far = rt().trustee(1).entrust(0u64);
    far.apply(|c| *c += 1);
    let (base, _) = channels();
    let clients = Clients::new(40, &far);
    let last = Clients::new(1, &far);
    let stop = Arc::new(AtomicBool::new(false));
    let busy = keep_busy(&far, &stop);
    wait_all_cold_but(BUSY as u64);
    // The idle ones, `last`, the waiters and the thread that launched the latch's holder.
    let all = base + 41 + BUSY as u64 + 1;
    assert_eq!(channels(), (all, all - BUSY as u64));
    let (tx, rx) = mpsc::channel();
    last.run(0, move |c| {
        // Read on the trustee, as the call runs: right after the ring warmed its channel.
        tx.send(c.apply(|c| {
            *c += 1;
            rt().trustee(1).metrics()
        }))
        .unwrap();
    });
    let m = rx.recv_timeout(Duration::from_secs(10)).expect("served");
    assert_eq!(
        (m.channels, m.cold_channels),
        (all, all - BUSY as u64 - 1),
        "as a cold client's call runs"
    );
    wait_all_cold_but(BUSY as u64);
    last.exit();
    wait_until(
        "the exited cold client's channel gone",
        20,
        || {},
        || channels() == (all - 1, all - 1 - BUSY as u64),
    );
    stop.store(true, Ordering::Relaxed);
    let busy = busy.join().unwrap();
    clients.exit();
    assert_eq!(far.apply(|c| *c), 1 + 41 + 1 + busy);
    child_ok();
}

/// Promise: one client's requests run in issue order (DESIGN: per-client FIFO), whether its channel is hot
/// or cold. 8 clients among 40 idle ones, 6 phases: each phase issues 10 `apply_then`s and leaves them
/// unpublished (fewer than `PUBLISH_EVERY`), then waits while the trustee is kept busy until every quiet channel
/// is cold (theirs included, their records still unpublished), then issues 45 more (one publish at 48, ringing), a
/// blocking `apply` and 5 more `apply_then`s, `wait_pending`. The trustee logs (client, number): each
/// client's numbers must be exactly 0..366 in order, and each continuation sees its own number.
#[test]
fn one_clients_order_holds_across_cold_and_warm_with_records_left_unpublished() {
    let _s = serial();
    in_child!(
        "one_clients_order_holds_across_cold_and_warm_with_records_left_unpublished",
        120
    );
    let far = rt().trustee(1).entrust(0u64);
    let log = rt().trustee(1).entrust(Vec::<(usize, u64)>::new());
    far.apply(|c| *c += 1);
    let idle = Clients::new(40, &far);
    let writers = Clients::new(8, &far);
    let stop = Arc::new(AtomicBool::new(false));
    let busy = keep_busy(&far, &stop);
    let bad = Arc::new(AtomicUsize::new(0));
    let next: Vec<Arc<AtomicU64>> = (0..8).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let issue = |w: usize,
                 k: u64,
                 log: &Trust<Vec<(usize, u64)>>,
                 next: &AtomicU64,
                 bad: &Arc<AtomicUsize>| {
        for _ in 0..k {
            let n = next.fetch_add(1, Ordering::Relaxed);
            let bad = bad.clone();
            log.apply_then(
                move |l| {
                    l.push((w, n));
                    n
                },
                move |r| {
                    if r != n {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                },
            );
        }
    };
    let issue = Arc::new(issue);
    for _phase in 0..6 {
        // Unpublished records (the channel, announcing them, stays warm while the others cool).
        let (tx, rx) = mpsc::channel();
        for w in 0..8 {
            let (log, next, bad, issue, tx) = (
                log.clone(),
                next[w].clone(),
                bad.clone(),
                issue.clone(),
                tx.clone(),
            );
            writers.run(w, move |_| {
                issue(w, 10, &log, &next, &bad);
                tx.send(()).unwrap();
            });
        }
        for _ in 0..8 {
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        // The writers' channels, announcing unpublished records, stay warm.
        wait_all_cold_but(BUSY as u64 + 8);
        let (tx, rx) = mpsc::channel();
        for w in 0..8 {
            let (log, next, bad, issue, tx) = (
                log.clone(),
                next[w].clone(),
                bad.clone(),
                issue.clone(),
                tx.clone(),
            );
            writers.run(w, move |_| {
                issue(w, 45, &log, &next, &bad);
                let n = next.fetch_add(1, Ordering::Relaxed);
                log.apply(move |l| l.push((w, n)));
                issue(w, 5, &log, &next, &bad);
                wait_pending();
                tx.send(()).unwrap();
            });
        }
        for _ in 0..8 {
            rx.recv_timeout(Duration::from_secs(20))
                .expect("HUNG: a writer's phase");
        }
    }
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
    writers.exit();
    idle.exit();
    let log = log.apply(std::mem::take);
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "a continuation got another's result"
    );
    for w in 0..8 {
        let mine: Vec<u64> = log.iter().filter(|e| e.0 == w).map(|e| e.1).collect();
        assert_eq!(
            mine,
            (0..6 * 61).collect::<Vec<u64>>(),
            "client {w}'s order"
        );
    }
    child_ok();
}

/// A value that records its drops, and how many requests had run on it when it was dropped.
struct Tracked {
    applied: u64,
    drops: Arc<AtomicU64>,
    applied_at_drop: Arc<AtomicU64>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.applied_at_drop.store(self.applied, Ordering::SeqCst);
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

fn tracked() -> (Trust<Tracked>, Arc<AtomicU64>, Arc<AtomicU64>) {
    let (drops, at) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let v = rt().trustee(1).entrust(Tracked {
        applied: 0,
        drops: drops.clone(),
        applied_at_drop: at.clone(),
    });
    (v, drops, at)
}

/// How the cold client ends in [`last_handle_dropped_while_a_cold_client_holds_unpublished_requests`].
#[derive(Clone, Copy)]
enum Then {
    WaitPending,
    Exit,
}

/// A value on trustee 1 with 5 `apply_then`s on it unpublished by `holder`, a client thread whose channel had
/// gone cold (among 30 idle clients, the trustee kept busy until `stop`): the value's two handles (the
/// holder's came back), its drop counters, and what to stop and join after.
struct ColdHolder {
    v: Trust<Tracked>,
    escaped: Trust<Tracked>,
    drops: Arc<AtomicU64>,
    at: Arc<AtomicU64>,
    holder: Clients,
    idle: Clients,
    stop: Arc<AtomicBool>,
    busy: JoinHandle<u64>,
}

fn cold_holder() -> ColdHolder {
    let far = rt().trustee(1).entrust(0u64);
    far.apply(|c| *c += 1);
    let idle = Clients::new(30, &far);
    let (v, drops, at) = tracked();
    let v2 = v.clone();
    let holder = Clients::new(1, &far);
    let stop = Arc::new(AtomicBool::new(false));
    let busy = keep_busy(&far, &stop);
    wait_all_cold_but(BUSY as u64);
    let (htx, hrx) = mpsc::channel();
    holder.run(0, move |_| {
        for _ in 0..5 {
            v2.apply_then(|v| v.applied += 1, |()| ());
        }
        htx.send(v2).unwrap();
    });
    let escaped = hrx.recv_timeout(Duration::from_secs(10)).unwrap();
    ColdHolder {
        v,
        escaped,
        drops,
        at,
        holder,
        idle,
        stop,
        busy,
    }
}

/// A client thread (among 30 idle ones, the trustee kept busy) issues 5 `apply_then`s on a value, unpublished,
/// after its channel went cold, and hands its handle to the main thread, which drops it and its own: the
/// last handle. The value must wait for those 5 requests (README: "dropped once every request sent before
/// has run"): still there 100 ms later, then dropped exactly once, having seen all 5, once the client
/// publishes (`then`).
fn last_handle_dropped_while_a_cold_client_holds_unpublished_requests(then: Then) {
    let ColdHolder {
        v,
        escaped,
        drops,
        at,
        holder,
        idle,
        stop,
        busy,
    } = cold_holder();
    // Its records are unpublished, and its channel warm: announcing them on a cold channel rang the doorbell
    // (a retire reads only the channels the worker looks at).
    wait_until(
        "the holder's channel warmed by its announcement",
        10,
        || {},
        || {
            let (all, cold) = channels();
            cold == all - BUSY as u64 - 1
        },
    );
    drop(escaped);
    drop(v);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(
        drops.load(Ordering::SeqCst),
        0,
        "dropped before the cold client's requests ran"
    );
    match then {
        Then::WaitPending => holder.run(0, |_| wait_pending()),
        Then::Exit => holder.exit(),
    }
    wait_until(
        "the value dropped",
        20,
        || {},
        || drops.load(Ordering::SeqCst) > 0,
    );
    assert_eq!(
        at.load(Ordering::SeqCst),
        5,
        "requests run on it before its drop"
    );
    thread::sleep(Duration::from_millis(50));
    assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped once");
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
    idle.exit();
}

/// [`last_handle_dropped_while_a_cold_client_holds_unpublished_requests`], the client publishing with
/// `wait_pending` (a ring on its cold channel).
#[test]
fn last_handle_dropped_while_a_cold_client_holds_unpublished_requests_then_wait_pending() {
    let _s = serial();
    in_child!(
        "last_handle_dropped_while_a_cold_client_holds_unpublished_requests_then_wait_pending",
        60
    );
    last_handle_dropped_while_a_cold_client_holds_unpublished_requests(Then::WaitPending);
    child_ok();
}

/// [`last_handle_dropped_while_a_cold_client_holds_unpublished_requests`], the client publishing by exiting
/// (its outbox's last flush and close, both on a cold channel).
#[test]
fn last_handle_dropped_while_a_cold_client_holds_unpublished_requests_then_exit() {
    let _s = serial();
    in_child!(
        "last_handle_dropped_while_a_cold_client_holds_unpublished_requests_then_exit",
        60
    );
    last_handle_dropped_while_a_cold_client_holds_unpublished_requests(Then::Exit);
    child_ok();
}

/// Promise (`Trust::into_inner`: "the value comes back if no handle is counted once every request and count
/// change sent before has been served"): the last handle, escaped from a cold client that holds 5
/// unpublished requests on the value, is taken with `into_inner` on another thread. It must not return
/// while those wait (100 ms, trustee kept busy), and must return `Some` with all 5 applied once the client
/// publishes (`wait_pending`, ringing).
#[test]
fn into_inner_waits_for_a_cold_clients_unpublished_requests() {
    let _s = serial();
    in_child!(
        "into_inner_waits_for_a_cold_clients_unpublished_requests",
        60
    );
    let ColdHolder {
        v,
        escaped,
        drops,
        holder,
        idle,
        stop,
        busy,
        ..
    } = cold_holder();
    drop(v);
    let (rtx, rrx) = mpsc::channel();
    let taker = thread::spawn(move || {
        let got = escaped.into_inner().map(|t| t.applied);
        rtx.send(got).unwrap();
    });
    assert!(
        rrx.recv_timeout(Duration::from_millis(100)).is_err(),
        "into_inner returned before the cold client's requests ran"
    );
    holder.run(0, |_| wait_pending());
    let got = rrx
        .recv_timeout(Duration::from_secs(10))
        .expect("HUNG: into_inner");
    assert_eq!(got, Some(5));
    taker.join().unwrap();
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "taken, then dropped by the test"
    );
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
    holder.exit();
    idle.exit();
    child_ok();
}

/// Promise (`Runtime::shutdown`: "every worker answers what it was already sent, drops every property still
/// entrusted (each exactly once)"; unrun requests are dropped unrun): 100 cold client threads each issue
/// `PUBLISH_EVERY + 8` `apply_then`s (48 published on a cold channel: a ring; 8 unpublished) with counted
/// captures in the closure and the continuation, then the runtime shuts down at once, and the threads exit.
/// Every capture must be dropped exactly once (5,600 of each), the entrusted value once, and nothing hangs.
#[test]
fn shutdown_with_cold_channels_holding_batches_drops_everything_once() {
    let _s = serial();
    in_child!(
        "shutdown_with_cold_channels_holding_batches_drops_everything_once",
        60
    );
    let far = rt().trustee(1).entrust(0u64);
    far.apply(|c| *c += 1);
    let vdrops = Arc::new(AtomicUsize::new(0));
    let value = rt().trustee(1).entrust(CountsDrops(vdrops.clone()));
    let clients = Clients::new(100, &far);
    cool_all_then_sleep(&far);
    let (fdrops, cdrops) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (tx, rx) = mpsc::channel();
    for i in 0..100 {
        let (fdrops, cdrops, tx) = (fdrops.clone(), cdrops.clone(), tx.clone());
        clients.run(i, move |c| {
            for _ in 0..PUBLISH_EVERY + 8 {
                let (f, k) = (CountsDrops(fdrops.clone()), CountsDrops(cdrops.clone()));
                c.apply_then(
                    move |c| {
                        let _f = f;
                        *c += 1;
                    },
                    move |()| drop(k),
                );
            }
            tx.send(()).unwrap();
        });
    }
    for _ in 0..100 {
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    within(20, || rt().shutdown());
    assert_eq!(channels(), (0, 0), "a shut-down trustee serves no channel");
    within(20, move || clients.exit());
    drop(far);
    drop(value);
    assert_eq!(
        load(&fdrops),
        100 * (PUBLISH_EVERY + 8),
        "closure captures dropped once each"
    );
    assert_eq!(
        load(&cdrops),
        100 * (PUBLISH_EVERY + 8),
        "continuation captures dropped once each"
    );
    assert_eq!(load(&vdrops), 1, "the entrusted value dropped once");
    child_ok();
}

/// Promise (`Runtime::shutdown` "runs by itself at process exit"): the process exits (no explicit shutdown)
/// while 100 cold client threads are alive, each with `PUBLISH_EVERY` `apply_then`s published on its cold
/// channel (a ring) and 8 unpublished, and the trustee busy. The child must exit, promptly (the parent's deadline: 45 s).
#[test]
fn process_exit_with_cold_channels_holding_batches_does_not_hang() {
    let _s = serial();
    in_child!(
        "process_exit_with_cold_channels_holding_batches_does_not_hang",
        40
    );
    let far = rt().trustee(1).entrust(0u64);
    far.apply(|c| *c += 1);
    let clients = Clients::new(100, &far);
    let stop = Arc::new(AtomicBool::new(false));
    let busy = keep_busy(&far, &stop);
    wait_all_cold_but(BUSY as u64);
    let (tx, rx) = mpsc::channel();
    for i in 0..100 {
        let tx = tx.clone();
        clients.run(i, move |c| {
            for _ in 0..PUBLISH_EVERY + 8 {
                c.apply_then(|c| *c += 1, |()| ());
            }
            tx.send(()).unwrap();
            // Stays alive, its outbox untouched, until the process exits.
            thread::sleep(Duration::from_secs(3600));
        });
    }
    for _ in 0..100 {
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    std::mem::forget((clients, busy, stop));
    child_ok();
}

/// Promise: a plain `apply` on a `Trust<Latch<T>>` "waits until every launched fiber of it ends" (its batch
/// paused), while the other channels cool around it: the paused channel must stay hot (metrics: all cold
/// but the busy thread's and the waiter's, for 300 ms), and the waiter must get its answer once the fiber
/// ends (bounded), with the value the fiber left.
#[test]
fn a_batch_paused_on_a_held_latch_stays_hot_among_cooling_channels() {
    let _s = serial();
    in_child!(
        "a_batch_paused_on_a_held_latch_stays_hot_among_cooling_channels",
        60
    );
    let far = rt().trustee(1).entrust(0u64);
    far.apply(|c| *c += 1);
    let l = rt().trustee(1).entrust(Latch::new(0u64));
    let idle = Clients::new(40, &far);
    let release = Arc::new(AtomicBool::new(false));
    let held = Arc::new(AtomicBool::new(false));
    let (r, h) = (release.clone(), held.clone());
    let ended = Rc::new(Cell::new(false));
    let e = ended.clone();
    l.launch_then(
        move |latch| {
            let mut g = latch.lock();
            h.store(true, Ordering::SeqCst);
            while !r.load(Ordering::SeqCst) {
                trust_core::sleep(Duration::from_millis(1));
            }
            *g += 7;
        },
        move |()| e.set(true),
    );
    far.apply(|_| ()); // publishes the launch
    wait_until(
        "the fiber holds the latch",
        10,
        || {},
        || held.load(Ordering::SeqCst),
    );
    let l2 = l.clone();
    let waiter = thread::spawn(move || l2.apply(|l| *l.get_mut() + 100));
    // Its request published and paused before the channels cool.
    thread::sleep(Duration::from_millis(50));
    let stop = Arc::new(AtomicBool::new(false));
    let busy = keep_busy(&far, &stop);
    wait_all_cold_but(BUSY as u64 + 1);
    for _ in 0..300 {
        let (all, cold) = channels();
        assert_eq!(
            cold,
            all - BUSY as u64 - 1,
            "the waiter's paused channel cooled"
        );
        assert!(!waiter.is_finished());
        thread::sleep(Duration::from_millis(1));
    }
    release.store(true, Ordering::SeqCst);
    let got = within(10, move || waiter.join().unwrap());
    assert_eq!(got, 107);
    within(10, move || {
        stop.store(true, Ordering::Relaxed);
        busy.join().unwrap()
    });
    wait_pending();
    assert!(ended.get());
    idle.exit();
    child_ok();
}

/// Promise: `may` coroutines are clients too (a pooled client per coroutine call, README), and their pooled
/// channels cool like any: 200 idle threads and the pooled channels of 20 coroutines go cold, then 20
/// coroutines call again (10 `apply`s and 5 `apply_then`s each), first while the trustee is kept busy, then
/// (cooled again) while it sleeps. Every call completes (bounded) and the total is exact.
#[test]
fn coroutine_clients_gone_cold_are_served_by_busy_and_sleeping_trustees() {
    let _s = serial();
    in_child!(
        "coroutine_clients_gone_cold_are_served_by_busy_and_sleeping_trustees",
        90
    );
    let far = rt().trustee(1).entrust(0u64);
    far.apply(|c| *c += 1);
    let idle = Clients::new(200, &far);
    // Handles made beforehand: a clone on this thread is a request on its own channel, which would wake the
    // trustee just before the coroutines call.
    let handles = |n: usize| (0..n).map(|_| far.clone()).collect::<Vec<_>>();
    let coroutines = |k: u64, handles: Vec<Trust<u64>>| {
        let hs: Vec<_> = handles
            .into_iter()
            .map(|c| {
                coroutine(move || {
                    for _ in 0..k {
                        c.apply(|c| *c += 1);
                    }
                    let done = Rc::new(Cell::new(0));
                    for _ in 0..k / 2 {
                        let d = done.clone();
                        c.apply_then(|c| *c += 1, move |()| d.set(d.get() + 1));
                    }
                    wait_pending();
                    done.get()
                })
            })
            .collect();
        within(30, move || {
            hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
        })
    };
    assert_eq!(coroutines(2, handles(20)), 20);
    let (second, third) = (handles(20), handles(20));
    let stop = Arc::new(AtomicBool::new(false));
    let busy = keep_busy(&far, &stop);
    wait_all_cold_but(BUSY as u64);
    assert_eq!(coroutines(10, second), 100, "served while busy");
    stop.store(true, Ordering::Relaxed);
    let busy = busy.join().unwrap();
    let busy2 = cool_all_then_sleep(&far);
    let t = Instant::now();
    assert_eq!(coroutines(10, third), 100, "served while asleep");
    eprintln!(
        "20 cold coroutines x 15 calls to a sleeping trustee: {:?}",
        t.elapsed()
    );
    idle.exit();
    assert_eq!(
        far.apply(|c| *c),
        1 + 200 + 20 * 3 + 2 * 20 * 15 + busy + busy2
    );
    child_ok();
}

/// Promise: fibers are clients too; a worker's channel to another trustee cools like a thread's ("fibers on
/// both workers whose worker's channel went cold"), and its next publish rings. Here the other trustee
/// sleeps: 7 times, trustee 1 (100 idle threads) cools everything and falls asleep, then a fiber on worker 0
/// makes one `apply` to it. A lost ring would hang (10 s bound), a lost wake would take the 100 ms safety
/// net: median under 20 ms (measured: 50-200 us).
#[test]
fn a_fiber_whose_workers_channel_went_cold_wakes_a_sleeping_trustee() {
    let _s = serial();
    in_child!(
        "a_fiber_whose_workers_channel_went_cold_wakes_a_sleeping_trustee",
        90
    );
    calibrate();
    let far = rt().trustee(1).entrust(0u64);
    let c = far.clone();
    spawn_on(0, move || c.apply(|c| *c += 1)).join().unwrap();
    let idle = Clients::new(100, &far);
    // Made beforehand: a clone on this thread is a request, which would wake the trustee.
    let handles: Vec<_> = (0..7).map(|_| far.clone()).collect();
    let mut lat = Vec::new();
    let mut busy = 0;
    for c in handles {
        busy += cool_all_then_sleep(&far);
        let fiber = spawn_on(0, move || {
            let t = Instant::now();
            c.apply(|c| *c += 1);
            t.elapsed()
        });
        lat.push(within(10, move || fiber.join().unwrap()));
    }
    let med = median(&mut lat);
    eprintln!("a cold worker channel's apply to a sleeping trustee: {lat:?}");
    assert!(med < Duration::from_millis(20), "median {med:?}");
    idle.exit();
    assert_eq!(far.apply(|c| *c), 1 + 100 + 7 + busy);
    child_ok();
}

/// Promise: "one thread's `apply_then` at full rate" — and exact — across quiet spells: a thread pipelines
/// 20,000 `apply_then`s (each checking it sees the count it expects: issue order), `wait_pending`, then stays
/// quiet until its channel is cold (100 idle threads, the trustee kept busy by another property's requests),
/// 4 times over; the last spell it leaves 20 unpublished records while the others cool (its channel, announcing them, stays warm).
#[test]
fn an_apply_then_pipeline_that_goes_quiet_and_resumes_stays_exact() {
    let _s = serial();
    in_child!(
        "an_apply_then_pipeline_that_goes_quiet_and_resumes_stays_exact",
        90
    );
    let far = rt().trustee(1).entrust(0u64);
    far.apply(|c| *c += 1);
    let seq = rt().trustee(1).entrust(0u64);
    let idle = Clients::new(100, &far);
    let pipe = Clients::new(1, &far);
    let stop = Arc::new(AtomicBool::new(false));
    let busy = keep_busy(&far, &stop);
    let bad = Arc::new(AtomicU64::new(0));
    let expect = Arc::new(AtomicU64::new(0));
    let seqs: Vec<_> = (0..4).map(|_| seq.clone()).collect();
    for (spell, s) in seqs.into_iter().enumerate() {
        let (bad, expect) = (bad.clone(), expect.clone());
        let (tx, rx) = mpsc::channel();
        let last = spell == 3;
        pipe.run(0, move |_| {
            let n = if last { 20 } else { 20_000 };
            for _ in 0..n {
                let want = expect.fetch_add(1, Ordering::Relaxed);
                let bad = bad.clone();
                s.apply_then(
                    move |s| {
                        let got = *s;
                        *s += 1;
                        got
                    },
                    move |got| {
                        if got != want {
                            bad.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                );
            }
            if !last {
                wait_pending();
            }
            tx.send(()).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("HUNG: a pipeline spell");
        // After the last spell its 20 records are unpublished: its channel, announcing them, stays warm.
        wait_all_cold_but(BUSY as u64 + u64::from(last));
    }
    let (tx, rx) = mpsc::channel();
    pipe.run(0, move |_| {
        wait_pending();
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("HUNG: the last wait_pending");
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
    assert_eq!(bad.load(Ordering::Relaxed), 0, "a request out of order");
    assert_eq!(seq.apply(|s| *s), 3 * 20_000 + 20);
    pipe.exit();
    idle.exit();
    child_ok();
}

/// Mean ns per value of dropping `n` values' last handles on trustee 1 (the trustee retires each), entrusted
/// beforehand; ends with a blocking call so that every drop has been counted.
fn last_drop_ns(far: &Trust<u64>, n: u32) -> f64 {
    let kept: Vec<_> = (0..n)
        .map(|i| rt().trustee(1).entrust(u64::from(i)))
        .collect();
    far.apply(|_| ());
    let t = Instant::now();
    drop(kept);
    far.apply(|_| ());
    t.elapsed().as_nanos() as f64 / f64::from(n)
}

/// Failed on ba7c19c (review 30), fixed since: README "Idle clients cost nothing" ("a thread that called once and stays alive keeps a
/// channel to that trustee ... With more than 16, it stops looking at those quiet"). Not when a value's last
/// handle was dropped: `Worker::retire_with` (run.rs) bounded the requests that may still refer to the value
/// by reading every served channel, hot or cold (`linger.lingering`, then `linger.through` or
/// `slots.published()`: a line of each idle client's), and so does every retire (each last-handle drop, each
/// count that dips to zero, `try_unwrap`, `into_inner`). Here, 2,000 values entrusted and then dropped by one
/// thread, 5 times: median cost per drop alone against beside 1,000 cold idle client threads. Measured: debug
/// build 1.5-3.2 us alone, 22-31 us beside them (entrusting them stays at 1.4 us); release build 119-126 ns
/// alone, 4.3-9.1 us beside them (35-75x). Since the fix, on the AMD EPYC VM of the twenty-seventh session,
/// debug: 1.6-3.1 us alone, 3.4-5.7 us beside them (ten runs each of 81a36c8 and of that session's build: the
/// thousand threads' mere presence, not their channels); the bound of twice as much plus 1 us failed 5 of 10
/// there. Bound: under four times as much, plus 2 us (the bug: 7-20x in the debug build).
#[test]
fn idle_clients_cost_nothing_to_a_values_last_drop() {
    let _s = serial();
    in_child!("idle_clients_cost_nothing_to_a_values_last_drop", 120);
    let far = rt().trustee(1).entrust(0u64);
    far.apply(|c| *c += 1);
    last_drop_ns(&far, 2000);
    let alone = median_f64((0..5).map(|_| last_drop_ns(&far, 2000)).collect());
    let clients = Clients::new(1000, &far);
    cool_all_then_sleep(&far);
    let idle = median_f64((0..5).map(|_| last_drop_ns(&far, 2000)).collect());
    eprintln!(
        "a last handle's drop: {alone:.0} ns alone, {idle:.0} ns beside 1,000 cold idle clients; {:?}",
        channels()
    );
    clients.exit();
    assert!(
        idle < 4.0 * alone + 2000.0,
        "1,000 cold idle clients made a value's last drop {idle:.0} ns against {alone:.0} ns alone"
    );
    child_ok();
}
