//! Continuations of `apply_then`: the result comes back with its batch's answer, and the continuation runs
//! later on the issuing thread (never on the trustee), in issue order. [`Pending`] counts what one issuer
//! (a plain thread, or a fiber) still waits for, and keeps the first panic for `wait_pending` to resume.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::ptr;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::thread;

use crate::delegation::protocol::parker::Parker;
use crate::delegation::protocol::slot;
use crate::delegation::trustee::job::Outcome;
use crate::delegation::trustee::shared::{TrusteeShared, in_forked_child};
use crate::delegation::trustee::unwind;

/// What one issuer of `apply_then` still waits for.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    outstanding: Cell<usize>,
    /// Its requests to its worker's own trustee still queued in the worker's channel to itself (see
    /// `call::ToSelf`): while there are any, its applies to that trustee's properties go behind them.
    to_self: Cell<usize>,
    panic: RefCell<Option<Box<dyn Any + Send>>>,
    /// The fiber suspended in `wait_pending`, if any.
    waiter: Cell<Option<usize>>,
}

impl Pending {
    #[inline]
    pub(crate) fn issued(&self) {
        self.outstanding.set(self.outstanding.get() + 1);
    }

    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding.get()
    }

    /// See `to_self`.
    pub(crate) fn queued_to_self(&self) -> usize {
        self.to_self.get()
    }

    pub(crate) fn add_to_self(&self, delta: isize) {
        self.to_self.set(self.to_self.get().wrapping_add_signed(delta));
    }

    /// A continuation starts: it no longer counts as outstanding, so a `wait_pending` inside it waits for the
    /// others, not for itself.
    #[inline]
    fn started(&self) {
        self.outstanding.set(self.outstanding.get() - 1);
    }

    /// A continuation has finished; returns the fiber waiting in `wait_pending` for the last one, to wake.
    /// The usual case (no panic, more continuations to come) is two checks, inlined into each continuation.
    #[inline]
    fn finished(&self, panic: Option<Box<dyn Any + Send>>) -> Option<usize> {
        if panic.is_none() && self.outstanding.get() != 0 {
            return None;
        }
        self.finished_slow(panic)
    }

    #[cold]
    #[inline(never)]
    fn finished_slow(&self, panic: Option<Box<dyn Any + Send>>) -> Option<usize> {
        if let Some(p) = panic {
            let mut first = self.panic.borrow_mut();
            if first.is_none() {
                *first = Some(p);
            } else {
                // Only the first is resumed; a later one's payload may panic when dropped.
                drop(first);
                unwind::drop_payload(p);
            }
        }
        if self.outstanding.get() == 0 {
            self.waiter.take()
        } else {
            None
        }
    }

    pub(crate) fn set_waiter(&self, fiber: usize) {
        self.waiter.set(Some(fiber));
    }

    /// The first panic of a delegated closure or continuation since the last call.
    pub(crate) fn take_panic(&self) -> Option<Box<dyn Any + Send>> {
        self.panic.borrow_mut().take()
    }
}

impl Drop for Pending {
    /// A panic nobody waited for (the issuer is gone): its payload may panic when dropped, wherever the last
    /// continuation happens to drop this.
    fn drop(&mut self) {
        if let Some(p) = self.panic.get_mut().take() {
            unwind::drop_payload(p);
        }
    }
}

/// What a continuation does: run on the issuing thread with its result, which it reads from its batch's
/// answer ([`Then`]) or holds already ([`Held`]).
trait Continuation {
    /// Bytes its result takes in a batch's answer (0 for one that holds its result).
    const RESULT_BYTES: usize;
    /// Runs with its result; returns the fiber to wake (see `Pending::finished`).
    ///
    /// # Safety
    /// `src` holds this continuation's result as its request wrote it (`slot::write_result`), read once here;
    /// unused when `RESULT_BYTES` is 0.
    unsafe fn run(self, src: *const u8) -> Option<usize>;
    /// Drops the continuation unrun, and its result at `src` (null: its request was never answered, there is
    /// none); returns whether a destructor panicked (caught, each value dropped on its own: the batch's other
    /// results must still be dropped, and a second panic while one unwinds would abort).
    ///
    /// # Safety
    /// As for `run`, or `src` is null.
    unsafe fn discard(self, src: *const u8) -> bool;
    /// The issuer it counts for.
    fn owner(&self) -> &Rc<Pending>;
}

