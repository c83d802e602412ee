//! Review 90 (hostile): the fibers' sockets (`trust_core::net`, `worker::reactor`, the parker's `polling`
//! sleep, `trust_core::sleep`), attacked where `net.rs`, `adversarial_net*.rs` and reviews 9, 32, 44, 48 and
//! 68 had not: readiness arriving while the worker is held (a closure that computes, one blocked in a system
//! call, a fiber that never yields, a fiber waiting for the other worker); 2,000 equal deadlines beside
//! zero, 1 ns, endless and 584-year ones; half-closes by another fiber and another thread under a waiting
//! reader and writer; a descriptor number reused across both workers under stale epoll registrations, then
//! its old open file back under it; panics and destructors that wait on sockets beside waiting fibers; a
//! shutdown with every kind of socket and deadline waiter pending and a thread gone with requests in flight.
//! Every test runs in a child process of its own (2 workers, a watchdog).
//!
//! Found: `a_reader_whose_socket_is_always_ready_lets_its_worker_serve`. A fiber whose socket is ready every
//! time never suspends: a fiber reading an upload whose client writes faster than it reads (the README's
//! echo server's loop, with a parser's work per byte) held its worker for the whole upload: a plain thread's
//! round trip to that worker's trustee took 0.90-1.24 s of a 1.2 s upload (3 runs in 3), where the runtime
//! already yields a fiber after 32 inline applies for the same reason, and the memcached example had to count
//! its own commands (review 84). Fixed: `fiber::after_ready_io`, called by `net` after each operation of a
//! fiber that did not wait, yields every 32 of them (worst round trip now 3-6 ms); not while the fiber
//! unwinds (`ready_socket_writes_while_a_fiber_unwinds_do_not_yield`: with the yield there, another fiber
//! ran with `thread::panicking()` true).
//!
//! What held: waiters woke within 0.4 ms of the end of each hold (6 ms of the write while a fiber waited for
//! the other worker), and a second byte woke each again; every equal deadline fired once, none early; a
//! half-close woke only its side; stale registrations woke a reader of the reused number for nothing, and it
//! waited again and read only its own bytes; every panic and waiting destructor ended with its value; the
//! shutdown returned at once with every join the shutdown panic, the peers at their end, the gone thread's
//! 100 closures run.

#[macro_use]
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{calibrate, child_ok, pair, panic_message, rt, spawn_on, within};
use trust_core::net::{TcpListener, TcpStream};

/// Waits up to 5 s until `done()` holds, failing with `what` if it never does.
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The longest a plain thread waited for a round trip to trustee `index` (one `apply` every millisecond)
/// until `stop` is set, and how many round trips it made.
fn probe(index: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(Duration, u64)> {
    let t = rt().trustee(index).entrust(0u64);
    std::thread::spawn(move || {
        let mut worst = Duration::ZERO;
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            let t0 = Instant::now();
            t.apply(|v| *v += 1);
            worst = worst.max(t0.elapsed());
            n += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(t.apply(|v| *v), n);
        (worst, n)
    })
}

/// A client that never stops writing: a fiber on worker 0 reads an upload 4 KiB at a time (the README's
/// echo buffer), while its peer writes 256 KiB at a time for 1.2 s, faster than the fiber reads, so every
/// `read` finds data and the fiber never waits. A plain thread meanwhile makes a round trip to trustee 0
/// every millisecond. "Its worker keeps serving": the longest round trip must stay far below the upload's
/// length, and every byte written must be read, exactly.
#[test]
fn a_reader_whose_socket_is_always_ready_lets_its_worker_serve() {
    in_child!(
        "a_reader_whose_socket_is_always_ready_lets_its_worker_serve",
        30
    );
    calibrate();
    let (s, mut c) = pair();
    let sink = spawn_on(0, move || {
        let mut buf = [0u8; 4096];
        let mut total = 0u64;
        loop {
            match (&s).read(&mut buf) {
                Ok(0) => return Ok(total),
                // A parser's work: every byte is looked at.
                Ok(n) => total += buf[..n].iter().map(|&b| u64::from(b)).sum::<u64>(),
                Err(e) => return Err(e.kind()),
            }
        }
    });
    // The probe's first round trip, before the flood.
    let stop = Arc::new(AtomicBool::new(false));
    let probing = probe(0, stop.clone());
    std::thread::sleep(Duration::from_millis(50));
    let chunk = vec![5u8; 256 * 1024];
    let mut written = 0u64;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1200) {
        c.write_all(&chunk).unwrap();
        written += chunk.len() as u64;
    }
    stop.store(true, Ordering::SeqCst);
    c.shutdown(Shutdown::Write).unwrap();
    let (worst, trips) = within(10, move || probing.join().unwrap());
    assert_eq!(within(10, move || sink.join().unwrap()), Ok(5 * written));
    eprintln!("flood of {written} bytes: worst round trip {worst:?}, {trips} trips");
    assert!(
        worst < Duration::from_millis(200),
        "a fiber reading a socket that is always ready held its worker: a round trip to its trustee took \
         {worst:?} ({trips} trips in 1.2 s)"
    );
    child_ok();
}

