//! The part of a trustee that other threads see: its mailbox (new channels, fibers to start and to wake,
//! records from clients whose slot was busy), its count mail, its parker, and its run state.
//!
//! Laid out by who writes what: the run state and the parker, which every client reads on every call, are
//! never written on the hot path; the mailbox (written by senders) and the metrics (written by the worker
//! once per batch) each have cache lines of their own, so neither makes those reads miss.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::os::fd::RawFd;
use std::ops::Deref;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use crate::delegation::protocol::channel::Channel;
use crate::delegation::protocol::cold::Doorbell;
use crate::delegation::trustee::metrics::Metrics;
use crate::delegation::trustee::property::{Header, SendPtr};
use crate::delegation::trustee::relay::Relay;
use crate::delegation::trustee::unwind;
use crate::delegation::protocol::parker::Parker;
use crate::delegation::stack::FiberStack;

pub(crate) enum Mail {
    Register(Arc<Channel>),
    /// A record from a plain thread whose slot was busy (see `call::post`), or an `apply_async` request
    /// (`trustee::oneshot`), in its mail node.
    Run(Runnable),
    Spawn(FiberStack, Box<dyn FnOnce() + Send>, Weak<dyn Abandon>),
    Wake(usize),
    /// Count changes wait in the count mail (`TrusteeShared::count_later`).
    Counts,
    /// Count changes taken out of the count mail out of turn (by a retire, see `Worker::retire`).
    Counted(Counted),
}

/// Count changes taken from the count mail: the net change of each property, and how many changes they were
/// (each a request served, in the metrics).
#[derive(Default)]
pub(crate) struct Counted {
    pub(crate) deltas: HashMap<SendPtr<Header>, isize>,
    pub(crate) changes: u64,
}

/// A fiber's handle, seen from the worker that runs the fiber: if the runtime abandons the fiber suspended (at
/// shutdown, see `Scheduler::abandon`), `abandon` completes the handle with the shutdown panic, so that a
/// `join` waiting for it returns. Held weakly: the handle's result must be dropped where it always was (by the
/// fiber, or by the handle), not by the scheduler.
pub(crate) trait Abandon: Send + Sync {
    fn abandon(&self);
}

const RUNNING: u8 = 0;
const CLOSING: u8 = 1;
const CLOSED: u8 = 2;

pub(crate) const SHUT_DOWN: &str = "the trust runtime has been shut down: no property can be entrusted or applied to after `Runtime::shutdown`";

/// Why the runtime does not run in a process forked after it started (`TrusteeShared::close_in_forked_child`).
pub(crate) const IN_FORKED_CHILD: &str = "the trust runtime does not run in a process forked after it started: \
     `fork` copies only the calling thread, not the runtime's workers, so nothing would ever serve this request. \
     A forked child should only `exec` or `_exit`; start the runtime after forking, or spawn the child with \
     `std::process::Command`";

/// Set in a child process forked after the runtime started (see `TrusteeShared::close_in_forked_child`).
static FORKED: AtomicBool = AtomicBool::new(false);

/// True in a process forked after the runtime started. Inlined: it is looked at after every delegated
/// closure, and out of line it was a call through the global offset table per record on the trustee.
#[inline]
pub(crate) fn in_forked_child() -> bool {
    FORKED.load(Ordering::Relaxed)
}

/// Ends a forked child whose worker thread has just returned from user code that forked (a delegated closure,
/// a value's destructor, an `apply_then` continuation): going on, the copy of the worker would run the rest of
/// the parent's requests and drop the parent's values a second time, in the child (review 62). One relaxed
/// load where nothing forked.
#[inline]
pub(crate) fn end_if_forked() {
    if in_forked_child() {
        returned_in_forked_child();
    }
}

#[cold]
#[inline(never)]
fn returned_in_forked_child() -> ! {
    eprintln!("trust: user code that forked returned to a worker in the child: {IN_FORKED_CHILD}");
    std::process::abort();
}

/// Panics naming `fork` in a child forked after the runtime started, for a caller about to wait or to touch a
/// value (a fiber about to suspend, register a socket or apply inline; a thread about to park): nothing would
/// ever wake it there, and the value is the child's copy of the parent's. One relaxed load where nothing
/// forked.
#[inline]
pub(crate) fn panic_if_forked() {
    if in_forked_child() {
        waited_in_forked_child();
    }
}

