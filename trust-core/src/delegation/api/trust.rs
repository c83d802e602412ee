//! [`Trust<T>`]: the handle to an entrusted property. Every access is a closure the property's trustee applies;
//! the handle itself holds only the property's address and its trustee.

use std::any::Any;
use std::fmt;
use std::panic::resume_unwind;

use crate::delegation::api::future::ApplyFuture;
use crate::delegation::trustee::oneshot::Unsent;
use crate::delegation::trustee::job::{self, Apply};
use crate::delegation::trustee::handle::{Handle, Local};
use crate::delegation::trustee::property::{self, Property, SendPtr};
use crate::delegation::client::then::Cont;
use crate::delegation::api::trustee::{Trustee, is_current};
use crate::delegation::call;
use crate::delegation::worker::context;
use crate::delegation::api::fiber::{self, Fiber, Promise};
use crate::delegation::worker::fiber::{after_inline_apply, before_inline_apply, suspend_on};
use crate::delegation::worker::run::{Taken, Worker};
use crate::delegation::trustee::shared::{IN_FORKED_CHILD, in_forked_child, refuse, refuse_both};

/// Closures and `apply_with` arguments larger than this are boxed as soon as the API receives them. Moving them
/// by value through the layers of a request would copy them onto the caller's stack at each layer (in debug
/// builds: tens of times), and a 1 MiB array would overflow a thread's stack.
///
/// Every test against it is an `if const { .. }`, as are the slot's and the continuations' inline-or-boxed
/// choices: the compiler then never instantiates the path not taken, even in a debug build. A plain `if` made
/// each `apply` call site instantiate all four boxed-or-not paths and their layers below (1,231 functions for
/// one `apply(|c| *c)`, 211 now), and building the test suite took 2.4 times the CPU time it takes now.
pub(crate) const BOX_ABOVE: usize = 512;

/// `BOX_ABOVE` for a `may` coroutine, whose stack is small (`may` gives it 32 KiB by default): `apply`,
/// `apply_then`, `launch` and `launch_then` box a closure, continuation or result over this many bytes there.
/// An unoptimized build copies a value moved by value through the call path's frames dozens of times: from a
/// coroutine, an `apply` whose closure captured 496 bytes took 34 KB of stack (a `u64` increment 7 KB), one
/// that also returned 496 bytes 40 KB, `apply_then` and `launch_then` of the same 35 and 39 KB, so the
/// coroutine overflowed its stack on its first such call (review 91). Boxed: 8-13 KB. `may` is asked whether
/// the caller is a coroutine only for values this large: a small one's path makes no call into it. Tested as
/// `const { size > BOX_ABOVE } || (const { size > MAY_INLINE } && call::in_coroutine())`, each test an
/// `if const { .. }` (see `BOX_ABOVE`): a type of at most this many bytes instantiates no boxed path.
pub(crate) const MAY_INLINE: usize = 128;

/// A handle to a value entrusted to a trustee: like `Arc<Mutex<T>>`, but every access is delegated to the
/// trustee's thread, so the value's cache lines never move and no lock is taken.
///
/// `Clone` and `Drop` are counted by the trustee (no atomic reference count); the last handle dropped drops the
/// value on its trustee.
pub struct Trust<T> {
    /// The property's address and trustee, owning one of its counted references; its `Clone` and `Drop` count
    /// (`call`), and its methods reach the property on the trustee (`trustee::handle`).
    handle: Handle<T>,
}

// SAFETY: the handle never touches the value itself; closures reach it only on the trustee's thread, one at a
// time. `T: Send` because the value is created on one thread and used and dropped on the trustee's.
unsafe impl<T: Send> Send for Trust<T> {}
// SAFETY: `&Trust<T>` allows only delegation, which moves `Send` closures to the trustee: as `Send`.
unsafe impl<T: Send> Sync for Trust<T> {}

impl<T> fmt::Debug for Trust<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trust")
            .field("trustee", &self.trustee())
            .field("property", &self.handle.as_ptr())
            .finish()
    }
}

