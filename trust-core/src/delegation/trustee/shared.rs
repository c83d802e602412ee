//! The part of a trustee that other threads see: its mailbox (new channels, fibers to start and to wake,
//! records from clients whose slot was busy), its parker, and its run state.

use std::collections::HashSet;
use std::fmt;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::delegation::protocol::channel::Channel;
use crate::delegation::trustee::metrics::Metrics;
use crate::delegation::protocol::parker::Parker;
use crate::delegation::stack::FiberStack;

pub(crate) enum Mail {
    Register(Arc<Channel>),
    /// A record from a plain thread whose slot was busy (see `client::post`).
    Run(Box<dyn FnOnce() + Send>),
    Spawn(FiberStack, Box<dyn FnOnce() + Send>),
    Wake(usize),
}

const RUNNING: u8 = 0;
const CLOSING: u8 = 1;
const CLOSED: u8 = 2;

pub(crate) const SHUT_DOWN: &str = "the trust runtime has been shut down: no property can be entrusted or applied to after `Runtime::shutdown`";

/// The part of a worker that other threads see.
pub(crate) struct TrusteeShared {
    index: usize,
    state: AtomicU8,
    parker: OnceLock<Arc<Parker>>,
    mail: Mutex<Vec<Mail>>,
    has_mail: AtomicBool,
    /// The sockets registered in this worker's epoll set (`worker::reactor`): each is removed before it is
    /// closed, so the set never names a reused fd, and at shutdown they are shut down.
    pub(crate) sockets: Mutex<HashSet<RawFd>>,
    /// What the worker counts about itself (written by the worker only).
    pub(crate) metrics: Metrics,
}

impl fmt::Debug for TrusteeShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrusteeShared")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl TrusteeShared {
    pub(crate) fn new(index: usize) -> Self {
        TrusteeShared {
            index,
            state: AtomicU8::new(RUNNING),
            parker: OnceLock::new(),
            mail: Mutex::new(Vec::new()),
            has_mail: AtomicBool::new(false),
            sockets: Mutex::default(),
            metrics: Metrics::default(),
        }
    }

    #[inline]
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    pub(crate) fn set_parker(&self, parker: Arc<Parker>) {
        self.parker.set(parker).expect("a worker starts once");
    }

    pub(crate) fn is_started(&self) -> bool {
        self.parker.get().is_some()
    }

    /// Wakes the worker if it sleeps; called after giving it work.
    #[inline]
    pub(crate) fn wake(&self) {
        if let Some(p) = self.parker.get() {
            p.wake();
        }
    }

    fn send(&self, mail: Mail) {
        let mut queue = self.mail.lock().unwrap_or_else(|e| e.into_inner());
        queue.push(mail);
        self.has_mail.store(true, Ordering::Release);
        drop(queue);
        self.wake();
    }

    pub(crate) fn register(&self, channel: Arc<Channel>) {
        self.send(Mail::Register(channel));
    }

    pub(crate) fn spawn_fiber(&self, stack: FiberStack, job: Box<dyn FnOnce() + Send>) {
        self.check_running();
        self.send(Mail::Spawn(stack, job));
    }

    pub(crate) fn run_later(&self, f: Box<dyn FnOnce() + Send>) {
        self.send(Mail::Run(f));
    }

    pub(crate) fn wake_fiber(&self, id: usize) {
        self.send(Mail::Wake(id));
    }

    pub(crate) fn has_mail(&self) -> bool {
        self.has_mail.load(Ordering::Acquire)
    }

    pub(crate) fn take_mail(&self) -> Vec<Mail> {
        if !self.has_mail() {
            return Vec::new();
        }
        // Cleared before taking: mail sent after the take sets it again.
        self.has_mail.store(false, Ordering::Relaxed);
        std::mem::take(&mut *self.mail.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn is_running(&self) -> bool {
        self.state.load(Ordering::Acquire) == RUNNING
    }

    #[inline]
    pub(crate) fn check_running(&self) {
        assert!(self.is_running(), "{SHUT_DOWN}");
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.state.load(Ordering::Acquire) != RUNNING
    }

    /// True once the worker has stopped serving: nothing sent to it will be answered.
    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) == CLOSED
    }

    pub(crate) fn begin_close(&self) {
        let _ = self
            .state
            .compare_exchange(RUNNING, CLOSING, Ordering::AcqRel, Ordering::Acquire);
        self.wake();
    }

    pub(crate) fn mark_closed(&self) {
        self.state.store(CLOSED, Ordering::Release);
    }
}
