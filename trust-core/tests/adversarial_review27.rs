//! Review 27 (hostile): resources burned while nothing happens. The README promises that waiting clients
//! "spin briefly, yield, then park until the trustee wakes them", that idle workers sleep, that a `may`
//! coroutine's long wait "costs no core", and that fibers waiting on sockets or timers cost nothing. Each test
//! measures CPU time while nothing useful happens: the waiting thread's own clock
//! (`CLOCK_THREAD_CPUTIME_ID`), or the whole process's (`getrusage(RUSAGE_SELF)`, in a child process of its
//! own so that no other test's workers count). Bounds are at least 5x what a quiet machine measures, and far
//! below what a spinning loop burns (a whole core: about the wait's length).

#[macro_use]
mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{coroutine, linger0, rt, stall, thread_cpu};
use trust_core::{Latch, Trust, entrust, spawn, wait_pending};

/// An `#[entrust]` value: its stubs block like `apply`.
#[entrust]
#[derive(Debug)]
pub struct Account {
    balance: u64,
}

#[entrust]
impl Account {
    pub fn balance(&self) -> u64 {
        self.balance
    }
}

/// CPU time (user + system) of the whole process, with microsecond resolution.
fn process_cpu() -> Duration {
    // SAFETY: `rusage` is plain data; `getrusage` fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: writes into a local.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Process CPU burned while `f` runs, with the wall time it took.
fn burned<R>(f: impl FnOnce() -> R) -> (R, Duration, Duration) {
    let (cpu, wall) = (process_cpu(), Instant::now());
    let r = f();
    (r, process_cpu() - cpu, wall.elapsed())
}

/// Fails with the measurement when `cpu` is over `bound`.
fn assert_cpu(what: &str, cpu: Duration, bound_ms: u64, wall: Duration) {
    eprintln!("{what}: {cpu:?} of CPU in {wall:?}");
    assert!(
        cpu < Duration::from_millis(bound_ms),
        "{what}: burned {cpu:?} of CPU in {wall:?} (bound {bound_ms} ms)"
    );
}

/// Starts the runtime and lets it fall asleep: both workers have served a call and gone idle.
fn warm() {
    for i in 0..2 {
        rt().trustee(i).entrust(()).apply(|_| ());
    }
    std::thread::sleep(Duration::from_millis(50));
}

/// A latch on trustee 0 held by a launched fiber for `ms` milliseconds (it sleeps holding the lock); returns
/// once the fiber holds it.
fn held_for(l: &Trust<Latch<u64>>, ms: u64) {
    let held = Arc::new(AtomicBool::new(false));
    let h = held.clone();
    l.launch_then(
        move |latch| {
            let _g = latch.lock();
            h.store(true, Ordering::SeqCst);
            trust_core::sleep(Duration::from_millis(ms));
        },
        |()| (),
    );
    rt().trustee(0).entrust(()).apply(|_| ());
    common::eventually("the launched fiber holds the latch", || {
        held.load(Ordering::SeqCst)
    });
}

/// A `may` runtime of one thread, set before the first coroutine (each test is a process of its own).
fn one_may_thread() {
    may::config().set_workers(1);
}

/// HOLDS: README, `may` coroutines: "an `apply` yields the coroutine, not its thread, and after 4 ms sleeps
/// on `may`'s timer, 16 ms at a time, so a long wait ... costs no core". A coroutine's `apply` to a trustee
/// busy for 300 ms: the whole process burns 9-10 ms (bound 60 ms; a spinning coroutine burns about 300).
#[test]
fn a_may_coroutine_applying_to_a_busy_trustee_for_300_ms_burns_no_core() {
    in_child!(
        "a_may_coroutine_applying_to_a_busy_trustee_for_300_ms_burns_no_core",
        10
    );
    one_may_thread();
    warm();
    let t = rt().trustee(1).entrust(5u64);
    coroutine(|| ()).join().unwrap();
    let busy = stall(1, 300);
    let (r, cpu, wall) = burned(|| coroutine(move || t.apply(|v| *v)).join().unwrap());
    busy.join().unwrap();
    assert_eq!(r, 5);
    assert!(wall >= Duration::from_millis(250), "{wall:?}");
    assert_cpu("a coroutine's apply, 300 ms", cpu, 60, wall);
    common::child_ok();
}

/// Found a bug, fixed in the same session: `Fiber::join` says "from a `may` coroutine it yields": it yields and
/// nothing else, in a loop (`api/fiber.rs`, `Fiber::join`: `may::coroutine::yield_now()` with no waiter
/// registered), so a coroutine joining a fiber that sleeps 300 ms kept its `may` thread running the whole time:
/// measured 150-304 ms of process CPU for a 300 ms wait (a whole core when the machine is quiet), against 9-10 ms
/// for a coroutine's `apply` waiting as long.
#[test]
fn a_may_coroutine_joining_a_300_ms_fiber_burns_no_core() {
    in_child!("a_may_coroutine_joining_a_300_ms_fiber_burns_no_core", 10);
    one_may_thread();
    warm();
    coroutine(|| ()).join().unwrap();
    let (r, cpu, wall) = burned(|| {
        coroutine(|| {
            let f = spawn(|| {
                trust_core::sleep(Duration::from_millis(300));
                7u64
            });
            f.join().unwrap()
        })
        .join()
        .unwrap()
    });
    assert_eq!(r, 7);
    assert_cpu("a coroutine's Fiber::join, 300 ms", cpu, 60, wall);
    common::child_ok();
}

/// Found a bug, fixed in the same session: README: a long wait of a coroutine, "on a held latch say, costs no
/// core". A coroutine's `launch` whose fiber takes 300 ms (it sleeps) waits in `Fiber::join` (`api/latch.rs`,
/// `launch_sized`: `fiber.join()`), which only yielded: measured 150-305 ms of process CPU for the 300 ms wait.
#[test]
fn a_may_coroutine_launching_a_300_ms_fiber_burns_no_core() {
    in_child!("a_may_coroutine_launching_a_300_ms_fiber_burns_no_core", 10);
    one_may_thread();
    warm();
    let l = rt().trustee(0).entrust(Latch::new(6u64));
    coroutine(|| ()).join().unwrap();
    let (r, cpu, wall) = burned(move || {
        coroutine(move || {
            l.launch(|latch| {
                trust_core::sleep(Duration::from_millis(300));
                *latch.lock()
            })
        })
        .join()
        .unwrap()
    });
    assert_eq!(r, 6);
    assert_cpu("a coroutine's launch, 300 ms", cpu, 60, wall);
    common::child_ok();
}

/// Found a bug, fixed in the same session: a coroutine's `try_unwrap` of a latch that a launched fiber uses for
/// 300 more ms: the verdict is a fiber promise, joined with `Fiber::join` (`api/trust.rs`, `Trust::take`:
/// `verdict.join()`), which only yielded: measured 200-300 ms of process CPU during the wait.
#[test]
fn a_may_coroutine_unwrapping_a_latch_in_use_for_300_ms_burns_no_core() {
    in_child!(
        "a_may_coroutine_unwrapping_a_latch_in_use_for_300_ms_burns_no_core",
        10
    );
    one_may_thread();
    warm();
    let l = rt().trustee(0).entrust(Latch::new(6u64));
    coroutine(|| ()).join().unwrap();
    held_for(&l, 300);
    let (r, cpu, wall) = burned(move || {
        coroutine(move || l.try_unwrap().ok().map(Latch::into_inner))
            .join()
            .unwrap()
    });
    wait_pending();
    assert_eq!(r, Some(6));
    assert!(wall >= Duration::from_millis(200), "{wall:?}");
    assert_cpu("a coroutine's try_unwrap, latch in use", cpu, 60, wall);
    common::child_ok();
}

/// Thread CPU burned by the calling thread while `f` runs, with the wall time.
/// The calling thread's voluntary context switches so far (`getrusage(RUSAGE_THREAD)`): how often it waited.
fn voluntary_switches() -> i64 {
    // SAFETY: an all-zero `rusage` is valid (integers and timevals).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: writes the calling thread's usage into a local.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    assert_eq!(rc, 0);
    usage.ru_nvcsw
}

fn thread_burned<R>(f: impl FnOnce() -> R) -> (R, Duration, Duration) {
    let (cpu, wall) = (thread_cpu(), Instant::now());
    let r = f();
    (r, thread_cpu() - cpu, wall.elapsed())
}

/// HOLDS: README, plain threads "park until the trustee wakes them". A plain thread waiting 300 ms in each of
/// `Fiber::join` (a fiber that sleeps), `Latch`'s `launch` behind a launched fiber holding the latch,
/// `into_inner` of a latch in use by a launched fiber, `wait_pending` whose only outstanding work is a
/// `launch_then` fiber, `apply_with` on a held latch, and an `#[entrust]` stub on a busy trustee: measured
/// 0.2, 0.04, 0.03-0.06, 5.8-5.9, 1.4-1.5 and 1.7-1.9 ms of the waiting thread's CPU (bound 25 ms each). The
/// `wait_pending` one is 30x `Fiber::join`'s: it parks 1 ms at a time (see the last test, which fails).
#[test]
fn a_plain_thread_waiting_300_ms_on_fibers_burns_no_core() {
    in_child!("a_plain_thread_waiting_300_ms_on_fibers_burns_no_core", 10);
    warm();
    let mut out = Vec::new();
    let account = rt().trustee(0).entrust(Account { balance: 6 });
    for kind in 0..6 {
        let mut held = Some(rt().trustee(0).entrust(Latch::new(6u64)));
        let busy = (kind == 5).then(|| stall(0, 300));
        if kind == 1 || kind == 2 || kind == 4 {
            held_for(held.as_ref().unwrap(), 300);
        }
        let (r, cpu, wall) = thread_burned(|| match kind {
            0 => spawn(|| {
                trust_core::sleep(Duration::from_millis(300));
                6u64
            })
            .join()
            .unwrap(),
            1 => held.as_ref().unwrap().launch(|latch| *latch.lock()),
            2 => held.take().unwrap().into_inner().unwrap().into_inner(),
            4 => held
                .as_ref()
                .unwrap()
                .apply_with(|latch, add| *latch.get_mut() + add, 0),
            5 => account.balance(),
            _ => {
                let seen = Rc::new(RefCell::new(0));
                let s = seen.clone();
                held.as_ref().unwrap().launch_then(
                    |latch| {
                        trust_core::sleep(Duration::from_millis(300));
                        *latch.lock()
                    },
                    move |r| *s.borrow_mut() = r,
                );
                wait_pending();
                *seen.borrow()
            }
        });
        wait_pending();
        if let Some(busy) = busy {
            busy.join().unwrap();
        }
        eprintln!("kind {kind}: {cpu:?} of thread CPU in {wall:?}");
        out.push((
            r,
            wall >= Duration::from_millis(200),
            cpu < Duration::from_millis(25),
        ));
    }
    assert_eq!(out, [(6, true, true); 6]);
    common::child_ok();
}

/// HOLDS: tokio interop: a task awaiting `apply_async` on a trustee busy for 300 ms leaves its executor idle
/// (the answer wakes the task through its waker). The whole process (2 workers, 2 tokio threads, the stalling
/// thread) burned 3.2-3.4 ms during the wait (bound 50 ms).
#[test]
fn a_tokio_task_awaiting_apply_async_for_300_ms_burns_no_core() {
    in_child!(
        "a_tokio_task_awaiting_apply_async_for_300_ms_burns_no_core",
        10
    );
    warm();
    let tk = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = rt().trustee(1).entrust(5u64);
    let t2 = t.clone();
    assert_eq!(
        tk.block_on(tk.spawn(async move { t2.apply_async(|v| *v).await }))
            .unwrap(),
        5
    );
    std::thread::sleep(Duration::from_millis(50));
    let busy = stall(1, 300);
    let (r, cpu, wall) = burned(|| {
        tk.block_on(tk.spawn(async move { t.apply_async(|v| *v + 1).await }))
            .unwrap()
    });
    busy.join().unwrap();
    assert_eq!(r, 6);
    assert!(wall >= Duration::from_millis(250), "{wall:?}");
    assert_cpu("a tokio task's apply_async, 300 ms", cpu, 50, wall);
    common::child_ok();
}

/// HOLDS: idle workers sleep. After heavy use (fibers, pipelined `apply_then`s, clones and drops through the
/// count mail, a `launch`), the process with an idle runtime burns 3.8-4.1 ms of CPU in a whole second (bound
/// 50 ms: workers that never fell asleep would burn 2 s).
#[test]
fn an_idle_runtime_after_heavy_use_burns_nothing_for_a_second() {
    in_child!(
        "an_idle_runtime_after_heavy_use_burns_nothing_for_a_second",
        10
    );
    warm();
    let counters: Vec<Trust<u64>> = (0..2).map(|i| rt().trustee(i).entrust(0)).collect();
    let fibers: Vec<_> = (0..64)
        .map(|i| {
            let c = counters[i % 2].clone();
            spawn(move || {
                for _ in 0..500 {
                    c.apply(|v| *v += 1);
                    let _clone = c.clone();
                }
            })
        })
        .collect();
    for c in &counters {
        for _ in 0..20_000 {
            c.apply_then(|v| *v += 1, |()| ());
        }
        let clones: Vec<_> = (0..5_000).map(|_| c.clone()).collect();
        drop(clones);
    }
    wait_pending();
    for f in fibers {
        f.join().unwrap();
    }
    let l = rt().trustee(0).entrust(Latch::new(1u64));
    assert_eq!(l.launch(|latch| *latch.lock()), 1);
    assert_eq!(
        counters.iter().map(|c| c.apply(|v| *v)).sum::<u64>(),
        72_000
    );
    // Let every back-off run out (spins, yields, count polls) before measuring.
    std::thread::sleep(Duration::from_millis(200));
    let ((), cpu, wall) = burned(|| std::thread::sleep(Duration::from_secs(1)));
    assert_cpu("an idle runtime, 1 s", cpu, 50, wall);
    common::child_ok();
}

/// HOLDS: README: `sleep(duration)` "suspends only the fiber (the worker idles when nothing else is
/// left)". A thousand fibers asleep for 1.2 s: the process burns 1.7-3.1 ms of CPU over 800 ms of that (bound
/// 50 ms).
#[test]
fn a_thousand_sleeping_fibers_burn_nothing() {
    in_child!("a_thousand_sleeping_fibers_burn_nothing", 10);
    warm();
    let woke = Arc::new(AtomicUsize::new(0));
    let fibers: Vec<_> = (0..1000)
        .map(|_| {
            let w = woke.clone();
            spawn(move || {
                trust_core::sleep(Duration::from_millis(1200));
                w.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    let ((), cpu, wall) = burned(|| std::thread::sleep(Duration::from_millis(800)));
    assert_eq!(common::load(&woke), 0, "woke early");
    for f in fibers {
        f.join().unwrap();
    }
    assert_eq!(common::load(&woke), 1000);
    assert_cpu("1,000 sleeping fibers, 800 ms", cpu, 50, wall);
    common::child_ok();
}

/// HOLDS: README, `net`: a fiber waiting on a socket suspends, and the worker "sleeps in [epoll] when idle".
/// 500 fibers blocked in `read` on silent connections and 500 in `accept` on one listener: the process
/// burns 1.5-2.8 ms of CPU in 800 ms (bound 50 ms); then each gets its byte or its connection.
#[test]
fn a_thousand_fibers_blocked_on_sockets_burn_nothing() {
    use std::io::{Read, Write};
    in_child!("a_thousand_fibers_blocked_on_sockets_burn_nothing", 15);
    warm();
    const N: usize = 500;
    let peers = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peers_at = peers.local_addr().unwrap();
    // A hundred connections at a time: std's listener asks for a backlog of 128, and 500 connecting at once
    // overflowed it on a loaded machine (the kernel then completes a connection only when its SYN-ACK is
    // retransmitted, seconds later: the test ran past its deadline).
    let (mut readers, mut silent) = (Vec::new(), Vec::new());
    for _ in 0..N / 100 {
        readers.extend((0..100).map(|_| {
            spawn(move || {
                let mut s = trust_core::net::TcpStream::connect(peers_at).unwrap();
                let mut b = [0u8; 1];
                s.read_exact(&mut b).unwrap();
                (b[0], s)
            })
        }));
        silent.extend((0..100).map(|_| peers.accept().unwrap().0));
    }
    let listener = Arc::new(trust_core::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let at = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let acceptors: Vec<_> = (0..N)
        .map(|_| {
            let (l, a) = (listener.clone(), accepted.clone());
            spawn(move || {
                let conn = l.accept().unwrap();
                a.fetch_add(1, Ordering::SeqCst);
                conn
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let ((), cpu, wall) = burned(|| std::thread::sleep(Duration::from_millis(800)));
    assert_eq!(common::load(&accepted), 0);
    for s in &mut silent {
        s.write_all(&[9]).unwrap();
    }
    let mut dialers: Vec<_> = (0..N)
        .map(|_| std::net::TcpStream::connect(at).unwrap())
        .collect();
    let read: Vec<_> = readers.into_iter().map(|f| f.join().unwrap()).collect();
    assert!(read.iter().all(|(b, _)| *b == 9));
    let conns: Vec<_> = acceptors.into_iter().map(|f| f.join().unwrap()).collect();
    assert_eq!(conns.len(), N);
    // Reset, not closed: no run leaves 1,000 ports in TIME_WAIT for the next (they ran out in a loop of runs).
    silent.append(&mut dialers);
    for s in silent {
        linger0(&s);
    }
    assert_cpu("1,000 fibers blocked on sockets, 800 ms", cpu, 50, wall);
    common::child_ok();
}

/// HOLDS: a trustee running one 300 ms closure (it sleeps) while the other worker idles, the caller blocked
/// in `apply`: the whole process burns 2.4-2.5 ms (bound 40 ms): neither the busy trustee's clients nor the idle
/// worker spin.
#[test]
fn one_long_closure_beside_an_idle_worker_burns_no_core() {
    in_child!("one_long_closure_beside_an_idle_worker_burns_no_core", 10);
    warm();
    let t = rt().trustee(0).entrust(());
    let ((), cpu, wall) = burned(|| t.apply(|_| std::thread::sleep(Duration::from_millis(300))));
    assert!(wall >= Duration::from_millis(300));
    assert_cpu("one 300 ms closure, the other worker idle", cpu, 40, wall);
    common::child_ok();
}

/// HOLDS: `Runtime::shutdown` waiting 300 ms for a worker stuck in a closure (it sleeps), from a plain
/// thread: the shutting thread burns 0.07-0.08 ms of its own CPU, the process 2.1-2.2 ms (bounds 25 and 50 ms).
#[test]
fn a_shutdown_waiting_for_a_long_closure_burns_no_core() {
    in_child!("a_shutdown_waiting_for_a_long_closure_burns_no_core", 10);
    warm();
    let busy = stall(1, 300);
    let (cpu0, wall) = (process_cpu(), Instant::now());
    let ((), own, _) = thread_burned(|| rt().shutdown());
    let (cpu, wall) = (process_cpu() - cpu0, wall.elapsed());
    let _ = busy.join();
    eprintln!("the shutting thread: {own:?}");
    assert!(wall >= Duration::from_millis(200), "{wall:?}");
    assert!(
        own < Duration::from_millis(25),
        "shutdown burned {own:?} of its thread's CPU"
    );
    assert_cpu("a shutdown waiting 300 ms", cpu, 50, wall);
    common::child_ok();
}

/// HOLDS: README: a coroutine's long wait "on a held latch say, costs no core". A coroutine's `apply` on a
/// latch that a launched fiber holds for 300 ms (the request is paused on the trustee): the whole process
/// burns 7.5-9 ms (bound 60 ms). The same wait through `launch` or `try_unwrap` burns a core (tests above).
#[test]
fn a_may_coroutine_applying_on_a_held_latch_for_300_ms_burns_no_core() {
    in_child!(
        "a_may_coroutine_applying_on_a_held_latch_for_300_ms_burns_no_core",
        10
    );
    one_may_thread();
    warm();
    let l = rt().trustee(0).entrust(Latch::new(6u64));
    coroutine(|| ()).join().unwrap();
    held_for(&l, 300);
    let (r, cpu, wall) = burned(move || {
        coroutine(move || l.apply(|latch| *latch.get_mut()))
            .join()
            .unwrap()
    });
    wait_pending();
    assert_eq!(r, 6);
    assert!(wall >= Duration::from_millis(200), "{wall:?}");
    assert_cpu("a coroutine's apply on a held latch", cpu, 60, wall);
    common::child_ok();
}

/// Found a bug, fixed in the same session: `wait_pending` whose only outstanding work is a `launch_then` fiber
/// parked 1 ms at a time (`client/outbox.rs`, `Client::progress`: `park_unless(.., Duration::from_millis(1))`),
/// though the fiber's `Sender` wakes the parker when the result arrives (`client/then.rs`, `Sender::deliver`): a
/// thousand wake-ups a second, each a turn of `wait_pending`'s loop. Waiting 1 s so burned 19-28 ms of the
/// thread's CPU, against 0.2 ms for `Fiber::join` waiting 300 ms and 1.5-2 ms for a blocking `apply`. Checked by
/// the thread's waits (voluntary context switches: 20-22 here, bound 200; the 1 ms polling made about 1,000),
/// not its CPU time: a bound of 8 ms failed a correct wait once, 11.8 ms in a CI run at load 39 (fortieth
/// session; 5-10 ms here).
#[test]
fn wait_pending_for_a_launch_then_fiber_of_1_s_does_not_poll() {
    in_child!(
        "wait_pending_for_a_launch_then_fiber_of_1_s_does_not_poll",
        10
    );
    warm();
    let l = rt().trustee(0).entrust(Latch::new(6u64));
    let seen = Rc::new(RefCell::new(0));
    let s = seen.clone();
    let switches_before = voluntary_switches();
    let (r, cpu, wall) = thread_burned(|| {
        l.launch_then(
            |latch| {
                trust_core::sleep(Duration::from_millis(1000));
                *latch.lock()
            },
            move |r| *s.borrow_mut() = r,
        );
        wait_pending();
        *seen.borrow()
    });
    let switches = voluntary_switches() - switches_before;
    eprintln!(
        "wait_pending for a 1 s launch_then fiber: {cpu:?} of thread CPU, {switches} waits, in {wall:?}"
    );
    assert_eq!(r, 6);
    assert!(wall >= Duration::from_millis(900), "{wall:?}");
    // The waits, not the CPU time: each wake-up's cost grows with the machine's load (a CI run at load 39
    // measured 11.8 ms for a correct wait), their number does not (the 1 ms polling made about 1,000).
    assert!(
        switches < 200,
        "wait_pending for a 1 s launch_then fiber waited {switches} times ({cpu:?} of its thread's CPU) in \
         {wall:?}"
    );
    common::child_ok();
}