impl<T> Trust<T> {
    pub(crate) fn from_handle(handle: Handle<T>) -> Self {
        Trust { handle }
    }

    /// The trustee this property is entrusted to.
    pub fn trustee(&self) -> Trustee {
        Trustee {
            shared: self.handle.shared(),
        }
    }

    /// The caller's worker and the property seen from it, when `caller` runs the property's trustee (one
    /// pointer comparison).
    #[inline(always)]
    pub(crate) fn on_trustee(&self, caller: Option<&'static Worker>) -> Option<(&'static Worker, Local<'_, T>)> {
        let worker = caller?;
        Some((worker, self.handle.local(worker.on_trustee())?))
    }

    pub(crate) fn property_ptr(&self) -> *mut Property<T> {
        self.handle.as_ptr()
    }

    /// True when the caller runs on this property's trustee (the local shortcut applies).
    pub(crate) fn is_local(&self) -> bool {
        is_current(self.handle.shared())
    }
}

impl<T: Send + 'static> Trust<T> {
    /// Applies `f` to the property on its trustee and returns the result.
    ///
    /// From a worker fiber this suspends the fiber; from a plain thread it waits (spinning briefly, then
    /// parking); from a `may` coroutine it yields to `may`. On the property's own trustee it runs inline.
    /// A panic in `f` is caught on the trustee (which keeps serving) and resumed here with its payload; the
    /// property stays usable. A closure or a result over 512 bytes is boxed (one allocation), so the call
    /// path moves a pointer, not the value, and a large result needs no more of the caller's stack than the
    /// result itself; from a `may` coroutine, whose stack is small, one over 128 bytes.
    ///
    /// Panics when called from inside a closure that a *different* trustee is applying (use `apply_then` or
    /// `launch`), or from inside a closure already running on this same property.
    #[inline]
    pub fn apply<R, F>(&self, f: F) -> R
    where
        F: FnOnce(&mut T) -> R + Send + 'static,
        R: Send + 'static,
    {
        if const { size_of::<R>() > BOX_ABOVE } || (const { size_of::<R>() > MAY_INLINE } && call::in_coroutine()) {
            // Comes back boxed: the layers below move a pointer, and the result moves once, out of its box (by
            // value through them, a 32 KiB result took 296 KiB of a plain thread's stack in release).
            return *self.apply_closure(boxed_result(f));
        }
        self.apply_closure(f)
    }

    /// `apply` for a result small enough to move by value.
    #[inline]
    fn apply_closure<R, F>(&self, f: F) -> R
    where
        F: FnOnce(&mut T) -> R + Send + 'static,
        R: Send + 'static,
    {
        if const { size_of::<F>() > BOX_ABOVE } || (const { size_of::<F>() > MAY_INLINE } && call::in_coroutine()) {
            // Boxed here, at the boundary: the layers below move a pointer, and the trustee calls the closure
            // in its box instead of moving it onto its own stack.
            let f: Box<dyn FnOnce(&mut T) -> R + Send> = Box::new(f);
            return self.apply_sized(move |t| f(t));
        }
        self.apply_sized(f)
    }

    /// `apply` for a closure small enough to move by value.
    #[inline]
    fn apply_sized<R, F>(&self, f: F) -> R
    where
        F: FnOnce(&mut T) -> R + Send + 'static,
        R: Send + 'static,
    {
        let property = SendPtr(self.handle.as_ptr());
        // The caller is classified once: the thread-local is read here and nowhere below.
        let caller = context::worker();
        // On the property's trustee (one pointer comparison), where the handle keeps the property live.
        if let Some((worker, local)) = self.on_trustee(caller) {
            if call::queued_to_self(worker) && worker.fiber.get().is_some() {
                return apply_behind_queued(worker, Apply { property, f });
            }
            before_inline_apply(worker);
            // Launched fibers share the value (a `Latch`): a fiber waits for them; elsewhere this panics.
            if local.launched() {
                wait_for_launched(worker, local);
            }
            let r = local.apply(f);
            after_inline_apply(worker);
            return r;
        }
        // The record runs on the property's trustee; the waiting handle keeps the property live.
        let result = call::call_from(caller, self.handle.shared(), Apply { property, f });
        result.into_result().unwrap_or_else(|payload| resume_unwind(payload))
    }

    /// Applies `f` without waiting: returns at once, and `then(result)` runs later on this thread — on a
    /// worker, its scheduler runs it; on a plain thread, later trust-core calls and [`wait_pending`] run it.
    /// Never on the trustee. Requests from one thread to one trustee are applied in issue order.
    ///
    /// A panic in `f` (or in `then`) is kept and resumed by the issuer's next [`wait_pending`] (issued inside a
    /// delegated closure, where nothing can wait, such a panic is only reported by the panic hook). Flow control:
    /// when the batch to this trustee is full, the caller first serves its own completions, so memory stays
    /// bounded. Allowed inside delegated closures (the request is queued without waiting).
    ///
    /// From a `may` coroutine it waits like `apply` (the coroutine yields) and runs `then` at once, on the
    /// coroutine: `may` moves coroutines between threads, and `then` need not be `Send`.
    ///
    /// A closure, continuation or result over 512 bytes (from a `may` coroutine, 128) is boxed (one allocation
    /// each), as in `apply`, so the call path moves pointers, not the values.
    ///
    /// [`wait_pending`]: crate::wait_pending
    // Inlined down to the push of a plain thread that has called before (`call::post_then_from_thread`); the
    // other callers go out of line (`apply_then_elsewhere`). Out of line as a whole, each request paid a call
    // and the saves of six registers, and the caller's loop kept nothing in registers across it: inlined, one
    // thread's pipelined `apply_then` went from about 190 to 165 instructions per request (`callgrind`) and
    // 65 to 75-80 M ops/s (thirty-eighth session). The thread-locals of that path are still found by calls out
    // of line (`call::thread_client_cell`): a `may` coroutine's loop may resume on another thread.
    #[inline]
    pub fn apply_then<R, F, C>(&self, f: F, then: C)
    where
        F: FnOnce(&mut T) -> R + Send + 'static,
        R: Send + 'static,
        C: FnOnce(R) + 'static,
    {
        if const { size_of::<F>() > BOX_ABOVE || size_of::<C>() > BOX_ABOVE }
            || (const { size_of::<F>() > MAY_INLINE || size_of::<C>() > MAY_INLINE } && call::in_coroutine())
        {
            // Boxed here, at the boundary, so the layers below (the client's queues, the local shortcut, the
            // trustee) move pointers: by value, a 32 KiB continuation capture overflowed a fiber's 256 KiB stack
            // in a debug build (review 38). Both, whichever is the large one: the types boxed are then the same
            // whatever `F` and `C` are. In this frame, not a function of its own: in a debug build each call a
            // large value is passed to takes one more copy of it.
            let f: Box<dyn FnOnce(&mut T) -> R + Send> = Box::new(f);
            let then: Box<dyn FnOnce(R)> = Box::new(then);
            return self.apply_then_result(f, then);
        }
        self.apply_then_result(f, then)
    }

    /// `apply_then` for a closure and a continuation small enough to move by value. A function of its own (not
    /// inlined in a debug build): `apply_then`'s frame then holds two slots for a large closure or continuation
    /// (the box's argument and this call's), not those of every move below.
    #[inline]
    fn apply_then_result<R, F, C>(&self, f: F, then: C)
    where
        F: FnOnce(&mut T) -> R + Send + 'static,
        R: Send + 'static,
        C: FnOnce(R) + 'static,
    {
        if const { size_of::<R>() > BOX_ABOVE } || (const { size_of::<R>() > MAY_INLINE } && call::in_coroutine()) {
            // As in `apply`: boxed on the trustee, moved out of its box for `then`.
            return self.apply_then_sized(boxed_result(f), unboxed(then));
        }
        self.apply_then_sized(f, then)
    }

    #[inline]
    fn apply_then_sized<R, F, C>(&self, f: F, then: C)
    where
        F: FnOnce(&mut T) -> R + Send + 'static,
        R: Send + 'static,
        C: FnOnce(R) + 'static,
    {
        // The property outlives the request even if this handle is dropped elsewhere first: see
        // `Worker::retire`.
        let job = Apply {
            property: SendPtr(self.handle.as_ptr()),
            f,
        };
        // A plain thread that has called before, the usual pipelining caller: one thread-local read.
        let Err((job, then)) = call::post_then_from_thread(self.handle.shared(), job, then) else {
            return;
        };
        self.apply_then_elsewhere(job, then)
    }

    /// `apply_then` from any other caller: a worker (the local shortcut, its fibers, its scheduler, a delegated
    /// closure), a `may` coroutine, a plain thread's first call, or after a shutdown.
    #[inline(never)]
    fn apply_then_elsewhere<R, F, C>(&self, job: Apply<T, F>, then: C)
    where
        F: FnOnce(&mut T) -> R + Send + 'static,
        R: Send + 'static,
        C: FnOnce(R) + 'static,
    {
        let caller = context::worker();
        if let Some((worker, local)) = self.on_trustee(caller) {
            if in_forked_child() {
                // A child forked by a fiber of this worker: the value is the child's copy, and nothing there
                // would run a continuation (review 68). One relaxed load, as `end_if_forked` after the apply.
                refuse_both(job, then, IN_FORKED_CHILD);
            }
            if !local.in_use() && !call::queued_to_self(worker) {
                let owner = worker.issuer();
                let result = local.apply_caught(job.f);
                let cont = Cont::held(then, owner, result);
                worker.client.borrow_mut().ready.push_back(cont);
                return;
            }
            if worker.chain_launched_on(job.property.get() as usize) {
                // From the chain of a fiber launched on this latch: the request runs once every launched fiber
                // has ended, that one too, so it counts for the worker, not for the chain (the fiber's
                // `wait_pending` would wait for itself).
                return worker.outside_chain(|| call::post_then_to_self(worker, job, then));
            }
            if worker.fiber_launched_on(job.property.get() as usize) {
                refuse_both(job, then, APPLY_THEN_ON_OWN_LATCH);
            }
        }
        // Elsewhere; or here, but the property is in use (this call comes from inside its own closure, or beside
        // the fibers launched on it), or earlier requests of this worker to it are still queued: the request goes
        // by the worker's channel to its own trustee, after those, and runs once the property is free.
        match caller {
            Some(worker) if std::ptr::eq(worker.shared, self.handle.shared()) => {
                call::post_then_to_self(worker, job, then)
            }
            _ => call::post_then(caller, self.handle.shared(), job, then),
        }
    }

    /// Applies `f` asynchronously: the future sends the request on its first poll and completes with the
    /// result once the trustee has answered, waking the task. Works with tokio or any executor, from any
    /// thread; dropping the future early is harmless (the result is dropped when it arrives). A panic in `f`
    /// resumes when the future is polled to completion. Futures awaited one after another apply in that
    /// order; a future in flight is not ordered with the other requests in flight at the same time, nor
    /// with this thread's `apply_then`s not published yet (its request goes by the trustee's mailbox, one
    /// allocation that also holds the answer, so no executor thread ever waits for a slot). The allocation is
    /// made with the future, `f` in it: the future itself is small whatever `f` captures (a future dropped
    /// unpolled drops `f` unrun). On a plain thread the first poll also sends the thread's unpublished
    /// `apply_then`s (where a lane is free, without waiting), as a blocking call does: an executor's thread that
    /// only awaits would otherwise keep them (a `_then` stub in a `Drop`, say) until it made another call.
    /// After `Runtime::shutdown`, polling panics with `apply`'s message.
    pub fn apply_async<R, F>(&self, f: F) -> ApplyFuture<'_, T, F, R>
    where
        F: FnOnce(&mut T) -> R + Send + 'static,
        R: Send + 'static,
    {
        // The request is made here, `f` written into it by the one call it goes through (in a debug build, each
        // call a large closure is passed to takes a copy of it on the caller's stack). The property outlives the
        // request even if the handle is dropped first: see `Worker::retire`.
        ApplyFuture::new(self, Unsent::new_apply(SendPtr(self.property_ptr()), f))
    }

    /// Like [`apply`](Self::apply), with an argument moved to the trustee alongside the closure. A small
    /// argument travels inside the request; one over 512 bytes is boxed at once and travels out of line, so the
    /// call does not copy it once per layer of the request (the trustee's thread has an 8 MiB stack; see
    /// `RuntimeBuilder::worker_stack_size`). Passing it by value still takes a few copies of it on the
    /// caller's stack (about 4 in a debug build: a 1 MiB array works from the main thread's 8 MiB, not from a
    /// spawned thread's default 2 MiB, even in a release build): pass a value of a megabyte as a `Box` or a
    /// `Vec`, which moves only its pointer (and length).
    pub fn apply_with<V, R, F>(&self, f: F, arg: V) -> R
    where
        F: FnOnce(&mut T, V) -> R + Send + 'static,
        V: Send + 'static,
        R: Send + 'static,
    {
        // A debug build reserves a slot in this frame for every value it moves, whichever branch runs: two
        // here for a large `V` (the box's argument and the call's), not the closure that holds it too.
        if const { size_of::<V>() > BOX_ABOVE } {
            self.apply(boxed_arg(f, Box::new(arg)))
        } else {
            self.apply_with_inline(f, arg)
        }
    }

    /// `apply_with` for an argument small enough to travel inside the request.
    #[inline]
    fn apply_with_inline<V, R, F>(&self, f: F, arg: V) -> R
    where
        F: FnOnce(&mut T, V) -> R + Send + 'static,
        V: Send + 'static,
        R: Send + 'static,
    {
        self.apply(inline_arg(f, arg))
    }
}

