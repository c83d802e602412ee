//! Review 21 of the memcached example: the promises of `docs/memcached.md` against the server, byte for byte
//! (expected replies are memcached 1.6.18's to the same bytes unless a comment says otherwise), the example
//! binary with more workers than this machine has cores, and the shard called directly.

use std::io::Read;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use trust_examples::memcached::protocol::{StoreOp, item_size};
use trust_examples::memcached::store::{ArithOutcome, Shard, StoreOutcome, StoreRequest};

mod harness;
use harness::{Raw, example_binary, free_port, live_bytes, start, unix_now};

// A counting allocator (`harness::Counting`): live heap bytes allocated by the current thread (a shard called
// directly on the test thread allocates there).
#[global_allocator]
static ALLOC: harness::Counting = harness::Counting;

/// A `set` of `key` to `value`, as the server builds it (`server.rs`, `Command::Store`: exactly key + value).
fn set_request(key: &[u8], value: &[u8]) -> StoreRequest {
    let mut data = Vec::with_capacity(key.len() + value.len());
    data.extend_from_slice(key);
    data.extend_from_slice(value);
    StoreRequest {
        op: StoreOp::Set,
        data,
        key_len: key.len(),
        flags: 0,
        exptime: 0,
        cas: 0,
        binary_key: false,
        stale: false,
    }
}

// ---------------------------------------------------------------------------------------------------------
// The example binary

/// The example binary on a free port with `args`, killed when dropped.
struct Binary {
    child: Child,
    port: u16,
}

impl Binary {
    fn start(args: &[&str]) -> Binary {
        let port = free_port();
        let mut child = Command::new(example_binary())
            .args(["--port", &port.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("{args:?}: the server exited ({status}): {err}");
            }
            assert!(
                Instant::now() < deadline,
                "{args:?}: the server did not start"
            );
            thread::sleep(Duration::from_millis(20));
        }
        Binary { child, port }
    }

