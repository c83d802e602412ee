//! TCP sockets for fibers: [`TcpListener`] and [`TcpStream`], whose `accept`, `read`, `write` and `connect`
//! suspend only the calling fiber while the socket is not ready; its worker keeps serving requests and running
//! other fibers meanwhile (one `epoll` set per worker, see `worker::reactor`). That is the paper's
//! thread-per-core model for servers: a connection's fiber runs where the trustees run, so a request to a
//! property of its own worker takes the local shortcut and the others batch. A fiber whose socket is ready
//! every time (a peer that never stops writing, or reading) never suspends, so after every 32 operations of
//! a worker's fibers that found their socket ready the one running yields once, as after 32 inline applies:
//! before review 90 a fiber reading an endless upload held its worker (its trustee, its other fibers) for
//! as long as the upload lasted. A fiber that unwinds (a destructor's I/O) does not yield.
//!
//! On a plain thread the same calls block the thread, like `std::net`'s (but a timeout is `TimedOut`, not
//! std's `WouldBlock`). On a worker outside a fiber — inside a delegated closure, also one a fiber runs inline
//! on its own worker's trustee, or an `apply_then` continuation — they panic, even when the socket is ready:
//! waiting there would stop the trustee.
//!
//! `Runtime::shutdown` shuts down every socket a fiber waited on (one a fiber only used without waiting is
//! left alone), wherever it is used by then: a plain thread reading it gets `Ok(0)`. A fiber it finds waiting
//! never resumes: its `join` returns the shutdown panic, and the socket it holds is leaked with it, shut down
//! but open for the rest of the process. A `connect` to an address that never answers waits as long as the
//! kernel retries (about two minutes on Linux by default); `connect_timeout` bounds that wait.
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use trust_core::net::TcpListener;
//!
//! let listener = TcpListener::bind("127.0.0.1:7000")?;
//! loop {
//!     let (mut stream, _) = listener.accept()?;
//!     trust_core::spawn(move || {
//!         let mut buf = [0; 4096];
//!         // Echo until the peer closes; each read suspends only this fiber.
//!         while let Ok(n @ 1..) = stream.read(&mut buf) {
//!             if stream.write_all(&buf[..n]).is_err() {
//!                 break;
//!             }
//!         }
//!     });
//! }
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::delegation::trustee::shared::{TrusteeShared, panic_if_forked};
use crate::delegation::worker::context;
use crate::delegation::worker::fiber::after_ready_io;
use crate::delegation::worker::reactor::{self, Reactor, Readiness};

const OFF_FIBER: &str = "a `trust_core::net` socket used on a worker outside a fiber (inside a delegated closure \
     or an `apply_then` continuation): waiting for it would stop the trustee. Do socket I/O in a fiber \
     (`trust_core::spawn`) or on a plain thread";

/// A non-blocking socket and the workers whose epoll sets it joined.
struct Socket<S: AsRawFd> {
    io: S,
    workers: Mutex<Vec<&'static TrusteeShared>>,
    /// The same workers as bits (those with an index below 64), checked before each wait.
    known: AtomicU64,
}

impl<S: AsRawFd> Socket<S> {
    fn new(io: S) -> Self {
        Socket {
            io,
            workers: Mutex::new(Vec::new()),
            known: AtomicU64::new(0),
        }
    }

    /// Runs `op` until it does not say `WouldBlock`, waiting for `readiness` in between; `TimedOut` once
    /// `timeout` has passed since the call.
    fn io<R>(
        &self,
        readiness: Readiness,
        timeout: Option<Duration>,
        mut op: impl FnMut(&S) -> io::Result<R>,
    ) -> io::Result<R> {
        let worker = context::worker();
        let fiber = match worker {
            Some(w) if w.in_delegated() => panic!("{OFF_FIBER}"),
            Some(w) => Some(w.fiber.get().unwrap_or_else(|| panic!("{OFF_FIBER}")).1),
            None => None,
        };
        let mut deadline = None;
        let mut waited = false;
        loop {
            match op(&self.io) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                result => {
                    // A fiber whose socket is always ready would never let its worker go (review 90).
                    if let (Some(w), Some(_), false) = (worker, fiber, waited) {
                        after_ready_io(w);
                    }
                    return result;
                }
            }
            // A deadline past `Instant`'s range is none: `connect_timeout(addr, Duration::MAX)` (which std
            // accepts, and waits) panicked here on `now + timeout` before (review 48).
            if let Some(t) = timeout
                && let Some(at) = *deadline.get_or_insert_with(|| Instant::now().checked_add(t))
                && Instant::now() >= at
            {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "socket operation timed out"));
            }
            let fd = self.io.as_raw_fd();
            match (worker, fiber) {
                (Some(w), Some(id)) => {
                    // A fiber in a forked child (it called `fork`) cannot wait: it panics naming `fork`, as
                    // its suspension would, but before it takes the locks of the registration, which a parent's
                    // thread may have held at the fork, and before it adds the child's fd to the epoll set
                    // the child shares with the parent's worker (review 68).
                    panic_if_forked();
                    self.register(w.shared, &w.reactor)?;
                    w.reactor.wait(id, fd, readiness, deadline.flatten());
                    waited = true;
                }
                _ => {
                    let left = deadline.flatten().map(|at: Instant| at.saturating_duration_since(Instant::now()));
                    reactor::block_on(fd, readiness, left)?;
                }
            }
        }
    }
}