const APPLY_PAST_QUEUED: &str = "blocking `apply` inside a delegated closure, to a property of its own \
     trustee, after this fiber's `apply_then`s to that trustee that still wait (behind a latch's launched \
     fibers): issue order says it runs after them, and the closure cannot wait for them. Use `apply_then`, or \
     make the call after the closure returns";

/// A fiber's `apply` on its own worker's property while its own earlier requests to its worker's trustee wait
/// in the worker's channel to itself (an `apply_then` on a latch whose launched fibers run, say): the local
/// shortcut would run it before them, so it goes through that channel too, after them (out of line: the
/// local shortcut stays one check longer, no more). Other fibers' requests there do not hold it back: one of
/// them may wait for this fiber (a request on a latch that this fiber was launched on). Inside a closure the
/// fiber applies inline, it cannot wait: it panics. Closures served for other clients and continuations on
/// the scheduler issue as the worker, whose requests nothing tracks per closure: an `apply` there runs at once
/// (a check would refuse the unrelated ones too, such as a property's destructor at shutdown).
#[cold]
#[inline(never)]
fn apply_behind_queued<T: 'static, R: Send + 'static, F: FnOnce(&mut T) -> R + Send + 'static>(
    worker: &'static Worker,
    job: Apply<T, F>,
) -> R {
    if !worker.in_fiber() {
        refuse(job, APPLY_PAST_QUEUED);
    }
    // Behind its own requests or not, it would wait for every fiber launched on the latch, this one too.
    if worker.runs_launched_on(job.property.get() as usize) {
        refuse(job, property::APPLY_ON_OWN_LATCH);
    }
    // So would it for a fiber launched on the latch that joins this one.
    if worker.joined_by_launched_on(job.property.get() as usize) {
        refuse(job, property::APPLY_JOINED_BY_LAUNCHED);
    }
    match call::call_to_self(worker, job).into_result() {
        Ok(r) => r,
        Err(payload) => resume_unwind(payload),
    }
}

