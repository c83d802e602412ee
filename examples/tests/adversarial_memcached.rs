//! Hostile tests of the memcached example: the promises of `docs/memcached.md` and the module docs, checked
//! with raw bytes (the expected replies are what memcached 1.6.18 answers to the same bytes, except where a
//! test says the trust server documents a difference), thousands of connections, clients that misbehave, a
//! file-descriptor limit below `-c`, and the heap a shard really holds against its memory limit.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use trust_examples::memcached::protocol::{StoreOp, item_size};
use trust_examples::memcached::server::descriptor_headroom;
use trust_examples::memcached::store::{Shard, StoreOutcome, StoreRequest};

// A counting allocator (`harness::Counting`): live heap bytes allocated by the current thread, for the
// memory-limit test.
#[global_allocator]
static ALLOC: harness::Counting = harness::Counting;

mod harness;
use harness::{
    Raw, example_binary, free_port, live_bytes, raise_descriptor_limit, start, unix_now, wait_until,
};

// =========================================================================================================
// FAILED ON THE SERVER AS FOUND (each names the promise it broke and what changed; all pass now)
// =========================================================================================================

/// `--memory-mb` is the cache's memory: "LRU eviction under a memory limit". The shard accounts key, value
/// and 64 bytes per item. It used to keep the key twice (once in the item's buffer, once as the `HashMap`
/// key), so with long keys the heap it held was about twice its limit (`--memory-mb 64` with 250-byte keys
/// gave a 142 MB process; memcached 1.6.18 with `-m 64` on the same load: 71 MB). It now keeps the key once:
/// its hash table holds slot numbers and compares keys through the slots.
#[test]
fn a_shards_heap_stays_near_its_memory_limit_with_long_keys() {
    const LIMIT: usize = 8 << 20;
    let now = unix_now();
    let before = live_bytes();
    let mut shard = Shard::new(0, 1, LIMIT, 1 << 20);
    let mut key = [b'k'; 250];
    for i in 0..100_000u32 {
        key[..10].copy_from_slice(format!("{i:010}").as_bytes());
        // As the server builds it (`server.rs`, `Command::Store`): exactly key + value.
        let mut data = Vec::with_capacity(key.len() + 1);
        data.extend_from_slice(&key);
        data.push(b'x');
        let req = StoreRequest {
            op: StoreOp::Set,
            data,
            key_len: key.len(),
            flags: 0,
            exptime: 0,
            cas: 0,
            binary_key: false,
            stale: false,
        };
        assert_eq!(shard.store(req, now), StoreOutcome::Stored);
    }
    let stats = shard.stats();
    // Exactly as many items as fit: key + value + 64 bytes each.
    let fit = (LIMIT / item_size(250, 1)) as u64;
    assert_eq!(
        (stats.curr_items, stats.evictions, stats.bytes),
        (fit, 100_000 - fit, fit * item_size(250, 1) as u64)
    );
    let held = (live_bytes() - before) as f64;
    let ratio = held / LIMIT as f64;
    drop(shard);
    // memcached's item header, hash bucket and slab slack stay within ~1.1x of -m on this load. The shard,
    // which keeps each key once: 1.09x (the slot vector's and the hash table's spare capacity); it held 2.04x
    // when it kept each key twice.
    assert!(
        ratio <= 1.25,
        "a shard with a limit of {LIMIT} bytes ({} items, {} accounted bytes) holds {held} bytes of heap: \
         {ratio:.2}x its limit",
        stats.curr_items,
        stats.bytes
    );
}

/// The other side of the memory limit: with short keys and large values a shard still fills its limit
/// (it does not evict far below it), and the heap it holds is the limit, give or take its bookkeeping.
#[test]
fn a_shard_with_short_keys_and_large_values_uses_its_memory_limit() {
    const LIMIT: usize = 8 << 20;
    let now = unix_now();
    let before = live_bytes();
    let mut shard = Shard::new(0, 1, LIMIT, 1 << 20);
    let value = [b'v'; 4000];
    for i in 0..10_000u32 {
        let key = format!("k{i:06}");
        let mut data = Vec::with_capacity(key.len() + value.len());
        data.extend_from_slice(key.as_bytes());
        data.extend_from_slice(&value);
        let req = StoreRequest {
            op: StoreOp::Set,
            data,
            key_len: key.len(),
            flags: 0,
            exptime: 0,
            cas: 0,
            binary_key: false,
            stale: false,
        };
        assert_eq!(shard.store(req, now), StoreOutcome::Stored);
    }
    let stats = shard.stats();
    let size = item_size(7, 4000);
    let fit = (LIMIT / size) as u64;
    assert_eq!(
        (stats.curr_items, stats.evictions, stats.bytes),
        (fit, 10_000 - fit, fit * size as u64)
    );
    // The items kept fill the limit to within one item.
    assert!(LIMIT as u64 - stats.bytes < size as u64);
    let held = (live_bytes() - before) as f64;
    let ratio = held / LIMIT as f64;
    drop(shard);
    assert!(
        (0.95..=1.1).contains(&ratio),
        "a shard with a limit of {LIMIT} bytes holds {held} bytes of heap: {ratio:.3}x its limit"
    );
}

