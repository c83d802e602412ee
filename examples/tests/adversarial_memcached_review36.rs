//! Review 36 of the memcached example: behaviour under load and over time, against the promises of
//! `docs/memcached.md` and the module docs. Expected replies are what memcached 1.6.18 answers to the same
//! bytes; where a test says "as memcached", the same bytes also go to a real memcached when one is installed
//! (`/usr/bin/memcached`, started on a free port by [`Reference`]) and its replies must match too.
//!
//! What broke (fixed in `examples/src/memcached/`, each with the test that failed before):
//!
//! 1. Slowloris: `--idle-timeout` was the timeout of each read, so every byte restarted it. A client sending
//!    one byte of a command line every 300 ms was never closed (still open after 20 s with
//!    `--idle-timeout 2`; memcached 1.6.18 with `-o idle_timeout=2` closed it after 5.1 s), so `-c` such
//!    clients held every connection slot for good. Now a command line must come whole within the idle
//!    timeout of the last command (or of the end of the write of its replies); a data block only has to keep
//!    coming, as in memcached (`a_client_trickling_a_command_line_is_closed_by_the_idle_timeout`).
//! 2. `flush_all N` was one second late against memcached, whose `oldest_live` is `realtime(N) - 1`:
//!    `flush_all 1`, `set g`, `get f g` answered both values (memcached: `END`, and `g`, stored in the
//!    flushed second, goes too). `flush_all 2592001` (an absolute time from before the start) emptied the
//!    whole cache, where memcached flushes nothing and drops a pending delayed flush
//!    (`flush_all_one_second_and_a_time_before_the_start_as_memcached`). `adversarial_memcached.rs`'s
//!    `delayed_flush_all` expected the one-second-late replies, which memcached does not give: corrected.
//! 3. A stale clock: a connection read the time once per batch of commands and kept it through writes that
//!    waited for the client. A client that pipelined 40 `get`s of 1 MB and then `get short` and started
//!    reading 3.2 s later got the value of `short`, expired 1-2 s before the server ran that `get` (memcached:
//!    `END`); the same inside one `get` of 40 keys
//!    (`a_command_run_after_a_long_wait_on_writes_sees_the_time_it_runs_at`).
//!
//! Found apart from memcached and left (not bugs of a promise): `incr` on a value over memcached's slab
//! chunk size (a 600,000-digit `0...05`) is non-numeric in memcached (a chunked item "is too large to be a
//! number") and 6 here; a client that reads a long run of buffered replies slowly finds its connection
//! closed by the idle timeout if it sends its next command more than the timeout after the last reply was
//! written into the socket buffers, as in memcached (`a_slow_but_steady_reader_is_not_idle` checks only that
//! every reply arrives).
//!
//! What held: 2000 connections opening and closing (half commands, unread pipelines, `quit` mid-pipeline)
//! while 4 clients pipeline `incr`s (exact totals, `curr_connections` and `total_connections` exact); 1000
//! connections pipelining 60 `incr`s each at once (exact); a client that pipelines `get`s of 512 KiB for 3 s
//! and never reads (resident set under 64 MiB growth, others served, counted out when gone); the idle
//! timeout on a client that never reads and on 1200 silent connections among 300 busy ones (all silent ones
//! closed, no busy one); a slow but steady reader under `--idle-timeout 2` (every byte); a half-closed client
//! with 20 MB of replies (all of them, then EOF); `quit` mid-pipeline (as memcached); `stop` while clients
//! are mid-command (they finish, no new one is served); an item of exactly `-I` and one byte more (with the
//! `memcache` crate; append past `-I` refused); `bytes`/`curr_items`/`evictions`/`total_items` exactly
//! consistent after 3000 sets of mixed sizes into 2 MiB with appends and deletes; cas uniques unique over
//! 2000 keys on all shards, new on `incr`, kept by `touch`, `cas` succeeding exactly where unchanged; a
//! delayed `flush_all` racing 4 writers across its second; `incr` on 20-digit numbers, past 2^64, with white
//! space around the digits (as memcached); `gat` exptime edges (as memcached); `stats` counters after a
//! known mix (as memcached) and under 8 concurrent `memcache` crate clients (exact); 10,000 expired items
//! leaving `curr_items`/`bytes` by `stats` time as `crawler_reclaimed`; too-large storage commands of every
//! kind, with and without `noreply` (as memcached, checked by hand).
//!
//! Run alone: `cargo test -p trust-examples --test adversarial_memcached_review36` (no example binary
//! needed). Two tests open 2000 sockets and raise their own soft descriptor limit (hard limit 4096 or more).

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use trust_examples::memcached::ServerHandle;
use trust_examples::memcached::protocol::item_size;

mod harness;
use harness::{Raw, Reference, raise_descriptor_limit, start, stat, unix_now, wait_until};

// ---------------------------------------------------------------------------------------------------------
// Helpers

/// The `memcache` crate's client on `server` (text protocol).
fn client(server: &ServerHandle) -> memcache::Client {
    let url = format!(
        "memcache://{}?protocol=ascii&timeout=10",
        server.local_addr()
    );
    memcache::Client::with_pool_size(url.as_str(), 1).unwrap()
}

/// Sends `send` to the trust server's connection and, when memcached is installed, to memcached's; both must
/// answer exactly `want`.
fn both(trust: &mut Raw, reference: &mut Option<Raw>, send: &[u8], want: &[u8]) {
    trust.roundtrip(send, want);
    if let Some(r) = reference {
        r.roundtrip(send, want);
    }
}

/// Runs `f` on a thread and fails if it takes longer than `limit` (a hang is a failure, not a stuck run).
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {limit:?}"),
    }
}

/// The process's resident set, in KiB (the in-process server's memory is part of it).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap()
}

/// Whether the peer has closed `s` (EOF or reset) within `wait`; data read meanwhile is discarded.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
    }
}

// ---------------------------------------------------------------------------------------------------------
// The idle timeout against a slowloris client