impl<S: AsRawFd> Socket<S> {
    /// Makes sure the socket is in the epoll set of `shared`'s worker (one load when it is already).
    fn register(&self, shared: &'static TrusteeShared, reactor: &Reactor) -> io::Result<()> {
        let bit = 1u64.checked_shl(shared.index() as u32).unwrap_or(0);
        if self.known.load(Ordering::Relaxed) & bit != 0 {
            return Ok(());
        }
        if reactor.register(shared, self.io.as_raw_fd())? {
            self.workers.lock().unwrap_or_else(|e| e.into_inner()).push(shared);
        }
        self.known.fetch_or(bit, Ordering::Relaxed);
        Ok(())
    }
}

impl<S: AsRawFd> Drop for Socket<S> {
    fn drop(&mut self) {
        // Before `io` closes the fd: no worker may take a new socket with the same number for this one.
        let fd = self.io.as_raw_fd();
        for shared in self.workers.get_mut().unwrap_or_else(|e| e.into_inner()).drain(..) {
            reactor::forget(shared, fd);
        }
    }
}

/// A TCP socket server, listening for connections; [`accept`](TcpListener::accept) in a fiber suspends only
/// the fiber. Closed when dropped, and shut down by [`Runtime::shutdown`](crate::Runtime::shutdown) if a fiber
/// waited on it.
pub struct TcpListener {
    socket: Socket<mio::net::TcpListener>,
}

impl TcpListener {
    /// Binds to `addr` (the first of its addresses that works), with `SO_REUSEADDR`, and listens with the
    /// deepest backlog the kernel allows (`net.core.somaxconn`: 4096 by default, where std and mio ask for 128),
    /// so a burst of connects waits for `accept` rather than for a SYN retransmit.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        let io = each_addr(addr, mio::net::TcpListener::bind)?;
        reactor::deepen_backlog(io.as_raw_fd())?;
        Ok(TcpListener {
            socket: Socket::new(io),
        })
    }

    /// Takes a listener bound by `std` (it is switched to non-blocking mode, std clones of it too, as for
    /// [`TcpStream::from_std`]; its backlog is left as it is: std's 128).
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        Ok(TcpListener {
            socket: Socket::new(mio::net::TcpListener::from_std(listener)),
        })
    }

    /// Waits for the next connection.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (io, addr) = self.socket.io(Readiness::Readable, None, |l| l.accept())?;
        Ok((TcpStream::new(io), addr))
    }

    /// The address this listener is bound to (with the port the OS chose for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.io.local_addr()
    }
}

/// A TCP connection; reads and writes in a fiber suspend only the fiber. Implements [`Read`] and [`Write`],
/// also through `&TcpStream`, so one fiber may read while another writes.
pub struct TcpStream {
    socket: Socket<mio::net::TcpStream>,
    /// In nanoseconds; 0 is none.
    read_timeout: AtomicU64,
    write_timeout: AtomicU64,
}

impl TcpStream {
    fn new(io: mio::net::TcpStream) -> Self {
        TcpStream {
            socket: Socket::new(io),
            read_timeout: AtomicU64::new(0),
            write_timeout: AtomicU64::new(0),
        }
    }

    /// Connects to `addr` (the first of its addresses that accepts). A host name is resolved on the calling
    /// thread (`getaddrinfo`, as in `std`): in a fiber that lookup blocks its worker; an address does not.
    /// There is no timeout: an address that never answers is retried as long as the kernel does (about two
    /// minutes on Linux); [`connect_timeout`](TcpStream::connect_timeout) bounds the wait.
    pub fn connect(addr: impl ToSocketAddrs) -> io::Result<TcpStream> {
        each_addr(addr, |a| TcpStream::connect_within(a, None))
    }

