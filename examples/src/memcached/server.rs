//! The server: [`Config`] (memcached's flags), [`Server::start`] (bind, entrust one shard per worker, start
//! accepting), the accept loop (connection cap, refusal) and the per-connection handler: read what the
//! client sent, parse every whole command in it in one pass, answer them all with one write.
//!
//! Every connection is a fiber on a worker (`trust_core::spawn`) over `trust_core::net` sockets: a read, a
//! write or a stub call suspends only that fiber, and the worker meanwhile serves its shard and runs the other
//! connections' fibers. The accept loop is a fiber too. The handler itself is generic over `Read + Write`.
//! Connections count in atomics of the server (not in a shard): those are counters, not locks.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use trust_core::{Fiber, Trust, runtime, spawn};

use super::protocol::{self, Command, Limits, MAX_LINE, MetaFlags, Parsed, item_size, push_u64};
use super::store::{
    ArithOutcome, DeleteOutcome, MetaArith, MetaArithOutcome, MetaGet, MetaItem, Shard, ShardStats,
    StoreOutcome, StoreRequest, expiry,
};

/// The transport: sockets whose waits suspend only the calling fiber.
type Listener = trust_core::net::TcpListener;

pub const VERSION: &str = "1.6.0-trust";
/// What a client past the connection cap reads before the server closes it (memcached 1.6's words).
pub const TOO_MANY_CONNECTIONS: &[u8] = b"ERROR Too many open connections\r\n";
const NON_NUMERIC: &[u8] = b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n";
const OUT_OF_MEMORY: &[u8] = b"SERVER_ERROR out of memory storing object\r\n";
/// Replies are written once per read, or sooner when this much is waiting (a client that pipelines many
/// big `get`s without reading cannot make the server buffer them all).
const OUT_FLUSH: usize = 256 * 1024;
/// A connection's read buffer starts at this and returns to it when it empties.
const READ_START: usize = 16 * 1024;
/// Commands (and reads) a connection runs before its fiber lets the worker serve the others (counted across
/// its waits for the socket), as memcached yields a connection after `-R` (20) requests. A command that
/// reaches a shard yields now and then by itself (the runtime's inline burst), and a read or write that would
/// block suspends the fiber, but commands that reach no shard (`version`, `verbosity`, refused lines, a
/// refused data block being swallowed) do neither: a client writing them faster than they are parsed held its
/// worker (every other connection there, its shard, the accept loop) for as long as it wrote (review 84).
/// The runtime now yields a fiber after 32 socket operations that found their socket ready (review 90), but
/// one read can carry hundreds of such commands: this count is still what bounds them.
const COMMANDS_PER_TURN: u32 = 64;

/// The server's settings, named after memcached's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address to listen on (`--listen`, `-l`); loopback unless told otherwise.
    pub listen: String,
    /// TCP port (`--port`, `-p`); 0 picks a free one.
    pub port: u16,
    /// Memory for items, split evenly across the shards (`--memory-mb`, `-m`).
    pub memory_mb: usize,
    /// Connections served at once (`-c`); one more is refused.
    pub max_connections: usize,
    /// Largest item, key + value + per-item overhead (`-I`, accepts `k`/`m` suffixes).
    pub item_max: usize,
    /// Close a connection silent for this long, or whose replies go unread for this long
    /// (`--idle-timeout SECS`; 0 = never).
    pub idle_timeout: Option<Duration>,
    /// Accept control characters in keys, as memcached does (`--lenient-keys`); see
    /// [`Limits::control_chars_in_keys`].
    pub lenient_keys: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1".to_owned(),
            port: 11211,
            memory_mb: 64,
            max_connections: 1024,
            item_max: 1 << 20,
            idle_timeout: None,
            lenient_keys: false,
        }
    }
}

impl Config {
    /// Parses the command line (without the program name). Returns the config and `--workers`, if given.
    pub fn from_args<I: IntoIterator<Item = String>>(
        args: I,
    ) -> Result<(Config, Option<usize>), String> {
        let mut config = Config::default();
        let mut workers = None;
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--port" | "-p" => config.port = number(&flag, &value()?)?,
                "--listen" | "-l" => config.listen = value()?,
                "--memory-mb" | "-m" => config.memory_mb = number(&flag, &value()?)?,
                "-c" | "--max-connections" => config.max_connections = number(&flag, &value()?)?,
                "-I" | "--max-item-size" => config.item_max = size(&value()?)?,
                "--idle-timeout" => {
                    let secs: u64 = number(&flag, &value()?)?;
                    config.idle_timeout = (secs > 0).then(|| Duration::from_secs(secs));
                }
                "--lenient-keys" => config.lenient_keys = true,
                "--workers" | "-t" => workers = Some(number(&flag, &value()?)?),
                _ => return Err(format!("unknown argument {flag:?}")),
            }
        }
        if config.memory_mb == 0 || config.max_connections == 0 || workers == Some(0) {
            return Err("--memory-mb, -c and --workers must be at least 1".to_owned());
        }
        Ok((config, workers))
    }
}

