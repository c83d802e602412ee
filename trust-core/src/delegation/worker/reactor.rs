//! A worker's sockets: one `mio::Poll` per worker, in which the fibers of that worker wait for their sockets
//! (`api::net`). While a fiber waits, the worker polls it without blocking after each busy turn (not in its
//! idle rounds: those make no system call), and once idle (after `IO_SPIN` rounds) it sleeps in it, so a
//! ready socket wakes the worker as a request does (`Parker::polling`).
//!
//! Sockets are registered edge-triggered, for reading and writing, the first time a fiber of this worker
//! waits on one; a fiber waits only after the operation said `WouldBlock`, so an edge is never missed: data
//! that arrived before it was read by that operation, data after it makes a new edge (and an fd already ready
//! when registered is reported at once). A socket lives in the epoll set of every worker where it waited until
//! it is closed, which removes it from all of them — unless a clone of its fd keeps the open file alive: then
//! the registration stays until that closes too (its events may wake a fiber waiting on a socket that took
//! the number since, which retries its operation), and is taken over if the file comes back under the
//! number. Timeouts are a heap of deadlines beside the waits; a fiber in `trust_core::sleep` waits for its
//! deadline alone.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Poll, Token};

use crate::delegation::trustee::shared::{self, TrusteeShared};
use crate::delegation::worker::fiber::{self, Scheduler};

/// The token of the waker that ends the worker's sleep (`Parker::polling`); sockets use their fd.
const WAKER: Token = Token(usize::MAX);

/// The longest sleep of a worker whose epoll set failed (see `Reactor::poll`): wake-ups no longer reach it, so
/// it looks for work this often.
const NAP_WITHOUT_EPOLL: Duration = Duration::from_millis(1);

/// What a fiber waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Readiness {
    Readable,
    Writable,
}

#[derive(Debug)]
struct Wait {
    /// The socket and what for; `None` for a fiber that only waits for its deadline (`trust_core::sleep`).
    socket: Option<(RawFd, Readiness)>,
    /// Tells this wait's deadline from an older one of the same fiber still in the heap.
    ticket: u64,
    /// Whether the wait put a deadline in the heap.
    deadline: bool,
}

pub(crate) struct Reactor {
    poll: RefCell<Poll>,
    events: RefCell<Events>,
    /// The wait of each suspended fiber, by fiber id.
    waits: RefCell<Vec<Option<Wait>>>,
    /// The fibers waiting on each fd. Entries stay when empty: their capacity serves the next wait on that fd
    /// number (there are as many entries as fd numbers ever waited on, at most).
    by_fd: RefCell<HashMap<RawFd, Vec<usize>>>,
    /// Deadlines, earliest first: (when, ticket, fiber).
    deadlines: RefCell<BinaryHeap<Reverse<(Instant, u64, usize)>>>,
    /// Deadlines in the heap whose waits ended first (their socket became ready): removed in bulk once they
    /// are half the heap, not left until they pass (a read with a 60 s timeout would hold 32 bytes for 60 s).
    stale: Cell<usize>,
    tickets: Cell<u64>,
    waiting: Cell<usize>,
    /// `epoll_wait` failed (see `poll`): said once.
    failed: Cell<bool>,
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("waiting", &self.waiting.get())
            .finish_non_exhaustive()
    }
}

impl Reactor {
    /// A reactor and the waker that interrupts its `sleep`.
    pub(crate) fn new() -> io::Result<(Reactor, mio::Waker)> {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let reactor = Reactor {
            poll: RefCell::new(poll),
            events: RefCell::new(Events::with_capacity(256)),
            waits: RefCell::default(),
            by_fd: RefCell::default(),
            deadlines: RefCell::default(),
            stale: Cell::new(0),
            tickets: Cell::new(0),
            waiting: Cell::new(0),
            failed: Cell::new(false),
        };
        Ok((reactor, waker))
    }

