//! The memcached-compatible server, started in-process on port 0 and driven two ways: by a real memcached
//! client library from crates.io (`memcache`, text protocol), and by raw `std::net::TcpStream`s that check
//! the exact reply bytes, bad input included. Each test starts its own server, so its `stats` are its own.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use trust_examples::memcached::ServerHandle;
use trust_examples::memcached::protocol::ITEM_OVERHEAD;
use trust_examples::memcached::server::TOO_MANY_CONNECTIONS;

mod harness;
use harness::{Raw, start, stat, unix_now, wait_until};

fn client(server: &ServerHandle) -> memcache::Client {
    let url = format!(
        "memcache://{}?protocol=ascii&timeout=10",
        server.local_addr()
    );
    memcache::Client::with_pool_size(url.as_str(), 1).expect("client connects")
}

#[test]
fn the_memcache_crate_drives_every_command() {
    let server = start(|_| {});
    let c = client(&server);
    c.set("greeting", "hello", 0).unwrap();
    assert_eq!(
        c.get::<String>("greeting").unwrap().as_deref(),
        Some("hello")
    );
    assert_eq!(c.get::<String>("absent").unwrap(), None);

    // add / replace (the crate answers NOT_STORED with `Ok(())`: the values show what happened)
    c.add("greeting", "again", 0).unwrap();
    assert_eq!(
        c.get::<String>("greeting").unwrap().as_deref(),
        Some("hello")
    );
    c.add("fresh", "1", 0).unwrap();
    c.replace("nobody", "x", 0).unwrap();
    assert_eq!(c.get::<String>("nobody").unwrap(), None);
    c.replace("fresh", "2", 0).unwrap();
    assert_eq!(c.get::<String>("fresh").unwrap().as_deref(), Some("2"));

    // append / prepend
    c.append("greeting", ", world").unwrap();
    c.prepend("greeting", ">> ").unwrap();
    assert_eq!(
        c.get::<String>("greeting").unwrap().as_deref(),
        Some(">> hello, world")
    );
    c.append("nobody", "x").unwrap();
    assert_eq!(c.get::<String>("nobody").unwrap(), None);

    // multi-key gets
    let many = c.gets::<String>(&["greeting", "fresh", "absent"]).unwrap();
    assert_eq!(many.len(), 2);
    assert_eq!(many["fresh"], "2");

    // cas: the unique from `gets`, a conflict, a miss
    let (_, _, cas) = c
        .get::<(Vec<u8>, u32, Option<u64>)>("fresh")
        .unwrap()
        .unwrap();
    let cas = cas.expect("gets returns a cas unique");
    assert!(c.cas("fresh", "3", 0, cas).unwrap());
    assert!(
        !c.cas("fresh", "4", 0, cas).unwrap(),
        "the unique changed with the first cas"
    );
    assert!(!c.cas("absent", "4", 0, cas).unwrap());
    assert_eq!(c.get::<String>("fresh").unwrap().as_deref(), Some("3"));

    // delete
    assert!(c.delete("fresh").unwrap());
    assert!(!c.delete("fresh").unwrap());

    // incr / decr: wrap at 2^64, floor at 0, non-numeric refused
    c.set("n", "18446744073709551614", 0).unwrap();
    assert_eq!(c.increment("n", 1).unwrap(), u64::MAX);
    assert_eq!(c.increment("n", 3).unwrap(), 2);
    assert_eq!(c.decrement("n", 10).unwrap(), 0);
    assert!(c.increment("absent", 1).is_err());
    let err = c.increment("greeting", 1).unwrap_err().to_string();
    assert!(
        err.contains("cannot increment or decrement non-numeric value"),
        "{err}"
    );

    // touch
    assert!(c.touch("greeting", 1000).unwrap());
    assert!(!c.touch("absent", 1000).unwrap());

    // version, stats, flush
    let version = c.version().unwrap();
    assert_eq!(version[0].1, "1.6.0-trust");
    c.flush_with_delay(1000).unwrap();
    assert_eq!(
        c.get::<String>("greeting").unwrap().as_deref(),
        Some(">> hello, world")
    );
    c.flush().unwrap();
    assert_eq!(c.get::<String>("greeting").unwrap(), None);
    assert_eq!(c.get::<String>("n").unwrap(), None);
}