/// How a test holds worker 0 for a while.
#[derive(Clone, Copy, Debug)]
enum Hold {
    /// A delegated closure on trustee 0 that computes.
    Computes,
    /// A delegated closure on trustee 0 blocked in a system call (`nanosleep`).
    Blocks,
    /// A fiber on worker 0 that computes and never yields.
    NeverYields,
    /// A fiber on worker 0 waiting for a closure that computes on trustee 1: only that fiber waits.
    WaitsForWorker1,
}

/// Computes (no system call) for `ms` milliseconds.
fn spin(ms: u64) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(ms) {
        std::hint::spin_loop();
    }
}

/// Holds worker 0 `how` for 200 ms, on another thread; returns once the hold has begun, with a handle that
/// gives the instant it ended.
fn hold_worker_0(how: Hold) -> std::thread::JoinHandle<Instant> {
    const MS: u64 = 200;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let h = match how {
        Hold::Computes | Hold::Blocks => {
            let t = rt().trustee(0).entrust(());
            std::thread::spawn(move || {
                t.apply(move |_| {
                    tx.send(()).unwrap();
                    match how {
                        Hold::Computes => spin(MS),
                        _ => std::thread::sleep(Duration::from_millis(MS)),
                    }
                    Instant::now()
                })
            })
        }
        Hold::NeverYields => {
            let f = spawn_on(0, move || {
                tx.send(()).unwrap();
                spin(MS);
                Instant::now()
            });
            std::thread::spawn(move || f.join().unwrap())
        }
        Hold::WaitsForWorker1 => {
            let t = rt().trustee(1).entrust(());
            let f = spawn_on(0, move || {
                tx.send(()).unwrap();
                t.apply(|_| spin(MS));
                Instant::now()
            });
            std::thread::spawn(move || f.join().unwrap())
        }
    };
    rx.recv_timeout(Duration::from_secs(5))
        .expect("the hold began");
    h
}