/// "at most `-c` connections (one more reads `ERROR Too many open connections` and is closed, as memcached
/// 1.6 does)". With a file-descriptor limit below `-c` (`ulimit -n 40`, `-c 1024`) `accept` used to fail with
/// EMFILE past the limit and the accept loop retried at once, forever: clients got no answer and a core spun.
/// Now, like memcached 1.6 ("failed to set rlimit for open files"), the server makes sure at start that the
/// process may open `-c` + 16 + 2 per worker descriptors (20 with `--workers 2`): it raises the soft limit up
/// to the hard one, and refuses to start, saying why, when the hard limit is lower. Under `ulimit -n 64`:
/// `-c 1024` and `-c 45` exit 1 with that message; `-c 44` serves 44 connections, refuses the next 10 with
/// memcached's words and stays idle. Under a soft limit of 40, `-c 100` raises it to 120 and serves 100.
#[test]
fn a_descriptor_limit_below_c_refuses_clients_instead_of_spinning() {
    assert_eq!(descriptor_headroom(2), 20);
    let hard = hard_descriptor_limit();
    assert!(
        hard == "unlimited" || hard.parse::<u64>().unwrap() >= 200,
        "this test needs a hard limit of 200 descriptors (ulimit -Hn): {hard}"
    );
    for c in [1024, 45] {
        let mut child = spawn_server("ulimit -n 64", &format!("-c {c}"), free_port());
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("-c {c} under `ulimit -n 64`: the server started");
            }
            thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned()
            ),
            (
                Some(1),
                format!(
                    "memcached: failed to set rlimit for open files: -c {c} needs {} file descriptors ({c} \
                     connections + 20 for the server itself), but the hard limit (ulimit -Hn) is 64; start with \
                     a smaller -c or raise the limit (ulimit -n {})\n",
                    c + 20,
                    c + 20
                )
            )
        );
    }

    // -c 44 fits under 64: exactly 44 served, then refusals, and an idle server.
    let (mut child, conns) = serve_and_count("ulimit -n 64", 44, 10);
    let pid = child.id();
    let cpu_before = process_cpu_ticks(pid);
    thread::sleep(Duration::from_secs(1));
    let cpu_spent = process_cpu_ticks(pid) - cpu_before;
    let _ = child.kill();
    let _ = child.wait();
    drop(conns);
    assert!(
        cpu_spent < 30,
        "the idle server used {cpu_spent} CPU ticks (1/100 s) in one second"
    );

    // A soft limit of 40 below a hard one: raised to what -c 100 needs, exactly.
    let (mut child, conns) = serve_and_count("ulimit -S -n 40", 100, 1);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    drop(conns);
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[3..5], ["120", hard.as_str()], "{line}");
}

/// Starts the example binary under `ulimit` (`sh -c "<ulimit> && exec memcached ..."`) with `--workers 2`.
fn spawn_server(ulimit: &str, args: &str, port: u16) -> std::process::Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{ulimit} && exec {} --port {port} --workers 2 {args}",
            example_binary().display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Starts the server with `-c max`, opens `max + extra` connections (the first one as soon as the server
/// listens), sends `version` on each and checks that exactly the first `max` are served and the others
/// refused with memcached's words.
fn serve_and_count(
    ulimit: &str,
    max: usize,
    extra: usize,
) -> (std::process::Child, Vec<TcpStream>) {
    let port = free_port();
    let mut child = spawn_server(ulimit, &format!("-c {max}"), port);
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let first = loop {
        if let Ok(c) = TcpStream::connect(&addr) {
            break c;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("-c {max} under `{ulimit}`: the server exited ({status}): {err}");
        }
        assert!(Instant::now() < deadline, "server did not start");
        thread::sleep(Duration::from_millis(20));
    };
    let mut conns = vec![first];
    for _ in 1..max + extra {
        conns.push(TcpStream::connect(&addr).unwrap());
    }
    for c in &mut conns {
        c.write_all(b"version\r\n").unwrap();
    }
    let mut replies = Vec::new();
    for c in &mut conns {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0; 64];
        let reply = match c.read(&mut buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(e) => format!("no answer ({e})"),
        };
        replies.push(reply);
    }
    let mut want = vec!["VERSION 1.6.0-trust\r\n".to_owned(); max];
    want.extend(vec![
        "ERROR Too many open connections\r\n".to_owned();
        extra
    ]);
    assert_eq!(replies, want, "-c {max} under `{ulimit}`");
    (child, conns)
}