/// memcached's `idle_timeout` counts from a connection's last command (`c->last_cmd_time`): a client that
/// trickles one byte of a command line every 300 ms is closed after the timeout, as a silent one is
/// (memcached 1.6.18 with `-o idle_timeout=2` closed such a client after 5.1 s). The trust server set the idle
/// timeout as the timeout of each read, so every byte restarted it: the client was never closed (still open
/// after 20 s with `--idle-timeout 2`), and `-c` such clients, a few bytes a second each, held every
/// connection slot for good.
#[test]
fn a_client_trickling_a_command_line_is_closed_by_the_idle_timeout() {
    let server = start(|c| c.idle_timeout = Some(Duration::from_secs(2)));
    let addr = server.local_addr();
    // The three clients below (the slowloris, the busy pair, the silent one) at the same time, each on its own
    // connection and measured from its own start: their waits overlap instead of adding up.
    let mut silent = TcpStream::connect(addr).unwrap();
    let silent_since = Instant::now();
    let slowloris = thread::spawn(move || {
        within(Duration::from_secs(25), "slowloris", move || {
            let mut s = TcpStream::connect(addr).unwrap();
            let line = [b'g'; 50];
            let started = Instant::now();
            for &b in line.iter() {
                if s.write_all(&[b]).is_err() || closed_within(&mut s, Duration::from_millis(300)) {
                    return Some(started.elapsed());
                }
            }
            None
        })
    });
    // A client whose commands keep coming stays, however long it lives; so does one that sends a data block
    // slowly (memcached does not time out a connection reading a data block either).
    let mut busy = Raw::connect(&server);
    let mut block = Raw::connect(&server);
    block.send(b"set slow 0 0 10\r\n");
    for i in 0..10 {
        busy.roundtrip(b"version\r\n", b"VERSION 1.6.0-trust\r\n");
        block.send(&[b'0' + i]);
        thread::sleep(Duration::from_millis(300));
    }
    block.roundtrip(b"\r\n", b"STORED\r\n");
    block.roundtrip(b"get slow\r\n", b"VALUE slow 0 10\r\n0123456789\r\nEND\r\n");
    let took = slowloris
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
        .expect(
            "a client trickling a line was never closed (50 bytes over 15 s, idle timeout 2 s)",
        );
    assert!(
        took < Duration::from_secs(5),
        "closed only after {took:?} (idle timeout 2 s)"
    );
    // And a silent one is closed, as before: within 5 s of its connect.
    let left = Duration::from_secs(5).saturating_sub(silent_since.elapsed());
    assert!(
        closed_within(&mut silent, left.max(Duration::from_millis(1))),
        "a silent connection still open 5 s after its connect (idle timeout 2 s)"
    );
    server.stop();
}

// ---------------------------------------------------------------------------------------------------------
// Connections by the thousand while others pipeline