#[cold]
#[inline(never)]
fn waited_in_forked_child() -> ! {
    panic!("{IN_FORKED_CHILD}");
}

/// The message of a request refused, or a wait ended, because its trustee is closed: shut down, or left behind
/// by a `fork`.
pub(crate) fn closed_message(shut_down: &'static str) -> &'static str {
    if in_forked_child() { IN_FORKED_CHILD } else { shut_down }
}

/// Raises the runtime's panic `message` for a caller that holds what the user gave it (a request, a closure, a
/// value to entrust), dropping that first, unrun, with a destructor's panic contained. Raised with it still
/// alive, the unwind dropped it, and a capture whose destructor panicked then aborted the process (a panic in a
/// destructor during cleanup). The panic names the caller's line, as the caller's own would (`spawn` is
/// `#[track_caller]`).
#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn refuse<V>(given: V, message: &str) -> ! {
    refused(unwind::drop_quietly(given), message)
}

/// `refuse` for a call given two things (a closure and its continuation), dropped each on its own: dropped
/// together, a panic in the second's destructor while the first's unwinds would abort the process.
#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn refuse_both<A, B>(a: A, b: B, message: &str) -> ! {
    refused(unwind::drop_quietly(a) | unwind::drop_quietly(b), message)
}

/// The rest of `refuse` once what it was given is dropped, not generic (one copy for every type refused).
#[cold]
#[inline(never)]
#[track_caller]
fn refused(drop_panicked: bool, message: &str) -> ! {
    if drop_panicked {
        eprintln!("trust: what a refused call was given (a capture, a value) panicked when dropped");
    }
    panic!("{message}");
}

/// The part of a worker that other threads see.
pub(crate) struct TrusteeShared {
    index: usize,
    state: AtomicU8,
    parker: OnceLock<Arc<Parker>>,
    mail: Aligned<Mailbox>,
    counts: Aligned<Mutex<CountMail>>,
    /// Set by a sender after its change, when clear; cleared by the worker before it takes the changes. On a
    /// line of its own: the worker reads it often while changes come, and the lock's line stays the
    /// sender's meanwhile.
    counts_pending: Aligned<AtomicBool>,
    /// The sockets registered in this worker's epoll set (`worker::reactor`): each is removed before it is
    /// closed, so the set never names a reused fd, and at shutdown they are shut down.
    pub(crate) sockets: Mutex<HashSet<RawFd>>,
    /// What the worker counts about itself (written by the worker only).
    pub(crate) metrics: Aligned<Metrics>,
    /// Wakers of answered `apply_async` tasks, for their executors to wake (`trustee::relay`).
    pub(crate) relay: Aligned<Relay>,
    /// Rung by clients that publish on a channel the worker no longer looks at every round
    /// (`protocol::cold`); the worker reads it once per round.
    pub(crate) doorbell: Aligned<Doorbell>,
    /// Registrations of properties entrusted from other threads that have not run yet (`Trustee::entrust`).
    registering: Aligned<AtomicUsize>,
}

/// Registrations queued for one trustee past which an `entrust` that can wait makes its own a blocking request
/// (`Trustee::entrust`): a burst of ordinary size never waits, and the values queued behind their
/// registrations stay few.
pub(crate) const REGISTERING_MAX: usize = 256;

/// Reference-count changes that found no room in their sender's slot (`call::count`), netted per property
/// until the worker takes them: a million clone/drop pairs from a client that its trustee cannot keep up with
/// take one entry, not a million records (flow control without waiting: `Clone` and `Drop` cannot wait).
/// One `Mail::Counts` announces them, so the worker reads them in turn with its other mail, and a retired
/// property waits for them as for any mail (`Worker::retire`): a change issued before a handle escaped is in
/// the map, or already counted, before anything the escape leads to.
#[derive(Default)]
struct CountMail {
    counted: Counted,
    /// A `Mail::Counts` is on its way (or its sender is about to send it), or the worker looks at the map
    /// now and then anyway (`poll_counts`): a new change needs no mail. (So a change can be in the map before
    /// its announcement is in the mailbox: a retire takes the map itself, see `Worker::retire`.)
    announced: bool,
}