/// "A ready socket wakes it like a request does", and no edge is lost: 48 fibers on worker 0 wait to read a
/// byte and 4 wait to write 1 MiB into sockets whose peers do not read. While worker 0 is held for 200 ms
/// (a closure that computes, a closure blocked in `nanosleep`, a fiber that never yields), each reader's peer
/// writes its byte and each writer's peer starts draining. Every reader must have its byte within 150 ms of
/// the hold's end; and with a fiber of worker 0 waiting 200 ms for trustee 1, within 150 ms of the write
/// (only that fiber waits). Then each reader reads a second byte (a second edge), and every writer's peer
/// gets exactly 1 MiB.
#[test]
fn socket_waiters_wake_promptly_after_their_worker_was_held() {
    in_child!(
        "socket_waiters_wake_promptly_after_their_worker_was_held",
        40
    );
    calibrate();
    for how in [
        Hold::Computes,
        Hold::Blocks,
        Hold::NeverYields,
        Hold::WaitsForWorker1,
    ] {
        let base = Instant::now();
        let waiting = Arc::new(AtomicUsize::new(0));
        let firsts = Arc::new(AtomicUsize::new(0));
        let mut peers = Vec::new();
        let mut readers = Vec::new();
        for i in 0..48u8 {
            let (s, c) = pair();
            peers.push(c);
            let (waiting, firsts) = (waiting.clone(), firsts.clone());
            readers.push(spawn_on(0, move || {
                let mut b = [0u8; 1];
                waiting.fetch_add(1, Ordering::SeqCst);
                (&s).read_exact(&mut b).unwrap();
                let woke = Instant::now();
                let first = b[0];
                firsts.fetch_add(1, Ordering::SeqCst);
                (&s).read_exact(&mut b).unwrap();
                (i, first, b[0], woke)
            }));
        }
        let mut writers = Vec::new();
        let mut drained = Vec::new();
        for _ in 0..4 {
            let (s, c) = pair();
            drained.push(c);
            let waiting = waiting.clone();
            writers.push(spawn_on(0, move || {
                waiting.fetch_add(1, Ordering::SeqCst);
                (&s).write_all(&vec![9u8; 1 << 20]).unwrap();
                s.shutdown(Shutdown::Write).unwrap();
            }));
        }
        until("every fiber began", || waiting.load(Ordering::SeqCst) == 52);
        std::thread::sleep(Duration::from_millis(30)); // into their waits
        let held = hold_worker_0(how);
        let wrote = Instant::now();
        for (i, c) in peers.iter_mut().enumerate() {
            c.write_all(&[i as u8]).unwrap();
        }
        let drains: Vec<_> = drained
            .into_iter()
            .map(|mut c| {
                std::thread::spawn(move || {
                    let mut v = Vec::new();
                    c.read_to_end(&mut v).unwrap();
                    (v.len(), v.iter().all(|&b| b == 9))
                })
            })
            .collect();
        let ended = within(10, move || held.join().unwrap());
        // The second byte only once every reader has its first: a second edge, never one coalesced with it.
        until("every reader has its first byte", || {
            firsts.load(Ordering::SeqCst) == 48
        });
        for (i, c) in peers.iter_mut().enumerate() {
            c.write_all(&[100 + i as u8]).unwrap();
        }
        let mut worst = Duration::ZERO;
        for (n, r) in readers.into_iter().enumerate() {
            let (i, first, second, woke) = within(10, move || r.join().unwrap());
            assert_eq!(
                (i as usize, first, second),
                (n, n as u8, 100 + n as u8),
                "{how:?}"
            );
            let (late, since) = match how {
                Hold::WaitsForWorker1 => (woke.saturating_duration_since(wrote), "the write"),
                _ => (woke.saturating_duration_since(ended), "the hold's end"),
            };
            assert!(
                late < Duration::from_millis(150),
                "{how:?}: reader {n} woke {late:?} after {since} ({:?} after the test began)",
                woke - base
            );
            worst = worst.max(late);
        }
        eprintln!("{how:?}: the last reader woke {worst:?} after the hold's end (or the write)");
        for w in writers {
            within(10, move || w.join().unwrap());
        }
        for d in drains {
            assert_eq!(
                within(10, move || d.join().unwrap()),
                (1 << 20, true),
                "{how:?}"
            );
        }
    }
    child_ok();
}