/// 2000 connections open and close (some after half a command, some after a pipeline they never read the
/// replies of, some with `quit` in the middle of a pipeline) while 4 clients pipeline `incr`s on their own
/// counters: every `incr` counts exactly once, the connection counters come back exactly, and the stale
/// halves change nothing.
#[test]
fn thousands_of_connections_come_and_go_while_others_pipeline() {
    raise_descriptor_limit(4096);
    let server = Arc::new(start(|_| {}));
    let mut admin = Raw::connect(&server);
    admin.roundtrip(b"stats reset\r\n", b"RESET\r\n");
    for i in 0..4 {
        admin.roundtrip(
            format!("set ctr{i} 0 0 1\r\n0\r\n").as_bytes(),
            b"STORED\r\n",
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let incrs = Arc::new(AtomicU64::new(0));
    let pipeliners: Vec<_> = (0..4)
        .map(|i| {
            let (server, stop, incrs) =
                (Arc::clone(&server), Arc::clone(&stop), Arc::clone(&incrs));
            thread::spawn(move || {
                let mut r = Raw::connect(&server);
                let mut want = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let batch = format!("incr ctr{i} 1\r\n").repeat(100);
                    r.send(batch.as_bytes());
                    let mut expected = Vec::new();
                    for _ in 0..100 {
                        want += 1;
                        expected.extend_from_slice(format!("{want}\r\n").as_bytes());
                    }
                    r.expect(&expected);
                    incrs.fetch_add(100, Ordering::Relaxed);
                }
                want
            })
        })
        .collect();
    let churners: Vec<_> = (0..4)
        .map(|t| {
            let server = Arc::clone(&server);
            thread::spawn(move || {
                for i in 0..500 {
                    let mut s = TcpStream::connect(server.local_addr()).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    match i % 4 {
                        // Half a storage command, then gone: nothing is stored.
                        0 => s.write_all(b"set half 0 0 10\r\n01234").unwrap(),
                        // A pipeline whose replies are never read.
                        1 => s
                            .write_all(
                                format!("set c{t}-{i} 0 0 1\r\nx\r\nget a b c\r\n").as_bytes(),
                            )
                            .unwrap(),
                        // `quit` mid-pipeline: what follows it is not run.
                        2 => {
                            s.write_all(b"version\r\nquit\r\nset after-quit 0 0 1\r\nx\r\n")
                                .unwrap();
                            let mut reply = Vec::new();
                            s.read_to_end(&mut reply).unwrap();
                            assert_eq!(reply, b"VERSION 1.6.0-trust\r\n");
                        }
                        // Connect and close at once.
                        _ => {}
                    }
                }
            })
        })
        .collect();
    for c in churners {
        c.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let totals: Vec<u64> = pipeliners.into_iter().map(|p| p.join().unwrap()).collect();
    for (i, want) in totals.iter().enumerate() {
        admin.roundtrip(
            format!("get ctr{i}\r\n").as_bytes(),
            format!(
                "VALUE ctr{i} 0 {}\r\n{want}\r\nEND\r\n",
                want.to_string().len()
            )
            .as_bytes(),
        );
    }
    assert_eq!(totals.iter().sum::<u64>(), incrs.load(Ordering::Relaxed));
    admin.roundtrip(b"get half after-quit\r\n", b"END\r\n");
    wait_until("the closed connections are counted out", || {
        server.connections() == 1
    });
    let stats = admin.stats();
    assert_eq!(stat(&stats, "curr_connections"), 1);
    // 4 pipeliners + 2000 churners since the reset (the admin connection is older).
    assert_eq!(stat(&stats, "total_connections"), 2004);
    assert_eq!(stat(&stats, "incr_hits"), incrs.load(Ordering::Relaxed));
    assert_eq!(stat(&stats, "incr_misses"), 0);
    drop(admin);
    Arc::into_inner(server).unwrap().stop();
}

// ---------------------------------------------------------------------------------------------------------
// A client that pipelines without reading

/// "a connection's memory is bounded (one line plus one item, and 256 KiB of replies before they are written
/// out)": a client pipelines `get` of a 512 KiB value for 3 s and never reads (gigabytes of replies if they
/// were kept). The process's resident set must not grow by more than 64 MiB, another client is served
/// meanwhile, and once the client goes, its connection is counted out.
#[test]
fn a_client_that_never_reads_its_replies_holds_bounded_memory() {
    let server = start(|_| {});
    let mut other = Raw::connect(&server);
    let big = vec![b'v'; 512 * 1024];
    let mut line = format!("set big 0 0 {}\r\n", big.len()).into_bytes();
    line.extend_from_slice(&big);
    line.extend_from_slice(b"\r\n");
    other.roundtrip(&line, b"STORED\r\n");
    let before = rss_kib();
    let greedy = TcpStream::connect(server.local_addr()).unwrap();
    greedy.set_nonblocking(true).unwrap();
    let burst = b"get big\r\n".repeat(10_000);
    let (mut sent, started) = (0usize, Instant::now());
    while started.elapsed() < Duration::from_secs(3) {
        match (&greedy).write(&burst[sent % burst.len()..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("{e}"),
        }
        other.roundtrip(b"version\r\n", b"VERSION 1.6.0-trust\r\n");
    }
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "the resident set grew by {grown} KiB while a client sent {} gets of 512 KiB and read nothing",
        sent / 9
    );
    assert_eq!(server.connections(), 2);
    drop(greedy);
    wait_until("the greedy client is counted out", || {
        server.connections() == 1
    });
    drop(other);
    server.stop();
}

// ---------------------------------------------------------------------------------------------------------
// Half-closed sockets, quit, shutdown

/// A client sends a pipeline of `get`s whose replies (20 MB) are far more than the socket buffers hold, then
/// shuts down its sending side: every reply still arrives, then the server closes (memcached answers a
/// half-closed client in full too).
#[test]
fn a_half_closed_client_gets_every_reply() {
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    let value = vec![b'h'; 100_000];
    let mut line = format!("set h 3 0 {}\r\n", value.len()).into_bytes();
    line.extend_from_slice(&value);
    line.extend_from_slice(b"\r\n");
    r.roundtrip(&line, b"STORED\r\n");
    let mut one = format!("VALUE h 3 {}\r\n", value.len()).into_bytes();
    one.extend_from_slice(&value);
    one.extend_from_slice(b"\r\nEND\r\n");
    let addr = server.local_addr();
    let got = within(Duration::from_secs(30), "half-closed pipeline", move || {
        let s = TcpStream::connect(addr).unwrap();
        let writer = s.try_clone().unwrap();
        let sender = thread::spawn(move || {
            let mut w = writer;
            w.write_all(&b"get h\r\n".repeat(200)).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        (&s).read_to_end(&mut got).unwrap();
        sender.join().unwrap();
        got
    });
    assert_eq!(got.len(), one.len() * 200);
    assert!(got.chunks(one.len()).all(|c| c == one.as_slice()));
    server.stop();
}

/// `quit` in the middle of a pipeline: the commands before it are answered, nothing after it runs, the
/// connection closes (memcached 1.6.18: the same bytes, the same replies, then EOF).
#[test]
fn quit_mid_pipeline_runs_nothing_after_it() {
    let server = start(|_| {});
    let reference = Reference::start(&[]);
    let mut conns = vec![Raw::connect(&server)];
    conns.extend(reference.as_ref().map(|r| r.connect()));
    for r in &mut conns {
        r.roundtrip(
            b"set q1 0 0 1\r\n1\r\nincr q1 5\r\nget q1\r\nquit\r\nset q2 0 0 1\r\n2\r\nincr q1 1\r\n",
            b"STORED\r\n6\r\nVALUE q1 0 1\r\n6\r\nEND\r\n",
        )
        .expect_eof();
    }
    let mut conns = vec![Raw::connect(&server)];
    conns.extend(reference.as_ref().map(|r| r.connect()));
    for r in &mut conns {
        r.roundtrip(b"get q1 q2\r\n", b"VALUE q1 0 1\r\n6\r\nEND\r\n");
    }
    server.stop();
}

/// `ServerHandle::stop`: "Stops accepting (connections already open are served until they close)". Stopped
/// while one client is halfway through a data block and another is idle: `stop` returns, no new connection
/// is served, and both old clients finish their commands.
#[test]
fn stop_while_clients_are_mid_command() {
    let server = start(|_| {});
    let addr = server.local_addr();
    let mut mid = Raw::connect(&server);
    let mut idle = Raw::connect(&server);
    mid.send(b"set during-stop 0 0 10\r\n01234");
    idle.roundtrip(b"version\r\n", b"VERSION 1.6.0-trust\r\n");
    within(Duration::from_secs(10), "stop", move || server.stop());
    // No new connection is served: refused, or closed without a reply.
    if let Ok(mut s) = TcpStream::connect(addr) {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.write_all(b"version\r\n");
        let mut buf = [0u8; 64];
        assert!(
            matches!(s.read(&mut buf), Ok(0) | Err(_)),
            "a connection made after stop was served"
        );
    }
    mid.roundtrip(b"56789\r\n", b"STORED\r\n");
    idle.roundtrip(
        b"get during-stop\r\n",
        b"VALUE during-stop 0 10\r\n0123456789\r\nEND\r\n",
    );
}

// ---------------------------------------------------------------------------------------------------------
// Items at -I, memory accounting under churn

/// An item is key + value + 64 bytes against `-I`: with `-I 4096` a 1-byte key takes a value of exactly 4031
/// bytes, and one byte more is `SERVER_ERROR object too large for cache` (its block swallowed, and the old
/// value dropped, as memcached drops it). Stored through the `memcache` crate, refused on raw bytes.
#[test]
fn an_item_of_exactly_i_and_one_byte_more() {
    let server = start(|c| c.item_max = 4096);
    let client = client(&server);
    let fits = "f".repeat(4096 - 64 - 1);
    assert_eq!(item_size(1, fits.len()), 4096);
    client.set("k", fits.as_str(), 0).unwrap();
    assert_eq!(
        client.get::<String>("k").unwrap().as_deref(),
        Some(fits.as_str())
    );
    let mut r = Raw::connect(&server);
    let mut line = b"set k 0 0 4032\r\n".to_vec();
    line.extend_from_slice(&[b'x'; 4032]);
    line.extend_from_slice(b"\r\nget k\r\n");
    r.roundtrip(&line, b"SERVER_ERROR object too large for cache\r\nEND\r\n");
    // Appending one byte to an item of exactly -I is refused too, and keeps the item.
    client.set("k", fits.as_str(), 0).unwrap();
    r.roundtrip(b"append k 0 0 1\r\nz\r\n", b"NOT_STORED\r\n");
    assert_eq!(
        client.get::<String>("k").unwrap().as_deref(),
        Some(fits.as_str())
    );
    let stats = r.stats();
    assert_eq!(stat(&stats, "curr_items"), 1);
    assert_eq!(stat(&stats, "bytes"), 4096);
    server.stop();
}

/// `bytes`, `curr_items`, `evictions` exactly consistent after a churn of mixed sizes into 2 MiB (so many
/// evictions): `curr_items` is the number of keys a `get` of all of them finds, `bytes` the sum of their
/// sizes (key + value + 64), and every item that left is counted: `total_items = curr_items + evictions +
/// delete_hits + appends` (an `append` replaces its item), with no expiry in play (`reclaimed` 0).
#[test]
fn memory_accounting_is_exact_under_churn_of_mixed_sizes() {
    let server = start(|c| c.memory_mb = 2);
    let mut r = Raw::connect(&server);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut values: HashMap<String, Vec<u8>> = HashMap::new();
    let (mut appends, mut deletes) = (0u64, 0u64);
    for i in 0..3000u64 {
        let key = format!("churn:{i}:{}", "k".repeat((next() % 200) as usize));
        let len = match next() % 10 {
            0 => (next() % 200_000) as usize,
            1..=3 => (next() % 20_000) as usize,
            _ => (next() % 300) as usize,
        };
        let value: Vec<u8> = (0..len)
            .map(|j| b'a' + ((i as usize + j) % 26) as u8)
            .collect();
        let mut line = format!("set {key} {i} 0 {len}\r\n").into_bytes();
        line.extend_from_slice(&value);
        line.extend_from_slice(b"\r\n");
        r.roundtrip(&line, b"STORED\r\n");
        values.insert(key.clone(), value);
        if i % 7 == 0 {
            // Append to a recent key: stored if it is still there.
            let k = format!("churn:{}:", i - i % 5);
            if let Some((key, v)) = values.iter_mut().find(|(k2, _)| k2.starts_with(&k)) {
                r.send(format!("append {key} 0 0 3\r\nAPP\r\n").as_bytes());
                let reply = r.read_until(b"\r\n");
                if reply == b"STORED\r\n" {
                    appends += 1;
                    v.extend_from_slice(b"APP");
                } else {
                    assert_eq!(reply, b"NOT_STORED\r\n");
                }
            }
        }
        if i % 11 == 0 {
            r.send(format!("delete {key}\r\n").as_bytes());
            let reply = r.read_until(b"\r\n");
            if reply == b"DELETED\r\n" {
                deletes += 1;
            }
            assert_eq!(reply, b"DELETED\r\n", "a key just stored must be there");
            values.remove(&key);
        }
    }
    // Which keys are still there, and are their values right?
    let (mut live, mut bytes) = (0u64, 0u64);
    for (key, value) in &values {
        r.send(format!("get {key}\r\n").as_bytes());
        let head = r.read_until(b"\r\n");
        if head == b"END\r\n" {
            continue;
        }
        let head = String::from_utf8(head).unwrap();
        let len: usize = head.trim_end().rsplit(' ').next().unwrap().parse().unwrap();
        assert_eq!(len, value.len(), "{head}");
        let mut want = value.clone();
        want.extend_from_slice(b"\r\nEND\r\n");
        r.expect(&want);
        live += 1;
        bytes += item_size(key.len(), value.len()) as u64;
    }
    let stats = r.stats();
    assert_eq!(stat(&stats, "curr_items"), live);
    assert_eq!(stat(&stats, "bytes"), bytes);
    assert!(bytes <= 2 << 20, "bytes {bytes} over the 2 MiB limit");
    assert_eq!(stat(&stats, "reclaimed"), 0);
    assert_eq!(stat(&stats, "delete_hits"), deletes);
    assert_eq!(
        stat(&stats, "total_items"),
        live + stat(&stats, "evictions") + deletes + appends,
        "items stored = live + evicted + deleted + replaced by an append ({appends})"
    );
    assert!(
        stat(&stats, "evictions") > 0,
        "the churn was meant to evict"
    );
    server.stop();
}

// ---------------------------------------------------------------------------------------------------------
// cas across shards, flush_all racing sets

/// Cas uniques are "unique across the whole server" (`Shard::new`): 2000 keys over every shard, read with
/// `gets` through the `memcache` crate, have 2000 different uniques; an `incr` gives its item a new one
/// (different from every unique seen), `touch` keeps it (as memcached 1.6.18 does: `gets`, `touch`, `gets`
/// shows the same unique); and a `cas` with the unique read succeeds exactly for the items not changed since.
#[test]
fn cas_uniques_are_unique_across_shards_and_change_only_on_writes() {
    let server = start(|_| {});
    let c = client(&server);
    let keys: Vec<String> = (0..2000).map(|i| format!("cas:{i}")).collect();
    for k in &keys {
        c.set(k, "7", 0).unwrap();
    }
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let read = |c: &memcache::Client| -> HashMap<String, u64> {
        let mut all = HashMap::new();
        for chunk in refs.chunks(100) {
            let got: HashMap<String, (Vec<u8>, u32, Option<u64>)> = c.gets(chunk).unwrap();
            all.extend(got.into_iter().map(|(k, (_, _, cas))| (k, cas.unwrap())));
        }
        all
    };
    let first = read(&c);
    assert_eq!(first.len(), 2000);
    assert_eq!(
        first.values().collect::<HashSet<_>>().len(),
        2000,
        "uniques repeat"
    );
    for k in keys.iter().step_by(10) {
        assert_eq!(c.increment(k, 1).unwrap(), 8);
    }
    for k in keys.iter().skip(5).step_by(10) {
        assert!(c.touch(k, 1000).unwrap());
    }
    let second = read(&c);
    let mut seen: HashSet<u64> = first.values().copied().collect();
    for (i, k) in keys.iter().enumerate() {
        if i % 10 == 0 {
            assert!(
                seen.insert(second[k]),
                "incr gave {k} a unique already used"
            );
        } else {
            assert_eq!(
                second[k], first[k],
                "{k} changed its unique without a write"
            );
        }
    }
    for (i, k) in keys.iter().enumerate() {
        let stored = c.cas(k, "9", 0, first[k]).unwrap();
        assert_eq!(stored, i % 10 != 0, "cas on {k} with its first unique");
    }
    server.stop();
}

/// `flush_all 2` while 4 clients keep storing new keys across the flush time (unix second `at`): every key
/// whose `STORED` arrived before second `at` is gone afterwards, every key sent at or after `at` stays
/// (memcached: items stored before the flush time are invalid, later ones live), and `stats` agrees.
#[test]
fn a_delayed_flush_all_races_sets_across_its_time() {
    let server = Arc::new(start(|_| {}));
    let mut admin = Raw::connect(&server);
    // Start just after a second turns, so the flush time is 2 whole seconds away.
    let t0 = unix_now();
    while unix_now() == t0 {
        thread::sleep(Duration::from_millis(5));
    }
    let at = unix_now() + 2;
    admin.roundtrip(b"flush_all 2\r\n", b"OK\r\n");
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let server = Arc::clone(&server);
            thread::spawn(move || {
                let mut r = Raw::connect(&server);
                let mut log = Vec::new(); // (key, sent at, stored at)
                let mut i = 0;
                while unix_now() <= at + 1 {
                    let key = format!("race:{w}:{i}");
                    let sent = unix_now();
                    r.roundtrip(
                        format!("set {key} 0 0 1\r\nx\r\n").as_bytes(),
                        b"STORED\r\n",
                    );
                    log.push((key, sent, unix_now()));
                    i += 1;
                    if i % 50 == 0 {
                        thread::sleep(Duration::from_millis(5));
                    }
                }
                log
            })
        })
        .collect();
    let logs: Vec<_> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    // Every key looked up, in pipelined batches read through a buffer: the same `get`s as one round trip (and
    // one read per byte of the reply) per key, which took most of the test's time for the writers' many keys.
    let mut found = Vec::with_capacity(logs.len());
    for batch in logs.chunks(256) {
        let gets: String = batch
            .iter()
            .map(|(key, _, _)| format!("get {key}\r\n"))
            .collect();
        admin.send(gets.as_bytes());
        let mut replies = std::io::BufReader::new(&admin.0);
        let mut line = || {
            let mut l = String::new();
            std::io::BufRead::read_line(&mut replies, &mut l).unwrap();
            l
        };
        for (key, _, _) in batch {
            let first = line();
            let present = first != "END\r\n";
            if present {
                assert_eq!(
                    first,
                    format!("VALUE {key} 0 1\r\n"),
                    "the reply to get {key}"
                );
                assert_eq!(line(), "x\r\n", "the value of {key}");
                assert_eq!(line(), "END\r\n", "the end of the reply to get {key}");
            }
            found.push(present);
        }
        assert!(replies.buffer().is_empty(), "more replies than gets");
    }
    let (mut gone, mut kept) = (0, 0);
    for ((key, sent, stored), &present) in logs.iter().zip(&found) {
        if *stored < at {
            assert!(
                !present,
                "{key} stored at {stored}, before the flush at {at}, survived"
            );
            gone += 1;
        }
        if *sent >= at {
            assert!(
                present,
                "{key} sent at {sent}, after the flush at {at}, is gone"
            );
            kept += 1;
        }
    }
    assert!(gone > 0 && kept > 0, "gone {gone} kept {kept}");
    let live = logs.iter().filter(|(_, sent, _)| *sent >= at).count() as u64;
    let curr = admin.stat("curr_items");
    assert!(
        curr >= live && curr <= live + 4,
        "curr_items {curr}, {live} keys were sent after the flush (and up to 4 in its second)"
    );
    drop(admin);
    Arc::into_inner(server).unwrap().stop();
}

// ---------------------------------------------------------------------------------------------------------
// Replies and counters against memcached 1.6.18

/// `incr`/`decr` on 20-digit numbers, past 2^64, with leading and trailing white space in the value, on an
/// empty value and on spaces alone: memcached 1.6.18 reads the value with `strtoull` (white space before and
/// after, 20 digits at most, `ERANGE` is non-numeric) and rewrites it in place padded with spaces.
#[test]
fn incr_on_long_numbers_and_white_space_as_memcached() {
    let server = start(|_| {});
    let reference = Reference::start(&[]);
    let mut t = Raw::connect(&server);
    let mut m = reference.as_ref().map(|r| r.connect());
    let nn = "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n";
    let cases: &[(&str, &str)] = &[
        (
            "set n 0 0 2\r\n 5\r\nincr n 1\r\nget n\r\n",
            "STORED\r\n6\r\nVALUE n 0 2\r\n6 \r\nEND\r\n",
        ),
        (
            "set m 0 0 20\r\n18446744073709551615\r\nincr m 1\r\nget m\r\n",
            "STORED\r\n0\r\nVALUE m 0 20\r\n0                   \r\nEND\r\n",
        ),
        (
            "set o 0 0 20\r\n18446744073709551616\r\nincr o 1\r\n",
            &format!("STORED\r\n{nn}"),
        ),
        (
            "set p 0 0 3\r\n1 2\r\nincr p 1\r\nget p\r\n",
            "STORED\r\n2\r\nVALUE p 0 3\r\n2  \r\nEND\r\n",
        ),
        (
            "set q 0 0 1\r\n \r\nincr q 1\r\n",
            &format!("STORED\r\n{nn}"),
        ),
        (
            "set r 0 0 0\r\n\r\nincr r 1\r\n",
            &format!("STORED\r\n{nn}"),
        ),
        (
            "set s 0 0 22\r\n0000000000000000000001\r\nincr s 18446744073709551615\r\nget s\r\n",
            "STORED\r\n0\r\nVALUE s 0 22\r\n0                     \r\nEND\r\n",
        ),
        ("set t 0 0 2\r\n-0\r\nincr t 5\r\n", "STORED\r\n5\r\n"),
        (
            "set u 0 0 3\r\n\t7\t\r\nincr u 1\r\nget u\r\n",
            "STORED\r\n8\r\nVALUE u 0 3\r\n8  \r\nEND\r\n",
        ),
        (
            "set v 0 0 1\r\n9\r\nincr v 18446744073709551606\r\nget v\r\ndecr v 18446744073709551615\r\n",
            "STORED\r\n18446744073709551615\r\nVALUE v 0 20\r\n18446744073709551615\r\nEND\r\n0\r\n",
        ),
    ];
    for (send, want) in cases {
        both(&mut t, &mut m, send.as_bytes(), want.as_bytes());
    }
    server.stop();
}

/// `gat`/`gats` exptimes at their edges: 0 keeps forever, negative returns the value and expires it, an
/// absolute time in the past likewise, 30 days is relative and 30 days + 1 s absolute (long past: expired),
/// `4294967396` is 100 s and `2147483648` negative (32-bit), a bad exptime is `CLIENT_ERROR`, `gat` without
/// a key is `ERROR`. Each reply is memcached 1.6.18's to the same bytes.
#[test]
fn gat_exptime_edges_as_memcached() {
    let server = start(|_| {});
    let reference = Reference::start(&[]);
    let mut t = Raw::connect(&server);
    let mut m = reference.as_ref().map(|r| r.connect());
    let now = unix_now();
    let cases: Vec<(String, &str)> = vec![
        (
            "set g1 5 0 1\r\na\r\ngat 0 g1\r\ngat -1 g1\r\nget g1\r\n".into(),
            "STORED\r\nVALUE g1 5 1\r\na\r\nEND\r\nVALUE g1 5 1\r\na\r\nEND\r\nEND\r\n",
        ),
        (
            format!("set g2 5 0 1\r\na\r\ngat {} g2\r\nget g2\r\n", now - 10),
            "STORED\r\nVALUE g2 5 1\r\na\r\nEND\r\nEND\r\n",
        ),
        (
            format!("set g3 5 0 1\r\na\r\ngat {} g3\r\nget g3\r\n", now + 100),
            "STORED\r\nVALUE g3 5 1\r\na\r\nEND\r\nVALUE g3 5 1\r\na\r\nEND\r\n",
        ),
        (
            "set g4 5 0 1\r\na\r\ngat 2592000 g4\r\nget g4\r\ngat 2592001 g4\r\nget g4\r\n".into(),
            "STORED\r\nVALUE g4 5 1\r\na\r\nEND\r\nVALUE g4 5 1\r\na\r\nEND\r\nVALUE g4 5 1\r\na\r\nEND\r\nEND\r\n",
        ),
        (
            "set g6 5 0 1\r\na\r\ngat 4294967396 g6\r\nget g6\r\ngat 2147483648 g6\r\nget g6\r\n"
                .into(),
            "STORED\r\nVALUE g6 5 1\r\na\r\nEND\r\nVALUE g6 5 1\r\na\r\nEND\r\nVALUE g6 5 1\r\na\r\nEND\r\nEND\r\n",
        ),
        (
            "set g5 5 0 1\r\na\r\ngat abc g5\r\ngat 99999999999999999999 g5\r\ngat 1 \r\ngat\r\n"
                .into(),
            "STORED\r\nCLIENT_ERROR invalid exptime argument\r\nCLIENT_ERROR invalid exptime argument\r\nEND\r\nERROR\r\n",
        ),
    ];
    for (send, want) in &cases {
        both(&mut t, &mut m, send.as_bytes(), want.as_bytes());
    }
    server.stop();
}

/// `stats` counters after a known mix of every command (hits and misses of each, a `cas` conflict and a
/// miss, `add`/`replace`/`append`/`prepend` refused, a set expired at once, `flush_all`), after `stats
/// reset`: each counter is exactly what memcached 1.6.18 shows for the same bytes.
///
/// The reference runs without its LRU maintainer and crawler threads. While one of them holds a reference
/// to `a`, memcached's `incr`/`decr` cannot rewrite the value in place and links a new item instead, which
/// counts in `total_items`: with them on, 57 of 2,000 runs of this mix gave 7 rather than 6.
#[test]
fn stats_counters_after_a_known_mix_as_memcached() {
    let server = start(|_| {});
    let reference = Reference::start(&["-o", "no_lru_maintainer,no_lru_crawler"]);
    let mix: &[u8] = b"stats reset\r\nflush_all\r\nset a 0 0 1\r\n1\r\nget a b\r\ngat 0 a b\r\n\
        touch a 0\r\ntouch b 0\r\nincr a 1\r\nincr b 1\r\ndecr a 1\r\ndecr b 1\r\ncas a 0 0 1 1\r\nx\r\n\
        cas b 0 0 1 1\r\nx\r\ndelete b\r\ndelete a\r\nadd a 0 0 1\r\nx\r\nadd a 0 0 1\r\nx\r\n\
        replace z 0 0 1\r\nx\r\nappend z 0 0 1\r\nx\r\nprepend a 0 0 1\r\nx\r\nset e 0 -1 1\r\nx\r\n\
        get e\r\nset big 0 0 5\r\nhello\r\nset later 0 100 1\r\nx\r\n";
    let replies: &[u8] = b"RESET\r\nOK\r\nSTORED\r\nVALUE a 0 1\r\n1\r\nEND\r\nVALUE a 0 1\r\n1\r\nEND\r\n\
        TOUCHED\r\nNOT_FOUND\r\n2\r\nNOT_FOUND\r\n1\r\nNOT_FOUND\r\nEXISTS\r\nNOT_FOUND\r\nNOT_FOUND\r\n\
        DELETED\r\nSTORED\r\nNOT_STORED\r\nNOT_STORED\r\nNOT_STORED\r\nSTORED\r\nSTORED\r\nEND\r\n\
        STORED\r\nSTORED\r\n";
    let want = [
        ("cmd_get", 3),
        ("cmd_set", 11),
        ("cmd_flush", 1),
        ("cmd_touch", 4),
        ("get_hits", 1),
        ("get_misses", 2),
        ("delete_misses", 1),
        ("delete_hits", 1),
        ("incr_misses", 1),
        ("incr_hits", 1),
        ("decr_misses", 1),
        ("decr_hits", 1),
        ("cas_misses", 1),
        ("cas_hits", 0),
        ("cas_badval", 1),
        ("touch_hits", 2),
        ("touch_misses", 2),
        ("curr_items", 3),
        ("total_items", 6),
        ("evictions", 0),
    ];
    let mut conns = vec![("trust", Raw::connect(&server))];
    conns.extend(reference.as_ref().map(|r| ("memcached", r.connect())));
    for (who, r) in &mut conns {
        r.roundtrip(mix, replies);
        let stats = r.stats();
        for (name, value) in want {
            assert_eq!(stat(&stats, name), value, "{who}: {name}");
        }
    }
    server.stop();
}

/// The idle timeout bounds a client that stops reading: it pipelines `get`s of a big value and never
/// reads, with `--idle-timeout 1`: the server's write waits at most that long, then the connection is closed
/// and counted out (its fiber and buffers do not stay for good).
#[test]
fn a_client_that_never_reads_is_closed_by_the_idle_timeout() {
    let server = start(|c| c.idle_timeout = Some(Duration::from_secs(1)));
    let mut r = Raw::connect(&server);
    let mut line = format!("set big 0 0 {}\r\n", 300_000).into_bytes();
    line.extend_from_slice(&[b'b'; 300_000]);
    line.extend_from_slice(b"\r\n");
    r.roundtrip(&line, b"STORED\r\n");
    drop(r);
    let greedy = TcpStream::connect(server.local_addr()).unwrap();
    greedy
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let _ = (&greedy).write_all(&b"get big\r\n".repeat(1000));
    let started = Instant::now();
    wait_until("the greedy client is closed", || server.connections() == 0);
    assert!(started.elapsed() < Duration::from_secs(5));
    server.stop();
}

/// 1000 connections each pipeline 60 `incr`s over 6 counters (on every shard) in one write, all before any
/// reply is read, so both workers' channels to each other's shard are full at once: every connection gets
/// its 60 replies in order, and each counter ends exactly at the number of `incr`s it got.
#[test]
fn a_thousand_connections_pipelining_at_once_count_exactly() {
    raise_descriptor_limit(4096);
    let server = start(|_| {});
    let mut admin = Raw::connect(&server);
    for k in 0..6 {
        admin.roundtrip(
            format!("set burst{k} 0 0 1\r\n0\r\n").as_bytes(),
            b"STORED\r\n",
        );
    }
    let addr = server.local_addr();
    let pipeline: String = (0..60)
        .map(|i| format!("incr burst{} 1\r\n", i % 6))
        .collect();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let pipeline = pipeline.clone();
            thread::spawn(move || {
                let conns: Vec<TcpStream> = (0..125)
                    .map(|_| {
                        let s = TcpStream::connect(addr).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                        (&s).write_all(pipeline.as_bytes()).unwrap();
                        s
                    })
                    .collect();
                for s in conns {
                    let mut reply = Vec::new();
                    let mut buf = [0u8; 4096];
                    while reply.iter().filter(|&&b| b == b'\n').count() < 60 {
                        let n = (&s).read(&mut buf).unwrap();
                        assert!(n > 0, "closed after {}", String::from_utf8_lossy(&reply));
                        reply.extend_from_slice(&buf[..n]);
                    }
                    let values: Vec<u64> = String::from_utf8(reply)
                        .unwrap()
                        .lines()
                        .map(|l| l.parse().unwrap())
                        .collect();
                    // Per counter, the replies this connection saw only go up.
                    for k in 0..6 {
                        let mine: Vec<u64> = values.iter().skip(k).step_by(6).copied().collect();
                        assert!(mine.windows(2).all(|w| w[0] < w[1]), "{mine:?}");
                    }
                }
            })
        })
        .collect();
    within(Duration::from_secs(120), "1000 pipelines", move || {
        for t in threads {
            t.join().unwrap();
        }
    });
    for k in 0..6 {
        admin.roundtrip(
            format!("get burst{k}\r\n").as_bytes(),
            format!("VALUE burst{k} 0 5\r\n10000\r\nEND\r\n").as_bytes(),
        );
    }
    server.stop();
}