/// A value on cache lines of its own (two: the adjacent-line prefetcher pairs them).
#[repr(align(128))]
#[derive(Default)]
pub(crate) struct Aligned<T>(T);

impl<T> Deref for Aligned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Mail from any thread to the worker: a stack that senders push onto without waiting (one swap; two tokio
/// threads mailing `apply_async` requests no longer take turns on a mutex) and the worker empties in one swap,
/// then reverses, so mail arrives in the order it was pushed (each sender's in its own order).
/// A node holds its payload inline: a mailed record is one allocation, not a box in a node.
///
/// A sender links its node to the older one *after* its swap, with the pointer the swap returned. The usual
/// push (write the link, then compare-and-swap the head) is open to ABA: a sender that read head `H` and was
/// preempted could find the head at `H`'s address again after the worker took and freed `H` and a new node
/// took its place, and its compare-and-swap would succeed with a link that points at the new node but carries
/// the freed node's provenance (undefined behaviour; Miri found it). The price, as in Vyukov's queue (and
/// `futures::channel::mpsc`): a sender's link is written one instruction after its swap, and a sender
/// descheduled between the two leaves a taker a list it cannot walk past that node yet. The worker's loop then
/// holds what it took ([`HeldMail`]), serves everything else meanwhile, and yields its core once a round while
/// it holds (the sender may be waiting for that core); the other takers (a retire's, the shutdown's last take,
/// a sender's after the close) wait for the link, spinning, then yielding (`MailHeader::older`).
#[derive(Default)]
struct Mailbox {
    head: AtomicPtr<MailHeader>,
}

/// The start of every node: the next (older) node, and how to turn this node into its [`Mail`]. A node made
/// elsewhere (`trustee::oneshot`) starts with one too, and goes in with [`TrusteeShared::mail_node`].
#[repr(C)]
pub(crate) struct MailHeader {
    next: AtomicPtr<MailHeader>,
    open: unsafe fn(*mut MailHeader) -> Mail,
}

/// A node's link before its sender writes it (see `Mailbox`): the address of a static, never a node's.
static UNLINKED_MARK: u8 = 0;

fn unlinked() -> *mut MailHeader {
    ptr::from_ref(&UNLINKED_MARK).cast_mut().cast()
}

impl MailHeader {
    /// The header of a node that `open` turns into its mail.
    pub(crate) fn new(open: unsafe fn(*mut MailHeader) -> Mail) -> Self {
        MailHeader {
            next: AtomicPtr::new(unlinked()),
            open,
        }
    }

    /// The older node `node` links to, once its sender has written the link: a sender descheduled between its
    /// swap and its link keeps the taker waiting (spinning briefly, then yielding the core); `None` after the
    /// spinning if not `patient`. (A child process forked at that moment has no such sender:
    /// `close_in_forked_child` empties the mailbox.)
    ///
    /// # Safety
    /// `node` is a node the caller took out of the mailbox (its link possibly still unwritten), not yet
    /// opened.
    unsafe fn older(node: *mut MailHeader, patient: bool) -> Option<*mut MailHeader> {
        let mut spins = 0u32;
        loop {
            // SAFETY: by the contract the node is alive; Acquire: the older node's contents, which its sender
            // wrote before its own swap, were seen by this node's sender's swap before its Release store.
            let next = unsafe { (*node).next.load(Ordering::Acquire) };
            if next != unlinked() {
                return Some(next);
            }
            // Under Miri a spin hint lets the sender run: one, so its tests reach the held path.
            if spins < if cfg!(miri) { 1 } else { 64 } {
                spins += 1;
                std::hint::spin_loop();
            } else if patient {
                std::thread::yield_now();
            } else {
                return None;
            }
        }
    }
}

#[repr(C)]
struct Node<P> {
    header: MailHeader,
    payload: P,
}

/// A mailed record, still in its node; runs (or, dropped, drops) the record and frees the node once.
pub(crate) struct Runnable {
    node: *mut MailHeader,
    finish: unsafe fn(*mut MailHeader, bool),
}

// SAFETY: the node holds an `F: Send` (see `Mailbox::push_run`), owned by this value alone.
unsafe impl Send for Runnable {}

impl Runnable {
    /// # Safety
    /// `finish(node, true)` must be sound to call once from the worker's thread, and `finish(node, false)`
    /// from any thread (mail that arrives after the worker closed is dropped by its sender).
    pub(crate) unsafe fn new(node: *mut MailHeader, finish: unsafe fn(*mut MailHeader, bool)) -> Self {
        Runnable { node, finish }
    }

    pub(crate) fn run(self) {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: the node is this value's, and `this` is not dropped: finished once.
        unsafe { (this.finish)(this.node, true) }
    }
}

impl Drop for Runnable {
    fn drop(&mut self) {
        // SAFETY: as in `run`: a `Runnable` that did not run finishes here, once.
        unsafe { (self.finish)(self.node, false) }
    }
}

/// # Safety
/// `h` heads a `Node<Mail>` made by `push`, opened once.
unsafe fn open_mail(h: *mut MailHeader) -> Mail {
    // SAFETY: by the contract; the node is freed here.
    unsafe { Box::from_raw(h.cast::<Node<Mail>>()) }.payload
}

/// # Safety
/// `h` heads a `Node<F>` made by `push_run`, opened once.
unsafe fn open_run<F: FnOnce() + Send + 'static>(h: *mut MailHeader) -> Mail {
    /// # Safety
    /// `h` heads a `Node<F>` made by `push_run`, finished once.
    unsafe fn finish<F: FnOnce()>(h: *mut MailHeader, run: bool) {
        // SAFETY: by the contract; the node is freed here, after `F` runs or is dropped.
        let f = unsafe { Box::from_raw(h.cast::<Node<F>>()) }.payload;
        if run {
            f();
        }
    }
    Mail::Run(Runnable {
        node: h,
        finish: finish::<F>,
    })
}