#[test]
fn every_reply_of_the_text_protocol_byte_for_byte() {
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    r.roundtrip(b"set k 7 0 5\r\nhello\r\n", b"STORED\r\n")
        .roundtrip(b"get k\r\n", b"VALUE k 7 5\r\nhello\r\nEND\r\n")
        .roundtrip(b"add k 0 0 1\r\nx\r\n", b"NOT_STORED\r\n")
        .roundtrip(b"replace nope 0 0 1\r\nx\r\n", b"NOT_STORED\r\n")
        .roundtrip(b"append k 0 0 1\r\n!\r\n", b"STORED\r\n")
        .roundtrip(b"prepend k 0 0 1\r\n<\r\n", b"STORED\r\n")
        .roundtrip(
            b"get k nope k\r\n",
            b"VALUE k 7 7\r\n<hello!\r\nVALUE k 7 7\r\n<hello!\r\nEND\r\n",
        );
    // The cas unique is whatever `gets` says; using it once succeeds, twice conflicts.
    r.send(b"gets k\r\n");
    let header = String::from_utf8(r.read_until(b"\r\n")).unwrap();
    let cas: u64 = header
        .trim_end()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(header, format!("VALUE k 7 7 {cas}\r\n"));
    r.expect(b"<hello!\r\nEND\r\n");
    r.roundtrip(
        format!("cas k 1 0 2 {cas}\r\nhi\r\n").as_bytes(),
        b"STORED\r\n",
    )
    .roundtrip(
        format!("cas k 1 0 2 {cas}\r\nho\r\n").as_bytes(),
        b"EXISTS\r\n",
    )
    .roundtrip(b"cas nope 1 0 2 1\r\nho\r\n", b"NOT_FOUND\r\n")
    .roundtrip(b"get k\r\n", b"VALUE k 1 2\r\nhi\r\nEND\r\n")
    .roundtrip(b"touch k 100\r\n", b"TOUCHED\r\n")
    .roundtrip(b"touch nope 100\r\n", b"NOT_FOUND\r\n")
    .roundtrip(b"gat 0 k nope\r\n", b"VALUE k 1 2\r\nhi\r\nEND\r\n");
    r.send(b"gats 0 k\r\n").expect(b"VALUE k 1 2 ");
    let rest = r.read_until(b"END\r\n");
    assert!(
        rest.ends_with(b"\r\nhi\r\nEND\r\n"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    r.roundtrip(b"set n 0 0 2\r\n10\r\n", b"STORED\r\n")
        .roundtrip(b"incr n 5\r\n", b"15\r\n")
        .roundtrip(b"decr n 100\r\n", b"0\r\n")
        .roundtrip(
            b"incr k 1\r\n",
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        )
        .roundtrip(b"incr nope 1\r\n", b"NOT_FOUND\r\n")
        .roundtrip(b"delete n\r\n", b"DELETED\r\n")
        .roundtrip(b"delete n\r\n", b"NOT_FOUND\r\n")
        .roundtrip(b"version\r\n", b"VERSION 1.6.0-trust\r\n")
        .roundtrip(b"verbosity 1\r\n", b"OK\r\n")
        .roundtrip(b"flush_all\r\n", b"OK\r\n")
        .roundtrip(b"get k\r\n", b"END\r\n");
    // noreply on every storage command (and the others that have it): no reply at all, the effect happens.
    r.send(b"set a 0 0 1 noreply\r\n1\r\n")
        .send(b"add b 0 0 1 noreply\r\n2\r\n")
        .send(b"add b 0 0 1 noreply\r\nX\r\n")
        .send(b"replace a 0 0 1 noreply\r\n3\r\n")
        .send(b"append a 0 0 1 noreply\r\n4\r\n")
        .send(b"prepend a 0 0 1 noreply\r\n5\r\n")
        .send(b"cas a 0 0 1 1 noreply\r\nX\r\n")
        .send(b"incr b 1 noreply\r\n")
        .send(b"decr b 5 noreply\r\n")
        .send(b"touch b 0 noreply\r\n")
        .send(b"set c 0 0 1 noreply\r\nc\r\n")
        .send(b"delete c noreply\r\n")
        .send(b"verbosity 0 noreply\r\n")
        .roundtrip(
            b"get a b c\r\n",
            b"VALUE a 0 3\r\n534\r\nVALUE b 0 1\r\n0\r\nEND\r\n",
        )
        .send(b"flush_all 0 noreply\r\n")
        .roundtrip(b"get a\r\n", b"END\r\n")
        .roundtrip(b"quit\r\n", b"");
    r.expect_eof();
}

#[test]
fn pipelined_requests_are_all_answered() {
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    let mut batch = Vec::new();
    let mut want = Vec::new();
    for i in 0..500 {
        batch.extend_from_slice(
            format!(
                "set key{i} {i} 0 {}\r\nvalue{i}\r\n",
                format!("value{i}").len()
            )
            .as_bytes(),
        );
        want.extend_from_slice(b"STORED\r\n");
    }
    for i in 0..500 {
        batch.extend_from_slice(format!("get key{i}\r\nincr key{i} 1\r\n").as_bytes());
        want.extend_from_slice(
            format!(
                "VALUE key{i} {i} {}\r\nvalue{i}\r\nEND\r\n",
                format!("value{i}").len()
            )
            .as_bytes(),
        );
        want.extend_from_slice(b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
    }
    // All in one write: the server parses what arrives in one pass, commands split across reads included.
    r.roundtrip(&batch, &want);
}

#[test]
fn exptime_relative_absolute_and_negative() {
    // flush_all with a delay, on a server of its own at the same time (its 3.1 s wait overlaps the one below):
    // still there before, gone after.
    let delayed_flush = thread::spawn(|| {
        let server = start(|_| {});
        let mut r = Raw::connect(&server);
        r.roundtrip(b"set later 0 0 1\r\nl\r\n", b"STORED\r\n")
            .roundtrip(b"flush_all 2\r\n", b"OK\r\n")
            .roundtrip(b"get later\r\n", b"VALUE later 0 1\r\nl\r\nEND\r\n");
        thread::sleep(Duration::from_millis(3100));
        r.roundtrip(b"get later\r\n", b"END\r\n");
    });
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    let now = unix_now();
    r.roundtrip(b"set rel 0 2 1\r\nr\r\n", b"STORED\r\n")
        .roundtrip(
            format!("set abs 0 {} 1\r\na\r\n", now + 2).as_bytes(),
            b"STORED\r\n",
        )
        .roundtrip(
            format!("set past 0 {} 1\r\np\r\n", now - 10).as_bytes(),
            b"STORED\r\n",
        )
        .roundtrip(b"set neg 0 -1 1\r\nn\r\n", b"STORED\r\n")
        .roundtrip(b"set forever 0 0 1\r\nf\r\n", b"STORED\r\n")
        .roundtrip(b"set touched 0 2 1\r\nt\r\n", b"STORED\r\n")
        .roundtrip(b"touch touched 100\r\n", b"TOUCHED\r\n")
        .roundtrip(b"get past neg\r\n", b"END\r\n")
        .roundtrip(
            b"get rel abs\r\n",
            b"VALUE rel 0 1\r\nr\r\nVALUE abs 0 1\r\na\r\nEND\r\n",
        );
    assert_eq!(r.stat("curr_items"), 4);
    thread::sleep(Duration::from_millis(3100));
    // Before any lookup: `stats` counts only the live items, as memcached's crawler has dropped the others.
    assert_eq!(
        (
            r.stat("curr_items"),
            r.stat("crawler_reclaimed"),
            r.stat("reclaimed")
        ),
        (2, 2, 0)
    );
    r.roundtrip(
        b"get rel abs forever touched\r\n",
        b"VALUE forever 0 1\r\nf\r\nVALUE touched 0 1\r\nt\r\nEND\r\n",
    )
    .roundtrip(b"gat -1 forever\r\n", b"VALUE forever 0 1\r\nf\r\nEND\r\n")
    .roundtrip(b"get forever\r\n", b"END\r\n");
    delayed_flush
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
}

#[test]
fn a_small_memory_limit_evicts_the_least_recently_used() {
    // `-I` at most half the memory, as memcached requires.
    let server = start(|c| {
        c.memory_mb = 1;
        c.item_max = 512 << 10;
    });
    let mut r = Raw::connect(&server);
    let value = vec![b'v'; 50_000];
    for i in 0..100 {
        let mut cmd = format!("set key{i} 0 0 {}\r\n", value.len()).into_bytes();
        cmd.extend_from_slice(&value);
        cmd.extend_from_slice(b"\r\n");
        r.roundtrip(&cmd, b"STORED\r\n");
        // Keep key0 hot: it is used after every store, so it is never the least recently used.
        r.send(b"get key0\r\n")
            .expect(b"VALUE key0 0 50000\r\n")
            .expect(&value)
            .expect(b"\r\nEND\r\n");
    }
    let stats = r.stats();
    let (items, evictions) = (stat(&stats, "curr_items"), stat(&stats, "evictions"));
    assert_eq!(
        items + evictions,
        100,
        "every item is either there or was evicted"
    );
    assert!(
        evictions >= 70,
        "1 MiB holds about 20 items of 50 KB: {evictions} evictions"
    );
    let item = (4 + 50_000 + ITEM_OVERHEAD) as u64; // every key here is 4 or 5 bytes
    assert!(stat(&stats, "bytes") <= 1 << 20);
    assert!(stat(&stats, "bytes") >= items * item);
    assert_eq!(stat(&stats, "limit_maxbytes"), 1 << 20);
    r.roundtrip(b"get key1\r\n", b"END\r\n");
    r.send(b"get key0\r\n")
        .expect(b"VALUE key0 0 50000\r\n")
        .expect(&value)
        .expect(b"\r\nEND\r\n");
    r.send(b"get key99\r\n")
        .expect(b"VALUE key99 0 50000\r\n")
        .expect(&value)
        .expect(b"\r\nEND\r\n");
    // An item larger than a shard's share of the memory cannot be stored at all.
    let big = vec![b'b'; 500_000];
    let mut cmd = format!("set big 0 0 {}\r\n", big.len()).into_bytes();
    cmd.extend_from_slice(&big);
    cmd.extend_from_slice(b"\r\n");
    let shards = stat(&stats, "threads");
    let want: &[u8] = if (1 << 20) / shards < (3 + 500_000 + ITEM_OVERHEAD) as u64 {
        b"SERVER_ERROR out of memory storing object\r\n"
    } else {
        b"STORED\r\n"
    };
    r.roundtrip(&cmd, want);
}

#[test]
fn sixty_four_client_threads_incr_exact_counts() {
    let server = start(|_| {});
    let setup = client(&server);
    const COUNTERS: usize = 8;
    const THREADS: u64 = 64;
    const ROUNDS: u64 = 50;
    for k in 0..COUNTERS {
        setup.set(&format!("counter{k}"), "0", 0).unwrap();
    }
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let c = client(&server);
            thread::spawn(move || {
                for round in 0..ROUNDS {
                    let k = (t + round) as usize % COUNTERS;
                    c.increment(&format!("counter{k}"), t + 1).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut total = 0;
    for k in 0..COUNTERS {
        // Thread t adds t+1 to counter (t + round) % 8 for 50 rounds: each counter gets 50/8 of each
        // thread's rounds, exactly computed here.
        let want: u64 = (0..THREADS)
            .map(|t| {
                (0..ROUNDS)
                    .filter(|round| (t + round) as usize % COUNTERS == k)
                    .count() as u64
                    * (t + 1)
            })
            .sum();
        let got: u64 = setup
            .get::<String>(&format!("counter{k}"))
            .unwrap()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(got, want, "counter{k}");
        total += got;
    }
    assert_eq!(total, ROUNDS * THREADS * (THREADS + 1) / 2);
    let mut r = Raw::connect(&server);
    let stats = r.stats();
    assert_eq!(stat(&stats, "incr_hits"), THREADS * ROUNDS);
}

#[test]
fn stats_are_exact_after_a_known_sequence() {
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    r.roundtrip(b"set a 0 0 1\r\n1\r\n", b"STORED\r\n") // cmd_set 1, total_items 1
        .roundtrip(b"set bb 0 0 2\r\n22\r\n", b"STORED\r\n") // cmd_set 2, total_items 2
        .roundtrip(b"add a 0 0 1\r\nx\r\n", b"NOT_STORED\r\n") // cmd_set 3
        .roundtrip(
            b"get a bb zz\r\n",
            b"VALUE a 0 1\r\n1\r\nVALUE bb 0 2\r\n22\r\nEND\r\n",
        ) // 3 gets, 2 hits
        .roundtrip(b"gets zz\r\n", b"END\r\n") // 4 gets, 2 misses
        .roundtrip(b"incr a 5\r\n", b"6\r\n")
        .roundtrip(b"incr zz 5\r\n", b"NOT_FOUND\r\n")
        .roundtrip(b"decr a 1\r\n", b"5\r\n")
        .roundtrip(b"decr zz 1\r\n", b"NOT_FOUND\r\n")
        .roundtrip(b"decr zz 1\r\n", b"NOT_FOUND\r\n")
        .roundtrip(b"touch a 0\r\n", b"TOUCHED\r\n")
        .roundtrip(b"touch zz 0\r\n", b"NOT_FOUND\r\n")
        .roundtrip(b"gat 0 bb\r\n", b"VALUE bb 0 2\r\n22\r\nEND\r\n")
        .roundtrip(b"cas zz 0 0 1 1\r\nx\r\n", b"NOT_FOUND\r\n") // cmd_set 4
        .roundtrip(b"cas a 0 0 1 999999\r\nx\r\n", b"EXISTS\r\n") // cmd_set 5
        .roundtrip(b"set c 0 0 3\r\nccc\r\n", b"STORED\r\n") // cmd_set 6, total_items 3
        .roundtrip(b"delete c\r\n", b"DELETED\r\n")
        .roundtrip(b"delete c\r\n", b"NOT_FOUND\r\n");
    let mut other = Raw::connect(&server);
    let stats = other.stats();
    let want = [
        ("curr_connections", 2),
        ("total_connections", 2),
        ("rejected_connections", 0),
        ("max_connections", 1024),
        ("cmd_get", 4),
        ("get_hits", 2),
        ("get_misses", 2),
        ("cmd_set", 6),
        ("total_items", 3),
        ("curr_items", 2),
        (
            "bytes",
            (1 + 1 + ITEM_OVERHEAD + 2 + 2 + ITEM_OVERHEAD) as u64,
        ),
        ("incr_hits", 1),
        ("incr_misses", 1),
        ("decr_hits", 1),
        ("decr_misses", 2),
        ("cmd_touch", 3),
        ("touch_hits", 2),
        ("touch_misses", 1),
        ("cas_hits", 0),
        ("cas_misses", 1),
        ("cas_badval", 1),
        ("delete_hits", 1),
        ("delete_misses", 1),
        ("evictions", 0),
        ("cmd_flush", 0),
        ("limit_maxbytes", 64 << 20),
        ("threads", trust_core::runtime().workers() as u64),
        ("pid", std::process::id() as u64),
    ];
    for (name, value) in want {
        assert_eq!(stat(&stats, name), value, "{name}");
    }
    let now = unix_now();
    assert!(stat(&stats, "time").abs_diff(now) <= 1);
    assert!(stat(&stats, "uptime") <= 60);
    assert_eq!(
        stats.iter().find(|(k, _)| k == "version").unwrap().1,
        "1.6.0-trust"
    );
}

#[test]
fn bad_input_gets_memcached_error_replies() {
    let server = start(|c| c.item_max = 4096);
    let mut r = Raw::connect(&server);
    let long_key = "k".repeat(251);
    r.roundtrip(b"bogus\r\n", b"ERROR\r\n")
        .roundtrip(b"\r\n", b"ERROR\r\n")
        .roundtrip(b"get\r\n", b"ERROR\r\n")
        .roundtrip(b"set k 0 0\r\n", b"ERROR\r\n")
        .roundtrip(
            b"set k 0 0 -1\r\n",
            b"CLIENT_ERROR bad command line format\r\n",
        )
        // With a valid length the data block is swallowed, not read as commands.
        .roundtrip(
            b"set k x 0 3\r\nabc\r\n",
            b"CLIENT_ERROR bad command line format\r\n",
        )
        .roundtrip(
            b"set k 0 0 3\r\nabcd\r\n",
            b"CLIENT_ERROR bad data chunk\r\nERROR\r\n",
        )
        .roundtrip(
            format!("get {long_key}\r\n").as_bytes(),
            b"CLIENT_ERROR bad command line format\r\n",
        )
        .roundtrip(
            format!("set {long_key} 0 0 1\r\nx\r\n").as_bytes(),
            b"CLIENT_ERROR bad command line format\r\n",
        )
        .roundtrip(
            b"get bad\x01key\r\n",
            b"CLIENT_ERROR bad command line format\r\n",
        )
        .roundtrip(
            b"incr k abc\r\n",
            b"CLIENT_ERROR invalid numeric delta argument\r\n",
        )
        .roundtrip(
            b"incr k 18446744073709551616\r\n",
            b"CLIENT_ERROR invalid numeric delta argument\r\n",
        )
        .roundtrip(
            b"touch k soon\r\n",
            b"CLIENT_ERROR invalid exptime argument\r\n",
        )
        .roundtrip(
            b"delete k 5\r\n",
            b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n",
        )
        .roundtrip(
            b"flush_all later\r\n",
            b"CLIENT_ERROR invalid exptime argument\r\n",
        )
        .roundtrip(
            b"set k 18446744073709551616 0 1\r\nx\r\n",
            b"CLIENT_ERROR bad command line format\r\n",
        );
    // Too large for -I: refused, the data block swallowed (even when it arrives in pieces), and a `set`
    // drops the key's old value.
    r.roundtrip(b"set k 0 0 1\r\nx\r\n", b"STORED\r\n");
    let big = vec![b'B'; 10_000];
    r.send(b"set k 0 0 10000\r\n").send(&big[..3000]);
    thread::sleep(Duration::from_millis(50));
    r.send(&big[3000..])
        .send(b"\r\n")
        .expect(b"SERVER_ERROR object too large for cache\r\n");
    r.roundtrip(b"get k\r\n", b"END\r\n");
    let mut noreply = b"set k 0 0 10000 noreply\r\n".to_vec();
    noreply.extend_from_slice(&big);
    noreply.extend_from_slice(b"\r\nversion\r\n");
    r.roundtrip(&noreply, b"VERSION 1.6.0-trust\r\n");
    // The connection still works after all of that.
    r.roundtrip(b"set k 0 0 2\r\nok\r\n", b"STORED\r\n")
        .roundtrip(b"get k\r\n", b"VALUE k 0 2\r\nok\r\nEND\r\n");
}

#[test]
fn a_line_past_64_kib_is_refused_and_the_connection_closed() {
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    let flood = vec![b'g'; 64 * 1024 + 1];
    r.send(&flood)
        .expect(b"CLIENT_ERROR line too long\r\n")
        .expect_eof();
    // A line of 64 KiB with its newline is fine: a get of many keys.
    let keys: Vec<String> = (0..6000).map(|i| format!("k{i:08}")).collect();
    let line = format!("get {}\r\n", keys.join(" "));
    assert!(line.len() < 64 * 1024);
    Raw::connect(&server).roundtrip(line.as_bytes(), b"END\r\n");
    wait_until("closed connections are counted out", || {
        server.connections() == 0
    });
}

#[test]
fn half_a_command_then_disconnect_leaves_other_clients_alone() {
    let server = start(|_| {});
    let mut steady = Raw::connect(&server);
    steady.roundtrip(b"set s 0 0 1\r\n1\r\n", b"STORED\r\n");
    for partial in [
        &b"set k 0 0 10\r\nabc"[..],
        b"get k",
        b"set k 0 0 100000\r\n",
        b"incr",
    ] {
        let mut r = Raw::connect(&server);
        r.send(partial);
        r.0.shutdown(Shutdown::Both).unwrap();
        steady
            .roundtrip(b"incr s 1\r\n", b"2\r\n")
            .roundtrip(b"decr s 1\r\n", b"1\r\n");
    }
    wait_until("the broken connections are closed", || {
        server.connections() == 1
    });
    steady.roundtrip(b"get k\r\n", b"END\r\n");
}

#[test]
fn connections_past_the_cap_are_refused_cleanly() {
    let server = start(|c| c.max_connections = 2);
    let mut a = Raw::connect(&server);
    let mut b = Raw::connect(&server);
    a.roundtrip(b"version\r\n", b"VERSION 1.6.0-trust\r\n");
    b.roundtrip(b"version\r\n", b"VERSION 1.6.0-trust\r\n");
    let mut c = Raw::connect(&server);
    c.expect(TOO_MANY_CONNECTIONS).expect_eof();
    assert_eq!(TOO_MANY_CONNECTIONS, b"ERROR Too many open connections\r\n");
    drop(a);
    wait_until("the first connection is counted out", || {
        server.connections() == 1
    });
    let mut d = Raw::connect(&server);
    d.roundtrip(b"version\r\n", b"VERSION 1.6.0-trust\r\n");
    let stats = d.stats();
    assert_eq!(stat(&stats, "rejected_connections"), 1);
    assert_eq!(stat(&stats, "total_connections"), 3);
    assert_eq!(stat(&stats, "curr_connections"), 2);
}

#[test]
fn idle_connections_are_closed_after_the_timeout() {
    let server = start(|c| c.idle_timeout = Some(Duration::from_secs(1)));
    let mut idle = Raw::connect(&server);
    let mut busy = Raw::connect(&server);
    idle.roundtrip(b"version\r\n", b"VERSION 1.6.0-trust\r\n");
    let started = Instant::now();
    for _ in 0..8 {
        thread::sleep(Duration::from_millis(250));
        busy.roundtrip(b"version\r\n", b"VERSION 1.6.0-trust\r\n");
    }
    idle.expect_eof();
    assert!(started.elapsed() >= Duration::from_secs(1));
    busy.roundtrip(b"version\r\n", b"VERSION 1.6.0-trust\r\n");
}

#[test]
fn lenient_keys_accept_control_characters_like_memcached() {
    let server = start(|c| c.lenient_keys = true);
    let mut r = Raw::connect(&server);
    r.roundtrip(b"set \x10\x10key 0 0 1\r\nx\r\n", b"STORED\r\n")
        .roundtrip(
            b"get \x10\x10key\r\n",
            b"VALUE \x10\x10key 0 1\r\nx\r\nEND\r\n",
        )
        .roundtrip(
            format!("get {}\r\n", "k".repeat(251)).as_bytes(),
            b"CLIENT_ERROR bad command line format\r\n",
        );
}

#[test]
fn a_client_that_never_reads_its_replies_is_closed_after_the_idle_timeout() {
    let server = start(|c| c.idle_timeout = Some(Duration::from_secs(1)));
    let mut r = Raw::connect(&server);
    let value = vec![b'v'; 500_000];
    let mut set = b"set big 0 0 500000\r\n".to_vec();
    set.extend_from_slice(&value);
    set.extend_from_slice(b"\r\n");
    r.roundtrip(&set, b"STORED\r\n");
    // Ask for 500 MB of replies and read none: the server's writes stall, then it gives up on the client.
    let flood = b"get big\r\n".repeat(1000);
    r.0.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = r.0.write_all(&flood);
    wait_until("the stalled connection is closed", || {
        server.connections() == 0
    });
    Raw::connect(&server).roundtrip(b"version\r\n", b"VERSION 1.6.0-trust\r\n");
}

#[test]
fn stop_closes_the_listener() {
    let server = start(|_| {});
    let addr = server.local_addr();
    Raw::connect(&server).roundtrip(b"version\r\n", b"VERSION 1.6.0-trust\r\n");
    server.stop();
    let refused = TcpStream::connect(addr).and_then(|mut s| {
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"version\r\n")?;
        let mut buf = [0; 1];
        s.read(&mut buf)
    });
    assert!(matches!(refused, Err(_) | Ok(0)), "{refused:?}");
}

#[test]
fn random_garbage_from_many_clients_never_hurts_a_steady_one() {
    let server = start(|c| c.item_max = 2048);
    let mut steady = Raw::connect(&server);
    steady.roundtrip(b"set s 0 0 1\r\n0\r\n", b"STORED\r\n");
    let pieces: &[&[u8]] = &[
        // No piece spells the steady client's key `s`.
        b"get ",
        b"set ",
        b"cas ",
        b"incr ",
        b"gat ",
        b"k ",
        b"0 ",
        b"100 ",
        b"3000 ",
        b"-1 ",
        b"\r\n",
        b"\n",
        b"noreply",
        b"\x00\x01",
        b"abc",
        b"flush_all 100000 noreply\r\n",
    ];
    let addr = server.local_addr();
    let garbage: Vec<_> = (0..8u64)
        .map(|t| {
            thread::spawn(move || {
                let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ t;
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
                let mut sink = [0; 4096];
                for _ in 0..200 {
                    let mut buf = Vec::new();
                    for _ in 0..64 {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        buf.extend_from_slice(pieces[seed as usize % pieces.len()]);
                    }
                    if s.write_all(&buf).is_err() {
                        break;
                    }
                    let _ = s.read(&mut sink);
                }
            })
        })
        .collect();
    for i in 1..=200 {
        steady.roundtrip(b"incr s 1\r\n", format!("{i}\r\n").as_bytes());
    }
    for g in garbage {
        g.join().unwrap();
    }
    steady.roundtrip(b"version\r\n", b"VERSION 1.6.0-trust\r\n");
    wait_until("the garbage connections are closed", || {
        server.connections() == 1
    });
}

#[test]
fn a_multi_key_get_answers_in_request_order_across_shards() {
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    let keys: Vec<String> = (0..50).map(|i| format!("order{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        if i % 3 != 0 {
            r.roundtrip(
                format!("set {k} {i} 0 {}\r\n{k}\r\n", k.len()).as_bytes(),
                b"STORED\r\n",
            );
        }
    }
    let mut want = String::new();
    for (i, k) in keys.iter().enumerate().rev() {
        if i % 3 != 0 {
            want += &format!("VALUE {k} {i} {}\r\n{k}\r\n", k.len());
        }
    }
    want += "END\r\n";
    let line: Vec<&str> = keys.iter().rev().map(String::as_str).collect();
    r.roundtrip(
        format!("get {}\r\n", line.join(" ")).as_bytes(),
        want.as_bytes(),
    );
}

#[test]
fn two_hundred_connections_each_see_their_own_values() {
    let server = start(|_| {});
    let addr = server.local_addr();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            thread::spawn(move || {
                let mut conns: Vec<TcpStream> =
                    (0..25).map(|_| TcpStream::connect(addr).unwrap()).collect();
                for round in 0..20 {
                    for (c, s) in conns.iter_mut().enumerate() {
                        let (key, value) = (format!("t{t}c{c}"), format!("{round}-{t}-{c}"));
                        let cmd =
                            format!("set {key} 0 0 {}\r\n{value}\r\nget {key}\r\n", value.len());
                        s.write_all(cmd.as_bytes()).unwrap();
                    }
                    for (c, s) in conns.iter_mut().enumerate() {
                        let (key, value) = (format!("t{t}c{c}"), format!("{round}-{t}-{c}"));
                        let want = format!(
                            "STORED\r\nVALUE {key} 0 {}\r\n{value}\r\nEND\r\n",
                            value.len()
                        );
                        let mut got = vec![0; want.len()];
                        s.read_exact(&mut got).unwrap();
                        assert_eq!(String::from_utf8_lossy(&got), want);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    wait_until("all 200 connections are counted out", || {
        server.connections() == 0
    });
    let stats = Raw::connect(&server).stats();
    assert_eq!(stat(&stats, "total_connections"), 201);
    assert_eq!(stat(&stats, "curr_items"), 200);
    assert_eq!(stat(&stats, "cmd_set"), 4000);
    assert_eq!(stat(&stats, "get_hits"), 4000);
}

#[test]
fn stats_trust_reports_every_trustee() {
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    for i in 0..100 {
        r.roundtrip(format!("set k{i} 0 0 1\r\nx\r\n").as_bytes(), b"STORED\r\n");
    }
    r.send(b"stats trust\r\n");
    let text = r.read_until(b"END\r\n");
    let text = String::from_utf8(text).unwrap();
    let workers = trust_core::runtime().workers();
    assert_eq!(text.lines().count(), workers * 7 + 1, "{text}");
    for t in 0..workers {
        for name in [
            "requests",
            "batches",
            "requests_per_batch",
            "fibers",
            "parks",
            "busy_us",
            "idle_us",
        ] {
            assert!(
                text.contains(&format!("STAT trustee{t}:{name} ")),
                "{name} of {t} in {text}"
            );
        }
    }
    // This connection's fiber lives on some worker: at least one fiber is counted.
    let fibers: u64 = text
        .lines()
        .filter_map(|l| {
            l.split_once(":fibers ")
                .map(|(_, n)| n.parse::<u64>().unwrap())
        })
        .sum();
    assert!(fibers >= 1, "{text}");
}