/// `ulimit -H -n` as the shell prints it: a number or `unlimited` (as in /proc/<pid>/limits).
fn hard_descriptor_limit() -> String {
    let out = Command::new("sh")
        .args(["-c", "ulimit -H -n"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A burst of connects: memcached listens with a backlog of 1024 (`-b`); the trust server listened with mio's
/// default of 128, so a burst of more than 128 connects before the accept fiber ran had SYNs dropped and those
/// clients waited a 1 s (then 3 s, ...) retransmit. `trust_core::net::TcpListener::bind` now listens with
/// `SOMAXCONN` (4096), which the kernel caps at `net.core.somaxconn`. Checked from `ss`'s Send-Q of the
/// listening socket (its backlog); without `ss`, by filling the backlog of a listener bound the same way.
#[test]
fn the_listen_backlog_is_as_deep_as_memcacheds() {
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let want = somaxconn.min(libc::SOMAXCONN as u32);
    let server = start(|_| {});
    let port = server.local_addr().port();
    let Ok(out) = Command::new("ss").args(["-ltnH"]).output() else {
        // No `ss`: a listener bound as `Server::start` binds it, never accepting, holds its backlog (+ 1)
        // completed connections; each connect completes at once, none waits for a retransmit.
        let _many = MANY_SOCKETS.lock().unwrap_or_else(|e| e.into_inner());
        let n = want.min(1000) as usize;
        let limit = raise_descriptor_limit(n as u64 + 500);
        assert!(limit >= n as u64 + 500, "ulimit -Hn is below {}", n + 500);
        let listener = trust_core::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut conns = Vec::new();
        for i in 0..n {
            let started = Instant::now();
            conns.push(TcpStream::connect_timeout(&addr, Duration::from_millis(900)).unwrap());
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "connect {i} waited"
            );
        }
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(&format!("127.0.0.1:{port} ")))
        .unwrap_or_else(|| panic!("listener not in ss output:\n{text}"));
    let backlog: u32 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert_eq!(
        backlog, want,
        "listen backlog (memcached: 1024, the kernel's cap: {somaxconn}): {line}"
    );
}

/// The same burst measured: 3000 connects one after the other from one thread (each one a kernel handshake,
/// no reply awaited). memcached 1.6.18 took 1.4 s for 9000 such connects here, the trust server (backlog 128)
/// 16.8 s: its accept fiber fell behind, the queue filled, and connects waited for SYN retransmits (1 s each).
/// Stops at the first connect that took a second. Both ends of each connection are in this process: with a
/// hard descriptor limit below 6,300 the burst is smaller (still well past 128).
#[test]
fn a_burst_of_connects_never_waits_for_a_syn_retransmit() {
    let _many = MANY_SOCKETS.lock().unwrap_or_else(|e| e.into_inner());
    let limit = raise_descriptor_limit(6300);
    let n = 3000.min((limit as usize).saturating_sub(300) / 2);
    assert!(
        n >= 400,
        "a soft descriptor limit of {limit} leaves room for {n} connections"
    );
    let server = start(|c| c.max_connections = n + 10);
    let mut conns = Vec::new();
    for i in 0..n {
        let started = Instant::now();
        conns.push(TcpStream::connect(server.local_addr()).unwrap());
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(900),
            "connect {i} took {took:?} (a dropped SYN: the accept queue was full)"
        );
    }
    // They are all served in the end.
    let mut last = Raw(conns.pop().unwrap());
    last.0
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    last.roundtrip(b"version\r\n", b"VERSION 1.6.0-trust\r\n");
    assert_eq!(last.stat("curr_connections"), n as u64);
}

/// `noreply` "on every command that has it": memcached 1.6 sends nothing at all for a `noreply` command,
/// errors included (`out_string` skips the reply when `c->noreply`), so a client that does not read replies
/// to `noreply` commands stays in step. The trust server used to send the error, and that client then read
/// it as the reply of its next command; now a line that ends with `noreply` gets no reply at all.
/// (protocol.txt allows an error here when the line is malformed; memcached 1.6.18 still sends nothing for
/// each of these.)
#[test]
fn noreply_commands_send_no_error_either() {
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    r.roundtrip(b"set n 0 0 1\r\n5\r\n", b"STORED\r\n");
    r.roundtrip(
        b"incr n x noreply\r\ntouch n soon noreply\r\nflush_all later noreply\r\ndelete n 5 noreply\r\nget n\r\n",
        b"VALUE n 0 1\r\n5\r\nEND\r\n",
    );
}

// =========================================================================================================
// PASSING (regression tests; exact replies = memcached 1.6.18's unless the comment says otherwise)
// =========================================================================================================

/// Every byte in its own TCP segment (Nagle off, a pause per byte): the incremental parser answers exactly.
#[test]
fn commands_split_byte_by_byte_across_packets() {
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    for &b in b"set bb 5 0 3\r\nabc\r\ngets bb\r\nincr c 1\r\nappend bb 0 0 2\r\nde\r\nget bb\r\n" {
        r.send(&[b]);
        thread::sleep(Duration::from_micros(200));
    }
    r.expect(b"STORED\r\nVALUE bb 5 3 ");
    // The cas unique is the server's own; read it up to the line end.
    let cas = r.read_until(b"\r\n");
    assert!(cas[..cas.len() - 2].iter().all(u8::is_ascii_digit));
    r.expect(b"abc\r\nEND\r\nNOT_FOUND\r\nSTORED\r\nVALUE bb 5 5\r\nabcde\r\nEND\r\n");
}

/// Thirty commands of every kind in one write, answered in order.
#[test]
fn pipelined_mixed_commands_in_one_packet() {
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    r.roundtrip(
        b"set a 1 0 1\r\nx\r\nset c 0 0 2\r\n10\r\nadd a 0 0 1\r\ny\r\nadd b 2 0 1\r\ny\r\nreplace zz 0 0 1\r\n\
          z\r\nreplace b 3 0 1\r\nz\r\nappend a 0 0 2\r\n>>\r\nprepend a 0 0 2\r\n<<\r\nappend zz 0 0 1\r\nq\r\n\
          incr c 5\r\ndecr c 100\r\nincr zz 1\r\ndecr zz 1\r\ndelete b\r\ndelete b\r\ntouch a 100\r\ntouch b 1\r\n\
          get a b c zz\r\nbogus\r\n\r\nset d 0 0 1 noreply\r\nd\r\nincr c 7 noreply\r\ndelete zz noreply\r\n\
          get d c\r\nverbosity 1\r\nverbosity 1 noreply\r\nflush_all 0 noreply\r\nget a d\r\n",
        b"STORED\r\nSTORED\r\nNOT_STORED\r\nSTORED\r\nNOT_STORED\r\nSTORED\r\nSTORED\r\nSTORED\r\nNOT_STORED\r\n\
          15\r\n0\r\nNOT_FOUND\r\nNOT_FOUND\r\nDELETED\r\nNOT_FOUND\r\nTOUCHED\r\nNOT_FOUND\r\n\
          VALUE a 1 5\r\n<<x>>\r\nVALUE c 0 2\r\n0 \r\nEND\r\nERROR\r\nERROR\r\n\
          VALUE d 0 1\r\nd\r\nVALUE c 0 2\r\n7 \r\nEND\r\nOK\r\nEND\r\n",
    );
}

/// Numbers at and past their limits: flags are u32, lengths non-negative, deltas u64; incr wraps at 2^64,
/// decr stops at 0, a shorter result is padded with spaces to the stored length (as memcached rewrites it in
/// place), leading zeros are a number.
#[test]
fn numbers_at_and_past_their_limits() {
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    r.roundtrip(
        b"set f 4294967295 0 1\r\ny\r\nget f\r\n",
        b"STORED\r\nVALUE f 4294967295 1\r\ny\r\nEND\r\n",
    )
    .roundtrip(
        b"set n 0 0 -1\r\nget f\r\n",
        b"CLIENT_ERROR bad command line format\r\nVALUE f 4294967295 1\r\ny\r\nEND\r\n",
    )
    .roundtrip(
        b"set c 0 0 1\r\n5\r\nincr c -1\r\nincr c 18446744073709551616\r\nget c\r\n",
        b"STORED\r\nCLIENT_ERROR invalid numeric delta argument\r\n\
          CLIENT_ERROR invalid numeric delta argument\r\nVALUE c 0 1\r\n5\r\nEND\r\n",
    )
    .roundtrip(
        b"set c 0 0 20\r\n18446744073709551615\r\nincr c 2\r\nincr c 18446744073709551615\r\n",
        b"STORED\r\n1\r\n0\r\n",
    )
    .roundtrip(b"decr c 1\r\n", b"0\r\n")
    .roundtrip(
        b"set c 0 0 3\r\n100\r\ndecr c 1\r\nget c\r\n",
        b"STORED\r\n99\r\nVALUE c 0 3\r\n99 \r\nEND\r\n",
    )
    .roundtrip(
        b"set c 0 0 25\r\n0000000000000000000000012\r\nincr c 1\r\n",
        b"STORED\r\n13\r\n",
    )
    .roundtrip(
        b"set c 0 0 0\r\n\r\nincr c 1\r\nset c 0 0 2\r\n-1\r\nincr c 1\r\n",
        b"STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n\
          STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    )
    .roundtrip(
        b"set e 0 0 99999999999999999999\r\nset e 0 0 2147483648\r\n",
        b"CLIENT_ERROR bad command line format\r\nCLIENT_ERROR bad command line format\r\n",
    );
}

/// Keys: 250 bytes fine, 251 refused (on `get` and on `set`, whose block trust swallows: documented).
#[test]
fn keys_of_250_and_251_bytes() {
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    let k250 = "k".repeat(250);
    let k251 = "k".repeat(251);
    r.roundtrip(
        format!("set {k250} 0 0 1\r\nx\r\nget {k250}\r\n").as_bytes(),
        format!("STORED\r\nVALUE {k250} 0 1\r\nx\r\nEND\r\n").as_bytes(),
    )
    .roundtrip(
        format!("get {k251}\r\nget a {k251}\r\n").as_bytes(),
        b"CLIENT_ERROR bad command line format\r\nCLIENT_ERROR bad command line format\r\n",
    )
    .roundtrip(
        format!("set {k251} 0 0 1\r\nx\r\nversion\r\n").as_bytes(),
        b"CLIENT_ERROR bad command line format\r\nVERSION 1.6.0-trust\r\n",
    );
}

/// A data block shorter or longer than announced: `bad data chunk`, then memcached (and trust) read the rest
/// as a command.
#[test]
fn data_block_length_mismatch() {
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    r.roundtrip(
        b"set m 0 0 3\r\nab\r\nget m\r\n",
        b"CLIENT_ERROR bad data chunk\r\nERROR\r\n",
    )
    .roundtrip(
        b"set m 0 0 3\r\nabcd\r\nget m\r\n",
        b"CLIENT_ERROR bad data chunk\r\nERROR\r\nEND\r\n",
    )
    .roundtrip(
        b"set m 0 0 1\r\nx\nget m\r\n",
        b"CLIENT_ERROR bad data chunk\r\nERROR\r\n",
    )
    .roundtrip(
        b"set q 0 0 1 noreply\r\nxy\r\nget q\r\n",
        b"ERROR\r\nEND\r\n",
    )
    // A bare "\n" ends a command line, as in memcached.
    .roundtrip(
        b"set lf 0 0 1\nx\r\nget lf\n",
        b"STORED\r\nVALUE lf 0 1\r\nx\r\nEND\r\n",
    );
}

/// exptime: negative = gone; relative up to 30 days; 30 days + 1 is an absolute time (long past): gone; an
/// absolute time in the future is kept; `touch`/`gat` move it.
#[test]
fn exptime_boundaries() {
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    let future = unix_now() + 1000;
    r.roundtrip(
        b"set e 0 -1 1\r\nx\r\nget e\r\nset e 0 2592000 1\r\nx\r\nget e\r\n",
        b"STORED\r\nEND\r\nSTORED\r\nVALUE e 0 1\r\nx\r\nEND\r\n",
    )
    .roundtrip(b"set e 0 2592001 1\r\nx\r\nget e\r\n", b"STORED\r\nEND\r\n")
    .roundtrip(
        format!("set e 0 {future} 1\r\nx\r\nget e\r\n").as_bytes(),
        b"STORED\r\nVALUE e 0 1\r\nx\r\nEND\r\n",
    )
    .roundtrip(
        b"touch e -1\r\nget e\r\nset g 3 0 1\r\nx\r\ngat -1 g nog\r\nget g\r\n",
        b"TOUCHED\r\nEND\r\nSTORED\r\nVALUE g 3 1\r\nx\r\nEND\r\nEND\r\n",
    );
}

/// cas: a wrong unique is EXISTS, the right one STORED once, a missing key NOT_FOUND; `touch` keeps the
/// unique, `incr` and `append` change it.
#[test]
fn cas_semantics() {
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    fn unique(r: &mut Raw, key: &str) -> u64 {
        r.send(format!("gets {key}\r\n").as_bytes());
        let text = r.read_until(b"END\r\n");
        let text = String::from_utf8(text).unwrap();
        let header = text.lines().next().unwrap();
        header.rsplit(' ').next().unwrap().parse().unwrap()
    }
    r.roundtrip(b"cas nocas 0 0 1 5\r\nx\r\n", b"NOT_FOUND\r\n")
        .roundtrip(b"set k 0 0 1\r\n1\r\n", b"STORED\r\n");
    let u = unique(&mut r, "k");
    r.roundtrip(
        format!("cas k 0 0 1 {}\r\n2\r\n", u + 1).as_bytes(),
        b"EXISTS\r\n",
    )
    .roundtrip(b"touch k 1000\r\n", b"TOUCHED\r\n");
    assert_eq!(unique(&mut r, "k"), u, "touch keeps the unique");
    r.roundtrip(
        format!("cas k 0 0 1 {u}\r\n2\r\n").as_bytes(),
        b"STORED\r\n",
    )
    .roundtrip(
        format!("cas k 0 0 1 {u}\r\n3\r\n").as_bytes(),
        b"EXISTS\r\n",
    );
    let u2 = unique(&mut r, "k");
    assert_ne!(u2, u);
    r.roundtrip(b"incr k 1\r\n", b"3\r\n");
    let u3 = unique(&mut r, "k");
    assert_ne!(u3, u2, "incr changes the unique");
    r.roundtrip(b"append k 0 0 1\r\n0\r\n", b"STORED\r\n");
    assert_ne!(unique(&mut r, "k"), u3, "append changes the unique");
    r.roundtrip(
        format!("cas k 0 0 1 {u3} noreply\r\nx\r\nget k\r\n").as_bytes(),
        b"VALUE k 0 2\r\n30\r\nEND\r\n",
    );
}

/// `gets` of 3000 keys (over every shard), every other one missing: the hits in request order.
#[test]
fn gets_with_thousands_of_keys() {
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    let mut sets = Vec::new();
    for i in (0..3000).step_by(2) {
        sets.extend_from_slice(
            format!("set key{i} {i} 0 {}\r\n{i}\r\n", i.to_string().len()).as_bytes(),
        );
    }
    sets.extend_from_slice(b"version\r\n");
    r.send(&sets);
    r.expect(&b"STORED\r\n".repeat(1500))
        .expect(b"VERSION 1.6.0-trust\r\n");
    let keys: Vec<String> = (0..3000).map(|i| format!("key{i}")).collect();
    let mut want = Vec::new();
    for i in (0..3000).step_by(2) {
        want.extend_from_slice(
            format!("VALUE key{i} {i} {}\r\n{i}\r\n", i.to_string().len()).as_bytes(),
        );
    }
    want.extend_from_slice(b"END\r\n");
    r.send(format!("get {}\r\n", keys.join(" ")).as_bytes())
        .expect(&want);
}

/// A delayed `flush_all`: items stored before the deadline (also after the command) go; items stored after
/// it stay; `flush_all 0` cancels a pending delayed flush. memcached 1.6.18's deadline for `flush_all N` is
/// the start of second `now + N - 1` (`oldest_live = realtime(N) - 1`), for what is stored up to the end of
/// that second: `flush_all 1` empties at once, and an item stored in the same second goes too (review 36:
/// this test expected both values, which memcached does not answer).
#[test]
fn delayed_flush_all() {
    // `flush_all 0` cancels a pending delayed flush: on a server of its own at the same time (its 2.1 s wait
    // overlaps the one below), x2 is still there after the cancelled flush's time.
    let cancelled = thread::spawn(|| {
        let server = start(|_| {});
        let mut r = Raw::connect(&server);
        r.roundtrip(
            b"flush_all 1\r\nflush_all 0\r\nset x2 0 0 1\r\nq\r\n",
            b"OK\r\nOK\r\nSTORED\r\n",
        );
        thread::sleep(Duration::from_millis(2100));
        r.roundtrip(b"get x2\r\n", b"VALUE x2 0 1\r\nq\r\nEND\r\n");
    });
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    r.roundtrip(
        b"set before 0 0 1\r\nx\r\nflush_all 1\r\nset after 0 0 1\r\ny\r\nget before after\r\n",
        b"STORED\r\nOK\r\nSTORED\r\nEND\r\n",
    );
    thread::sleep(Duration::from_millis(2100));
    r.roundtrip(
        b"get before after\r\nset later 0 0 1\r\nw\r\nget later\r\n",
        b"END\r\nSTORED\r\nVALUE later 0 1\r\nw\r\nEND\r\n",
    );
    cancelled
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
}

/// `-I 1m`: key + value + 64 bytes fits exactly, one byte more is refused (and swallowed, and a `set`
/// drops the old value); a 2 MiB block is swallowed in pieces; an append past the limit is NOT_STORED.
#[test]
fn values_at_and_past_the_item_limit() {
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    let fits = vec![b'v'; (1 << 20) - 1 - 64];
    let mut msg = format!("set k 0 0 {}\r\n", fits.len()).into_bytes();
    msg.extend_from_slice(&fits);
    msg.extend_from_slice(b"\r\nget k\r\n");
    let mut want = format!("STORED\r\nVALUE k 0 {}\r\n", fits.len()).into_bytes();
    want.extend_from_slice(&fits);
    want.extend_from_slice(b"\r\nEND\r\n");
    r.roundtrip(&msg, &want);
    let over = vec![b'o'; fits.len() + 1];
    let mut msg = format!("set k 0 0 {}\r\n", over.len()).into_bytes();
    msg.extend_from_slice(&over);
    msg.extend_from_slice(b"\r\nget k\r\n");
    r.roundtrip(&msg, b"SERVER_ERROR object too large for cache\r\nEND\r\n");
    let two = vec![b'\n'; 2 << 20]; // newlines: read as commands, they would be thousands of ERRORs
    r.send(b"set big 0 0 2097152\r\n");
    for chunk in two.chunks(100_000) {
        r.send(chunk);
    }
    r.roundtrip(
        b"\r\nversion\r\n",
        b"SERVER_ERROR object too large for cache\r\nVERSION 1.6.0-trust\r\n",
    );
    let base = vec![b'a'; 1_000_000];
    let mut msg = b"set ap 0 0 1000000\r\n".to_vec();
    msg.extend_from_slice(&base);
    msg.extend_from_slice(b"\r\nappend ap 0 0 100000\r\n");
    msg.extend_from_slice(&vec![b'b'; 100_000]);
    msg.extend_from_slice(b"\r\nversion\r\n");
    r.roundtrip(&msg, b"STORED\r\nNOT_STORED\r\nVERSION 1.6.0-trust\r\n");
}

/// A client that disconnects in the middle of a value stores nothing, and a half-closed client still gets
/// every reply before the server closes.
#[test]
fn disconnect_mid_value_and_half_close() {
    let server = start(|_| {});
    let mut steady = Raw::connect(&server);
    {
        let mut r = Raw::connect(&server);
        r.send(b"set mid 0 0 100000\r\n").send(&[b'x'; 50_000]);
        r.0.shutdown(Shutdown::Both).unwrap();
    }
    {
        let mut r = Raw::connect(&server);
        r.send(b"set big 0 0 5000000\r\n").send(&[b'x'; 300_000]);
    }
    let mut half = Raw::connect(&server);
    half.send(b"set hc 0 0 2\r\nhi\r\nget hc\r\nincr hc 1\r\nset hc2 0 0 10\r\nhi");
    half.0.shutdown(Shutdown::Write).unwrap();
    half.expect(
        b"STORED\r\nVALUE hc 0 2\r\nhi\r\nEND\r\n\
          CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    )
    .expect_eof();
    wait_until("the other connections are closed", || {
        server.connections() == 1
    });
    steady.roundtrip(b"get mid big hc2 hc\r\n", b"VALUE hc 0 2\r\nhi\r\nEND\r\n");
}

/// A slowloris line of 200 KiB without a newline: `CLIENT_ERROR line too long`, then the server closes
/// (memcached 1.6.18 resets the connection without a word). Also a `get` line of 70 KiB (35,000 keys): trust
/// closes it too (documented; memcached answers it).
#[test]
fn lines_without_end_are_bounded() {
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    let writer = {
        let mut w = r.0.try_clone().unwrap();
        thread::spawn(move || {
            let flood = vec![b'a'; 200 * 1024];
            let _ = w.write_all(&flood);
        })
    };
    r.expect(b"CLIENT_ERROR line too long\r\n").expect_eof();
    writer.join().unwrap();
    let mut r = Raw::connect(&server);
    let line = format!("get {}\r\n", "a ".repeat(35 * 1024));
    let _ = r.0.write_all(line.as_bytes());
    r.expect(b"CLIENT_ERROR line too long\r\n").expect_eof();
    wait_until("both are counted out", || server.connections() == 0);
}

/// A thousand connections open at once (`-c 1005`), each storing and reading back its own key through
/// every shard, then more than the cap: exactly the ones past it are refused.
#[test]
fn a_thousand_connections_then_the_cap() {
    // Both ends of each connection are in this process: 2 x 1010 descriptors and some.
    let _many = MANY_SOCKETS.lock().unwrap_or_else(|e| e.into_inner());
    let limit = raise_descriptor_limit(2400);
    assert!(
        limit >= 2400,
        "this test needs a hard descriptor limit (ulimit -Hn) of 2400: {limit}"
    );
    const N: usize = 1000;
    let server = start(|c| c.max_connections = N + 5);
    let mut conns: Vec<Raw> = (0..N).map(|_| Raw::connect(&server)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.send(format!("set conn{i} {i} 0 {}\r\n{i}\r\n", i.to_string().len()).as_bytes());
    }
    for c in &mut conns {
        c.expect(b"STORED\r\n");
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let j = (i * 7919) % N;
        c.send(format!("get conn{j}\r\n").as_bytes());
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let j = (i * 7919) % N;
        c.expect(
            format!(
                "VALUE conn{j} {j} {}\r\n{j}\r\nEND\r\n",
                j.to_string().len()
            )
            .as_bytes(),
        );
    }
    let extra: Vec<Raw> = (0..10).map(|_| Raw::connect(&server)).collect();
    let (mut served, mut refused) = (0, 0);
    let mut kept = Vec::new();
    for mut c in extra {
        c.send(b"version\r\n");
        let mut buf = [0; 64];
        let n = c.0.read(&mut buf).unwrap();
        match &buf[..n] {
            b"VERSION 1.6.0-trust\r\n" => served += 1,
            b"ERROR Too many open connections\r\n" => refused += 1,
            other => panic!("{:?}", String::from_utf8_lossy(other)),
        }
        kept.push(c);
    }
    assert_eq!((served, refused), (5, 5));
    assert_eq!(conns[0].stat("curr_connections"), (N + 5) as u64);
    drop(conns);
    drop(kept);
    wait_until("all are counted out", || server.connections() == 0);
}

/// Replies memcached 1.6.18 gives to unknown or malformed commands that trust gives the same way.
#[test]
fn unknown_and_malformed_commands() {
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    r.roundtrip(
        b"bogus\r\nGET a\r\n\r\n \r\nstats bogus\r\nset\ttab 0 0 1\r\nx\r\nverbosity\r\nget\r\n",
        b"ERROR\r\nERROR\r\nERROR\r\nERROR\r\nERROR\r\nERROR\r\nERROR\r\nERROR\r\nERROR\r\n",
    )
    .roundtrip(
        b"set  sp  0  0  1\r\nx\r\n get   sp  \r\n",
        b"STORED\r\nVALUE sp 0 1\r\nx\r\nEND\r\n",
    )
    .roundtrip(
        b"delete sp 0\r\ndelete sp 1\r\ndelete sp noreply\r\ndelete sp x y\r\n",
        b"DELETED\r\nCLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n\
          CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n",
    )
    .roundtrip(
        b"append nx 0 0 1\r\nx\r\nprepend nx 0 0 1\r\nx\r\nreplace nx 0 0 1\r\nx\r\n",
        b"NOT_STORED\r\nNOT_STORED\r\nNOT_STORED\r\n",
    )
    .roundtrip(
        b"set ap 1 0 1\r\nx\r\nappend ap 9 0 1\r\ny\r\nget ap\r\n",
        b"STORED\r\nSTORED\r\nVALUE ap 1 2\r\nxy\r\nEND\r\n",
    )
    .send(b"quit\r\nversion\r\n")
    .expect_eof();
}

/// The `memcache` crate (a real client) with a value near 1 MiB and a 200-key multi-get.
#[test]
fn the_memcache_crate_with_big_values_and_many_keys() {
    let server = start(|_| {});
    let url = format!(
        "memcache://{}?protocol=ascii&timeout=10",
        server.local_addr()
    );
    let c = memcache::Client::with_pool_size(url.as_str(), 1).unwrap();
    let big = "z".repeat(1_000_000);
    c.set("big", big.as_str(), 0).unwrap();
    assert_eq!(
        c.get::<String>("big").unwrap().as_deref(),
        Some(big.as_str())
    );
    let keys: Vec<String> = (0..200).map(|i| format!("many{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        c.set(k, i as u64, 0).unwrap();
    }
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let got = c.gets::<u64>(&refs).unwrap();
    assert_eq!(got.len(), 200);
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(got[k], i as u64);
    }
    assert_eq!(c.increment("many7", u64::MAX).unwrap(), 6);
    assert_eq!(c.decrement("many7", 100).unwrap(), 0);
    c.set("exp", "v", 2_592_001).unwrap(); // absolute time in 1970: gone
    assert_eq!(c.get::<String>("exp").unwrap(), None);
}

// ---------------------------------------------------------------------------------------------------------

/// Held by the tests that open thousands of sockets, so that they do not run out of descriptors together.
static MANY_SOCKETS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn process_cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}