/// `sleep` and socket deadlines at the edges, on one worker at once: 2,000 fibers asleep until one instant
/// (deadlines equal to the microsecond, 600 ms ahead), one asleep for `Duration::MAX` (no deadline), 500
/// `sleep(ZERO)` and `sleep(1 ns)` in a row, a read with a 584-year timeout (a deadline in the heap, far
/// past the others) and one with a 1 ns timeout. Each sleeper wakes once, no earlier than asked and within
/// 300 ms after; the 584-year read gets its byte, the 1 ns read is `TimedOut`; the fiber asleep for ever is
/// still asleep.
#[test]
fn equal_zero_tiny_and_endless_deadlines_on_one_worker() {
    in_child!("equal_zero_tiny_and_endless_deadlines_on_one_worker", 30);
    calibrate();
    let forever = spawn_on(0, || trust_core::sleep(Duration::MAX));
    let (long, mut long_peer) = pair();
    let long_reader = spawn_on(0, move || {
        // 584 years and a bit less: the most nanoseconds `set_read_timeout` keeps as a timeout.
        let t = Duration::from_nanos(u64::MAX - 1);
        long.set_read_timeout(Some(t)).unwrap();
        assert_eq!(long.read_timeout().unwrap(), Some(t));
        let mut b = [0u8; 1];
        (&long)
            .read_exact(&mut b)
            .map(|_| b[0])
            .map_err(|e| e.kind())
    });
    let (short, _short_peer) = pair();
    let short_reader = spawn_on(0, move || {
        short
            .set_read_timeout(Some(Duration::from_nanos(1)))
            .unwrap();
        (&short).read(&mut [0u8; 1]).map_err(|e| e.kind())
    });
    let target = Instant::now() + Duration::from_millis(600);
    let woke = Arc::new(AtomicUsize::new(0));
    let sleepers: Vec<_> = (0..2000)
        .map(|_| {
            let woke = woke.clone();
            spawn_on(0, move || {
                trust_core::sleep(target.saturating_duration_since(Instant::now()));
                woke.fetch_add(1, Ordering::SeqCst);
                Instant::now()
            })
        })
        .collect();
    let zeros = spawn_on(0, || {
        let t0 = Instant::now();
        for _ in 0..500 {
            trust_core::sleep(Duration::ZERO);
            trust_core::sleep(Duration::from_nanos(1));
        }
        t0.elapsed()
    });
    assert!(within(10, move || zeros.join().unwrap()) < Duration::from_millis(500));
    assert_eq!(
        within(10, move || short_reader.join().unwrap()),
        Err(ErrorKind::TimedOut)
    );
    for s in sleepers {
        let at = within(10, move || s.join().unwrap());
        assert!(at >= target, "a sleeper woke {:?} early", target - at);
        let late = at - target;
        assert!(
            late < Duration::from_millis(300),
            "a sleeper woke {late:?} late"
        );
    }
    assert_eq!(woke.load(Ordering::SeqCst), 2000);
    long_peer.write_all(&[42]).unwrap();
    assert_eq!(within(10, move || long_reader.join().unwrap()), Ok(42));
    std::thread::sleep(Duration::from_millis(50));
    assert!(!forever.is_finished(), "a fiber asleep for ever woke");
    child_ok();
}

/// Half-closes by others while a fiber waits, on one `Arc<TcpStream>`: a fiber on worker 0 waits to read,
/// another waits to write (its peer does not read). A fiber on worker 1 shuts the read half: the reader gets
/// `Ok(0)`, the writer keeps waiting (its socket is not writable). A plain thread then shuts the write half:
/// the writer gets `BrokenPipe`, and the peer reads exactly the bytes the writer counted, then the end.
#[test]
fn half_closes_by_another_fiber_and_thread_wake_only_their_side() {
    in_child!(
        "half_closes_by_another_fiber_and_thread_wake_only_their_side",
        20
    );
    calibrate();
    let (s, mut peer) = pair();
    let s = Arc::new(s);
    let (r, w) = (s.clone(), s.clone());
    let reader = spawn_on(0, move || (&*r).read(&mut [0u8; 8]).map_err(|e| e.kind()));
    let written = Arc::new(AtomicU64::new(0));
    let counted = written.clone();
    let writer = spawn_on(0, move || {
        let chunk = vec![3u8; 64 * 1024];
        loop {
            match (&*w).write(&chunk) {
                Ok(n) => counted.fetch_add(n as u64, Ordering::SeqCst),
                Err(e) => return e.kind(),
            };
        }
    });
    // The writer is waiting once its count stands still with the buffers full.
    let mut last = u64::MAX;
    until("the writer fills the buffers", || {
        std::thread::sleep(Duration::from_millis(50));
        let now = written.load(Ordering::SeqCst);
        std::mem::replace(&mut last, now) == now && now > 0
    });
    let shut = s.clone();
    let closer = spawn_on(1, move || {
        shut.shutdown(Shutdown::Read).map_err(|e| e.kind())
    });
    assert_eq!(within(10, move || closer.join().unwrap()), Ok(()));
    assert_eq!(within(5, move || reader.join().unwrap()), Ok(0));
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !writer.is_finished(),
        "shutting the read half woke the writer"
    );
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        within(5, move || writer.join().unwrap()),
        ErrorKind::BrokenPipe
    );
    let mut got = Vec::new();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    peer.read_to_end(&mut got).unwrap();
    assert_eq!(got.len() as u64, written.load(Ordering::SeqCst));
    assert!(got.iter().all(|&b| b == 3));
    child_ok();
}

