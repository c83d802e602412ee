//! Continuations of `apply_then`: the result comes back with its batch's answer, and the continuation runs
//! later on the issuing thread (never on the trustee), in issue order. [`Pending`] counts what one issuer
//! (a plain thread, or a fiber) still waits for, and keeps the first panic for `wait_pending` to resume.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::mem::{ManuallyDrop, MaybeUninit};
use std::ptr;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::thread;

use crate::delegation::protocol::slot;

/// What one issuer of `apply_then` still waits for.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    outstanding: Cell<usize>,
    panic: RefCell<Option<Box<dyn Any + Send>>>,
    /// The fiber suspended in `wait_pending`, if any.
    waiter: Cell<Option<usize>>,
}

impl Pending {
    pub(crate) fn issued(&self) {
        self.outstanding.set(self.outstanding.get() + 1);
    }

    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding.get()
    }

    /// A continuation starts: it no longer counts as outstanding, so a `wait_pending` inside it waits for the
    /// others, not for itself.
    fn started(&self) {
        self.outstanding.set(self.outstanding.get() - 1);
    }

    /// A continuation has finished; returns the fiber waiting in `wait_pending` for the last one, to wake.
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

/// What a continuation does: take its result from the response slot, then run on the issuing thread.
trait Continuation {
    /// Moves the result out of the response slot; returns how many bytes it took there.
    ///
    /// # Safety
    /// `src` is where this continuation's request wrote its result, read once.
    unsafe fn receive(&mut self, src: *const u8) -> usize;
    /// Runs; returns the fiber to wake (see `Pending::finished`).
    fn run(self) -> Option<usize>;
}

/// `then` and, once its request is answered, its result.
struct Then<R, C> {
    result: Option<thread::Result<R>>,
    then: C,
    owner: Rc<Pending>,
}

impl<R, C: FnOnce(R)> Continuation for Then<R, C> {
    unsafe fn receive(&mut self, src: *const u8) -> usize {
        // SAFETY: by the contract.
        self.result = Some(unsafe { slot::read_result::<thread::Result<R>>(src) });
        slot::result_bytes::<thread::Result<R>>()
    }

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
    unsafe fn receive(&mut self, src: *const u8) -> usize {
        // SAFETY: forwarded.
        unsafe { (**self).receive(src) }
    }
    fn run(self) -> Option<usize> {
        (*self).run()
    }
}

/// Words of a continuation stored inline in a [`Cont`].
const INLINE_WORDS: usize = 8;

/// An `apply_then` continuation, type-erased: stored inline when it fits `INLINE_WORDS` words (no allocation
/// per request, the usual case), else boxed. Continuations wait in the outbox's queue, in issue order, and
/// move with their results to the ready queue.
pub(crate) struct Cont {
    vtable: &'static VTable,
    data: MaybeUninit<[usize; INLINE_WORDS]>,
}

struct VTable {
    receive: unsafe fn(*mut u8, *const u8) -> usize,
    run: unsafe fn(*mut u8) -> Option<usize>,
    drop: unsafe fn(*mut u8),
}

trait Erased: Continuation + Sized {
    const VTABLE: VTable = VTable {
        // SAFETY: `Cont` calls these with the `data` it stored a `Self` in; `src` is `receive`'s contract.
        receive: |data, src| unsafe { (*data.cast::<Self>()).receive(src) },
        // SAFETY: as above; `Cont::run` forgets the `Cont`, so the value is read out once.
        run: |data| unsafe { ptr::read(data.cast::<Self>()).run() },
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
    /// result that came later by another way than its batch's answer (a `launch_then` fiber on the caller's
    /// own trustee).
    pub(crate) fn counted<R, C: FnOnce(R) + 'static>(
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

    /// Moves the result out of the response slot; returns how many bytes it took there.
    ///
    /// # Safety
    /// `src` is where this continuation's request wrote its result, read once.
    pub(crate) unsafe fn receive(&mut self, src: *const u8) -> usize {
        // SAFETY: `data` holds the type the vtable was made for; `src` by the contract.
        unsafe { (self.vtable.receive)(self.data.as_mut_ptr().cast(), src) }
    }

    /// Runs the continuation with its result (a panic in it is kept for `wait_pending`). Returns the fiber
    /// to wake: one waiting in `wait_pending` for this, its last continuation.
    #[must_use = "a fiber waiting for this continuation must be woken"]
    pub(crate) fn run(self) -> Option<usize> {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: as in `receive`; `this` is not dropped, so the value is used once.
        unsafe { (this.vtable.run)(this.data.as_mut_ptr().cast()) }
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
