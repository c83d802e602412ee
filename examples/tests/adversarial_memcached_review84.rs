//! Review 84 of the memcached example: real clients and real load (`memcslap`, `memcaslap`, `memccapable`,
//! the real `memcached` 1.6.18 as the reference, raw sockets).
//!
//! What broke (fixed since: a connection yields after `COMMANDS_PER_TURN`, 64, commands or reads):
//!
//! 1. One client starves its whole worker with commands that need no shard. A connection's fiber suspends
//!    only when a socket operation would block or every 32 inline stub calls (`INLINE_BURST`); commands that
//!    touch no shard (`verbosity`, `version`, `stats settings`, a bad line with `noreply`, a refused data block
//!    being swallowed) never suspend it. A client that writes `verbosity 1 noreply\r\n` faster than the server
//!    parses it (one `sendfile` loop does) keeps its fiber running for as long as it writes: every other
//!    connection on that worker, every `get` of a key of that worker's shard from any connection, and the
//!    accept loop when it lives there wait for the whole flood (3.2 s of a 3.2 s flood with `--workers 2`;
//!    a new connection waited 2.7 s). memcached yields a connection after 20 requests (`-R`, `conn_yields`):
//!    its worst reply under the same flood was 20-77 ms
//!    (`a_client_flooding_commands_that_need_no_shard_does_not_starve_others`, failed before the fix).
//!
//! What held (checked by hand with the real tools; the ones not covered elsewhere are pinned below):
//! `memccapable -a` passes all 27 ASCII tests, as against memcached; `memcslap` at 200-1000 threads, `get`,
//! `mget`, `set`, `--noreply`, `--buffer`, `--non-blocking` (memcached aborts libmemcached's `--buffer`
//! client; this server does not), exact `cmd_get`/`get_hits`/`cmd_set`/`total_connections` after each, the
//! same as memcached's; `memcslap -c 250` against `-c 100` refuses as memcached does; `memcaslap` with
//! `--verify 1.0` (also with multi-gets of 50 keys, 10% expiring objects, a 1M window, 2 MiB memory with
//! evictions): no verification failure where memcached has none; a seeded differential fuzz of 60 x 300
//! pipelined commands (and 60 x 60 with bare `\n`, tabs, doubled spaces, upper case, bad data-block ends)
//! byte-identical to memcached; 500,000 `set noreply` in one write; 4,000 connections churning with resets
//! mid-reply, half closes and half lines (counts back to exact, resident set flat); 50 connections racing
//! `gets`/`cas` loops; 100 connections each pipelining 10,000 `incr`/`decr ... noreply`. An absolute exptime
//! of the current second is expired here and kept by memcached, whose clock lags the wall clock by up to two
//! seconds (documented in docs/memcached.md).
//!
//! Run alone: `cargo build -p trust-examples --example memcached` first (the starvation test runs the example
//! binary with `--workers 1`); the `memcslap` test skips when `/usr/bin/memcslap` is absent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

mod harness;
use harness::{
    Raw, Reference, example_binary, free_port, raise_descriptor_limit, start, stat, wait_until,
};

/// A server process (the example binary, or memcached), killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server on {port} did not start");
        thread::sleep(Duration::from_millis(20));
    }
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

// ---------------------------------------------------------------------------------------------------------
// Fairness: a flood of commands that reach no shard