/// Gives `s` to a fiber on worker `w` that waits in `read` for one byte (written here 30 ms later), then
/// returns it: `s` is then in worker `w`'s epoll set.
fn wait_once_on(w: usize, s: TcpStream, peer: &mut std::net::TcpStream) -> TcpStream {
    let f = spawn_on(w, move || {
        let mut b = [0u8; 1];
        (&s).read_exact(&mut b).unwrap();
        assert_eq!(b, [b'!']);
        s
    });
    std::thread::sleep(Duration::from_millis(30));
    peer.write_all(b"!").unwrap();
    within(10, move || f.join().unwrap())
}

/// Runs `make` with every free descriptor number below `n` taken (by `/dev/null`), so that the descriptor it
/// opens gets number `n` (free by then); returns what it made.
fn at_number<T: AsRawFd>(n: RawFd, make: impl FnOnce() -> T) -> T {
    let mut fillers = Vec::new();
    loop {
        let f = std::fs::File::open("/dev/null").unwrap();
        let got = f.as_raw_fd();
        assert!(got <= n, "descriptor {n} is not free");
        if got == n {
            break;
        }
        fillers.push(f);
    }
    // Number `n` is free again, every lower one taken.
    let made = make();
    assert_eq!(made.as_raw_fd(), n);
    made
}

/// Reads exactly `len` bytes from `s`, checking each is `byte`.
fn read_n(s: &TcpStream, len: usize, byte: u8) -> usize {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    while total < len {
        let n = (&*s).read(&mut buf).unwrap();
        assert_ne!(n, 0, "the end came after {total} bytes");
        assert!(buf[..n].iter().all(|&b| b == byte));
        total += n;
    }
    total
}