/// memcached 1.6.18's `flush_all <delay>` sets `oldest_live = realtime(delay) - 1`: everything stored up to
/// the end of second `now + delay - 1` is gone from the start of that second. So `flush_all 1` empties the
/// cache at once, and a `set` in the rest of that second is flushed too (`flush_all 1`, `set g`, `get f g`
/// is `END`; the trust server answered both values for a second). An absolute time from before the server
/// started flushes nothing (`realtime` gives 1, `oldest_live` 0) and drops a pending delayed flush (the trust
/// server emptied the cache: a client's `flush_all 2592001` cost every item). Replies byte for byte as
/// memcached's.
#[test]
fn flush_all_one_second_and_a_time_before_the_start_as_memcached() {
    let server = start(|_| {});
    let reference = Reference::start(&[]);
    let mut t = Raw::connect(&server);
    let mut m = reference.as_ref().map(|r| r.connect());
    // Not at the very end of a second: the `set g` must fall in the same second as the flush.
    while unix_now() != unix_now_after(Duration::from_millis(300)) {
        thread::sleep(Duration::from_millis(50));
    }
    both(
        &mut t,
        &mut m,
        b"flush_all\r\nset f 0 0 1\r\nx\r\nflush_all 1\r\nset g 0 0 1\r\ny\r\nget f g\r\n",
        b"OK\r\nSTORED\r\nOK\r\nSTORED\r\nEND\r\n",
    );
    thread::sleep(Duration::from_millis(1100));
    both(
        &mut t,
        &mut m,
        b"set f 0 0 1\r\nx\r\nflush_all 2592001\r\nget f\r\nflush_all 3\r\nflush_all 1000000000\r\nget f\r\n",
        b"STORED\r\nOK\r\nVALUE f 0 1\r\nx\r\nEND\r\nOK\r\nOK\r\nVALUE f 0 1\r\nx\r\nEND\r\n",
    );
    // The delayed flush was dropped: 3.5 s later the item is still there.
    thread::sleep(Duration::from_millis(3500));
    both(&mut t, &mut m, b"get f\r\n", b"VALUE f 0 1\r\nx\r\nEND\r\n");
    server.stop();
}

