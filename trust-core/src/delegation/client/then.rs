//! Continuations of `apply_then`: the result comes back with its batch's answer, and the continuation runs
//! later on the issuing thread (never on the trustee), in issue order. [`Pending`] counts what one issuer
//! (a plain thread, or a fiber) still waits for, and keeps the first panic for `wait_pending` to resume.

use std::any::Any;
use std::collections::VecDeque;
use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::ptr;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::delegation::protocol::parker::Parker;
use crate::delegation::protocol::slot;
use crate::delegation::trustee::shared::TrusteeShared;

/// What one issuer of `apply_then` still waits for.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    outstanding: Cell<usize>,
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

    /// A continuation starts: it no longer counts as outstanding, so a `wait_pending` inside it waits for the
    /// others, not for itself.
    #[inline]
    fn started(&self) {
        self.outstanding.set(self.outstanding.get() - 1);
    }

    /// A continuation has finished; returns the fiber waiting in `wait_pending` for the last one, to wake.
    #[inline]
    fn finished(&self, panic: Option<Box<dyn Any + Send>>) -> Option<usize> {
        if let Some(p) = panic {
            self.panic.borrow_mut().get_or_insert(p);
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

/// What a continuation does: run on the issuing thread with its result, which it holds already (`run`) or
/// reads from its batch's answer (`receive`).
trait Continuation {
    /// Bytes its result takes in a batch's answer.
    const RESULT_BYTES: usize;
    /// Runs with the result it holds; returns the fiber to wake (see `Pending::finished`).
    fn run(self) -> Option<usize>;
    /// Moves its result out of `src` into itself, to run later with it.
    ///
    /// # Safety
    /// `src` holds this continuation's result as its request wrote it (`slot::write_result`), read once.
    unsafe fn receive(&mut self, src: *const u8);
    /// Drops the continuation unrun, and its result at `src`; returns whether a destructor panicked (caught:
    /// the batch's other results must still be dropped).
    ///
    /// # Safety
    /// As for `receive`.
    unsafe fn discard(self, src: *const u8) -> bool;
}

/// `then` and, once its request is answered, its result.
struct Then<R, C> {
    result: Option<thread::Result<R>>,
    then: C,
    owner: Rc<Pending>,
}

impl<R, C: FnOnce(R)> Continuation for Then<R, C> {
    const RESULT_BYTES: usize = slot::result_bytes::<thread::Result<R>>();

    #[inline]
    unsafe fn receive(&mut self, src: *const u8) {
        // SAFETY: by the contract.
        self.result = Some(unsafe { slot::read_result::<thread::Result<R>>(src) });
    }

    unsafe fn discard(self, src: *const u8) -> bool {
        // SAFETY: by the contract.
        let result = unsafe { slot::read_result::<thread::Result<R>>(src) };
        // If the continuation's destructor panics, the result is still dropped as the tuple unwinds.
        panic::catch_unwind(AssertUnwindSafe(move || drop((self, result)))).is_err()
    }

    #[inline]
    fn run(self) -> Option<usize> {
        let Then {
            result,
            then,
            owner,
        } = self;
        owner.started();
        let panic = match result.expect("a continuation runs after its request was answered") {
            Ok(r) => panic::catch_unwind(AssertUnwindSafe(|| then(r))).err(),
            Err(p) => Some(p),
        };
        owner.finished(panic)
    }
}

impl<K: Continuation> Continuation for Box<K> {
    const RESULT_BYTES: usize = K::RESULT_BYTES;
    fn run(self) -> Option<usize> {
        (*self).run()
    }
    unsafe fn receive(&mut self, src: *const u8) {
        // SAFETY: forwarded.
        unsafe { (**self).receive(src) }
    }
    unsafe fn discard(self, src: *const u8) -> bool {
        // SAFETY: forwarded.
        unsafe { (*self).discard(src) }
    }
}

/// Words of a continuation stored inline in a [`Cont`].
const INLINE_WORDS: usize = 8;

/// An `apply_then` continuation, type-erased: stored inline when it fits `INLINE_WORDS` words (no allocation
/// per request, the usual case), else boxed. Continuations wait with their batch, in issue order, and run
/// from it with the batch's results ([`Answered`]); those whose results come another way hold them.
pub(crate) struct Cont {
    vtable: &'static VTable,
    data: MaybeUninit<[usize; INLINE_WORDS]>,
}

struct VTable {
    result_bytes: usize,
    run: unsafe fn(*mut u8) -> Option<usize>,
    receive: unsafe fn(*mut u8, *const u8),
    discard: unsafe fn(*mut u8, *const u8) -> bool,
    drop: unsafe fn(*mut u8),
}

trait Erased: Continuation + Sized {
    const VTABLE: VTable = VTable {
        result_bytes: Self::RESULT_BYTES,
        // SAFETY: `Cont` calls these with the `data` it stored a `Self` in, and forgets the `Cont` after `run`
        // and `discard`, so the value is read out once; `src` is the contract of `receive`.
        run: |data| unsafe { ptr::read(data.cast::<Self>()).run() },
        // SAFETY: as above.
        receive: |data, src| unsafe { (*data.cast::<Self>()).receive(src) },
        // SAFETY: as above.
        discard: |data, src| unsafe { ptr::read(data.cast::<Self>()).discard(src) },
        // SAFETY: as above; only a `Cont` that never ran drops its value.
        drop: |data| unsafe { ptr::drop_in_place(data.cast::<Self>()) },
    };
}

impl<K: Continuation> Erased for K {}

impl Cont {
    /// The continuation `then` of a request issued by `owner`; `result` when it is already known (the local
    /// shortcut ran the request inline).
    pub(crate) fn new<R, C: FnOnce(R) + 'static>(
        then: C,
        owner: Rc<Pending>,
        result: Option<thread::Result<R>>,
    ) -> Cont
    where
        R: 'static,
    {
        owner.issued();
        let then = Then {
            result,
            then,
            owner,
        };
        if size_of::<Then<R, C>>() <= size_of::<[usize; INLINE_WORDS]>()
            && align_of::<Then<R, C>>() <= align_of::<usize>()
        {
            Cont::store(then)
        } else {
            Cont::store(Box::new(then))
        }
    }

    /// The continuation `then` of a request whose issue `owner` counted already (`Pending::issued`), with the
    /// result that came later by another way than its batch's answer (see [`Inbox`]).
    fn counted<R, C: FnOnce(R) + 'static>(
        then: C,
        owner: Rc<Pending>,
        result: thread::Result<R>,
    ) -> Cont
    where
        R: 'static,
    {
        Cont::store(Box::new(Then {
            result: Some(result),
            then,
            owner,
        }))
    }

    fn store<K: Continuation>(k: K) -> Cont {
        let mut data = MaybeUninit::<[usize; INLINE_WORDS]>::uninit();
        // SAFETY: `new` checked that `K` fits and is at most word-aligned (a `Box` always is).
        unsafe { ptr::write(data.as_mut_ptr().cast::<K>(), k) };
        Cont {
            vtable: &K::VTABLE,
            data,
        }
    }

    /// Runs the continuation with the result it holds (a panic in it is kept for `wait_pending`). Returns the
    /// fiber to wake: one waiting in `wait_pending` for this, its last continuation.
    #[must_use = "a fiber waiting for this continuation must be woken"]
    pub(crate) fn run(self) -> Option<usize> {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `data` holds the type the vtable was made for; `this` is not dropped, so it is used once.
        unsafe { (this.vtable.run)(this.data.as_mut_ptr().cast()) }
    }

    /// Moves the result out of `src` into the continuation, which `run` then gets it from.
    ///
    /// # Safety
    /// `src` holds this continuation's result as its request wrote it, read once.
    unsafe fn receive(&mut self, src: *const u8) {
        // SAFETY: as in `run`; `src` by the contract.
        unsafe { (self.vtable.receive)(self.data.as_mut_ptr().cast(), src) }
    }

    /// Bytes its result takes in a batch's answer.
    fn result_bytes(&self) -> usize {
        self.vtable.result_bytes
    }

    /// Drops the continuation unrun with its result at `src`; returns whether a destructor panicked.
    ///
    /// # Safety
    /// As for `receive`.
    unsafe fn discard(self, src: *const u8) -> bool {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: as in `receive`.
        unsafe { (this.vtable.discard)(this.data.as_mut_ptr().cast(), src) }
    }
}