impl Config {
    /// What memcached refuses at start: an item may take at most half the memory (`-m 1 -I 1m` exits with
    /// "Cannot set item size limit higher than 1/2 of memory max."). The message names both fixes.
    pub fn check(&self) -> Result<(), String> {
        let memory = self.memory_mb.saturating_mul(1 << 20);
        if self.item_max <= memory / 2 {
            return Ok(());
        }
        Err(format!(
            "Cannot set item size limit higher than 1/2 of memory max: -I {} is more than half of \
             --memory-mb {}; give --memory-mb {} or more, or -I {}k or less",
            self.item_max,
            self.memory_mb,
            self.item_max.saturating_mul(2).div_ceil(1 << 20),
            memory / 2 / 1024,
        ))
    }
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: {v:?} is not a valid number"))
}

/// `-I`: bytes, or with a `k`/`m` suffix; 1 KiB to 1 GiB like memcached.
fn size(v: &str) -> Result<usize, String> {
    let lower = v.to_ascii_lowercase();
    let (digits, unit) = match lower.as_bytes().last() {
        Some(b'k') => (&lower[..lower.len() - 1], 1 << 10),
        Some(b'm') => (&lower[..lower.len() - 1], 1 << 20),
        _ => (&lower[..], 1),
    };
    let n: usize = number("-I", digits)?;
    match n.checked_mul(unit) {
        Some(bytes) if (1 << 10..=1 << 30).contains(&bytes) => Ok(bytes),
        _ => Err(format!("-I: {v:?} must be between 1k and 1024m")),
    }
}

/// What every connection shares: the shards, the settings and the connection counters.
#[derive(Debug)]
struct Shared {
    shards: Vec<Trust<Shard>>,
    config: Config,
    /// The bound port (the real one when the config said 0).
    port: u16,
    started: u64,
    curr_connections: AtomicU64,
    total_connections: AtomicU64,
    rejected_connections: AtomicU64,
    /// `flush_all`s: counted here once, though each goes to every shard.
    cmd_flush: AtomicU64,
    /// Storage commands refused as a bad data chunk (never reaching a shard): part of `cmd_set`, as memcached
    /// counts them.
    bad_chunks: AtomicU64,
    stopping: AtomicBool,
    /// Whether a binary-protocol connection has been logged (once per server, so clients cannot flood the log).
    binary_logged: AtomicBool,
}

/// Starts servers.
#[derive(Debug)]
pub struct Server;

/// A running server: its address, and a way to stop accepting.
#[derive(Debug)]
pub struct ServerHandle {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    accept: Option<Fiber<()>>,
}

impl Server {
    /// Binds `config.listen:config.port`, entrusts one shard to each worker of the runtime (`--memory-mb` split
    /// evenly), and starts accepting. Returns once the socket is bound, so with port 0 the caller learns the
    /// port from [`ServerHandle::local_addr`].
    ///
    /// Fails if the config is one memcached refuses ([`Config::check`]). Like memcached, it then makes sure the process may open a descriptor for each of `-c` connections plus
    /// [`descriptor_headroom`] for itself: it raises the soft `RLIMIT_NOFILE` (`ulimit -n`) as far as that
    /// takes, and fails if the hard limit is too low (then a client past the limit would not even be refused:
    /// `accept` would fail and the client wait in the backlog).
    pub fn start(config: Config) -> io::Result<ServerHandle> {
        config.check().map_err(io::Error::other)?;
        let rt = runtime();
        let n = rt.workers();
        reserve_descriptors(config.max_connections, n)?;
        let listener = Listener::bind((config.listen.as_str(), config.port)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen on {}:{}: {e}", config.listen, config.port),
            )
        })?;
        let addr = listener.local_addr()?;
        // At least one item of `-I`: with more workers than the memory is twice `-I`, a share alone would
        // refuse items that memcached (one pool) stores.
        let per_shard = (config.memory_mb.saturating_mul(1 << 20) / n).max(config.item_max);
        let shards = (0..n)
            .map(|i| {
                rt.trustee(i)
                    .entrust(Shard::new(i, n, per_shard, config.item_max))
            })
            .collect();
        let shared = Arc::new(Shared {
            shards,
            config,
            port: addr.port(),
            started: unix_now(),
            curr_connections: AtomicU64::new(0),
            total_connections: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            cmd_flush: AtomicU64::new(0),
            bad_chunks: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            binary_logged: AtomicBool::new(false),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            spawn(move || accept_loop(listener, shared))
        };
        Ok(ServerHandle {
            addr,
            shared,
            accept: Some(accept),
        })
    }
}

/// Descriptors the server needs besides one per connection: the standard streams, the listener, each
/// worker's two (its `epoll` and its wake-up `eventfd`), and a reserve (the socket of a client being refused,
/// `stop`'s wake-up connect, descriptors inherited or opened by the rest of the process). memcached keeps a
/// reserve of 10 on top of its own descriptors.
pub fn descriptor_headroom(workers: usize) -> usize {
    16 + 2 * workers
}