/// `then`, waiting in its batch for the result its request writes into the batch's answer.
struct Then<R, C> {
    then: C,
    owner: Rc<Pending>,
    _result: PhantomData<fn(R)>,
}

/// `then` with its result, which came by another way than a batch's answer (the local shortcut ran the request
/// inline, or a `launch_then` fiber sent it).
struct Held<R, C> {
    result: thread::Result<R>,
    then: C,
    owner: Rc<Pending>,
}

impl<R, C> Then<R, C> {
    /// `then`, counted by `owner` as issued until it has run.
    #[inline]
    fn issued(then: C, owner: Rc<Pending>) -> Self {
        owner.issued();
        Then {
            then,
            owner,
            _result: PhantomData,
        }
    }
}

/// Runs `then` with `result` for `owner`, a panic in it kept for `wait_pending`. When the request panicked,
/// `then` is dropped unrun instead, its destructor's panic contained: it must not unwind into the loop that
/// runs continuations (a worker's, or `wait_pending`'s, which would return before the rest ran), and the
/// request's panic, which came first, is the one kept.
#[inline]
fn run_then<R, C: FnOnce(R)>(then: C, owner: Rc<Pending>, result: thread::Result<R>) -> Option<usize> {
    owner.started();
    let panic = match result {
        Ok(r) => panic::catch_unwind(AssertUnwindSafe(|| then(r))).err(),
        Err(p) => {
            unwind::drop_quietly(then);
            Some(p)
        }
    };
    owner.finished(panic)
}

/// Runs `then` at once with `result`, for `owner`, as a continuation whose result came at once (see
/// `call::then_in_coroutine`): a panic in the request or in `then` is kept for `owner`'s `wait_pending`.
pub(crate) fn run_now<R, C: FnOnce(R)>(then: C, owner: Rc<Pending>, result: thread::Result<R>) {
    owner.issued();
    // A coroutine has no fiber to wake.
    let _ = run_then(then, owner, result);
}

impl<R, C: FnOnce(R)> Continuation for Then<R, C> {
    const RESULT_BYTES: usize = slot::result_bytes::<Outcome<R>>();

    #[inline]
    unsafe fn run(self, src: *const u8) -> Option<usize> {
        // SAFETY: by the contract.
        let result = unsafe { slot::read_result::<Outcome<R>>(src) };
        run_then(self.then, self.owner, result.into_result())
    }

    unsafe fn discard(self, src: *const u8) -> bool {
        let then = unwind::drop_quietly(self.then);
        if src.is_null() {
            return then;
        }
        // SAFETY: by the contract.
        let result = unsafe { slot::read_result::<Outcome<R>>(src) };
        then | unwind::drop_quietly(result)
    }

    fn owner(&self) -> &Rc<Pending> {
        &self.owner
    }
}

impl<R, C: FnOnce(R)> Continuation for Held<R, C> {
    const RESULT_BYTES: usize = 0;

    #[inline]
    unsafe fn run(self, _: *const u8) -> Option<usize> {
        run_then(self.then, self.owner, self.result)
    }

    unsafe fn discard(self, _: *const u8) -> bool {
        unwind::drop_quietly(self.then) | unwind::drop_quietly(self.result)
    }

    fn owner(&self) -> &Rc<Pending> {
        &self.owner
    }
}

impl<K: Continuation> Continuation for Box<K> {
    const RESULT_BYTES: usize = K::RESULT_BYTES;
    unsafe fn run(self, src: *const u8) -> Option<usize> {
        // SAFETY: forwarded.
        unsafe { (*self).run(src) }
    }
    unsafe fn discard(self, src: *const u8) -> bool {
        // SAFETY: forwarded.
        unsafe { (*self).discard(src) }
    }
    fn owner(&self) -> &Rc<Pending> {
        (**self).owner()
    }
}