impl Drop for Cont {
    /// A continuation that never ran (its thread went away): its closure and result are dropped.
    fn drop(&mut self) {
        // SAFETY: as in `receive`; dropped once.
        unsafe { (self.vtable.drop)(self.data.as_mut_ptr().cast()) }
    }
}

impl std::fmt::Debug for Cont {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cont")
    }
}

/// Continuations whose results have arrived, in issue order.
pub(crate) type Ready = std::collections::VecDeque<Cont>;

/// The continuations of one answered batch, in issue order, with their results copied out of the response
/// slot in one go (packed in the same order). They run on the issuing thread once it holds no borrow of its
/// client, one at a time from the front (`pop`), so that a continuation that waits (`wait_pending` on a plain
/// thread) can run the rest of its batch, in order, inside that wait. Dropped unrun (the thread exits), each
/// continuation is dropped with its result.
#[derive(Debug, Default)]
pub(crate) struct Answered {
    thens: VecDeque<Cont>,
    /// The results, as the trustee wrote them (8-aligned, each `slot::result_bytes` long).
    results: Vec<u64>,
    /// Bytes of `results` that belong to continuations already popped.
    at: usize,
}

impl Answered {
    /// Takes the continuations of a batch that has been answered (leaving `thens` empty, with this batch's
    /// old capacity); their results follow with `push_results`.
    pub(crate) fn refill(&mut self, thens: &mut Vec<Cont>) {
        debug_assert!(self.is_empty() && self.results.is_empty());
        let old = Vec::from(std::mem::take(&mut self.thens));
        self.thens = VecDeque::from(std::mem::replace(thens, old));
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
        // continuations read each result out once (`receive` / `discard`).
        unsafe {
            let len = self.results.len();
            ptr::copy_nonoverlapping(src.cast::<u64>(), self.results.as_mut_ptr().add(len), words);
            self.results.set_len(len + words);
        }
    }