/// The example binary with `--workers 1`, so the flooder, every victim and the accept loop share a worker.
/// A flooder thread writes `verbosity 1 noreply\r\n` for 2.5 s as fast as the socket takes it (an 8 MiB
/// buffer per `write_all`: faster than the server parses); meanwhile a victim connection sends `version` and
/// `get k` in a loop, and a new connection is opened halfway. memcached (`-t 1`, the same flood from
/// `sendfile`) answered every request within 20 ms; the trust server, before the fix, none until the flood ended.
#[test]
fn a_client_flooding_commands_that_need_no_shard_does_not_starve_others() {
    let port = free_port();
    let _server = Process(
        Command::new(example_binary())
            .args(["--port", &port.to_string(), "--workers", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(port);
    let mut victim = connect(port);
    victim.write_all(b"set k 0 0 1\r\nv\r\n").unwrap();
    let mut reply = [0u8; 8];
    victim.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"STORED\r\n");

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flooder = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        thread::spawn(move || {
            let line = b"verbosity 1 noreply\r\n";
            let buf = line.repeat((8 << 20) / line.len());
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            // The flood ends by itself after 2.8 s, so a starved victim gets its replies then.
            let began = Instant::now();
            while !stop.load(Ordering::Relaxed) && began.elapsed() < Duration::from_millis(2800) {
                if s.write_all(&buf).is_err() {
                    break;
                }
                sent.fetch_add(buf.len() as u64, Ordering::Relaxed);
            }
        })
    };
    thread::sleep(Duration::from_millis(300));
    let flood = Instant::now();
    let mut worst = Duration::ZERO;
    let mut rounds = 0u32;
    let mut fresh = None;
    let want = b"VERSION 1.6.0-trust\r\nVALUE k 0 1\r\nv\r\nEND\r\n";
    while flood.elapsed() < Duration::from_millis(2500) {
        let t = Instant::now();
        victim.write_all(b"version\r\nget k\r\n").unwrap();
        let mut got = vec![0u8; want.len()];
        victim.read_exact(&mut got).unwrap();
        assert_eq!(got, want);
        worst = worst.max(t.elapsed());
        rounds += 1;
        if fresh.is_none() && flood.elapsed() > Duration::from_millis(1000) {
            let t = Instant::now();
            let mut c = connect(port);
            c.write_all(b"version\r\n").unwrap();
            let mut v = [0u8; 21];
            c.read_exact(&mut v).unwrap();
            assert_eq!(&v, b"VERSION 1.6.0-trust\r\n");
            fresh = Some(t.elapsed());
        }
    }
    stop.store(true, Ordering::Relaxed);
    flooder.join().unwrap();
    let fresh = fresh.unwrap_or(Duration::ZERO);
    eprintln!(
        "flood: {} MB written; victim: {rounds} round trips, worst {worst:?}; a new connection: {fresh:?}",
        sent.load(Ordering::Relaxed) >> 20
    );
    assert!(
        worst < Duration::from_millis(1000) && fresh < Duration::from_millis(1000),
        "one flooding client held up the others: worst round trip {worst:?} ({rounds} in 2.5 s), a new \
         connection's first reply {fresh:?} (memcached: 20 ms)"
    );
}

// ---------------------------------------------------------------------------------------------------------
// memcslap at 200 connections: exact counters

/// `memcslap` (libmemcached 1.1.4) with 200 threads and 100 keys in four modes. After each (counters reset
/// first), its requests are counted exactly: `get` and `mget` load 100 keys on one connection and then do
/// 200 x 100 gets, every one a hit, over 200 more connections; `set` (with and without `--noreply`) does
/// 200 x 100 sets over 200 connections; every connection is counted out again. memcached 1.6.18 counts the
/// same (checked against it when it is installed; its `curr_items` also counts flushed items it has not
/// reclaimed yet, so that one is not compared).
#[test]
fn memcslap_at_two_hundred_connections_counts_exactly() {
    let slap = "/usr/bin/memcslap";
    if !std::path::Path::new(slap).exists() {
        eprintln!("skipped: {slap} is not installed (apt-get install libmemcached-tools)");
        return;
    }
    let server = start(|_| {});
    let mut ports = vec![(server.local_addr().port(), true)];
    let reference = Reference::start(&[]);
    if let Some(r) = &reference {
        ports.push((r.port, false));
    }
    if reference.is_none() {
        eprintln!("memcached is not installed: checking the trust server alone");
    }
    for (port, ours) in ports {
        let mut admin = Raw(connect(port));
        for (args, gets, sets, conns) in [
            (&["--test=get"][..], 20_000, 100, 201),
            (&["--test=mget"][..], 20_000, 100, 201),
            (&["--test=set"][..], 0, 20_000, 200),
            (&["--test=set", "--noreply"][..], 0, 20_000, 200),
        ] {
            admin.roundtrip(b"flush_all\r\nstats reset\r\n", b"OK\r\nRESET\r\n");
            let out = Command::new(slap)
                .arg(format!("--servers=127.0.0.1:{port}"))
                .args(["--concurrency=200", "--execute-number=100"])
                .args(args)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            let what = format!(
                "memcslap {args:?} against {}",
                if ours { "trust" } else { "memcached" }
            );
            assert!(out.status.success(), "{what}: {:?}\n{text}", out.status);
            assert!(!text.to_lowercase().contains("error"), "{what}:\n{text}");
            assert!(
                text.contains(" 20000 keys by  200 threads"),
                "{what}:\n{text}"
            );
            // memcslap has closed its connections; the server counts them out as it sees them close.
            let cell = std::cell::RefCell::new(admin);
            wait_until("memcslap's connections are counted out", || {
                cell.borrow_mut().stat("curr_connections") == 1
            });
            admin = cell.into_inner();
            let stats = admin.stats();
            let got: Vec<u64> = [
                "cmd_get",
                "get_hits",
                "get_misses",
                "cmd_set",
                "total_connections",
            ]
            .iter()
            .map(|n| stat(&stats, n))
            .collect();
            assert_eq!(
                got,
                [gets, gets, 0, sets, conns],
                "{what}: cmd_get get_hits get_misses cmd_set total_connections"
            );
            if ours {
                assert_eq!(stat(&stats, "curr_items"), 100, "{what}");
            }
        }
    }
    drop(reference);
}

// ---------------------------------------------------------------------------------------------------------
// Exact results of racing clients

/// 50 connections each complete 40 compare-and-swap increments of one counter (`gets`, then `cas` with the
/// unique; `EXISTS` means another won, so read again), and after each success an `incr` and a `decr` of two
/// other keys. The counter ends at exactly 2000, `cas_hits` is 2000, `cas_badval` is exactly the number of
/// `EXISTS` the clients saw, `cas_misses` 0 (memcached 1.6.18: the same, by hand with 50 x 100).
#[test]
fn cas_retry_loops_from_fifty_connections_are_exact() {
    let server = start(|_| {});
    let port = server.local_addr().port();
    let mut admin = Raw(connect(port));
    admin.roundtrip(
        b"set c 0 0 1\r\n0\r\nset a 0 0 1\r\n0\r\nset d 0 0 6\r\n100000\r\nstats reset\r\n",
        b"STORED\r\nSTORED\r\nSTORED\r\nRESET\r\n",
    );
    let (clients, each) = (50u64, 40u64);
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            thread::spawn(move || {
                let s = connect(port);
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut w = s;
                let mut line = String::new();
                let mut read = |r: &mut BufReader<TcpStream>| {
                    line.clear();
                    r.read_line(&mut line).unwrap();
                    line.clone()
                };
                let (mut done, mut lost) = (0, 0u64);
                while done < each {
                    w.write_all(b"gets c\r\n").unwrap();
                    let head = read(&mut r);
                    let unique = head.split_whitespace().nth(4).unwrap().to_owned();
                    let value: u64 = read(&mut r).trim().parse().unwrap();
                    assert_eq!(read(&mut r), "END\r\n");
                    let next = (value + 1).to_string();
                    write!(w, "cas c 0 0 {} {unique}\r\n{next}\r\n", next.len()).unwrap();
                    match read(&mut r).as_str() {
                        "STORED\r\n" => {
                            done += 1;
                            w.write_all(b"incr a 3\r\ndecr d 1\r\n").unwrap();
                            read(&mut r);
                            read(&mut r);
                        }
                        "EXISTS\r\n" => lost += 1,
                        other => panic!("cas answered {other:?}"),
                    }
                }
                lost
            })
        })
        .collect();
    let exists: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let n = clients * each;
    admin.roundtrip(
        b"get c a d\r\n",
        format!(
            "VALUE c 0 4\r\n{n}\r\nVALUE a 0 4\r\n{}\r\nVALUE d 0 6\r\n{:<6}\r\nEND\r\n",
            3 * n,
            100_000 - n
        )
        .as_bytes(),
    );
    let stats = admin.stats();
    assert_eq!(
        [
            "cas_hits",
            "cas_badval",
            "cas_misses",
            "incr_hits",
            "decr_hits"
        ]
        .map(|k| stat(&stats, k)),
        [n, exists, 0, n, n]
    );
}