/// Makes sure the process may open `max_connections + descriptor_headroom(workers)` descriptors: raises the
/// soft `RLIMIT_NOFILE` to that if it is lower (never lowers it), up to the hard limit. An error names the
/// limit, `-c` and the fix when the hard limit is too low.
fn reserve_descriptors(max_connections: usize, workers: usize) -> io::Result<()> {
    let headroom = descriptor_headroom(workers);
    let needed = max_connections.saturating_add(headroom);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a plain system call that writes the `rlimit` it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let wanted = libc::rlim_t::try_from(needed).unwrap_or(libc::RLIM_INFINITY);
    if limit.rlim_cur >= wanted {
        return Ok(());
    }
    if limit.rlim_max < wanted {
        return Err(io::Error::other(format!(
            "failed to set rlimit for open files: -c {max_connections} needs {needed} file descriptors \
             ({max_connections} connections + {headroom} for the server itself), but the hard limit \
             (ulimit -Hn) is {}; start with a smaller -c or raise the limit (ulimit -n {needed})",
            limit.rlim_max
        )));
    }
    limit.rlim_cur = wanted;
    // SAFETY: a plain system call that reads the `rlimit` it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("failed to set rlimit for open files to {needed} (-c {max_connections}): {e}"),
        ));
    }
    Ok(())
}

impl ServerHandle {
    /// The bound address (the real port when the config said 0).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Connections open right now.
    pub fn connections(&self) -> u64 {
        self.shared.curr_connections.load(Ordering::Relaxed)
    }

    /// Serves until the process ends.
    pub fn wait(mut self) {
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }

    /// Stops accepting (connections already open are served until they close).
    pub fn stop(mut self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        if let Some(accept) = self.accept.take() {
            // Wake the accept loop with a connection of our own. With no descriptor left that connect fails,
            // but then the loop's `accept` fails too and the loop sees `stopping` itself: retry until one or
            // the other has happened. (`trust_core::sleep` suspends only the fiber when called from one.)
            while !accept.is_finished() && std::net::TcpStream::connect(self.addr).is_err() {
                trust_core::sleep(RETRY_AFTER);
            }
            let _ = accept.join();
        }
    }
}

/// How long the accept loop waits when the process is out of descriptors or memory, and how often `stop`
/// retries its wake-up connect.
const RETRY_AFTER: Duration = Duration::from_millis(10);

fn accept_loop(listener: Listener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(_) if shared.stopping.load(Ordering::Relaxed) => return,
            // Out of descriptors or memory: the client waits in the backlog until a connection closes. Retrying
            // at once would only spin (memcached stops accepting until a connection closes).
            Err(e)
                if e.raw_os_error().is_some_and(|n| {
                    [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM].contains(&n)
                }) =>
            {
                trust_core::sleep(RETRY_AFTER);
                continue;
            }
            // A connection reset before it was accepted: on to the next one.
            Err(_) => continue,
        };
        if shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        // Only this loop adds connections, so the check and the increment cannot race past the cap.
        if shared.curr_connections.load(Ordering::Relaxed) >= shared.config.max_connections as u64 {
            shared.rejected_connections.fetch_add(1, Ordering::Relaxed);
            // Past the cap nothing is read: the reply is short enough for the socket buffer.
            let _ = (&stream).write_all(TOO_MANY_CONNECTIONS);
            continue;
        }
        shared.curr_connections.fetch_add(1, Ordering::Relaxed);
        shared.total_connections.fetch_add(1, Ordering::Relaxed);
        let conn = Connection(Arc::clone(&shared));
        // A fiber on some worker (round-robin); dropping its handle detaches it. `spawn` panics when no fiber
        // stack can be had (see `fiber_stack_size`): then the closure, and with it the connection, is dropped
        // and counted out, and the accept loop goes on.
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            spawn(move || {
                let _ = stream.set_nodelay(true);
                // The idle timeout bounds writes too: a client that stops reading its replies is idle as well,
                // and must not hold its fiber and buffers forever.
                let idle = conn.0.config.idle_timeout;
                if stream.set_read_timeout(idle).is_ok() && stream.set_write_timeout(idle).is_ok() {
                    let _ = serve(&stream, &conn.0, |t| stream.set_read_timeout(t));
                }
                let _ = stream.shutdown(std::net::Shutdown::Both);
                drop(conn);
            })
        }));
        drop(started);
    }
}

/// Counts a connection out when its handler ends, however it ends.
struct Connection(Arc<Shared>);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.curr_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Seconds since the epoch: the clock is read once per batch of requests.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The read side of a connection: a buffer that holds at most one command line and one data block more
/// than what is being parsed, so its size is bounded by `MAX_LINE + item_max`.
struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max: usize,
}

impl ReadBuf {
    fn new(item_max: usize) -> Self {
        ReadBuf {
            buf: vec![0; READ_START],
            start: 0,
            end: 0,
            max: MAX_LINE + 1 + item_max + 2,
        }
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n.min(self.end - self.start);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > 4 * READ_START {
                // A big item came through; do not keep its buffer for an idle connection.
                self.buf = vec![0; READ_START];
            }
        }
    }

    /// Room to read into: slides unparsed bytes to the front, grows up to `max`. `None` if full (cannot
    /// happen: the parser gives up on a line before the buffer fills).
    fn spare(&mut self) -> Option<&mut [u8]> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() < self.max {
                let len = (self.buf.len() * 2).min(self.max);
                self.buf.resize(len, 0);
            } else {
                return None;
            }
        }
        Some(&mut self.buf[self.end..])
    }
}