/// A fiber about to apply inline waits while launched fibers share the value (a `Latch`); elsewhere the apply
/// goes ahead and the property's borrow check panics. Out of line: rare, and it suspends (see
/// `call::call_from` for why the inlined path keeps one switch).
#[cold]
#[inline(never)]
fn wait_for_launched<T>(worker: &Worker, property: Local<'_, T>) {
    if !worker.in_fiber() {
        return;
    }
    assert!(
        !worker.runs_launched_on(property.addr()),
        "{}",
        property::APPLY_ON_OWN_LATCH
    );
    // Counted as waiting meanwhile: new launches on the property wait behind this apply.
    property.set_applies_waiting(1);
    loop {
        // A fiber that a fiber launched on the latch joins (through joins on this worker) would wait for its
        // joiner: refused before it waits, and after every wake-up, since such a join may come while it waits
        // (the join makes it ready, `Scheduler::recheck_latch_waiters`; review 98: it waited for good).
        let refused = worker.joined_by_launched_on(property.addr());
        if refused || !property.launched() {
            property.set_applies_waiting(-1);
            if refused {
                panic!("{}", property::APPLY_JOINED_BY_LAUNCHED);
            }
            return;
        }
        // Suspended, not yielding in a loop: a launched fiber may hold the latch for long (asleep, waiting for
        // a socket), and the worker must be free to sleep meanwhile. The last one to end makes this ready.
        let (_, id) = worker.fiber.get().expect("in a fiber");
        worker.scheduler.wait_for_launched(property.addr(), id);
        suspend_on(worker);
    }
}