// The mailbox hands mail to another thread: `Mail` must be `Send` (the raw pointers would not check it).
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Mail>();
};

impl Mailbox {
    fn push(&self, mail: Mail) {
        self.push_node(mail, open_mail);
    }

    fn push_run<F: FnOnce() + Send + 'static>(&self, f: F) {
        self.push_node(f, open_run::<F>);
    }

    fn push_node<P>(&self, payload: P, open: unsafe fn(*mut MailHeader) -> Mail) {
        let node = Box::into_raw(Box::new(Node {
            header: MailHeader::new(open),
            payload,
        }));
        // SAFETY: a fresh node, headed by its header, whose `open` fits it.
        unsafe { self.link(node.cast()) }
    }

    /// # Safety
    /// `node` heads a node that is the caller's to give, and `open` in its header turns it into its mail.
    unsafe fn link(&self, node: *mut MailHeader) {
        // Release: the taker of the node (Acquire) sees it written. Acquire: the older node's contents, which
        // this link passes on to the taker (see `MailHeader::older`). SeqCst (on x86 the same instruction): see
        // `TrusteeShared::mailed`.
        let older = self.head.swap(node, Ordering::SeqCst);
        // SAFETY: the node is alive until its taker opens it, and the taker reads this link first, waiting or
        // holding the node until it is written (`MailHeader::older`). Release: see `older`.
        unsafe { (*node).next.store(older, Ordering::Release) };
    }

    fn is_empty(&self) -> bool {
        self.head.load(Ordering::Acquire).is_null()
    }

    /// Everything pushed so far, oldest first.
    fn take(&self) -> Vec<Mail> {
        if self.is_empty() {
            return Vec::new();
        }
        self.take_now()
    }

    /// `take` without looking first: the swap is a `SeqCst` operation (see `TrusteeShared::mailed`).
    fn take_now(&self) -> Vec<Mail> {
        let list = self.head.swap(ptr::null_mut(), Ordering::SeqCst);
        // SAFETY: the swap took the list out of the stack: it is this thread's.
        unsafe { walk_all(list, Vec::new()) }
    }

    /// `take`, for the worker's loop: what it takes is held, not waited for, if a link in it is unwritten
    /// (see `Mailbox`), and nothing more is taken until the held mail's links are written (newer mail must not
    /// pass it). The first take that finds them written returns the held mail. The mail comes in `spare`, an
    /// empty vector whose capacity the loop reuses (a take of hundreds of `apply_async` requests grew a fresh
    /// one by doubling, each time); held mail comes in the vector its first walk filled, and `spare` is dropped.
    fn take_or_hold(&self, held: &mut Option<HeldMail>, spare: Vec<Mail>) -> Vec<Mail> {
        if let Some((newer, at)) = held.take().map(HeldMail::into_parts) {
            // SAFETY: `at` is the held list's rest, this taker's since its swap.
            return unsafe { walk(at, newer, false) }.unwrap_or_else(|again| {
                *held = Some(again);
                // Still unlinked a round later: its sender may be waiting for this core.
                std::thread::yield_now();
                Vec::new()
            });
        }
        if self.is_empty() {
            return spare;
        }
        let list = self.head.swap(ptr::null_mut(), Ordering::SeqCst);
        // SAFETY: the swap took the list out of the stack: it is this thread's.
        unsafe { walk(list, spare, false) }.unwrap_or_else(|stopped| {
            *held = Some(stopped);
            Vec::new()
        })
    }
}

