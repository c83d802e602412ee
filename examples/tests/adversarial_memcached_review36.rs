//! Review 36 of the memcached example: behaviour under load and over time. (Header completed below.)

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use trust_examples::memcached::protocol::item_size;

mod harness;
use harness::{Raw, stat, start, unix_now, wait_until};

// ---------------------------------------------------------------------------------------------------------
// Helpers

/// Real memcached on a free port, when it is installed (`apt-get install memcached`): the same bytes are sent
/// to it and its replies must be the ones the test expects. Killed when dropped.
struct Reference {
    child: Child,
    port: u16,
}

impl Reference {
    fn start(extra: &[&str]) -> Option<Reference> {
        let bin = ["/usr/bin/memcached", "/usr/local/bin/memcached"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["-p", &port.to_string(), "-U", "0", "-l", "127.0.0.1", "-t", "2"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: a plain system call without arguments.
        if unsafe { libc::geteuid() } == 0 {
            cmd.args(["-u", "nobody"]);
        }
        let child = cmd.spawn().ok()?;
        let r = Reference { child, port };
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "memcached did not start");
            thread::sleep(Duration::from_millis(20));
        }
        Some(r)
    }

    fn connect(&self) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Raw(s)
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
fn within<T: Send + 'static>(limit: Duration, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
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

fn raise_descriptor_limit(want: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a plain system call that writes the `rlimit` it is given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    if limit.rlim_cur < want {
        limit.rlim_cur = want.min(limit.rlim_max);
        // SAFETY: a plain system call that reads the `rlimit` it is given.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    }
    limit.rlim_cur
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
    let server = start(|c| c.idle_timeout = Some(Duration::from_secs(1)));
    let addr = server.local_addr();
    let slow = within(Duration::from_secs(25), "slowloris", move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let line = [b'g'; 50];
        let started = Instant::now();
        for &b in line.iter() {
            if s.write_all(&[b]).is_err() || closed_within(&mut s, Duration::from_millis(300)) {
                return Some(started.elapsed());
            }
        }
        None
    });
    let took = slow.expect("a client trickling a line was never closed (50 bytes over 15 s, idle timeout 1 s)");
    assert!(
        took < Duration::from_secs(4),
        "closed only after {took:?} (idle timeout 1 s)"
    );
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
    block.roundtrip(
        b"get slow\r\n",
        b"VALUE slow 0 10\r\n0123456789\r\nEND\r\n",
    );
    // And a silent one is closed, as before.
    let mut silent = TcpStream::connect(server.local_addr()).unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(4)));
    server.stop();
}