const APPLY_THEN_ON_OWN_LATCH: &str = "`apply_then` on the `Trust<Latch<T>>` whose `launch` runs this fiber: \
     it hands out `&mut Latch<T>`, so it would run only once every launched fiber has ended, this one included. \
     The fiber already holds `&Latch<T>`: lock the latch instead";

const TAKE_ON_OWN_LATCH: &str = "`Trust::try_unwrap`/`into_inner` on the `Trust<Latch<T>>` whose `launch` runs \
     this fiber: the value comes back only once every launched fiber has ended, this one included. Return from \
     the fiber first, and take the value where it was launched from";

const TAKE_JOINED_BY_LAUNCHED: &str = "`Trust::try_unwrap`/`into_inner` on a `Trust<Latch<T>>` from a fiber that a \
     fiber launched on that latch joins (directly, or through fibers joining each other on this worker): the value \
     comes back only once every launched fiber has ended, the joining one included, which waits for this fiber. \
     Take the value after the launched fibers have returned";

const TAKE_ON_TRUSTEE: &str = "`Trust::try_unwrap`/`into_inner` inside a delegated closure (or an `apply_then` \
     continuation on a worker): it waits until every request sent before it has been served, and the trustee \
     cannot wait. Call it from a thread or a fiber (`spawn`), or send the handle there with `apply_then`";