    /// Adds `fd` to this worker's epoll set, unless it is there; true if it was added. The caller remembers
    /// where its socket was added, and calls `forget` for each before closing the fd.
    pub(crate) fn register(&self, shared: &TrusteeShared, fd: RawFd) -> io::Result<bool> {
        let mut sockets = shared.sockets.lock().unwrap_or_else(|e| e.into_inner());
        if !sockets.insert(fd) {
            return Ok(false);
        }
        let interest = mio::Interest::READABLE | mio::Interest::WRITABLE;
        let token = Token(fd as usize);
        let registry = self.poll.borrow();
        let registry = registry.registry();
        let done = match registry.register(&mut SourceFd(&fd), token, interest) {
            // Epoll keys a registration by (fd number, open file) and drops it only when the file closes: a
            // clone of the fd (`as_fd().try_clone_to_owned()`) keeps it after its socket was forgotten here,
            // and the file may come back under the same number. That registration has this token and
            // interest; re-arming it reports a readiness that is already there, as a new one would.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                registry.reregister(&mut SourceFd(&fd), token, interest)
            }
            done => done,
        };
        match done {
            Ok(()) => Ok(true),
            Err(e) => {
                sockets.remove(&fd);
                Err(e)
            }
        }
    }

    /// Suspends fiber `id` of this worker until `fd` (registered here) may be ready for `readiness`, or
    /// `deadline` passes; the caller retries its operation either way.
    pub(crate) fn wait(&self, id: usize, fd: RawFd, readiness: Readiness, deadline: Option<Instant>) {
        self.suspend(id, Some((fd, readiness)), deadline);
    }

    /// Suspends fiber `id` of this worker until `deadline` (`None`: until the runtime abandons it).
    pub(crate) fn sleep_until(&self, id: usize, deadline: Option<Instant>) {
        self.suspend(id, None, deadline);
    }

    fn suspend(&self, id: usize, socket: Option<(RawFd, Readiness)>, deadline: Option<Instant>) {
        let ticket = self.tickets.get() + 1;
        self.tickets.set(ticket);
        {
            let mut waits = self.waits.borrow_mut();
            if waits.len() <= id {
                waits.resize_with(id + 1, || None);
            }
            waits[id] = Some(Wait {
                socket,
                ticket,
                deadline: deadline.is_some(),
            });
        }
        if let Some((fd, _)) = socket {
            self.by_fd.borrow_mut().entry(fd).or_default().push(id);
        }
        if let Some(at) = deadline {
            self.deadlines.borrow_mut().push(Reverse((at, ticket, id)));
        }
        self.waiting.set(self.waiting.get() + 1);
        fiber::suspend();
    }

    /// True while a fiber waits on a socket or a deadline.
    pub(crate) fn is_waiting(&self) -> bool {
        self.waiting.get() > 0
    }

    /// One turn of the worker loop: wakes the fibers whose sockets are ready or whose deadline passed,
    /// without blocking. True if any woke.
    pub(crate) fn turn(&self, scheduler: &Scheduler) -> bool {
        self.is_waiting() && self.poll(scheduler, Some(Duration::ZERO))
    }

    /// The worker's sleep (see `Parker::polling`): until a socket is ready, the waker fires, the next deadline,
    /// or `timeout`.
    pub(crate) fn sleep(&self, scheduler: &Scheduler, timeout: Duration) {
        let next = self.deadlines.borrow().peek().map(|Reverse((at, ..))| *at);
        let timeout = next.map_or(timeout, |at| timeout.min(at.saturating_duration_since(Instant::now())));
        self.poll(scheduler, Some(timeout));
    }

    fn poll(&self, scheduler: &Scheduler, timeout: Option<Duration>) -> bool {
        let mut woke = false;
        let mut events = self.events.borrow_mut();
        match self.poll.borrow_mut().poll(&mut events, timeout) {
            Ok(()) => {}
            // A signal, or a wake-up lost to nothing: the loop comes back.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return false,
            // The epoll set is gone: closed behind the runtime's back (EBADF), as a daemon closing every
            // inherited descriptor does, which breaks I/O safety. The worker must not end (its clients would
            // wait forever), so it naps instead: requests are still served, each within a nap; deadlines still
            // fire; a fiber waiting for a socket's readiness is woken only by its deadline, if it has one.
            Err(e) => {
                if !self.failed.replace(true) {
                    eprintln!(
                        "trust: a worker's epoll_wait failed ({e}): were the runtime's descriptors closed? The worker \
                         now sleeps {NAP_WITHOUT_EPOLL:?} at a time and no socket wakes its fibers"
                    );
                }
                if let Some(timeout) = timeout.filter(|t| !t.is_zero()) {
                    std::thread::sleep(timeout.min(NAP_WITHOUT_EPOLL));
                }
                events.clear();
            }
        }
        for event in events.iter() {
            if event.token() == WAKER {
                continue;
            }
            // Errors and hang-ups wake both sides: their operation reports it.
            let failed = event.is_error();
            let readable = failed || event.is_readable() || event.is_read_closed();
            let writable = failed || event.is_writable() || event.is_write_closed();
            let mut by_fd = self.by_fd.borrow_mut();
            let Some(fibers) = by_fd.get_mut(&(event.token().0 as RawFd)) else {
                continue;
            };
            let mut waits = self.waits.borrow_mut();
            fibers.retain(|&id| {
                let wanted = match waits[id].as_ref().and_then(|w| w.socket).map(|(_, r)| r) {
                    Some(Readiness::Readable) => readable,
                    Some(Readiness::Writable) => writable,
                    None => false,
                };
                if wanted {
                    if waits[id].take().is_some_and(|w| w.deadline) {
                        self.stale.set(self.stale.get() + 1);
                    }
                    self.woke(scheduler, id);
                    woke = true;
                }
                !wanted
            });
        }
        drop(events);
        self.drop_stale();
        if !self.deadlines.borrow().is_empty() {
            let now = Instant::now();
            loop {
                let mut deadlines = self.deadlines.borrow_mut();
                match deadlines.peek() {
                    Some(&Reverse((at, ticket, id))) if at <= now => {
                        deadlines.pop();
                        drop(deadlines);
                        let current = self.waits.borrow()[id].as_ref().is_some_and(|w| w.ticket == ticket);
                        if current {
                            self.wake(scheduler, id);
                            woke = true;
                        } else {
                            self.stale.set(self.stale.get().saturating_sub(1));
                        }
                    }
                    _ => break,
                }
            }
        }
        woke
    }

    /// Removes the deadlines of waits that ended otherwise, once they are at least half the heap (and more
    /// than a few): amortized, each costs its share of one pass over the heap.
    fn drop_stale(&self) {
        let stale = self.stale.get();
        if stale < 64 || 2 * stale < self.deadlines.borrow().len() {
            return;
        }
        let waits = self.waits.borrow();
        self.deadlines
            .borrow_mut()
            .retain(|Reverse((_, ticket, id))| waits[*id].as_ref().is_some_and(|w| w.ticket == *ticket));
        self.stale.set(0);
    }

    /// Ends fiber `id`'s wait at its deadline (the wait is taken: it ends once).
    fn wake(&self, scheduler: &Scheduler, id: usize) {
        let Some(wait) = self.waits.borrow_mut()[id].take() else {
            return;
        };
        if let Some((fd, _)) = wait.socket
            && let Some(fibers) = self.by_fd.borrow_mut().get_mut(&fd)
        {
            fibers.retain(|&f| f != id);
        }
        self.woke(scheduler, id);
    }

    fn woke(&self, scheduler: &Scheduler, id: usize) {
        self.waiting.set(self.waiting.get() - 1);
        scheduler.make_ready(id);
    }
}