/// Words of a continuation stored inline in a [`Cont`].
const INLINE_WORDS: usize = 8;

/// True when a `K` is stored inline in a [`Cont`]: it fits `INLINE_WORDS` words and is at most word-aligned.
const fn fits_inline<K>() -> bool {
    size_of::<K>() <= size_of::<[usize; INLINE_WORDS]>() && align_of::<K>() <= align_of::<usize>()
}

/// An `apply_then` continuation, type-erased: stored inline when it fits `INLINE_WORDS` words (no allocation
/// per request, the usual case), else boxed. Continuations wait with their batch, in issue order, and run
/// from it with the batch's results ([`Answered`]); those whose results come another way hold them.
pub(crate) struct Cont {
    vtable: &'static VTable,
    data: MaybeUninit<[usize; INLINE_WORDS]>,
}

struct VTable {
    result_bytes: usize,
    run: unsafe fn(*mut u8, *const u8) -> Option<usize>,
    discard: unsafe fn(*mut u8, *const u8) -> bool,
    owner: unsafe fn(*const u8) -> Rc<Pending>,
}

trait Erased: Continuation + Sized {
    const VTABLE: VTable = VTable {
        result_bytes: Self::RESULT_BYTES,
        // SAFETY: these are called with the `data` a `Self` was stored in, and the value is read out once: the
        // `Cont` is forgotten (or counted as taken, in its batch) when `run` or `discard` moves it out, and
        // only one that never ran is dropped. `src` is the contract of `run`.
        run: |data, src| unsafe { ptr::read(data.cast::<Self>()).run(src) },
        // SAFETY: as above.
        discard: |data, src| unsafe { ptr::read(data.cast::<Self>()).discard(src) },
        // SAFETY: `data` holds a `Self` (not moved out yet: asked before `run`).
        owner: |data| unsafe { (*data.cast::<Self>()).owner().clone() },
    };
}

impl<K: Continuation> Erased for K {}

impl Cont {
    /// The continuation `then` of a request issued by `owner`, to run with the result its batch's answer
    /// brings.
    #[inline]
    pub(crate) fn new<R: 'static, C: FnOnce(R) + 'static>(then: C, owner: Rc<Pending>) -> Cont {
        Cont::store(Then::issued(then, owner))
    }

    /// Appends [`Cont::new`]`(then, owner)` to `to`, written straight into the vector's room: built in a local
    /// and moved in, the continuation was stored by the fields' own stores and read back at once by wider
    /// loads, which the CPU cannot forward from the pending stores (a stall of some 10 cycles per request,
    /// half of `push_then`'s time in `perf`).
    #[inline]
    pub(crate) fn push_new<R: 'static, C: FnOnce(R) + 'static>(to: &mut Vec<Cont>, then: C, owner: Rc<Pending>) {
        let k = Then::issued(then, owner);
        if const { !fits_inline::<Then<R, C>>() } {
            return to.push(Cont::store(k));
        }
        to.reserve(1);
        // SAFETY: room for one more reserved just above; `k` fits inline (checked above), and the slot is
        // counted in the vector only once both fields are written.
        unsafe {
            let dst = to.as_mut_ptr().add(to.len());
            (&raw mut (*dst).vtable).write(&<Then<R, C> as Erased>::VTABLE);
            (&raw mut (*dst).data).cast::<Then<R, C>>().write(k);
            to.set_len(to.len() + 1);
        }
    }

    /// The continuation `then` of a request issued by `owner` and already answered (the local shortcut ran
    /// it inline).
    pub(crate) fn held<R: 'static, C: FnOnce(R) + 'static>(
        then: C,
        owner: Rc<Pending>,
        result: thread::Result<R>,
    ) -> Cont {
        owner.issued();
        Cont::store(Held { result, then, owner })
    }

    /// `held` for a request whose issue `owner` counted already (`Pending::issued`), with the result that came
    /// later by another way than its batch's answer (see [`Inbox`]).
    fn counted<R: 'static, C: FnOnce(R) + 'static>(then: C, owner: Rc<Pending>, result: thread::Result<R>) -> Cont {
        Cont::store(Held { result, then, owner })
    }