/// A descriptor number reused across workers while a stale registration exists: socket A (number N) waited
/// on both workers; a clone B keeps its open file alive, so when A is dropped (forgotten by both workers)
/// both epoll sets keep (N, A's file). A new connection C takes number N and a fiber on worker 1 reads it,
/// while a fiber on worker 0 reads B and B's peer sends 3.2 MiB in 50 writes (each an edge that the stale
/// registrations report under N: C's reader wakes for nothing and must wait again). C's reader gets exactly
/// C's 5 bytes, B's reader exactly B's 3.2 MiB. Then C goes, a clone of B takes number N again (A's open file
/// back under its old number, in both sets), and fibers on both workers wait on it and read.
#[test]
fn a_number_reused_across_workers_under_stale_registrations() {
    in_child!(
        "a_number_reused_across_workers_under_stale_registrations",
        20
    );
    calibrate();
    let (a, mut pa) = pair();
    let a = wait_once_on(0, a, &mut pa);
    let a = wait_once_on(1, a, &mut pa);
    let n = a.as_raw_fd();
    let b = Arc::new(a.try_clone().unwrap());
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut pc = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    drop(a);
    let c = at_number(n, || l.accept().unwrap().0);
    let c_reader = spawn_on(1, move || {
        let mut got = [0u8; 5];
        (&c).read_exact(&mut got).unwrap();
        got
    });
    let rb = b.clone();
    let b_reader = spawn_on(0, move || read_n(&rb, 50 * 64 * 1024, 7));
    std::thread::sleep(Duration::from_millis(30));
    for _ in 0..50 {
        pa.write_all(&[7u8; 64 * 1024]).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        !c_reader.is_finished(),
        "C's reader returned before C's bytes"
    );
    pc.write_all(b"hello").unwrap();
    assert_eq!(within(10, move || c_reader.join().unwrap()), *b"hello");
    assert_eq!(within(10, move || b_reader.join().unwrap()), 50 * 64 * 1024);
    // C was dropped with its fiber: number N is free. A's open file comes back under it.
    let back = Arc::new(at_number(n, || b.try_clone().unwrap()));
    let readers: Vec<_> = (0..2)
        .map(|w| {
            let s = back.clone();
            spawn_on(w, move || {
                let mut got = [0u8; 3];
                (&*s).read_exact(&mut got).unwrap();
                got
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    pa.write_all(b"xyzxyz").unwrap();
    for r in readers {
        assert_eq!(within(10, move || r.join().unwrap()), *b"xyz");
    }
    child_ok();
}

/// Reads one byte from its socket when dropped (waiting for it), and records it.
struct ReadsOnDrop(TcpStream, Arc<AtomicU64>);

impl Drop for ReadsOnDrop {
    fn drop(&mut self) {
        let mut b = [0u8; 1];
        let r = (&self.0).read_exact(&mut b);
        self.1.store(
            if r.is_ok() { 1000 + u64::from(b[0]) } else { 1 },
            Ordering::SeqCst,
        );
    }
}

/// User code run beside socket waiters on worker 0: 32 fibers wait to read; a fiber whose read times out
/// panics, dropping its socket while unwinding; a fiber's capture, and a detached fiber's result, wait on
/// a socket in their destructors; a fiber's capture panics when dropped. Every panic reaches its `join` with
/// its message, each destructor gets its byte (written 100 ms later), and every reader its own.
#[test]
fn panics_and_destructors_that_wait_beside_socket_waiters() {
    in_child!("panics_and_destructors_that_wait_beside_socket_waiters", 20);
    let _ = common::quiet();
    calibrate();
    let mut peers = Vec::new();
    let readers: Vec<_> = (0..32u8)
        .map(|i| {
            let (s, c) = pair();
            peers.push(c);
            spawn_on(0, move || {
                let mut b = [0u8; 1];
                (&s).read_exact(&mut b).unwrap();
                (i, b[0])
            })
        })
        .collect();
    let (timed, _timed_peer) = pair();
    let panicker = spawn_on(0, move || {
        timed
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let r = (&timed).read(&mut [0u8; 1]).map_err(|e| e.kind());
        panic!("boom after {r:?}");
    });
    let (s1, mut p1) = pair();
    let capture = ReadsOnDrop(s1, Arc::new(AtomicU64::new(0)));
    let captured = capture.1.clone();
    let dropper = spawn_on(0, move || {
        let _keep = &capture;
        7
    });
    let (s2, mut p2) = pair();
    let result = Arc::new(AtomicU64::new(0));
    let r2 = result.clone();
    drop(spawn_on(0, move || {
        trust_core::sleep(Duration::from_millis(20)); // the handle is gone by then
        ReadsOnDrop(s2, r2)
    }));
    let drops = Arc::new(AtomicUsize::new(0));
    let bomb = common::PanicsOnDrop(drops.clone());
    let bomber = spawn_on(0, move || {
        let _keep = &bomb;
    });
    std::thread::sleep(Duration::from_millis(100));
    p1.write_all(&[11]).unwrap();
    p2.write_all(&[22]).unwrap();
    for (i, c) in peers.iter_mut().enumerate() {
        c.write_all(&[i as u8 + 50]).unwrap();
    }
    let boom = within(10, move || panicker.join().unwrap_err());
    assert_eq!(panic_message(boom), "boom after Err(TimedOut)");
    assert_eq!(within(10, move || dropper.join().unwrap()), 7);
    assert_eq!(captured.load(Ordering::SeqCst), 1011);
    let bombed = within(10, move || bomber.join().unwrap_err());
    assert_eq!(panic_message(bombed), "PanicsOnDrop");
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    for (n, r) in readers.into_iter().enumerate() {
        assert_eq!(
            within(10, move || r.join().unwrap()),
            (n as u8, n as u8 + 50)
        );
    }
    until("the detached result's destructor read its byte", || {
        result.load(Ordering::SeqCst) != 0
    });
    assert_eq!(result.load(Ordering::SeqCst), 1022);
    child_ok();
}

/// `Runtime::shutdown` with every kind of socket and deadline waiter pending, and a thread gone with requests
/// in flight: fibers in `read` with a 60 s timeout (a deadline in the heap), in `sleep(Duration::MAX)` and
/// `sleep(10 s)`, in `write` to a peer that does not read, in `accept`; a plain thread in `read` on a socket a
/// fiber waited on; a thread that issued 100 `apply_then`s to trustee 0 and returned. `shutdown` returns
/// within 3 s; each fiber's `join` is the shutdown panic; the plain thread's `read` is `Ok(0)`; the reader's
/// and the writer's peers see the end (the writer's after exactly what was written); all 100 closures ran.
#[test]
fn shutdown_with_socket_and_deadline_waiters_pending() {
    in_child!("shutdown_with_socket_and_deadline_waiters_pending", 20);
    calibrate();
    let (r, mut r_peer) = pair();
    let reader = spawn_on(0, move || {
        r.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let _ = (&r).read(&mut [0u8; 1]);
    });
    let forever = spawn_on(1, || trust_core::sleep(Duration::MAX));
    let ten = spawn_on(0, || trust_core::sleep(Duration::from_secs(10)));
    let (w, mut w_peer) = pair();
    let written = Arc::new(AtomicU64::new(0));
    let counted = written.clone();
    let writer = spawn_on(1, move || {
        let chunk = vec![4u8; 64 * 1024];
        while let Ok(n) = (&w).write(&chunk) {
            counted.fetch_add(n as u64, Ordering::SeqCst);
        }
    });
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let acceptor = spawn_on(0, move || {
        let _ = l.accept();
    });
    let (t, mut t_peer) = pair();
    let t = wait_once_on(1, t, &mut t_peer);
    let thread_reader = std::thread::spawn(move || (&t).read(&mut [0u8; 1]).map_err(|e| e.kind()));
    let ran = Arc::new(AtomicUsize::new(0));
    let r2 = ran.clone();
    std::thread::spawn(move || {
        let v = rt().trustee(0).entrust(0u64);
        for _ in 0..100 {
            let ran = r2.clone();
            v.apply_then(
                move |v| {
                    *v += 1;
                    ran.fetch_add(1, Ordering::SeqCst);
                },
                |_| {},
            );
        }
    })
    .join()
    .unwrap();
    let mut last = u64::MAX;
    until("the writer fills the buffers", || {
        std::thread::sleep(Duration::from_millis(50));
        let now = written.load(Ordering::SeqCst);
        std::mem::replace(&mut last, now) == now && now > 0
    });
    let t0 = Instant::now();
    rt().shutdown();
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    for (name, f) in [
        ("reader", reader),
        ("forever", forever),
        ("ten", ten),
        ("writer", writer),
        ("acceptor", acceptor),
    ] {
        let payload = within(5, move || f.join().unwrap_err());
        let m = panic_message(payload);
        assert!(m.contains("shut down"), "{name}: {m}");
    }
    assert_eq!(within(5, move || thread_reader.join().unwrap()), Ok(0));
    r_peer
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(r_peer.read(&mut [0u8; 1]).unwrap(), 0);
    w_peer
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = Vec::new();
    w_peer.read_to_end(&mut got).unwrap();
    assert_eq!(got.len() as u64, written.load(Ordering::SeqCst));
    assert_eq!(ran.load(Ordering::SeqCst), 100);
    child_ok();
}

/// Writes 100 bytes (one at a time, each finding its socket ready) when dropped.
struct WritesOnDrop(TcpStream);

impl Drop for WritesOnDrop {
    fn drop(&mut self) {
        for _ in 0..100 {
            assert_eq!((&self.0).write(b"w").unwrap(), 1);
        }
    }
}

/// The yield every few ready socket operations (this review's fix) must not suspend a fiber that unwinds:
/// std keeps `thread::panicking()` per thread, and the worker's other fibers would run with it true (a
/// `Mutex` guard they drop poisons the lock). A fiber on worker 0 panics while holding a socket whose
/// destructor makes 100 ready writes; another fiber there yields and takes a `std::sync::Mutex` 500 times
/// meanwhile. It never sees `panicking()`, the mutex is not poisoned, and the peer gets the 100 bytes.
#[test]
fn ready_socket_writes_while_a_fiber_unwinds_do_not_yield() {
    in_child!("ready_socket_writes_while_a_fiber_unwinds_do_not_yield", 20);
    let _ = common::quiet();
    calibrate();
    let m = Arc::new(std::sync::Mutex::new(0u32));
    let other = common::counts_panicking_turns(m.clone());
    let (s, mut peer) = pair();
    let unwinding = spawn_on(0, move || {
        let _w = WritesOnDrop(s);
        trust_core::yield_now();
        panic!("unwinds through the writes");
    });
    let p = within(10, move || unwinding.join().unwrap_err());
    assert_eq!(panic_message(p), "unwinds through the writes");
    assert_eq!(within(10, move || other.join().unwrap()), 0);
    assert!(
        !m.is_poisoned(),
        "a fiber's guard was dropped while another unwound"
    );
    assert_eq!(*m.lock().unwrap(), 500);
    let mut got = Vec::new();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    peer.read_to_end(&mut got).unwrap();
    assert_eq!(got, vec![b'w'; 100]);
    child_ok();
}
