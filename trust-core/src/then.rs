//! Continuations of `apply_then`: the result comes back with its batch's answer, and the continuation runs
//! later on the issuing thread (never on the trustee), in issue order. [`Pending`] counts what one issuer
//! (a plain thread, or a fiber) still waits for, and keeps the first panic for `wait_pending` to resume.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::thread;

use crate::context;
use crate::slot;

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

    /// A continuation (or the request of one that will not run) has finished.
    fn finished(&self, panic: Option<Box<dyn Any + Send>>) {
        if let Some(p) = panic {
            self.panic.borrow_mut().get_or_insert(p);
        }
        if self.outstanding.get() == 0
            && let Some(id) = self.waiter.take()
            && let Some(worker) = context::worker()
        {
            worker.scheduler.make_ready(id);
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

/// A continuation whose result has arrived (or will have, when its batch is answered).
pub(crate) trait Continuation {
    /// Moves the result out of the response slot; returns how many bytes it took there.
    ///
    /// # Safety
    /// `src` is where this continuation's request wrote its result, read once.
    unsafe fn receive(&mut self, src: *const u8) -> usize;
    fn run(self: Box<Self>);
}

/// `then` and, once its request is answered, its result.
pub(crate) struct Then<R, C> {
    result: Option<thread::Result<R>>,
    then: C,
    owner: Rc<Pending>,
}

impl<R, C: FnOnce(R)> Then<R, C> {
    /// A continuation whose result is already known (the local shortcut ran the request inline).
    pub(crate) fn ready(then: C, owner: Rc<Pending>, result: thread::Result<R>) -> Box<Self> {
        let mut cont = Then::new(then, owner);
        cont.result = Some(result);
        cont
    }

    pub(crate) fn new(then: C, owner: Rc<Pending>) -> Box<Self> {
        owner.issued();
        Box::new(Then {
            result: None,
            then,
            owner,
        })
    }
}

impl<R, C: FnOnce(R)> Continuation for Then<R, C> {
    unsafe fn receive(&mut self, src: *const u8) -> usize {
        // SAFETY: by the contract.
        self.result = Some(unsafe { slot::read_result::<thread::Result<R>>(src) });
        slot::result_bytes::<thread::Result<R>>()
    }

    fn run(self: Box<Self>) {
        let Then {
            result,
            then,
            owner,
        } = *self;
        owner.started();
        let panic = match result.expect("a continuation runs after its request was answered") {
            Ok(r) => panic::catch_unwind(AssertUnwindSafe(|| then(r))).err(),
            Err(p) => Some(p),
        };
        owner.finished(panic);
    }
}

/// Continuations whose results have arrived, in issue order.
pub(crate) type Ready = std::collections::VecDeque<Box<dyn Continuation>>;

/// Runs continuations one after another; a continuation may issue more (chains).
pub(crate) fn run_all(ready: Ready) {
    for c in ready {
        c.run();
    }
}