    /// Stores `k` inline when it fits `INLINE_WORDS` words (and is at most word-aligned), else boxed.
    #[inline]
    fn store<K: Continuation>(k: K) -> Cont {
        if const { fits_inline::<K>() } {
            // SAFETY: checked just above.
            unsafe { Cont::write(k) }
        } else {
            // SAFETY: a box is one word, word-aligned.
            unsafe { Cont::write(Box::new(k)) }
        }
    }

    /// # Safety
    /// `K` fits `INLINE_WORDS` words and is at most word-aligned.
    #[inline]
    unsafe fn write<K: Continuation>(k: K) -> Cont {
        let mut data = MaybeUninit::<[usize; INLINE_WORDS]>::uninit();
        // SAFETY: room and alignment by the contract.
        unsafe { ptr::write(data.as_mut_ptr().cast::<K>(), k) };
        Cont {
            vtable: &K::VTABLE,
            data,
        }
    }

    /// Bytes its result takes in its batch's answer (0 for one that holds its result).
    pub(crate) fn result_bytes(&self) -> usize {
        self.vtable.result_bytes
    }

    /// Drops the continuation unrun with its result at `src`; returns whether a destructor panicked.
    ///
    /// # Safety
    /// As for [`Continuation::run`].
    pub(crate) unsafe fn discard(self, src: *const u8) -> bool {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `data` holds the type the vtable was made for, read out once (`this` is forgotten).
        unsafe { (this.vtable.discard)(this.data.as_mut_ptr().cast(), src) }
    }
}

impl Drop for Cont {
    /// A continuation that never ran (its thread went away, or its request never went out): its closure is
    /// dropped (with its result, if it holds one).
    fn drop(&mut self) {
        // SAFETY: `data` holds the type the vtable was made for, read out once (this is its drop); a null `src`
        // says there is no result.
        if unsafe { (self.vtable.discard)(self.data.as_mut_ptr().cast(), ptr::null()) } {
            eprintln!("trust: a continuation that never ran panicked when dropped");
        }
    }
}

impl std::fmt::Debug for Cont {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cont")
    }
}

/// Continuations whose results have arrived by another way than a batch's answer, in issue order.
pub(crate) type Ready = std::collections::VecDeque<Cont>;

/// The next continuation to run, taken from where it waits: a continuation that holds its result, or one
/// still in its answered batch, next to its result, both moved out only when it runs (no copy of the
/// continuation, no copy of the result before the one into the closure's argument).
#[must_use = "a continuation taken to run must run (or it leaks)"]
pub(crate) struct Next(Taken);

enum Taken {
    Held(Cont),
    InBatch {
        vtable: &'static VTable,
        data: *mut u8,
        src: *const u8,
    },
}

impl Next {
    /// A continuation that holds its result.
    pub(crate) fn held(then: Cont) -> Self {
        Next(Taken::Held(then))
    }

    /// The issuer the continuation counts for: what it issues in turn (a chain of `apply_then`s) counts for
    /// the same one, so a fiber's `wait_pending` waits for the whole chain.
    pub(crate) fn owner(&self) -> Rc<Pending> {
        match &self.0 {
            // SAFETY: `data` holds the type the vtable was made for, not moved out (it runs later).
            Taken::Held(then) => unsafe { (then.vtable.owner)(then.data.as_ptr().cast()) },
            // SAFETY: as above; `Answered::pop` gave a continuation still in its batch.
            Taken::InBatch { vtable, data, .. } => unsafe { (vtable.owner)(data.cast_const()) },
        }
    }


    /// Runs the continuation with its result (a panic in it is kept for `wait_pending`). Returns the fiber to
    /// wake: one waiting in `wait_pending` for this, its last continuation.
    ///
    /// # Safety
    /// Right after it was taken: nothing has used the client it came from since (the batch it points into
    /// has not been popped again, refilled or dropped).
    #[must_use = "a fiber waiting for this continuation must be woken"]
    #[inline]
    pub(crate) unsafe fn run(self) -> Option<usize> {
        match self.0 {
            Taken::Held(then) => {
                let mut then = ManuallyDrop::new(then);
                // SAFETY: `data` holds the type the vtable was made for, read out once (`then` is forgotten);
                // a held continuation reads no `src`.
                unsafe { (then.vtable.run)(then.data.as_mut_ptr().cast(), ptr::null()) }
            }
            // SAFETY: `Answered::pop` gave the continuation and its result, not taken before (it counted them
            // as taken), and by the contract they are still there.
            Taken::InBatch { vtable, data, src } => unsafe { (vtable.run)(data, src) },
        }
    }
}