/// The unix second `after` from now.
fn unix_now_after(after: Duration) -> u64 {
    (std::time::SystemTime::now() + after)
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------------------------------------------------------------------------------------------------------
// The clock of a connection whose replies wait

/// A client pipelines 40 `get`s of a 1 MB value and then `get short`, where `short` expires 2 s after it was
/// stored, and starts reading only 3.2 s later: the server's writes wait for the reader, so it reaches
/// `get short` after the item has expired, and must answer `END` (memcached's clock is global: an item past
/// its exptime is never returned; memcached 1.6.18 answered `END` to these bytes). The trust server read the
/// clock once per batch of commands and kept it through writes that waited for seconds: it answered the
/// expired value. The same inside one `get` of 40 `big` keys and `short2`, on a second connection meanwhile.
#[test]
fn a_command_run_after_a_long_wait_on_writes_sees_the_time_it_runs_at() {
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    let big = vec![b'B'; 1_000_000];
    let mut line = format!("set big 0 0 {}\r\n", big.len()).into_bytes();
    line.extend_from_slice(&big);
    line.extend_from_slice(b"\r\nset short 0 2 1\r\ns\r\n");
    r.roundtrip(&line, b"STORED\r\nSTORED\r\n");
    let stored_at = Instant::now();
    let mut pipeline = b"get big\r\n".repeat(40);
    pipeline.extend_from_slice(b"get short\r\n");
    r.send(&pipeline);
    // The same within one `get` of many keys (written out as it goes): `get big ... big short2`, on a second
    // connection at the same time (its own key, its own 3.2 s wait: the two waits overlap instead of adding up).
    let mut r2 = Raw::connect(&server);
    r2.roundtrip(b"set short2 0 2 1\r\ns\r\n", b"STORED\r\n");
    let stored2_at = Instant::now();
    r2.send(format!("get {}short2\r\n", "big ".repeat(40)).as_bytes());
    let mut value = format!("VALUE big 0 {}\r\n", big.len()).into_bytes();
    value.extend_from_slice(&big);
    value.extend_from_slice(b"\r\n");
    let many_keys = thread::spawn(move || {
        thread::sleep(Duration::from_millis(3200));
        for _ in 0..40 {
            r2.expect(&value);
        }
        assert!(stored2_at.elapsed() > Duration::from_secs(3));
        r2.expect(b"END\r\n");
    });
    thread::sleep(Duration::from_millis(3200));
    let mut one = format!("VALUE big 0 {}\r\n", big.len()).into_bytes();
    one.extend_from_slice(&big);
    one.extend_from_slice(b"\r\nEND\r\n");
    for _ in 0..40 {
        r.expect(&one);
    }
    assert!(stored_at.elapsed() > Duration::from_secs(3));
    r.expect(b"END\r\n");
    many_keys.join().unwrap();
    server.stop();
}

/// The idle timeout at scale: 1500 connections, of which 1200 stay silent (300 after half a command line)
/// and 300 send a `version` every 300 ms, with `--idle-timeout 2`: within 5 s every silent one is closed
/// (EOF at the client, counted out), and no busy one is.
#[test]
fn idle_timeouts_by_the_thousand_close_exactly_the_silent_connections() {
    raise_descriptor_limit(4096);
    let server = start(|c| {
        c.idle_timeout = Some(Duration::from_secs(2));
        c.max_connections = 2000;
    });
    let addr = server.local_addr();
    let mut silent: Vec<TcpStream> = (0..1200)
        .map(|i| {
            let s = TcpStream::connect(addr).unwrap();
            if i % 4 == 0 {
                (&s).write_all(b"get half-a-li").unwrap();
            }
            s
        })
        .collect();
    let mut busy: Vec<Raw> = (0..300).map(|_| Raw::connect(&server)).collect();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        for r in &mut busy {
            r.roundtrip(b"version\r\n", b"VERSION 1.6.0-trust\r\n");
        }
        thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        server.connections(),
        300,
        "silent connections left open after 5 s"
    );
    for (i, s) in silent.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_millis(100)),
            "silent connection {i} not closed"
        );
    }
    for r in &mut busy {
        r.roundtrip(b"version\r\n", b"VERSION 1.6.0-trust\r\n");
    }
    drop(busy);
    drop(silent);
    server.stop();
}