/// 100 connections each write 2,000 pairs of `incr n 3 noreply` / `decr n 1 noreply` in one go, then
/// `incr n 0` (the one reply each reads): the counter ends at exactly its start plus 2 x 200,000, and
/// `incr_hits`/`decr_hits` are exact (memcached 1.6.18: the same).
#[test]
fn noreply_incr_decr_pipelines_from_a_hundred_connections_are_exact() {
    let server = start(|_| {});
    let port = server.local_addr().port();
    let mut admin = Raw(connect(port));
    admin.roundtrip(
        b"set n 0 0 10\r\n1000000000\r\nstats reset\r\n",
        b"STORED\r\nRESET\r\n",
    );
    let (clients, pairs) = (100u64, 2_000u64);
    let pipeline = Arc::new(
        [
            b"incr n 3 noreply\r\ndecr n 1 noreply\r\n".repeat(pairs as usize),
            b"incr n 0\r\n".to_vec(),
        ]
        .concat(),
    );
    let writers: Vec<_> = (0..clients)
        .map(|_| {
            let pipeline = Arc::clone(&pipeline);
            thread::spawn(move || {
                let mut s = connect(port);
                s.write_all(&pipeline).unwrap();
                let mut r = BufReader::new(s);
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                // The counter after this connection's pairs, with the others' done so far (an `incr` without
                // its `decr` yet is one more each).
                let v: u64 = line.trim().parse().unwrap_or_else(|_| panic!("{line:?}"));
                let (low, high) = (
                    1_000_000_000 + 2 * pairs,
                    1_000_000_000 + 2 * pairs * clients + clients,
                );
                assert!((low..=high).contains(&v), "{v}");
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let n = 1_000_000_000 + 2 * pairs * clients;
    admin.roundtrip(
        b"get n\r\n",
        format!("VALUE n 0 10\r\n{n}\r\nEND\r\n").as_bytes(),
    );
    let stats = admin.stats();
    assert_eq!(
        [stat(&stats, "incr_hits"), stat(&stats, "decr_hits")],
        [clients * (pairs + 1), clients * pairs]
    );
}

// ---------------------------------------------------------------------------------------------------------
// Connection churn with resets in the middle of replies

fn reset_on_close(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a plain system call on a socket this process owns, with a valid `linger` of the given size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

/// 2,000 connections come and go while one client `incr`s: a quarter ask for 8 x 512 KiB and reset the
/// connection (RST, `SO_LINGER` 0) without reading; a quarter send half of a 100 KB `set` and reset; a
/// quarter send `incr n 1` and `get big`, shut down their write half and read every byte up to EOF; a
/// quarter send half a command line and close. Afterwards `curr_connections` is back to the admin's, the
/// counter is exactly the steady client's increments plus the half-closed ones', and
/// `total_connections` counts every connection once.
#[test]
fn connection_churn_with_resets_mid_reply_leaves_exact_counts() {
    raise_descriptor_limit(4096);
    let server = start(|_| {});
    let port = server.local_addr().port();
    let mut admin = Raw(connect(port));
    let big = vec![b'x'; 512 * 1024];
    admin.send(format!("set big 0 0 {}\r\n", big.len()).as_bytes());
    admin.send(&big);
    admin.roundtrip(
        b"\r\nset n 0 0 1\r\n0\r\nstats reset\r\n",
        b"STORED\r\nSTORED\r\nRESET\r\n",
    );

    let stop = Arc::new(AtomicBool::new(false));
    let steady = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let s = connect(port);
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut count = 0u64;
            let mut line = String::new();
            while !stop.load(Ordering::Relaxed) {
                w.write_all(b"incr n 1\r\n").unwrap();
                line.clear();
                r.read_line(&mut line).unwrap();
                assert!(line.trim().parse::<u64>().is_ok(), "{line:?}");
                count += 1;
            }
            count
        })
    };
    let churners = 2000u64;
    let mut half_closed = 0u64;
    let want_tail = [&b"VALUE big 0 524288\r\n"[..], &big, b"\r\nEND\r\n"].concat();
    for i in 0..churners {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        match i % 4 {
            0 => {
                c.write_all(b"get big big big big big big big big\r\n")
                    .unwrap();
                reset_on_close(&c);
            }
            1 => {
                c.write_all(b"set half 0 0 100000\r\n").unwrap();
                c.write_all(&big[..50_000]).unwrap();
                reset_on_close(&c);
            }
            2 => {
                c.write_all(b"incr n 1\r\nget big\r\n").unwrap();
                c.shutdown(Shutdown::Write).unwrap();
                let mut all = Vec::new();
                c.read_to_end(&mut all).unwrap();
                let nl = all.iter().position(|&b| b == b'\n').unwrap();
                assert!(
                    all[..nl - 1].iter().all(u8::is_ascii_digit),
                    "{:?}",
                    &all[..nl]
                );
                assert!(
                    all[nl + 1..] == want_tail[..],
                    "half-closed connection {i}: {} bytes",
                    all.len()
                );
                half_closed += 1;
            }
            _ => c.write_all(b"get bi").unwrap(),
        }
        drop(c);
    }
    let cell = std::cell::RefCell::new(admin);
    wait_until("every churned connection is counted out", || {
        cell.borrow_mut().stat("curr_connections") == 2
    });
    stop.store(true, Ordering::Relaxed);
    let increments = steady.join().unwrap();
    wait_until("the steady client is counted out", || {
        cell.borrow_mut().stat("curr_connections") == 1
    });
    let mut admin = cell.into_inner();
    let n = increments + half_closed;
    admin.roundtrip(
        b"get n\r\n",
        format!("VALUE n 0 {}\r\n{n}\r\nEND\r\n", n.to_string().len()).as_bytes(),
    );
    // The steady client and the churners; the admin connection is older than the reset.
    assert_eq!(admin.stat("total_connections"), churners + 1);
    assert_eq!(admin.stat("incr_hits"), n);
}