/// Mail the worker's loop took whose walk stopped at a link its sender had not written yet: the mail opened
/// so far (newest first) and the node at which it stopped, not yet opened. Dropped, it waits for the rest and
/// drops it all unrun (the worker holds none past its close).
pub(crate) struct HeldMail {
    newer: Vec<Mail>,
    at: *mut MailHeader,
}

impl HeldMail {
    /// All of it, oldest first, once the links still unwritten are written (waiting for them).
    pub(crate) fn into_mail(self) -> Vec<Mail> {
        let (newer, at) = self.into_parts();
        // SAFETY: `at` is the held list's rest, this value's alone.
        unsafe { walk_all(at, newer) }
    }

    fn into_parts(self) -> (Vec<Mail>, *mut MailHeader) {
        let mut this = std::mem::ManuallyDrop::new(self);
        (std::mem::take(&mut this.newer), this.at)
    }
}

impl Drop for HeldMail {
    fn drop(&mut self) {
        // SAFETY: `at` is the held list's rest, this value's alone (`into_parts` does not drop it).
        drop_unrun(unsafe { walk_all(self.at, std::mem::take(&mut self.newer)) });
    }
}

/// Opens the nodes of a list taken out of the mailbox, from `node` on, after the mail in `newer` (newest
/// first), and returns all of it oldest first; or, not `patient`, stops at a link its sender has not written
/// yet and returns what it opened and where it stopped.
///
/// # Safety
/// `node` starts (the rest of) a list the caller took out of the mailbox, whose nodes are not yet opened.
unsafe fn walk(mut node: *mut MailHeader, mut newer: Vec<Mail>, patient: bool) -> Result<Vec<Mail>, HeldMail> {
    while !node.is_null() {
        // SAFETY: every node was linked with the `open` that fits it (`link`), and the list is the caller's:
        // each node is opened once, its link read first (opening may free the node).
        unsafe {
            let Some(older) = MailHeader::older(node, patient) else {
                return Err(HeldMail { newer, at: node });
            };
            newer.push(((*node).open)(node));
            node = older;
        }
    }
    newer.reverse();
    Ok(newer)
}