/// The continuations of one answered batch, in issue order, with their results copied out of the response
/// slot in one go (packed in the same order). They run on the issuing thread once it holds no borrow of its
/// client, one at a time from the front (`pop`), so that a continuation that waits (`wait_pending` on a plain
/// thread) can run the rest of its batch, in order, inside that wait. Dropped unrun (the thread exits), each
/// continuation is dropped with its result.
#[derive(Debug, Default)]
pub(crate) struct Answered {
    /// The continuations; those before `next` have been taken to run (moved out: never dropped here).
    thens: Vec<Cont>,
    next: usize,
    /// The results, as the trustee wrote them (8-aligned, each `slot::result_bytes` long).
    results: Vec<u64>,
    /// Bytes of `results` that belong to continuations already taken.
    at: usize,
}

impl Answered {
    /// Takes the continuations of a batch that has been answered (leaving `thens` empty, with this batch's
    /// old capacity); their results follow with `push_results`.
    pub(crate) fn refill(&mut self, thens: &mut Vec<Cont>) {
        debug_assert!(self.is_empty());
        self.reset();
        std::mem::swap(&mut self.thens, thens);
    }

    /// Forgets the continuations taken (all of them) and their results, keeping the capacity.
    fn reset(&mut self) {
        debug_assert!(self.is_empty());
        // SAFETY: every continuation before `next` was moved out (taken), and there are none after.
        unsafe { self.thens.set_len(0) };
        self.next = 0;
        self.results.clear();
        self.at = 0;
    }

    /// Appends `bytes` of results (a multiple of 8) from the response body.
    ///
    /// # Safety
    /// `src` is 8-aligned and holds `bytes` bytes of results written by the continuations' requests, in
    /// their order, and they are copied once (the slot is not read for them again).
    pub(crate) unsafe fn push_results(&mut self, src: *const u8, bytes: usize) {
        debug_assert_eq!(bytes % 8, 0);
        let words = bytes / 8;
        self.results.reserve(words);
        // SAFETY: room reserved; `src` by the contract. The words are plain bytes of moved values: the
        // continuations read each result out once (`run` / `discard`).
        unsafe {
            let len = self.results.len();
            ptr::copy_nonoverlapping(src.cast::<u64>(), self.results.as_mut_ptr().add(len), words);
            self.results.set_len(len + words);
        }
    }

    /// Takes the next continuation, to run with its result; `None` (and the batch emptied for reuse) when all
    /// have been taken.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<Next> {
        let Some((data, src)) = self.take() else {
            // Emptied for reuse once (a worker's idle loop asks every round: no writes then).
            if self.next != 0 || self.at != 0 {
                self.reset();
            }
            return None;
        };
        // SAFETY: `take` found the continuation at `data`.
        let vtable = unsafe { (*data).vtable };
        Some(Next(Taken::InBatch {
            vtable,
            // SAFETY: as above.
            data: unsafe { (&raw mut (*data).data).cast() },
            src,
        }))
    }

    /// Counts the next continuation as taken; gives where it is and where its result is (valid until the
    /// batch changes).
    #[inline]
    fn take(&mut self) -> Option<(*mut Cont, *const u8)> {
        if self.next == self.thens.len() {
            return None;
        }
        // SAFETY: in bounds (checked above); the results of the continuations not taken follow `at`, in order.
        unsafe {
            let then = self.thens.as_mut_ptr().add(self.next);
            let src = self.results.as_ptr().cast::<u8>().add(self.at);
            self.next += 1;
            self.at += (*then).vtable.result_bytes;
            Some((then, src))
        }
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.next == self.thens.len()
    }
}