impl<T: Send + 'static> Trust<T> {
    /// Returns the value if this is the last handle, else gives the handle back unchanged; like
    /// [`Arc::try_unwrap`](std::sync::Arc::try_unwrap).
    ///
    /// "The last handle" is decided on the trustee, once every request and count change sent before this call
    /// (by any thread) has been served: if no other `Trust<T>` to the value is counted then, the value is
    /// unregistered from its trustee and moved out, without being dropped; otherwise `Err` returns this
    /// handle, still counted and usable. So a clone dropped before the call (on any thread, as long as its
    /// drop happens before the call) does not make it fail, and a clone alive at the call does; two handles
    /// calling `try_unwrap` at the same time both fail, as with `Arc`. A closure still running on the value
    /// (a launched fiber, say) is waited for first, and so are requests other threads issued but have not
    /// sent yet (a plain thread publishes its `apply_then`s 48 at a time: the rest go at its next publish to
    /// any trustee, blocking call, `wait_pending`, or exit), since they may refer to the value.
    ///
    /// Waits like [`apply`](Self::apply): suspends a fiber, yields a `may` coroutine, parks a thread.
    ///
    /// # Panics
    ///
    /// Inside a delegated closure and in an `apply_then` continuation on a worker (the trustee cannot wait
    /// there), and after [`Runtime::shutdown`](crate::Runtime::shutdown). On a `Trust<Latch<T>>`, from a fiber
    /// that the value could only come back after: one launched on that latch, or one that such a fiber joins
    /// (directly or through fibers joining each other on this worker), also when the join comes while the take
    /// waits. The handle is then given up, as by a drop.
    pub fn try_unwrap(self) -> Result<T, Trust<T>> {
        if const { size_of::<T>() > BOX_ABOVE } {
            return self.try_unwrap_boxed();
        }
        self.try_unwrap_sized()
    }

    /// `try_unwrap` of a value small enough to move by value (a function of its own: `try_unwrap`'s frame in a
    /// debug build keeps no slot for a large value).
    #[inline]
    fn try_unwrap_sized(self) -> Result<T, Trust<T>> {
        self.take(true)
            .map_err(|handle| handle.expect("`try_unwrap` gets its handle back when it fails"))
    }

    /// `try_unwrap` of a value over 512 bytes: boxed on the trustee as it is taken, and moved out of its box
    /// once, into the result (by value through the verdict, `join` and `take`, a 32 KiB value overflowed a
    /// fiber's 256 KiB stack in a debug build: review 38).
    #[inline(never)]
    fn try_unwrap_boxed(self) -> Result<T, Trust<T>> {
        match self.send_take(true, Box::new).join() {
            Ok(Ok(value)) => Ok(*value),
            Ok(Err(handle)) => Err(handle.expect("`try_unwrap` gets its handle back when it fails")),
            Err(payload) => raise_refused(payload),
        }
    }

    /// Returns the value if this is the last handle, else drops the handle and returns `None`; like
    /// [`Arc::into_inner`](std::sync::Arc::into_inner). When every handle of a value ends in `into_inner`
    /// (from any threads, at the same time or not), exactly one of them returns `Some`; the others and plain
    /// drops just give up their count.
    ///
    /// The decision is made on the trustee as for [`try_unwrap`](Self::try_unwrap): the handle's count is
    /// given up first, and the value comes back if no handle is counted once every request and count change
    /// sent before has been served. If a handle that was still on its way is counted then, this returns
    /// `None` and that handle keeps the value alive as usual.
    ///
    /// # Panics
    ///
    /// As `try_unwrap`.
    pub fn into_inner(self) -> Option<T> {
        if const { size_of::<T>() > BOX_ABOVE } {
            return self.into_inner_boxed();
        }
        self.take(false).ok()
    }

    /// `into_inner` of a value over 512 bytes: as `try_unwrap_boxed`.
    #[inline(never)]
    fn into_inner_boxed(self) -> Option<T> {
        match self.send_take(false, Box::new).join() {
            Ok(Ok(value)) => Some(*value),
            Ok(Err(_)) => None,
            Err(payload) => raise_refused(payload),
        }
    }

    /// Gives up this handle's count and waits for the trustee's verdict: the value, or (with `give_back`) a
    /// handle the trustee counted again. The handle travels in the verdict, not its count alone: a caller that
    /// stops waiting (a `may` coroutine cancelled meanwhile) drops it with the verdict, and the count with it.
    fn take(self, give_back: bool) -> Result<T, Option<Trust<T>>> {
        match self.send_take(give_back, |value| value).join() {
            Ok(verdict) => verdict,
            Err(payload) => raise_refused(payload),
        }
    }

    /// `take` up to the wait: the handle's count is given up, and the returned handle gives the verdict, the
    /// value in it as `wrap` makes it on the trustee (boxed, for a large one). Inlined: `take` stays one
    /// function.
    #[inline(always)]
    fn send_take<V: Send + 'static>(
        self,
        give_back: bool,
        wrap: impl FnOnce(T) -> V + Send + 'static,
    ) -> Fiber<Result<V, Option<Trust<T>>>> {
        let caller = context::worker();
        if caller.is_some() && (context::in_delegated() || context::fiber().is_none()) {
            panic!("{TAKE_ON_TRUSTEE}");
        }
        // A fiber launched on this very value would wait for itself: the value is retired only once every
        // launched fiber has ended.
        if let Some(worker) = caller {
            let property = self.handle.as_ptr() as usize;
            assert!(!worker.runs_launched_on(property), "{TAKE_ON_OWN_LATCH}");
            // Nor one joined by such a fiber: its joiner waits for it.
            assert!(!worker.joined_by_launched_on(property), "{TAKE_JOINED_BY_LAUNCHED}");
        }
        let local = self.is_local();
        let shared = self.handle.shared();
        // The handle travels to the trustee, which gives up its count there.
        let Trust { handle } = self;
        let (verdict, promise) = fiber::promise::<Result<V, Option<Trust<T>>>>();
        if local {
            // A fiber here (the checks above panic for anything else on a worker): a join that makes a fiber
            // launched on the latch wait for it refuses the take (`Worker::refuse_joined_takes`).
            let fiber = caller.and_then(|worker| worker.fiber.get()).map(|(_, id)| id);
            begin_take(handle, promise, give_back, wrap, fiber);
        } else {
            // The handle's count keeps the property live until the record runs.
            let begin = move || begin_take(handle, promise, give_back, wrap, None);
            call::call_from(caller, shared, job::Always(begin));
        }
        verdict
    }
}