/// `walk`, waiting for every link.
///
/// # Safety
/// As for `walk`.
unsafe fn walk_all(node: *mut MailHeader, newer: Vec<Mail>) -> Vec<Mail> {
    // SAFETY: by the contract.
    match unsafe { walk(node, newer, true) } {
        Ok(mail) => mail,
        Err(_) => unreachable!("a patient walk waits for every link"),
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        drop(self.take());
    }
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
            mail: Aligned::default(),
            counts: Aligned::default(),
            counts_pending: Aligned::default(),
            sockets: Mutex::default(),
            metrics: Aligned::default(),
            relay: Aligned::default(),
            doorbell: Aligned::default(),
            registering: Aligned::default(),
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

    /// Called by `channel`'s client after it published a batch (or closed the channel): wakes the worker if it
    /// sleeps and, when the worker no longer looks at the channel every round, rings its doorbell. The mark is
    /// read after `wake`'s fence (see `protocol::cold`).
    #[inline]
    pub(crate) fn published(&self, channel: &Channel) {
        self.wake();
        if channel.cold.is_cold() {
            self.ring();
        }
    }

    /// Called by `channel`'s client after it announced records not yet published (`Outbox::linger`): rings
    /// the doorbell when the worker no longer looks at the channel, so that a retire, which reads only the
    /// channels it looks at (after answering the doorbell), sees the announcement. The same handshake as
    /// `published`'s, with `wake`'s fence and no wake. Out of line: once per batch, and its compiler fence
    /// would stop the caller's batch bookkeeping from staying in registers.
    #[inline(never)]
    pub(crate) fn announced(&self, channel: &Channel) {
        if let Some(p) = self.parker.get() {
            p.fence_light();
        }
        if channel.cold.is_cold() {
            self.ring();
        }
    }

    /// The ring is work for the worker as a batch is: a sleeping worker looks at the doorbell, not at its cold
    /// channels, before it sleeps, so the ring is followed by a `wake` (the handshake of `parker`).
    #[cold]
    #[inline(never)]
    fn ring(&self) {
        self.doorbell.ring();
        self.wake();
    }

    fn send(&self, mail: Mail) {
        self.mail.push(mail);
        self.mailed();
    }

    /// After mail was linked: wakes the worker; if it has closed already, it will never read the mail (its
    /// sender checked that the runtime ran just before the close began), so the mail is dropped here, unrun:
    /// an `apply_async` answers `None`, and its future panics naming the shutdown instead of waiting forever.
    /// The sender's swap, this load, and the worker's store of `CLOSED` and last take (`close_mailbox`) are all
    /// `SeqCst`, so in their one total order either that take comes after the swap and sees the mail (waiting
    /// for its link if need be), or this load comes after the store and sees `CLOSED`.
    fn mailed(&self) {
        self.wake();
        if self.state.load(Ordering::SeqCst) == CLOSED {
            drop_unrun(self.take_mail());
        }
    }

    /// Marks the trustee closed, then drops the mail that came after the worker's last read (see `mailed`).
    pub(crate) fn close_mailbox(&self) {
        self.state.store(CLOSED, Ordering::SeqCst);
        drop_unrun(self.mail.take_now());
    }

    pub(crate) fn register(&self, channel: Arc<Channel>) {
        self.send(Mail::Register(channel));
    }

    pub(crate) fn spawn_fiber(&self, stack: FiberStack, job: Box<dyn FnOnce() + Send>, handle: Weak<dyn Abandon>) {
        let job = self.check_running_holding(job);
        self.send(Mail::Spawn(stack, job, handle));
    }

    pub(crate) fn run_later<F: FnOnce() + Send + 'static>(&self, f: F) {
        self.mail.push_run(f);
        self.mailed();
    }

    /// Counts one more registration on its way to this trustee; true when `REGISTERING_MAX` were queued
    /// already.
    pub(crate) fn registering(&self) -> bool {
        self.registering.fetch_add(1, Ordering::Relaxed) >= REGISTERING_MAX
    }

    /// True when more than `REGISTERING_MAX` registrations are on their way to this trustee.
    pub(crate) fn registrations_behind(&self) -> bool {
        self.registering.load(Ordering::Relaxed) > REGISTERING_MAX
    }

    /// Counts a registration out, as it runs.
    pub(crate) fn registered(&self) {
        self.registering.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts `delta` handles of `h` in or out later, in the count mail (see `CountMail`).
    pub(crate) fn count_later(&self, h: SendPtr<Header>, delta: isize) {
        let announce = {
            let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
            let counted = &mut counts.counted;
            counted.changes += 1;
            let net = counted.deltas.entry(h).or_insert(0);
            *net += delta;
            if *net == 0 {
                counted.deltas.remove(&h);
            }
            !std::mem::replace(&mut counts.announced, true)
        };
        if announce {
            self.send(Mail::Counts);
        } else if !self.counts_pending.load(Ordering::Relaxed) {
            // After the unlock: a worker that cleared the flag before taking the lock either took this change
            // or sees the flag set again.
            self.counts_pending.store(true, Ordering::Release);
        }
    }

    /// The count changes mailed since the last take, for the worker that looks now and then while they come
    /// (one `Mail::Counts` per change, each an allocation and a wake, made a plain thread's clone/drop pair
    /// cost 600 ns). `None` when the flag says there are none; with `stop`, the map is looked at under the
    /// lock, and if it is empty the next change is announced by mail again.
    pub(crate) fn poll_counts(&self, stop: bool) -> Option<Counted> {
        if self.counts_pending.load(Ordering::Acquire) {
            self.counts_pending.store(false, Ordering::Relaxed);
        } else if !stop {
            return None;
        }
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.counted.changes == 0 {
            counts.announced = !stop;
            return None;
        }
        Some(std::mem::take(&mut counts.counted))
    }

    /// The count changes mailed so far, for the worker.
    pub(crate) fn take_counts(&self) -> Counted {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.announced = false;
        std::mem::take(&mut counts.counted)
    }

    /// Mails a node made by the caller (one allocation for a request and its answer: `trustee::oneshot`).
    ///
    /// # Safety
    /// As for `Mailbox::link`: `node` is the caller's to give, and its header's `open` fits it.
    pub(crate) unsafe fn mail_node(&self, node: *mut MailHeader) {
        // SAFETY: by the contract.
        unsafe { self.mail.link(node) };
        self.mailed();
    }

    pub(crate) fn wake_fiber(&self, id: usize) {
        self.send(Mail::Wake(id));
    }

    pub(crate) fn has_mail(&self) -> bool {
        !self.mail.is_empty()
    }

    /// The mail sent so far, oldest first.
    pub(crate) fn take_mail(&self) -> Vec<Mail> {
        self.mail.take()
    }

    /// The mail sent so far, oldest first, for the worker's loop, which holds it in `held` rather than wait
    /// for a sender that has not linked its mail yet (see `Mailbox`).
    pub(crate) fn take_mail_or_hold(&self, held: &mut Option<HeldMail>, spare: Vec<Mail>) -> Vec<Mail> {
        self.mail.take_or_hold(held, spare)
    }

    /// Wakes the tasks the trustee left on its relay (`Relay::drain`), as every `apply_async` poll does first.
    /// Not in a child forked after the runtime started: the worker (or a parent's executor thread) may have held
    /// the relay's lock at the fork, and nothing would release it there (review 68: a poll in the child hung
    /// instead of panicking naming `fork`); no task of the child's waits on a relay anyway.
    #[inline]
    pub(crate) fn drain_relay(&self) {
        if self.relay.is_pending() {
            self.drain_relay_unless_forked();
        }
    }

    #[cold]
    fn drain_relay_unless_forked(&self) {
        if !in_forked_child() {
            self.relay.drain();
        }
    }

    #[inline]
    pub(crate) fn is_running(&self) -> bool {
        self.state.load(Ordering::Acquire) == RUNNING
    }

    /// Panics with the shutdown's message once the runtime is shut down, dropping what the caller was given (a
    /// request, a closure) first, unrun ([`refuse`]); else gives it back.
    #[inline]
    pub(crate) fn check_running_holding<V>(&self, given: V) -> V {
        if !self.is_running() {
            refuse(given, closed_message(SHUT_DOWN));
        }
        given
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

    /// In the child of a `fork` (a `pthread_atfork` handler, before `fork` returns there): the worker thread
    /// was not copied, so the trustee is closed, as after a shutdown, and every call, and every wait for an
    /// answer, panics with [`IN_FORKED_CHILD`] at once instead of waiting forever; handles dropped there do
    /// nothing (the values are the parent's); its metrics stand still from the fork. Only atomics (and a clock
    /// read): async-signal-safe, as a fork handler must be.
    pub(crate) fn close_in_forked_child(&self) {
        FORKED.store(true, Ordering::Relaxed);
        self.state.store(CLOSED, Ordering::Release);
        self.metrics.stop_in_forked_child();
        // The parent's mail stays where it is, as its values do: a parent's sender may have been between its
        // swap and its link at the fork, and a child's take would wait for that link forever.
        self.mail.head.store(ptr::null_mut(), Ordering::Relaxed);
    }

}

/// Drops mail unrun (a trustee that has closed will never run it), each destructor's panic contained.
fn drop_unrun(mail: Vec<Mail>) {
    let panicked = mail.into_iter().fold(false, |p, mail| p | unwind::drop_quietly(mail));
    if panicked {
        eprintln!("trust: a request mailed to a trustee that had shut down panicked when dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Senders push concurrently while the worker takes (as its loop does, holding mail behind a link not yet
    /// written): nothing is lost or duplicated, and each sender's mail arrives in the order it was sent.
    #[test]
    fn mailbox_keeps_each_senders_order() {
        const SENDERS: usize = 3;
        const EACH: usize = if cfg!(miri) { 400 } else { 20_000 };
        let mailbox = Mailbox::default();
        let mut next = [0; SENDERS];
        std::thread::scope(|s| {
            for sender in 0..SENDERS {
                let mailbox = &mailbox;
                s.spawn(move || {
                    for i in 0..EACH {
                        mailbox.push(Mail::Wake(sender * EACH + i));
                    }
                });
            }
            let mut held = None;
            while next.iter().sum::<usize>() < SENDERS * EACH {
                for mail in mailbox.take_or_hold(&mut held, Vec::new()) {
                    let Mail::Wake(n) = mail else { unreachable!() };
                    let (sender, i) = (n / EACH, n % EACH);
                    assert_eq!(i, next[sender], "sender {sender}'s mail out of order");
                    next[sender] += 1;
                }
            }
        });
        assert!(mailbox.is_empty());
        assert_eq!(next, [EACH; SENDERS]);
    }

    /// A sender stopped between its swap and its link: the swap alone. Returns its node and the link to write.
    fn swap_only(mailbox: &Mailbox, mail: Mail) -> (*mut MailHeader, *mut MailHeader) {
        let node = Box::into_raw(Box::new(Node {
            header: MailHeader::new(open_mail),
            payload: mail,
        }))
        .cast::<MailHeader>();
        (node, mailbox.head.swap(node, Ordering::SeqCst))
    }

    fn woken(mail: Vec<Mail>) -> Vec<usize> {
        mail.into_iter()
            .map(|m| match m {
                Mail::Wake(n) => n,
                _ => unreachable!(),
            })
            .collect()
    }

    /// The worker's take holds mail whose walk meets an unwritten link, takes nothing newer meanwhile, and
    /// returns all of it, in order, once the link is written.
    #[test]
    fn a_take_holds_mail_behind_an_unwritten_link_until_it_is_written() {
        let mailbox = Mailbox::default();
        let mut held = None;
        mailbox.push(Mail::Wake(1));
        let (stopped, link) = swap_only(&mailbox, Mail::Wake(2));
        mailbox.push(Mail::Wake(3));
        assert!(woken(mailbox.take_or_hold(&mut held, Vec::new())).is_empty());
        assert!(held.is_some());
        mailbox.push(Mail::Wake(4));
        assert!(woken(mailbox.take_or_hold(&mut held, Vec::new())).is_empty(), "nothing passes held mail");
        // SAFETY: the node is alive: its walk stopped at it, unopened.
        unsafe { (*stopped).next.store(link, Ordering::Release) };
        assert_eq!(woken(mailbox.take_or_hold(&mut held, Vec::new())), [1, 2, 3]);
        assert!(held.is_none());
        assert_eq!(woken(mailbox.take_or_hold(&mut held, Vec::new())), [4]);
    }

    /// Held mail dropped (at shutdown) waits for the unwritten link, then drops every record once.
    #[test]
    fn held_mail_dropped_waits_for_its_link_and_drops_everything() {
        let dropped = Arc::new(());
        let mailbox = Mailbox::default();
        let d = dropped.clone();
        mailbox.push_run(move || drop(d));
        let d = dropped.clone();
        let (stopped, link) = swap_only(&mailbox, Mail::Wake(0));
        mailbox.push_run(move || drop(d));
        let mut held = None;
        assert!(mailbox.take_or_hold(&mut held, Vec::new()).is_empty());
        let stopped = SendPtr(stopped);
        let link = SendPtr(link);
        std::thread::scope(|s| {
            s.spawn(move || {
                let (stopped, link) = (stopped, link); // whole: a field alone is not `Send`
                std::thread::sleep(std::time::Duration::from_millis(20));
                // SAFETY: the node is alive until the held mail's drop reads this link.
                unsafe { (*stopped.0).next.store(link.0, Ordering::Release) };
            });
            drop(held);
        });
        assert_eq!(Arc::strong_count(&dropped), 1);
    }

    /// Mail left in the mailbox is dropped with it (its boxes freed once: run under Miri).
    #[test]
    fn mail_left_behind_is_dropped() {
        let dropped = Arc::new(());
        let mailbox = Mailbox::default();
        for _ in 0..3 {
            let d = dropped.clone();
            mailbox.push_run(move || drop(d));
        }
        assert_eq!(Arc::strong_count(&dropped), 4);
        drop(mailbox);
        assert_eq!(Arc::strong_count(&dropped), 1);
    }
}
