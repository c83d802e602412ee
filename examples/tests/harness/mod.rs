//! Shared by the memcached test binaries: a server on port 0 per test, and a raw connection that checks the
//! exact reply bytes.

#![allow(dead_code)] // each test binary uses part of it

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use trust_examples::memcached::{Config, Server, ServerHandle};

/// A server on a free port, with `tweak` applied to the default config.
pub fn start(tweak: impl FnOnce(&mut Config)) -> ServerHandle {
    let mut config = Config {
        port: 0,
        ..Config::default()
    };
    tweak(&mut config);
    Server::start(config).expect("server starts")
}

/// A raw connection: send bytes, read exactly the bytes expected.
pub struct Raw(pub TcpStream);

impl Raw {
    pub fn connect(server: &ServerHandle) -> Raw {
        let s = TcpStream::connect(server.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Raw(s)
    }

    pub fn send(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.write_all(bytes).unwrap();
        self
    }

    /// Reads exactly `want.len()` bytes and compares them (shown as text, long ones shortened, on failure).
    pub fn expect(&mut self, want: &[u8]) -> &mut Self {
        let mut got = vec![0; want.len()];
        if let Err(e) = self.0.read_exact(&mut got) {
            panic!("reading {:?}: {e}", short(want));
        }
        assert!(got == want, "got {:?}\nwant {:?}", short(&got), short(want));
        self
    }

    pub fn roundtrip(&mut self, send: &[u8], want: &[u8]) -> &mut Self {
        self.send(send).expect(want)
    }

    /// The server closed the connection (after everything expected was read).
    pub fn expect_eof(&mut self) {
        let mut byte = [0];
        match self.0.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("expected the server to close, got {other:?} {byte:?}"),
        }
    }

    /// Reads up to and including `end`, byte by byte, so nothing after it is consumed.
    pub fn read_until(&mut self, end: &[u8]) -> Vec<u8> {
        let mut text = Vec::new();
        let mut byte = [0];
        while !text.ends_with(end) {
            assert_eq!(self.0.read(&mut byte).unwrap(), 1, "the reply ended early");
            text.push(byte[0]);
        }
        text
    }

    /// `stats`, as (name, value) pairs; nothing after its `END` is consumed.
    pub fn stats(&mut self) -> Vec<(String, String)> {
        self.send(b"stats\r\n");
        String::from_utf8(self.read_until(b"END\r\n"))
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("STAT "))
            .map(|l| {
                let (k, v) = l.split_once(' ').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    /// One numeric stat, asked for now.
    pub fn stat(&mut self, name: &str) -> u64 {
        stat(&self.stats(), name)
    }
}

pub fn stat(stats: &[(String, String)], name: &str) -> u64 {
    let (_, v) = stats
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no stat {name}"));
    v.parse().unwrap_or_else(|_| panic!("stat {name} = {v:?}"))
}

/// Bytes as text for a failure message; long ones shortened to their two ends.
pub fn short(b: &[u8]) -> String {
    if b.len() <= 300 {
        String::from_utf8_lossy(b).into_owned()
    } else {
        format!(
            "{}...({} bytes)...{}",
            String::from_utf8_lossy(&b[..150]),
            b.len(),
            String::from_utf8_lossy(&b[b.len() - 100..])
        )
    }
}

pub fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The example binary: `cargo test` builds the examples with the tests (target/<profile>/examples, next to
/// target/<profile>/deps where this test runs). Run alone (`cargo test --test <name>`) it is not
/// built: then this fails rather than skip.
/// A TCP port free on loopback now, for a server process started next.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn example_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("memcached");
    assert!(
        bin.exists(),
        "{} is not built: run `cargo test -p trust-examples` (which builds the examples) or \
         `cargo build -p trust-examples --example memcached` first",
        bin.display()
    );
    bin
}

/// A counting allocator: live heap bytes allocated by the current thread ([`live_bytes`]); other threads'
/// allocations do not touch this thread's counter. A test binary that needs it declares
/// `#[global_allocator] static ALLOC: harness::Counting = harness::Counting;`.
pub struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: every call forwards to `System` with the caller's arguments; the counter is a thread-local `Cell`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|l| l.set(l.get() + layout.size() as isize));
        // SAFETY: the caller's contract for this method is `System`'s.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|l| l.set(l.get() - layout.size() as isize));
        // SAFETY: the caller's contract for this method is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|l| l.set(l.get() + layout.size() as isize));
        // SAFETY: the caller's contract for this method is `System`'s.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LIVE.try_with(|l| l.set(l.get() + new_size as isize - layout.size() as isize));
        // SAFETY: the caller's contract for this method is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Live heap bytes this thread allocated through [`Counting`] (when it is the global allocator).
pub fn live_bytes() -> isize {
    LIVE.with(|l| l.get())
}

/// Raises this process's soft descriptor limit to `want` (at most to the hard limit; never lowers it) and
/// returns the soft limit now: the tests that open thousands of sockets do not depend on the `ulimit -n` they
/// were started with (1024 on many machines).
pub fn raise_descriptor_limit(want: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a plain system call that writes the `rlimit` it is given.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(got, 0);
    if limit.rlim_cur < want {
        limit.rlim_cur = want.min(limit.rlim_max);
        // SAFETY: a plain system call that reads the `rlimit` it is given.
        let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
        assert_eq!(set, 0);
    }
    limit.rlim_cur
}

/// Real memcached on a free port, when it is installed (`apt-get install memcached`): the same bytes are sent
/// to it and its replies must be the ones the test expects. Killed when dropped.
pub struct Reference {
    child: std::process::Child,
    pub port: u16,
}

impl Reference {
    pub fn start(extra: &[&str]) -> Option<Reference> {
        let bin = ["/usr/bin/memcached", "/usr/local/bin/memcached"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let port = free_port();
        let mut cmd = std::process::Command::new(bin);
        cmd.args([
            "-p",
            &port.to_string(),
            "-U",
            "0",
            "-l",
            "127.0.0.1",
            "-t",
            "2",
        ])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
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

    pub fn connect(&self) -> Raw {
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