/// "Expired items leave `curr_items` and `bytes` by `stats` time": 10000 items with exptime 1 and 100
/// without, over every shard; 2.1 s later `stats` counts exactly the 100 (and their bytes), the 10000 as
/// `crawler_reclaimed` (none fetched, so none `reclaimed`), `stats items` agrees, and `stats reset` zeroes
/// `crawler_reclaimed` but not `curr_items`.
#[test]
fn ten_thousand_expired_items_leave_the_counters_by_stats_time() {
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    for chunk in 0..100 {
        let mut batch = String::new();
        for i in chunk * 100..(chunk + 1) * 100 {
            batch.push_str(&format!("set exp:{i} 0 1 3 noreply\r\nabc\r\n"));
        }
        r.send(batch.as_bytes());
    }
    for i in 0..100 {
        r.send(format!("set keep:{i:03} 0 0 5 noreply\r\nhello\r\n").as_bytes());
    }
    r.roundtrip(b"version\r\n", b"VERSION 1.6.0-trust\r\n");
    thread::sleep(Duration::from_millis(2100));
    let stats = r.stats();
    let keep = item_size("keep:000".len(), 5) as u64;
    assert_eq!(stat(&stats, "curr_items"), 100);
    assert_eq!(stat(&stats, "bytes"), 100 * keep);
    assert_eq!(stat(&stats, "crawler_reclaimed"), 10_000);
    assert_eq!(stat(&stats, "reclaimed"), 0);
    assert_eq!(stat(&stats, "total_items"), 10_100);
    r.roundtrip(
        b"stats items\r\n",
        format!(
            "STAT items:1:number 100\r\nSTAT items:1:mem_requested {}\r\nSTAT items:1:evicted 0\r\n\
             STAT items:1:reclaimed 0\r\nEND\r\n",
            100 * keep
        )
        .as_bytes(),
    );
    r.roundtrip(b"stats reset\r\n", b"RESET\r\n");
    let stats = r.stats();
    assert_eq!(stat(&stats, "crawler_reclaimed"), 0);
    assert_eq!(stat(&stats, "curr_items"), 100);
    assert_eq!(stat(&stats, "bytes"), 100 * keep);
    server.stop();
}