    fn connect(&self) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.set_nodelay(true).unwrap();
        Raw(s)
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `set <key> 0 0 <len>` with a value of `len` bytes of `x`.
fn set_line(key: &str, len: usize) -> Vec<u8> {
    let mut msg = format!("set {key} 0 0 {len}\r\n").into_bytes();
    msg.resize(msg.len() + len, b'x');
    msg.extend_from_slice(b"\r\n");
    msg
}

// =========================================================================================================
// Found by the review (each failed on the code as reviewed; fixed since)
// =========================================================================================================

/// docs/memcached.md: "items up to `-I` (key + value + 64 bytes; larger ones get `SERVER_ERROR object too
/// large for cache` ...)", and "`-I` may be at most half of `--memory-mb`, as in memcached: `--memory-mb 1`
/// with the default `-I 1m` does not start (... give --memory-mb 2 or more ...)". With `--memory-mb 2` and
/// four workers the server starts, but each shard holds 512 KiB, so any item over 512 KiB (still within
/// `-I 1m`) is refused with `SERVER_ERROR out of memory storing object`. memcached 1.6.18 with
/// `-m 2 -I 1m -t 4` stores the 1 MB value. (The default `--workers` is the machine's core count, so
/// `--memory-mb 2` alone does this on any machine with 3 or more cores.)
#[test]
fn an_item_within_i_is_stored_whatever_the_worker_count() {
    let server = Binary::start(&["--memory-mb", "2", "--workers", "4"]);
    let mut r = server.connect();
    let len = 1_000_000;
    assert!(item_size(3, len) <= 1 << 20);
    r.roundtrip(&set_line("big", len), b"STORED\r\n");
    r.send(b"get big\r\n")
        .expect(format!("VALUE big 0 {len}\r\n").as_bytes());
    let mut want = vec![b'x'; len];
    want.extend_from_slice(b"\r\nEND\r\n");
    r.expect(&want);
}

/// The same item with two workers (each shard holds 1 MiB, the whole of `-I`): stored. This is the case the
/// start-up check was written for.
#[test]
fn an_item_of_nearly_i_is_stored_with_two_workers() {
    let server = Binary::start(&["--memory-mb", "2", "--workers", "2"]);
    let mut r = server.connect();
    let len = 1_000_000;
    r.roundtrip(&set_line("big", len), b"STORED\r\n");
    r.send(b"get big\r\n")
        .expect(format!("VALUE big 0 {len}\r\n").as_bytes());
    let mut want = vec![b'x'; len];
    want.extend_from_slice(b"\r\nEND\r\n");
    r.expect(&want);
}

/// docs/memcached.md: "An item counts key + value + 64 bytes against the limit (`bytes` in `stats`) ... the
/// heap a shard holds stays near its share". `incr`/`decr` rewrote the number in the item's own buffer with
/// `truncate` + push: the buffer kept its capacity, but the item was then accounted at its new, shorter length.
/// A client sets a 100 KB number (`000...01`) and `incr`s it: the item counted 71 bytes and still held 100 KB.
/// Repeated, a shard limited to 8 MiB held 40 MB (here; without bound in general: `-I 1m` values give
/// ~15000x). memcached pads the result with spaces in place, so its item keeps the size it is accounted at.
#[test]
fn incr_on_a_long_number_does_not_leave_the_heap_above_the_limit() {
    const LIMIT: usize = 8 << 20;
    const ITEMS: usize = 400;
    const LEN: usize = 100_000;
    let now = unix_now();
    let before = live_bytes();
    let mut shard = Shard::new(0, 1, LIMIT, 1 << 20);
    let mut number = vec![b'0'; LEN];
    number[LEN - 1] = b'1';
    for i in 0..ITEMS {
        let key = format!("n{i:04}");
        assert_eq!(
            shard.store(set_request(key.as_bytes(), &number), now),
            StoreOutcome::Stored
        );
        assert_eq!(
            shard.arith(key.as_bytes(), 1, true, now),
            ArithOutcome::Value(2)
        );
    }
    let stats = shard.stats();
    // Each keeps its size (the number padded in place, as memcached does), so the limit evicts as it should.
    let fit = (LIMIT / item_size(5, LEN)) as u64;
    assert_eq!(
        (stats.curr_items, stats.evictions, stats.bytes),
        (fit, ITEMS as u64 - fit, fit * item_size(5, LEN) as u64)
    );
    let held = live_bytes() - before;
    drop(shard);
    let ratio = held as f64 / LIMIT as f64;
    assert!(
        ratio <= 1.25,
        "a shard with a limit of {LIMIT} bytes that accounts {} bytes holds {held} bytes of heap: {ratio:.2}x \
         its limit",
        stats.bytes
    );
}

/// memcached 1.6.18 pads an `incr` result with spaces whenever it is shorter than the stored text (leading
/// zeros, a leading `+` or spaces, a wrap past 2^64): `0010` `incr 1` reads back as `11  ` (4 bytes). The trust
/// server once gave `11` (2 bytes), and its `decr` too, listed as a difference.
#[test]
fn incr_pads_a_shorter_result_as_memcached_does() {
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    let get = |r: &mut Raw, key: &str| {
        r.send(format!("get {key}\r\n").as_bytes());
        String::from_utf8(r.read_until(b"END\r\n")).unwrap()
    };
    r.roundtrip(b"set n 0 0 4\r\n0010\r\nincr n 1\r\n", b"STORED\r\n11\r\n");
    r.roundtrip(
        b"set w 0 0 20\r\n18446744073709551615\r\nincr w 2\r\n",
        b"STORED\r\n1\r\n",
    );
    assert_eq!(
        (get(&mut r, "n"), get(&mut r, "w")),
        (
            "VALUE n 0 4\r\n11  \r\nEND\r\n".to_owned(),
            format!("VALUE w 0 20\r\n1{}\r\nEND\r\n", " ".repeat(19))
        )
    );
}

/// `decr` to a shorter number is padded the same way (memcached 1.6.18's bytes), and the padded text is still
/// a number for the next `decr`.
#[test]
fn decr_pads_a_shorter_result_as_memcached_does() {
    let server = start(|_| {});
    let mut r = Raw::connect(&server);
    r.roundtrip(b"set d 0 0 2\r\n10\r\ndecr d 1\r\n", b"STORED\r\n9\r\n")
        .roundtrip(b"get d\r\n", b"VALUE d 0 2\r\n9 \r\nEND\r\n")
        .roundtrip(
            b"decr d 100\r\nget d\r\n",
            b"0\r\nVALUE d 0 2\r\n0 \r\nEND\r\n",
        );
}

/// docs/memcached.md: "the heap a shard holds stays near its share (1.09x with 250-byte keys and 1-byte
/// values, 1.02x with 4000-byte values)". Each load alone, yes; but a shard that was once full of small items
/// keeps their slot vector and hash table at their peak size for good (slots of evicted items go on a free
/// list, `clear` keeps the capacity), and neither is counted against the limit. Fill a shard with small items,
/// then with 4000-byte values (the small ones are evicted): the shard holds its limit in values plus the small
/// items' bookkeeping, about twice its limit. memcached's slab pages come out of `-m`, whatever the item
/// sizes.
#[test]
fn a_shard_that_held_small_items_stays_near_its_limit_with_large_ones() {
    const LIMIT: usize = 8 << 20;
    let now = unix_now();
    let before = live_bytes();
    let mut shard = Shard::new(0, 1, LIMIT, 1 << 20);
    let small = LIMIT / item_size(7, 0);
    for i in 0..small {
        let key = format!("s{i:06}");
        assert_eq!(
            shard.store(set_request(key.as_bytes(), b""), now),
            StoreOutcome::Stored
        );
    }
    assert_eq!(
        (shard.stats().curr_items, shard.stats().evictions),
        (small as u64, 0)
    );
    let value = [b'v'; 4000];
    for i in 0..3_000 {
        let key = format!("b{i:06}");
        assert_eq!(
            shard.store(set_request(key.as_bytes(), &value), now),
            StoreOutcome::Stored
        );
    }
    let stats = shard.stats();
    // Every small item was evicted to make room, and the large ones fill the limit to within one item.
    let size = item_size(7, 4000);
    let fit = (LIMIT / size) as u64;
    assert_eq!(
        (stats.curr_items, stats.evictions, stats.bytes),
        (fit, small as u64 + 3_000 - fit, fit * size as u64)
    );
    let held = live_bytes() - before;
    drop(shard);
    let ratio = held as f64 / LIMIT as f64;
    assert!(
        ratio <= 1.25,
        "a shard with a limit of {LIMIT} bytes holds {held} bytes of heap with {} bytes accounted: {ratio:.2}x \
         its limit",
        stats.bytes
    );
}

/// docs/memcached.md: "`cmd_set` and friends count per shard and are summed for `stats`". `flush_all` is
/// one stub call on every shard, and each shard counts it, so the sum is the number of flushes times the
/// number of workers: three `flush_all` read back as `cmd_flush 6` with two workers (memcached 1.6.18: 3).
#[test]
fn cmd_flush_counts_each_flush_all_once() {
    let server = Binary::start(&["--workers", "2"]);
    let mut r = server.connect();
    r.roundtrip(b"flush_all\r\nflush_all 0\r\n", b"OK\r\nOK\r\n")
        .send(b"flush_all noreply\r\n");
    assert_eq!(r.stat("cmd_flush"), 3);
}

/// `cmd_set` is documented in `store.rs` as "Storage commands whose data block arrived (all six, stored or
/// not)", which is memcached's count (it counts in `complete_nread`, before it checks the block's end). A
/// block that arrived but does not end in `\r\n` (`CLIENT_ERROR bad data chunk`) is not counted: memcached
/// 1.6.18 answers `cmd_set 2` to the bytes below, the trust server `cmd_set 1`.
#[test]
fn a_bad_data_chunk_counts_in_cmd_set() {
    let server = Binary::start(&["--workers", "2"]);
    let mut r = server.connect();
    r.roundtrip(
        b"set a 0 0 1\r\nx\r\nset b 0 0 1\r\nxy\r\n",
        b"STORED\r\nCLIENT_ERROR bad data chunk\r\n",
    );
    assert_eq!(r.stat("cmd_set"), 2);
}

/// Counters that do add up per shard: `cmd_get` per key, `cmd_touch` per `touch` and per `gat` key, hits
/// and misses, exactly as memcached 1.6.18 counts them for the same bytes.
#[test]
fn per_key_counters_add_up_over_the_shards() {
    let server = Binary::start(&["--workers", "2"]);
    let mut r = server.connect();
    r.roundtrip(
        b"set a 0 0 1\r\n1\r\nget a b c d\r\n",
        b"STORED\r\nVALUE a 0 1\r\n1\r\nEND\r\n",
    )
    .roundtrip(
        b"gat 10 a b\r\ntouch a 1\r\ntouch b 1\r\n",
        b"VALUE a 0 1\r\n1\r\nEND\r\nTOUCHED\r\nNOT_FOUND\r\n",
    );
    let stats = r.stats();
    let got: Vec<u64> = [
        "cmd_get",
        "get_hits",
        "get_misses",
        "cmd_touch",
        "touch_hits",
        "touch_misses",
        "cmd_set",
    ]
    .iter()
    .map(|n| harness::stat(&stats, n))
    .collect();
    assert_eq!(got, [4, 1, 3, 4, 2, 2, 1]);
}