impl Drop for Answered {
    fn drop(&mut self) {
        let mut panicked = false;
        while let Some((then, src)) = self.take() {
            // SAFETY: `take` gives each continuation with its own result once; it counts as taken, so it is
            // read out once here and not dropped again.
            panicked |= unsafe { ptr::read(then).discard(src) };
        }
        self.reset();
        // Not resumed: this batch may be dropped beside others (a queue of them, while unwinding), and a
        // second panic there would abort the process.
        if panicked {
            eprintln!("trust: a destructor panicked while a thread's unrun continuations were dropped");
        }
    }
}

/// Builds the continuation for a result that came to the inbox.
type Expected = Box<dyn FnOnce(Box<dyn Any + Send>) -> Cont>;

/// Continuations whose results come by another way than a batch's answer: a `launch_then` fiber sends its
/// result from its trustee when it ends, whenever that is, through a [`Sender`]; the client moves what
/// arrived to its ready queue (`collect`) when it next runs continuations. One per client context.
pub(crate) struct Inbox {
    shared: Arc<InboxShared>,
    /// By id: the continuation waiting for each result, and the trustee it comes from.
    expected: Vec<(u64, &'static TrusteeShared, Expected)>,
    next_id: u64,
}

struct InboxShared {
    arrived: Mutex<Arrived>,
    /// Set (Release) after a result is added; cleared by the owner before it takes them.
    any: AtomicBool,
    /// The owner's parker, woken after each arrival (a worker's, or a plain thread's).
    parker: Option<Arc<Parker>>,
}

/// The results sent to an [`Inbox`] and not collected yet; `closed` once the inbox is gone (its thread left):
/// a result sent then is dropped by its sender at once.
#[derive(Default)]
struct Arrived {
    results: Vec<(u64, Box<dyn Any + Send>)>,
    closed: bool,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("expected", &self.expected.len())
            .finish_non_exhaustive()
    }
}

impl Inbox {
    pub(crate) fn new(parker: Option<Arc<Parker>>) -> Self {
        Inbox {
            shared: Arc::new(InboxShared {
                arrived: Mutex::default(),
                any: AtomicBool::new(false),
                parker,
            }),
            expected: Vec::new(),
            next_id: 0,
        }
    }

    /// Issues `then`, counted by `owner` until it has run; its result will come from `trustee` through the
    /// returned sender.
    pub(crate) fn expect<R: Send + 'static, C: FnOnce(R) + 'static>(
        &mut self,
        then: C,
        owner: Rc<Pending>,
        trustee: &'static TrusteeShared,
    ) -> Sender<R> {
        owner.issued();
        let id = self.next_id;
        self.next_id += 1;
        let build = move |result: Box<dyn Any + Send>| {
            let result = *result
                .downcast::<thread::Result<R>>()
                .expect("a sender sends the result type it was made for");
            Cont::counted(then, owner, result)
        };
        self.expected.push((id, trustee, Box::new(build)));
        Sender {
            shared: Some(self.shared.clone()),
            id,
            _result: PhantomData,
        }
    }

    /// True when results have arrived that `collect` has not taken yet.
    #[inline]
    pub(crate) fn has_arrived(&self) -> bool {
        self.shared.any.load(Ordering::Acquire)
    }

    /// True while some expected result has not arrived (or not been collected).
    pub(crate) fn is_expecting(&self) -> bool {
        !self.expected.is_empty()
    }

    /// The trustee of an expected result that has stopped serving, if any: that result will never come.
    pub(crate) fn closed_trustee(&self) -> bool {
        self.expected.iter().any(|(_, t, _)| t.is_closed())
    }

    /// Moves the continuations whose results arrived to `ready`; true if there were any.
    pub(crate) fn collect(&mut self, ready: &mut Ready) -> bool {
        if !self.has_arrived() {
            return false;
        }
        // Cleared before taking: a result added after the take sets it again.
        self.shared.any.store(false, Ordering::Relaxed);
        let Some(mut arrived) = self.shared.arrived_unless_held_at_fork() else {
            return false;
        };
        let arrived = std::mem::take(&mut arrived.results);
        let any = !arrived.is_empty();
        for (id, result) in arrived {
            let i = self
                .expected
                .iter()
                .position(|(e, _, _)| *e == id)
                .expect("each result is expected once");
            let (_, _, build) = self.expected.swap_remove(i);
            ready.push_back(build(result));
        }
        any
    }
}