/// `stats` counters exact under concurrency: 8 `memcache` crate clients each do 500 rounds of `set`, `get`
/// (hit), `get` (miss), `delete` (hit), `delete` (miss), `incr` (miss), `touch` (miss) on their own keys
/// (spread over the shards); the summed counters are exactly 8 x 500 of each.
#[test]
fn stats_counters_are_exact_under_concurrent_clients() {
    let server = Arc::new(start(|_| {}));
    let mut admin = Raw::connect(&server);
    admin.roundtrip(b"stats reset\r\n", b"RESET\r\n");
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let server = Arc::clone(&server);
            thread::spawn(move || {
                let c = client(&server);
                for i in 0..500 {
                    let k = format!("conc:{t}:{i}");
                    c.set(&k, "v", 0).unwrap();
                    assert_eq!(c.get::<String>(&k).unwrap().as_deref(), Some("v"));
                    assert_eq!(c.get::<String>(&format!("{k}:none")).unwrap(), None);
                    assert!(c.delete(&k).unwrap());
                    assert!(!c.delete(&k).unwrap());
                    assert!(c.increment(&k, 1).is_err());
                    assert!(!c.touch(&k, 10).unwrap());
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let stats = admin.stats();
    for (name, want) in [
        ("cmd_set", 4000),
        ("total_items", 4000),
        ("cmd_get", 8000),
        ("get_hits", 4000),
        ("get_misses", 4000),
        ("delete_hits", 4000),
        ("delete_misses", 4000),
        ("incr_misses", 4000),
        ("incr_hits", 0),
        ("cmd_touch", 4000),
        ("touch_misses", 4000),
        ("curr_items", 0),
        ("bytes", 0),
    ] {
        assert_eq!(stat(&stats, name), want, "{name}");
    }
    drop(admin);
    Arc::into_inner(server).unwrap().stop();
}

/// "Close a connection ... whose replies go unread for this long" (`Config::idle_timeout`): a client that
/// reads its replies slowly but steadily (64 KiB every 50 ms, so 8 MB of replies take about 6 s) with
/// `--idle-timeout 2` is not idle while the server writes, and gets every byte (memcached does not time out
/// a connection writing its replies). Once the last reply is in the socket buffers the idle time runs, so
/// a command sent after the client has read the last few megabytes may find the connection closed:
/// memcached 1.6.18 (`-o idle_timeout=2`, same client) closed it too, so that is not checked.
#[test]
fn a_slow_but_steady_reader_is_not_idle() {
    let server = start(|c| c.idle_timeout = Some(Duration::from_secs(2)));
    let mut r = Raw::connect(&server);
    let value = vec![b's'; 1_000_000];
    let mut line = format!("set slow 0 0 {}\r\n", value.len()).into_bytes();
    line.extend_from_slice(&value);
    line.extend_from_slice(b"\r\n");
    r.roundtrip(&line, b"STORED\r\n");
    let mut one = format!("VALUE slow 0 {}\r\n", value.len()).into_bytes();
    one.extend_from_slice(&value);
    one.extend_from_slice(b"\r\nEND\r\n");
    r.send(&b"get slow\r\n".repeat(8));
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let started = Instant::now();
    while got.len() < one.len() * 8 {
        let n = r.0.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "closed after {} of {} bytes, {:?} in",
            got.len(),
            one.len() * 8,
            started.elapsed()
        );
        got.extend_from_slice(&buf[..n]);
        thread::sleep(Duration::from_millis(50));
    }
    assert!(got.chunks(one.len()).all(|c| c == one.as_slice()));
    server.stop();
}