/// On the trustee: gives up a handle's count and retires the property to a taker that keeps `promise` (the
/// value, or with `give_back` a handle counted again, else nothing; or the refusal, see `TakeRefused`). `fiber`:
/// the fiber of this worker that waits for the verdict, if the take is its own, inline.
fn begin_take<T: Send + 'static, V: Send + 'static>(
    handle: Handle<T>,
    promise: Promise<Result<V, Option<Trust<T>>>>,
    give_back: bool,
    wrap: impl FnOnce(T) -> V + 'static,
    fiber: Option<usize>,
) {
    let taker = move |taken: Taken<T>| match taken {
        Taken::Value(value) => promise.keep(Ok(wrap(value))),
        Taken::GivenBack(handle) => promise.keep(Err(Some(Trust::from_handle(handle)))),
        Taken::Referenced => promise.keep(Err(None)),
        // The count stays given up, as when the refusal comes before the take: the handle is gone either way.
        Taken::JoinedByLaunched => promise.fail(Box::new(TakeRefused)),
    };
    context::worker()
        .expect("reference counts change on the trustee")
        .take(handle, give_back, fiber, taker);
}

/// The verdict of a take refused while it waited (`Settled::JoinedByLaunched`): the taking fiber raises the
/// refusal itself (`raise_refused`), with the message and through the panic hook, as when the refusal comes
/// before it waits.
struct TakeRefused;