/// Before `fd` is closed: no worker may think it registered (a new socket may reuse the number).
///
/// Not in a child forked after the runtime started: it has no workers, so nothing reads the set again, and a
/// parent's thread may have held its lock at the fork (a fiber registering, a socket dropped elsewhere), which
/// nothing would ever release there: the drop of a socket a fiber had waited on hung the child (review 68).
pub(crate) fn forget(shared: &TrusteeShared, fd: RawFd) {
    if shared::in_forked_child() {
        return;
    }
    shared.sockets.lock().unwrap_or_else(|e| e.into_inner()).remove(&fd);
}

/// At shutdown: every socket a fiber of this worker waited on is shut down, so listeners stop accepting and
/// peers see the connection end (the fibers themselves are abandoned, see `Scheduler::abandon`).
pub(crate) fn shut_down_sockets(shared: &TrusteeShared) {
    let sockets = shared.sockets.lock().unwrap_or_else(|e| e.into_inner());
    for &fd in sockets.iter() {
        // SAFETY: `fd` is open: a socket is removed from this set (under this lock) before it is closed.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
}

/// Deepens the backlog of the listening socket `fd` to the kernel's cap (`net.core.somaxconn`, 4096 by
/// default), from the 128 that mio (like std) asks for: a burst of connections then waits in the queue until
/// the accepting fiber runs, instead of having SYNs dropped and retried a second later. It asks for
/// `i32::MAX`, which Linux cuts to the cap, not for `libc::SOMAXCONN`: that is 128 on musl, and below the cap
/// wherever the sysctl was raised.
pub(crate) fn deepen_backlog(fd: RawFd) -> io::Result<()> {
    // SAFETY: `fd` is an open socket the caller owns; on Linux a second `listen` only sets the backlog.
    match unsafe { libc::listen(fd, i32::MAX) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Blocks the calling (plain) thread until `fd` may be ready for `readiness`, or `timeout` passes. False on
/// timeout.
pub(crate) fn block_on(fd: RawFd, readiness: Readiness, timeout: Option<Duration>) -> io::Result<bool> {
    let events = match readiness {
        Readiness::Readable => libc::POLLIN,
        Readiness::Writable => libc::POLLOUT,
    };
    let mut pollfd = libc::pollfd { fd, events, revents: 0 };
    let millis = timeout.map_or(-1, |t| {
        // Rounded up: a timeout of 0.5 ms must not poll with 0 (which would not wait at all).
        i32::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX)
    });
    // SAFETY: one valid `pollfd`, count 1.
    match unsafe { libc::poll(&mut pollfd, 1, millis) } {
        -1 => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted { Ok(true) } else { Err(e) }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}