    /// Connects to `addr`, failing with [`io::ErrorKind::TimedOut`] once `timeout` has passed without an
    /// answer, as `std`'s `connect_timeout` (an address, not a host name: nothing to resolve). In a fiber only
    /// the fiber waits. A zero duration is an `InvalidInput` error, as in `std`; one past `Instant`'s range
    /// (`Duration::MAX`) waits as long as the kernel retries, as `connect` does.
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        nanos(Some(timeout))?;
        TcpStream::connect_within(*addr, Some(timeout))
    }

    fn connect_within(addr: SocketAddr, timeout: Option<Duration>) -> io::Result<TcpStream> {
        let stream = TcpStream::new(mio::net::TcpStream::connect(addr)?);
        // A non-blocking connect finishes when the socket turns writable: then either it has a peer, or an
        // error says why not.
        stream.socket.io(Readiness::Writable, timeout, |s| {
            if let Some(e) = s.take_error()? {
                return Err(e);
            }
            match s.peer_addr() {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => Err(io::ErrorKind::WouldBlock.into()),
                Err(e) => Err(e),
            }
        })?;
        Ok(stream)
    }

    /// Takes a connection made by `std` (it is switched to non-blocking mode). The mode belongs to the open
    /// socket, not to the handle: a std clone of it (`try_clone`, made before) turns non-blocking too, and its
    /// reads and writes then say `WouldBlock` instead of waiting.
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        stream.set_nonblocking(true)?;
        Ok(TcpStream::new(mio::net::TcpStream::from_std(stream)))
    }

    /// A second handle to the same connection (a new file descriptor, `dup`), as std's `try_clone`: a fiber may
    /// read through one while another writes through the other, on any worker, and the connection stays open
    /// until both are dropped. Unlike std's clones, each handle has its own timeouts (the clone starts with
    /// this one's).
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        let fd = self.socket.io.as_fd().try_clone_to_owned()?;
        Ok(TcpStream {
            socket: Socket::new(mio::net::TcpStream::from_std(fd.into())),
            read_timeout: AtomicU64::new(self.read_timeout.load(Ordering::Relaxed)),
            write_timeout: AtomicU64::new(self.write_timeout.load(Ordering::Relaxed)),
        })
    }

    /// The address of the peer.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.socket.io.peer_addr()
    }

    /// The address of this end.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.io.local_addr()
    }

    /// Sets `TCP_NODELAY` (no Nagle delay for small writes).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.socket.io.set_nodelay(nodelay)
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.socket.io.nodelay()
    }

    /// A read waiting longer than `timeout` fails with [`io::ErrorKind::TimedOut`] — where std's sockets on
    /// Linux say `WouldBlock` — on a plain thread as in a fiber; `None` waits for ever. A zero duration is an
    /// `InvalidInput` error, as in `std`. A read already waiting keeps the timeout it began with (as Linux's
    /// `SO_RCVTIMEO` does); the new one applies from the next call. One past 584 years is none, as
    /// `Duration::MAX` is for std.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.read_timeout.store(nanos(timeout)?, Ordering::Relaxed);
        Ok(())
    }

    /// The timeout of reads, if any.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(duration(self.read_timeout.load(Ordering::Relaxed)))
    }

    /// A write waiting longer than `timeout` fails with [`io::ErrorKind::TimedOut`] (std on Linux:
    /// `WouldBlock`); otherwise as [`set_read_timeout`](TcpStream::set_read_timeout).
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.write_timeout.store(nanos(timeout)?, Ordering::Relaxed);
        Ok(())
    }

    /// The timeout of writes, if any.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(duration(self.write_timeout.load(Ordering::Relaxed)))
    }

    /// Shuts down the read half, the write half, or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.socket.io.shutdown(how)
    }

    /// The pending socket error (`SO_ERROR`), cleared by the call.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.socket.io.take_error()
    }

    fn reading<R>(&self, op: impl FnMut(&mio::net::TcpStream) -> io::Result<R>) -> io::Result<R> {
        let timeout = duration(self.read_timeout.load(Ordering::Relaxed));
        self.socket.io(Readiness::Readable, timeout, op)
    }

    fn writing<R>(&self, op: impl FnMut(&mio::net::TcpStream) -> io::Result<R>) -> io::Result<R> {
        let timeout = duration(self.write_timeout.load(Ordering::Relaxed));
        self.socket.io(Readiness::Writable, timeout, op)
    }
}

impl Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reading(|mut s| s.read(buf))
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.reading(|mut s| s.read_vectored(bufs))
    }
}

impl Write for &TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writing(|mut s| s.write(buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.writing(|mut s| s.write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(()) // nothing is buffered here
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&*self).read_vectored(bufs)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.io.as_raw_fd()
    }
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.io.as_fd()
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.io.as_raw_fd()
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.io.as_fd()
    }
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("addr", &self.local_addr().ok())
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("addr", &self.local_addr().ok())
            .field("peer", &self.peer_addr().ok())
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

/// `op` on each address of `addr` until one works; the last error otherwise.
fn each_addr<T>(addr: impl ToSocketAddrs, mut op: impl FnMut(SocketAddr) -> io::Result<T>) -> io::Result<T> {
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match op(a) {
            Ok(t) => return Ok(t),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to use")))
}

fn nanos(timeout: Option<Duration>) -> io::Result<u64> {
    match timeout {
        None => Ok(0),
        Some(Duration::ZERO) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot set a 0 duration timeout",
        )),
        // Past 584 years (what the nanoseconds can count): none, a wait as endless. std reads `Duration::MAX`
        // back as `None` too: Linux stores so long an `SO_RCVTIMEO` as no timeout.
        Some(t) => Ok(u64::try_from(t.as_nanos()).unwrap_or(0)),
    }
}

fn duration(nanos: u64) -> Option<Duration> {
    (nanos != 0).then(|| Duration::from_nanos(nanos))
}