/// A take's verdict that came back as a panic: a refusal is raised afresh, any other payload (the shutdown's)
/// resumed.
fn raise_refused(payload: Box<dyn Any + Send>) -> ! {
    if payload.is::<TakeRefused>() {
        panic!("{TAKE_JOINED_BY_LAUNCHED}");
    }
    resume_unwind(payload)
}

fn boxed_result<T, R>(f: impl FnOnce(&mut T) -> R) -> impl FnOnce(&mut T) -> Box<R> {
    move |t| Box::new(f(t))
}

pub(crate) fn unboxed<R>(then: impl FnOnce(R)) -> impl FnOnce(Box<R>) {
    move |r| then(*r)
}

fn boxed_arg<T, V, R>(f: impl FnOnce(&mut T, V) -> R, arg: Box<V>) -> impl FnOnce(&mut T) -> R {
    move |t| f(t, *arg)
}

fn inline_arg<T, V, R>(f: impl FnOnce(&mut T, V) -> R, arg: V) -> impl FnOnce(&mut T) -> R {
    move |t| f(t, arg)
}

impl<T> Clone for Trust<T> {
    /// Counts the new handle on the trustee without waiting, wherever it is called (inside delegated closures
    /// and continuations too): inline on the trustee's own worker, else a fire-and-forget increment. The
    /// increment is sent before the clone can escape, so it is ordered before anything the clone is used for
    /// on this thread, and the trustee never drops the value while it is on its way (see `Worker::retire`).
    fn clone(&self) -> Self {
        Trust {
            handle: self.handle.clone(),
        }
    }
}

// Drop: the handle's (`call`'s `Drop for Handle`) uncounts it without waiting; the last one drops the value on
// its trustee. After the runtime has shut down it does nothing: shutdown already dropped the value.