impl InboxShared {
    fn arrived(&self) -> std::sync::MutexGuard<'_, Arrived> {
        self.arrived.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `arrived`, but in a child forked after the runtime started only if the lock is free: a worker may have
    /// held it at the fork, delivering a `launch_then` result, and nothing would release it there. `wait_pending`
    /// in such a child hung for good (review 68: 4 of the first 36 forks while results arrived); without the
    /// lock it leaves the results alone (what they may be in the middle of) and panics naming `fork` as it
    /// waits for them. One relaxed load more, only where results have arrived or the inbox goes away.
    fn arrived_unless_held_at_fork(&self) -> Option<std::sync::MutexGuard<'_, Arrived>> {
        if !in_forked_child() {
            return Some(self.arrived());
        }
        match self.arrived.try_lock() {
            Ok(arrived) => Some(arrived),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }
}

impl Drop for Inbox {
    /// The client is going away: the continuations still expected, and the results that arrived but were not
    /// collected, are dropped here, on the issuing thread, each on its own with a panic in a destructor contained
    /// (unwinding out of a thread-local's destructor aborts the process). A result sent later is dropped by its
    /// sender (`closed`).
    fn drop(&mut self) {
        let mut panicked = false;
        for (_, _, build) in self.expected.drain(..) {
            panicked |= unwind::drop_quietly(build);
        }
        // In a forked child whose lock a worker held at the fork: the results are left (leaked), unread.
        let results = self.shared.arrived_unless_held_at_fork().map_or_else(Vec::new, |mut arrived| {
            arrived.closed = true;
            std::mem::take(&mut arrived.results)
        });
        for (_, result) in results {
            panicked |= unwind::drop_quietly(result);
        }
        if panicked {
            eprintln!("trust: a continuation that never ran, or its result, panicked when dropped");
        }
    }
}

/// Sends one result to an [`Inbox`], from any thread. Dropped unsent (the fiber that would have sent it
/// never ran), it sends a panic instead, so that nothing waits for it forever.
pub(crate) struct Sender<R: Send + 'static> {
    shared: Option<Arc<InboxShared>>,
    id: u64,
    _result: PhantomData<fn(R)>,
}

impl<R: Send + 'static> std::fmt::Debug for Sender<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").field("id", &self.id).finish()
    }
}

const NEVER_RAN: &str = "`launch_then`: the launched fiber never ran (no fiber stack could be had: the live fibers \
     reached TRUST_MAX_FIBER_STACKS or the limit from vm.max_map_count, which `spawn`'s panic names; or the \
     runtime shut down), so there is no result for the continuation";

impl<R: Send + 'static> Sender<R> {
    pub(crate) fn send(mut self, result: thread::Result<R>) {
        self.deliver(result);
    }

    fn deliver(&mut self, result: thread::Result<R>) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        let result: Box<dyn Any + Send> = Box::new(result);
        // A sender dropped in a forked child (by a fiber that forked) whose lock was held at the fork: the
        // result is dropped as if the inbox had gone (nobody there would collect it).
        let mut arrived = match shared.arrived_unless_held_at_fork() {
            Some(arrived) => arrived,
            None => {
                let _ = unwind::drop_quietly(result);
                return;
            }
        };
        if arrived.closed {
            // Nobody will collect it: dropped here (on the trustee, which must keep serving), outside the lock.
            drop(arrived);
            if unwind::drop_quietly(result) {
                eprintln!("trust: a `launch_then` result for a thread that has left panicked when dropped");
            }
            return;
        }
        arrived.results.push((self.id, result));
        drop(arrived);
        shared.any.store(true, Ordering::Release);
        if let Some(p) = &shared.parker {
            p.wake();
        }
    }
}

impl<R: Send + 'static> Drop for Sender<R> {
    fn drop(&mut self) {
        self.deliver(Err(Box::new(NEVER_RAN)));
    }
}