    /// The next continuation, holding its result, to `run`; `None` (and the batch emptied for reuse) when
    /// all have been taken.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<Cont> {
        let Some((mut then, src)) = self.pop_raw() else {
            // Emptied for reuse once (a worker's idle loop asks every round: no writes then).
            if self.at != 0 {
                self.results.clear();
                self.at = 0;
            }
            return None;
        };
        // SAFETY: `pop_raw` gives each continuation with its own result, read once here.
        unsafe { then.receive(src) };
        Some(then)
    }

    /// The next continuation and where its result is (valid until the batch changes).
    fn pop_raw(&mut self) -> Option<(Cont, *const u8)> {
        let then = self.thens.pop_front()?;
        // SAFETY: the results of the continuations still here follow `at`, in their order.
        let src = unsafe { self.results.as_ptr().cast::<u8>().add(self.at) };
        self.at += then.result_bytes();
        Some((then, src))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.thens.is_empty()
    }
}

impl Drop for Answered {
    fn drop(&mut self) {
        let mut panicked = false;
        while let Some((then, src)) = self.pop_raw() {
            // SAFETY: `pop_raw` gives each continuation with its own result, read once here.
            panicked |= unsafe { then.discard(src) };
        }
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
    arrived: Mutex<Vec<(u64, Box<dyn Any + Send>)>>,
    /// Set (Release) after a result is added; cleared by the owner before it takes them.
    any: AtomicBool,
    /// The owner's parker, woken after each arrival (a worker's, or a plain thread's).
    parker: Option<Arc<Parker>>,
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
                arrived: Mutex::new(Vec::new()),
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
        let arrived = std::mem::take(&mut *self.shared.arrived.lock().unwrap_or_else(|e| e.into_inner()));
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

const NEVER_RAN: &str = "`launch_then`: the launched fiber never ran (no fiber stack could be had, or the runtime \
     shut down), so there is no result for the continuation";

impl<R: Send + 'static> Sender<R> {
    pub(crate) fn send(mut self, result: thread::Result<R>) {
        self.deliver(result);
    }

    fn deliver(&mut self, result: thread::Result<R>) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        let result: Box<dyn Any + Send> = Box::new(result);
        shared
            .arrived
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((self.id, result));
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