/// Serves one connection until the client quits, closes, idles out, or sends a line too long.
///
/// The idle timeout counts as memcached's does, from the connection's last command: a command line must
/// come whole within `--idle-timeout` of the previous command, of the end of the write of its replies, or of
/// the connect (a write that waits has the idle timeout of its own). So a client that trickles a line a byte
/// at a time is closed as a silent one is, rather than holding its connection slot for good. A data block
/// being read only has to keep coming (memcached does not time out a connection reading one).
/// `set_read_timeout` sets the timeout of the next `read`.
fn serve<S: Read + Write>(
    mut stream: S,
    shared: &Shared,
    set_read_timeout: impl Fn(Option<Duration>) -> io::Result<()>,
) -> io::Result<()> {
    let limits = Limits {
        item_max: shared.config.item_max,
        control_chars_in_keys: shared.config.lenient_keys,
    };
    let mut input = ReadBuf::new(limits.item_max);
    let mut out = Vec::with_capacity(READ_START);
    // Bytes of a refused data block still to drop as they arrive.
    let mut swallow = 0usize;
    let mut first_read = true;
    let idle = shared.config.idle_timeout;
    let mut last_command = Instant::now();
    let mut turn = 0u32;
    loop {
        // The clock is read once per batch of commands, and again after a write that may have waited for
        // the client (a command run after it must see the time it runs at: an item expired meanwhile is not
        // returned).
        let mut now = unix_now();
        loop {
            if swallow > 0 {
                let n = swallow.min(input.data().len());
                input.consume(n);
                swallow -= n;
                if swallow > 0 {
                    break;
                }
            }
            let parsed = protocol::parse(input.data(), &limits);
            if idle.is_some() && !matches!(parsed, Parsed::Incomplete) {
                last_command = Instant::now();
            }
            let (len, more, quit) = match parsed {
                Parsed::Incomplete => break,
                Parsed::Command { cmd, len } => (
                    len,
                    0,
                    execute(cmd, &mut now, &mut out, shared, &mut stream)?,
                ),
                Parsed::Reject {
                    reply,
                    len,
                    swallow,
                    unlink,
                    unlink_base64,
                } => {
                    out.extend_from_slice(reply);
                    if let Some(key) = unlink {
                        let mut buf = [0; protocol::MAX_KEY_LEN];
                        let key = protocol::meta_key(key, unlink_base64, &mut buf);
                        shared.shard(key).unlink(key, now);
                    }
                    (len, swallow, false)
                }
                Parsed::BadChunk { reply, len } => {
                    out.extend_from_slice(reply);
                    shared.bad_chunks.fetch_add(1, Ordering::Relaxed);
                    (len, 0, false)
                }
                Parsed::Close(reply) => {
                    out.extend_from_slice(reply);
                    stream.write_all(&out)?;
                    return Ok(());
                }
            };
            input.consume(len);
            swallow = more;
            turn += 1;
            if turn >= COMMANDS_PER_TURN {
                turn = 0;
                trust_core::yield_now();
                now = unix_now();
            }
            if quit {
                stream.write_all(&out)?;
                return Ok(());
            }
            if out.len() >= OUT_FLUSH {
                stream.write_all(&out)?;
                out.clear();
                now = unix_now();
                last_command = Instant::now();
            }
        }
        if !out.is_empty() {
            stream.write_all(&out)?;
            // Time spent writing replies out (a client reading them slowly) is not idle time.
            last_command = Instant::now();
            out.clear();
            if out.capacity() > OUT_FLUSH * 2 {
                out = Vec::with_capacity(READ_START);
            }
        }
        if let Some(idle) = idle {
            // Past the end of a command line (its data block, or a refused block being swallowed) the
            // timeout is a read's; before it, what is left of the idle time since the last command.
            let head = &input.data()[..input.data().len().min(MAX_LINE + 1)];
            let timeout = if swallow > 0 || head.contains(&b'\n') {
                idle
            } else {
                idle.saturating_sub(last_command.elapsed())
            };
            if timeout.is_zero() {
                return Ok(());
            }
            set_read_timeout(Some(timeout))?;
        }
        let Some(spare) = input.spare() else {
            return stream.write_all(protocol::LINE_TOO_LONG);
        };
        match stream.read(spare) {
            // The client closed; half a command in the buffer is simply dropped.
            Ok(0) => return Ok(()),
            Ok(n) => {
                input.end += n;
                turn += 1;
                if turn >= COMMANDS_PER_TURN {
                    turn = 0;
                    trust_core::yield_now();
                }
                if std::mem::take(&mut first_read) && input.data()[0] == BINARY_REQUEST_MAGIC {
                    refuse_binary(shared);
                    return Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Includes the idle timeout (TimedOut / WouldBlock): memcached closes silently too.
            Err(e) => return Err(e),
        }
    }
}

/// The first byte of every binary-protocol request. memcached picks the protocol from a connection's first
/// byte; this server speaks text only, and a binary client would otherwise wait forever for a reply to a
/// "line" that never ends (`memcslap --binary` hung until its timeout).
const BINARY_REQUEST_MAGIC: u8 = 0x80;

/// A binary-protocol client is closed at once, so it fails fast; the first one is logged.
fn refuse_binary(shared: &Shared) {
    if !shared.binary_logged.swap(true, Ordering::Relaxed) {
        eprintln!(
            "memcached: closed a connection that speaks the binary protocol (first byte 0x80); this server \
             speaks the text protocol only (further binary connections are closed without a log line)"
        );
    }
}

impl Shared {
    fn shard(&self, key: &[u8]) -> &Trust<Shard> {
        &self.shards[shard_index(key, self.shards.len())]
    }

    /// The shards' counters added up, each after its crawler's pass (expired items dropped).
    fn total_stats(&self, now: u64) -> ShardStats {
        let mut s = ShardStats::default();
        for shard in &self.shards {
            s += shard.crawl(now);
        }
        s
    }
}

/// FNV-1a, folded: which shard owns a key. Fixed, so a key always lands on the same shard.
pub fn shard_index(key: &[u8], shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    ((h ^ (h >> 32)) % shards as u64) as usize
}

/// Runs one command: one stub call per key (one per shard for `flush_all` and `stats`), reply into `out`.
/// Returns whether the client asked to quit. `clock` is the connection's unix time, read again after a write
/// here (a `get` of many keys writes as it goes).
fn execute<W: Write>(
    cmd: Command<'_>,
    clock: &mut u64,
    out: &mut Vec<u8>,
    shared: &Shared,
    w: &mut W,
) -> io::Result<bool> {
    let now = *clock;
    let reply = |out: &mut Vec<u8>, noreply: bool, text: &[u8]| {
        if !noreply {
            out.extend_from_slice(text);
        }
    };
    match cmd {
        Command::Get { keys, cas } | Command::Gat { keys, cas, .. } => {
            let touch = match cmd {
                Command::Gat { exptime, .. } => Some(exptime),
                _ => None,
            };
            // A bad key ends the line: the keys before it are looked up (and a `gat` touches them), but their
            // values are dropped and the reply is the error alone, as in memcached.
            let bad_key = keys.bad_key_follows();
            let start = out.len();
            for key in keys.iter() {
                // The output buffer travels to the shard and back: a hit is written straight into it.
                *out = shared
                    .shard(key)
                    .fetch(key, cas, touch, *clock, std::mem::take(out));
                if bad_key {
                    out.truncate(start);
                } else if out.len() >= OUT_FLUSH {
                    w.write_all(out)?;
                    out.clear();
                    *clock = unix_now();
                }
            }
            out.extend_from_slice(if bad_key {
                protocol::BAD_FORMAT
            } else {
                b"END\r\n"
            });
        }
        Command::Store {
            op,
            key,
            flags,
            exptime,
            data,
            cas,
            noreply,
        } => {
            let req = StoreRequest::new(op, key, data, flags, exptime, cas);
            let text: &[u8] = match shared.shard(key).store(req, now) {
                StoreOutcome::Stored => b"STORED\r\n",
                StoreOutcome::NotStored => b"NOT_STORED\r\n",
                StoreOutcome::Exists => b"EXISTS\r\n",
                StoreOutcome::NotFound => b"NOT_FOUND\r\n",
                StoreOutcome::OutOfMemory => OUT_OF_MEMORY,
            };
            reply(out, noreply, text);
        }
        Command::Delete { key, noreply } => {
            let text: &[u8] = if shared.shard(key).delete(key, now) {
                b"DELETED\r\n"
            } else {
                b"NOT_FOUND\r\n"
            };
            reply(out, noreply, text);
        }
        Command::Arith {
            key,
            delta,
            incr,
            noreply,
        } => match shared.shard(key).arith(key, delta, incr, now) {
            ArithOutcome::Value(v) if !noreply => {
                push_u64(out, v);
                out.extend_from_slice(b"\r\n");
            }
            ArithOutcome::Value(_) => {}
            ArithOutcome::NotFound => reply(out, noreply, b"NOT_FOUND\r\n"),
            ArithOutcome::NonNumeric => reply(out, noreply, NON_NUMERIC),
        },
        Command::Touch {
            key,
            exptime,
            noreply,
        } => {
            let text: &[u8] = if shared.shard(key).touch(key, exptime, now) {
                b"TOUCHED\r\n"
            } else {
                b"NOT_FOUND\r\n"
            };
            reply(out, noreply, text);
        }
        Command::FlushAll { delay, noreply } => {
            shared.cmd_flush.fetch_add(1, Ordering::Relaxed);
            // An absolute time from before the server started: memcached flushes nothing (no item is that
            // old; its `realtime` makes `oldest_live` 0) and drops a pending delayed flush.
            let before_start =
                delay > protocol::MAX_RELATIVE_EXPTIME && (delay as u64) < shared.started;
            for shard in &shared.shards {
                if before_start {
                    shard.cancel_flush();
                } else {
                    shard.flush_all(delay, now);
                }
            }
            reply(out, noreply, b"OK\r\n");
        }
        Command::Stats => stats(shared, now, out),
        Command::StatsReset => {
            for shard in &shared.shards {
                shard.reset_stats();
            }
            shared.total_connections.store(0, Ordering::Relaxed);
            for counter in [
                &shared.rejected_connections,
                &shared.cmd_flush,
                &shared.bad_chunks,
            ] {
                counter.store(0, Ordering::Relaxed);
            }
            out.extend_from_slice(b"RESET\r\n");
        }
        Command::StatsSettings => settings_stats(shared, out),
        Command::StatsItems => items_stats(shared, now, out),
        // No slab allocator, so no slab classes: memcached's answer when it has no slabs, less its two
        // totals (`active_slabs 0`, `total_malloced 0`), which would be false here.
        Command::StatsSlabs => out.extend_from_slice(b"END\r\n"),
        Command::StatsTrust => trust_stats(out),
        Command::Version => {
            out.extend_from_slice(b"VERSION ");
            out.extend_from_slice(VERSION.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Command::Verbosity { noreply } => reply(out, noreply, b"OK\r\n"),
        Command::Quit => return Ok(true),
        Command::MetaNoop => out.extend_from_slice(b"MN\r\n"),
        Command::MetaGet { key, flags } => {
            let mut buf = [0; protocol::MAX_KEY_LEN];
            let key = protocol::meta_key(key, flags.base64, &mut buf);
            let req = MetaGet {
                value: flags.value,
                ttl: flags.ttl,
                bump: !flags.no_bump,
                vivify: flags.vivify,
                vivify_last: flags.vivify_last,
                recache: flags.recache,
                recache_after_ttl: flags.recache_after_ttl,
            };
            match shared.shard(key).meta_get_with(key, req, now) {
                Some(item) => meta_reply(out, MetaCode::Item, key, &flags, &item, b"cfsthl", now),
                None if flags.quiet => {}
                None => meta_reply(
                    out,
                    MetaCode::Plain(b"EN"),
                    key,
                    &flags,
                    &MetaItem {
                        binary_key: flags.base64,
                        ..MetaItem::default()
                    },
                    b"",
                    now,
                ),
            }
        }
        Command::MetaSet {
            op,
            key,
            data,
            flags,
        } => {
            let mut buf = [0; protocol::MAX_KEY_LEN];
            let key = protocol::meta_key(key, flags.base64, &mut buf);
            let mut req = StoreRequest::new(
                op,
                key,
                data,
                flags.client_flags,
                flags.ttl.unwrap_or(0),
                flags.cas.unwrap_or(0),
            );
            req.binary_key = flags.base64;
            req.stale = flags.stale;
            let (outcome, cas) = shared.shard(key).store_cas(req, now);
            let code: &[u8] = match outcome {
                StoreOutcome::Stored if flags.quiet => return Ok(false),
                StoreOutcome::Stored => b"HD",
                StoreOutcome::NotStored => b"NS",
                StoreOutcome::Exists => b"EX",
                StoreOutcome::NotFound => b"NF",
                StoreOutcome::OutOfMemory => {
                    out.extend_from_slice(OUT_OF_MEMORY);
                    return Ok(false);
                }
            };
            let item = MetaItem {
                cas,
                binary_key: flags.base64,
                ..MetaItem::default()
            };
            meta_reply(out, MetaCode::Plain(code), key, &flags, &item, b"c", now);
        }
        Command::MetaDelete { key, flags } => {
            let mut buf = [0; protocol::MAX_KEY_LEN];
            let key = protocol::meta_key(key, flags.base64, &mut buf);
            let shard = shared.shard(key);
            let code: &[u8] = match shard.meta_delete(key, flags.cas, flags.stale, flags.ttl, now) {
                DeleteOutcome::Deleted if flags.quiet => return Ok(false),
                DeleteOutcome::Deleted => b"HD",
                DeleteOutcome::NotFound => b"NF",
                DeleteOutcome::Exists => b"EX",
            };
            let item = MetaItem {
                binary_key: flags.base64,
                ..MetaItem::default()
            };
            meta_reply(out, MetaCode::Plain(code), key, &flags, &item, b"", now);
        }
        Command::MetaArith { key, incr, flags } => {
            let mut buf = [0; protocol::MAX_KEY_LEN];
            let key = protocol::meta_key(key, flags.base64, &mut buf);
            let req = MetaArith {
                delta: flags.delta,
                incr,
                cas: flags.cas,
                ttl: flags.ttl,
                vivify: flags.vivify.map(|ttl| (ttl, flags.initial)),
                vivify_last: flags.vivify_last,
            };
            // `ma`'s `k` prints the key as the command sent it, base64 with `b`, whatever the item's mark.
            let none = MetaItem {
                binary_key: flags.base64,
                ..MetaItem::default()
            };
            match shared.shard(key).meta_arith(key, req, now) {
                // `q` hides a success, but not the value of an item it created (as in memcached).
                MetaArithOutcome::Value(item) if flags.quiet && !item.created => {}
                MetaArithOutcome::Value(item) => {
                    let item = MetaItem {
                        binary_key: flags.base64,
                        ..item
                    };
                    meta_reply(out, MetaCode::Item, key, &flags, &item, b"ct", now)
                }
                MetaArithOutcome::NotFound => {
                    meta_reply(out, MetaCode::Plain(b"NF"), key, &flags, &none, b"", now)
                }
                MetaArithOutcome::Exists => {
                    meta_reply(out, MetaCode::Plain(b"EX"), key, &flags, &none, b"", now)
                }
                MetaArithOutcome::NonNumeric => out.extend_from_slice(NON_NUMERIC),
            }
        }
    }
    Ok(false)
}

/// How a meta reply starts.
#[derive(Clone, Copy)]
enum MetaCode {
    /// A status code alone: `HD`, `EN`, `NF`, `NS`, `EX`.
    Plain(&'static [u8]),
    /// An item: `VA <size>` and its value when the flags have `v`, `HD` otherwise.
    Item,
}

/// A meta command's reply: the code, then the flags asked for, in the order they were asked for (as
/// memcached prints them): `O` and `k` always, and those of `item_letters` (`c` cas unique, `f` client
/// flags, `s` size, `t` remaining TTL, -1 for none, `h` fetched before, `l` seconds since the last access)
/// from `item`. A `t` after the `T` that changed the exptime (or the `N` that created the item) prints the
/// new TTL, before it the old one, as in memcached. `k` prints the key base64 and then ` b` when
/// `item.binary_key` says so: the item's mark for an `mg` hit, the command's `b` otherwise, as memcached
/// decides.
fn meta_reply(
    out: &mut Vec<u8>,
    code: MetaCode,
    key: &[u8],
    flags: &MetaFlags<'_>,
    item: &MetaItem,
    item_letters: &[u8],
    now: u64,
) {
    let value = matches!(code, MetaCode::Item) && flags.value;
    match code {
        MetaCode::Plain(code) => out.extend_from_slice(code),
        MetaCode::Item if value => {
            out.extend_from_slice(b"VA ");
            push_u64(out, item.value.len() as u64);
        }
        MetaCode::Item => out.extend_from_slice(b"HD"),
    }
    // memcached applies `T`, and on an item `ma` created `N`, as it meets them among the flags it prints, so
    // a `t` shows the exptime as it stands there: `ma k T5 t N100` creates `k` with a TTL of 100 and says `t5`.
    let mut expires = item.expires_before;
    for token in flags.tokens() {
        let letter = token[0];
        let set = match letter {
            b'T' => flags.ttl,
            b'N' if item.created => flags.vivify,
            _ => None,
        };
        if let Some(exptime) = set {
            expires = expiry(exptime, now).unwrap_or(now);
        }
        if letter == b'O' {
            out.push(b' ');
            out.extend_from_slice(token);
            continue;
        }
        if letter != b'k' && !item_letters.contains(&letter) {
            continue;
        }
        out.push(b' ');
        out.push(letter);
        match letter {
            b'k' if item.binary_key => {
                protocol::push_base64(out, key);
                out.extend_from_slice(b" b");
            }
            b'k' => out.extend_from_slice(key),
            b'h' => out.push(if item.fetched { b'1' } else { b'0' }),
            b'l' => push_u64(out, item.idle),
            b'c' => push_u64(out, item.cas),
            b'f' => push_u64(out, item.flags.into()),
            b's' => push_u64(out, item.size as u64),
            _ => match expires {
                0 => out.extend_from_slice(b"-1"),
                expires => push_u64(out, expires.saturating_sub(now)),
            },
        }
    }
    // An `mg`'s token state, after the flags asked for, in memcached's order: `Z` (already sent), `X`
    // (stale), `W` (won here).
    for (set, letter) in [
        (item.token_sent, b'Z'),
        (item.stale, b'X'),
        (item.won, b'W'),
    ] {
        if set {
            out.extend_from_slice(&[b' ', letter]);
        }
    }
    out.extend_from_slice(b"\r\n");
    if value {
        out.extend_from_slice(&item.value);
        out.extend_from_slice(b"\r\n");
    }
}

fn stat(out: &mut Vec<u8>, name: &str, value: u64) {
    out.extend_from_slice(b"STAT ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    push_u64(out, value);
    out.extend_from_slice(b"\r\n");
}

/// `stats settings`: the settings this server has, under memcached's names and in its order.
fn settings_stats(shared: &Shared, out: &mut Vec<u8>) {
    let config = &shared.config;
    let numbers = [
        (
            "maxbytes",
            (config.memory_mb as u64).saturating_mul(1 << 20),
        ),
        ("maxconns", config.max_connections as u64),
        ("tcpport", shared.port.into()),
        ("udpport", 0),
    ];
    for (name, value) in numbers {
        stat(out, name, value);
    }
    // Eviction cannot be turned off (memcached's `-M`).
    out.extend_from_slice(b"STAT evictions on\r\n");
    stat(out, "num_threads", shared.shards.len() as u64);
    out.extend_from_slice(b"STAT cas_enabled yes\r\nSTAT binding_protocol ascii\r\n");
    stat(out, "item_size_max", config.item_max as u64);
    stat(
        out,
        "idle_timeout",
        config.idle_timeout.map_or(0, |t| t.as_secs()),
    );
    out.extend_from_slice(b"END\r\n");
}

/// `stats items`: there are no slab classes, so the whole cache is class 1, with the counters a shard keeps;
/// an empty cache lists no class (`END` alone), as memcached lists only classes that hold items.
fn items_stats(shared: &Shared, now: u64, out: &mut Vec<u8>) {
    let s = shared.total_stats(now);
    if s.curr_items > 0 {
        let numbers = [
            ("number", s.curr_items),
            ("mem_requested", s.bytes),
            ("evicted", s.evictions),
            ("reclaimed", s.reclaimed),
        ];
        for (name, value) in numbers {
            stat(out, &format!("items:1:{name}"), value);
        }
    }
    out.extend_from_slice(b"END\r\n");
}

/// `stats trust`: what each worker counts about itself (`Runtime::metrics`), as `STAT trustee<i>:<name>`
/// lines, the way memcached's `stats slabs` numbers its classes. `requests_per_batch` shows how well remote
/// stub calls batch; calls a connection makes to its own worker's shard run inline and are not requests.
fn trust_stats(out: &mut Vec<u8>) {
    for m in runtime().metrics() {
        let t = m.trustee;
        let line = format!(
            "STAT trustee{t}:requests {}\r\nSTAT trustee{t}:batches {}\r\nSTAT trustee{t}:requests_per_batch {:.2}\r\n\
             STAT trustee{t}:fibers {}\r\nSTAT trustee{t}:parks {}\r\nSTAT trustee{t}:busy_us {}\r\n\
             STAT trustee{t}:idle_us {}\r\n",
            m.requests,
            m.batches,
            m.requests_per_batch(),
            m.fibers,
            m.parks,
            m.busy.as_micros(),
            m.idle.as_micros(),
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.extend_from_slice(b"END\r\n");
}

/// `stats`: the shards' counters added up, plus the server's own.
fn stats(shared: &Shared, now: u64, out: &mut Vec<u8>) {
    let s = shared.total_stats(now);
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    stat(out, "pid", std::process::id() as u64);
    stat(out, "uptime", now.saturating_sub(shared.started));
    stat(out, "time", now);
    // `version` is the one string; memcached prints it after `time`.
    out.extend_from_slice(b"STAT version ");
    out.extend_from_slice(VERSION.as_bytes());
    out.extend_from_slice(b"\r\n");
    let numbers = [
        ("pointer_size", usize::BITS as u64),
        ("max_connections", shared.config.max_connections as u64),
        ("curr_connections", load(&shared.curr_connections)),
        ("total_connections", load(&shared.total_connections)),
        ("rejected_connections", load(&shared.rejected_connections)),
        ("cmd_get", s.cmd_get),
        ("cmd_set", s.cmd_set + load(&shared.bad_chunks)),
        ("cmd_flush", load(&shared.cmd_flush)),
        ("cmd_touch", s.cmd_touch),
        // memcached 1.6.18 counts only `me` (meta debug) here, not `mg`/`ms`/`md`/`ma`/`mn` (checked against
        // it); there is no `me` in this server (`ERROR`), so it stays 0.
        ("cmd_meta", 0),
        ("get_hits", s.get_hits),
        ("get_misses", s.get_misses),
        ("delete_misses", s.delete_misses),
        ("delete_hits", s.delete_hits),
        ("incr_misses", s.incr_misses),
        ("incr_hits", s.incr_hits),
        ("decr_misses", s.decr_misses),
        ("decr_hits", s.decr_hits),
        ("cas_misses", s.cas_misses),
        ("cas_hits", s.cas_hits),
        ("cas_badval", s.cas_badval),
        ("touch_hits", s.touch_hits),
        ("touch_misses", s.touch_misses),
        ("threads", shared.shards.len() as u64),
        ("bytes", s.bytes),
        ("curr_items", s.curr_items),
        ("total_items", s.total_items),
        ("evictions", s.evictions),
        ("reclaimed", s.reclaimed),
        ("crawler_reclaimed", s.crawler_reclaimed),
        (
            "limit_maxbytes",
            (shared.config.memory_mb as u64).saturating_mul(1 << 20),
        ),
        ("item_size_max", shared.config.item_max as u64),
        ("item_overhead", item_size(0, 0) as u64),
    ];
    for (name, value) in numbers {
        stat(out, name, value);
    }
    out.extend_from_slice(b"END\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<(Config, Option<usize>), String> {
        Config::from_args(s.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn command_line() {
        assert_eq!(args("").unwrap(), (Config::default(), None));
        let (c, w) = args(
            "--port 0 --memory-mb 8 --listen 0.0.0.0 -c 10 -I 2m --idle-timeout 5 --workers 2",
        )
        .unwrap();
        assert_eq!(
            c,
            Config {
                listen: "0.0.0.0".to_owned(),
                port: 0,
                memory_mb: 8,
                max_connections: 10,
                item_max: 2 << 20,
                idle_timeout: Some(Duration::from_secs(5)),
                lenient_keys: false,
            }
        );
        assert_eq!(w, Some(2));
        assert_eq!(args("-I 512k").unwrap().0.item_max, 512 << 10);
        assert_eq!(args("-I 4096").unwrap().0.item_max, 4096);
        assert!(args("--lenient-keys").unwrap().0.lenient_keys);
        assert!(args("-I 1").is_err());
        assert!(args("-I 2g").is_err());
        assert!(args("--port").is_err());
        assert!(args("--port 99999").is_err());
        assert!(args("--bogus 1").is_err());
        assert!(args("-c 0").is_err());
    }

    #[test]
    fn keys_spread_over_shards() {
        let mut counts = [0; 4];
        for i in 0..4000 {
            counts[shard_index(format!("key:{i}").as_bytes(), 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert_eq!(shard_index(b"anything", 1), 0);
    }
}
