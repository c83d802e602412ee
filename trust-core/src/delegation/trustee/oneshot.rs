//! A request and its answer in one allocation, for `Trust::apply_async`: the node mailed to the trustee
//! carries the job there and holds its output and the waiting task's waker; the future keeps a pointer to
//! it. Whichever of the two sides lets go last frees the node, usually the future, on the thread that made it
//! (so the allocator's fast path serves both ends).
//!
//! No lock: one state word orders the two sides (the scheme of `futures`' `AtomicWaker` and tokio's
//! `oneshot`, folded into the mail node). The trustee writes the output, then sets `DONE`, then wakes
//! the waker unless the future is swapping it (`REGISTERING`), in which case the future sees `DONE` when it
//! clears `REGISTERING` and answers from that same poll. A task polled again only once its answer is there
//! (the usual case: its waker went with the request) reads the state word and, to let go, usually only
//! reads it again.

use std::cell::UnsafeCell;
use std::mem::ManuallyDrop;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Poll, Waker};

use crate::delegation::trustee::job::{self, Apply, Job, Outcome};
use crate::delegation::trustee::property::{Property, SendPtr};
use crate::delegation::trustee::{relay, unwind};
use crate::delegation::trustee::shared::{Mail, MailHeader, Runnable, TrusteeShared};

/// The trustee has written `output` (`Some`: the job ran; `None`: it was dropped without running).
const DONE: u8 = 1;
/// The future is swapping `waker`: the trustee must not read it.
const REGISTERING: u8 = 2;
/// One side has let go of the node: the other frees it.
const LET_GO: u8 = 4;

/// The part of a node both sides use; the job follows it (`Node`).
#[repr(C)]
struct Shared<O> {
    /// First: the mailbox links nodes through it.
    header: MailHeader,
    state: AtomicU8,
    /// Written by the future before the node is mailed or under `REGISTERING`; taken by the trustee after
    /// `DONE` when no `REGISTERING` was seen.
    waker: UnsafeCell<Option<Waker>>,
    /// Written once by the trustee before `DONE`; taken by the future after it.
    output: UnsafeCell<Option<O>>,
    /// Frees the whole node (`free::<J, O>`): the future's half does not know the job's type.
    free: unsafe fn(NonNull<Shared<O>>),
}

#[repr(C)]
struct Node<J, O> {
    shared: Shared<O>,
    /// Moved out by the trustee when it opens the node (always before it lets go).
    job: UnsafeCell<ManuallyDrop<J>>,
}

/// The future's half: polls for the output of a job mailed to a trustee.
pub(crate) struct Answer<O> {
    node: NonNull<Shared<O>>,
}

// SAFETY: the node is shared with the trustee through the state word only; this half moves the output
// (`O: Send`) and drops the waker (`Waker: Send`).
unsafe impl<O: Send> Send for Answer<O> {}
// SAFETY: every method takes `&mut self`.
unsafe impl<O> Sync for Answer<O> {}

/// A node made but not mailed yet: the job waits in it, out of line, so that a future holding it holds one
/// pointer whatever the size of its closure (moved by value through the future's first poll, a 16 KiB
/// closure overflowed a fiber's stack in a debug build).
pub(crate) struct Unsent<J, O> {
    node: NonNull<Node<J, O>>,
}

// SAFETY: the node is this handle's alone until `send`; it holds the job (`J: Send`) and nothing shared.
unsafe impl<J: Send, O> Send for Unsent<J, O> {}
// SAFETY: every method takes `self` or `&mut self`.
unsafe impl<J, O> Sync for Unsent<J, O> {}

impl<O: Send + 'static, J: Job<Output = O>> Unsent<J, O> {
    /// Puts `job` in a node of its own, not mailed yet (the runtime's own requests use `new_apply`).
    #[cfg(test)]
    pub(crate) fn new(job: J) -> Self {
        let node = Self::without_job();
        // SAFETY: the node's job is uninitialized (`without_job`), and `UnsafeCell<ManuallyDrop<J>>` is laid out
        // as `J`: the job is written once, straight from the argument.
        unsafe { (&raw mut (*node.as_ptr()).job).cast::<J>().write(job) };
        Unsent { node }
    }

    /// A new node with its shared half written and its job not: the caller writes the job before anything
    /// else uses the node. The job is written in place, not built into a `Node` value and boxed: in a debug
    /// build each of those steps copied it on the stack, and a 32 KiB closure's copies overflowed a fiber's
    /// 256 KiB stack (review 25).
    fn without_job() -> NonNull<Node<J, O>> {
        let node = Box::leak(Box::<Node<J, O>>::new_uninit()).as_mut_ptr();
        let shared = Shared {
            header: MailHeader::new(open::<J>),
            state: AtomicU8::new(0),
            waker: UnsafeCell::new(None),
            output: UnsafeCell::new(None),
            free: free::<J, O>,
        };
        // SAFETY: a fresh allocation for a `Node`; its shared half is written once here.
        unsafe {
            (&raw mut (*node).shared).write(shared);
            NonNull::new_unchecked(node)
        }
    }

    /// Mails the job to `trustee`; `waker` is woken once its output is there.
    pub(crate) fn send(self, trustee: &TrusteeShared, waker: Waker) -> Answer<O> {
        let node = ManuallyDrop::new(self).node;
        // SAFETY: not mailed yet, so this handle is the node's only user.
        unsafe { *node.as_ref().shared.waker.get() = Some(waker) };
        // SAFETY: a node headed by its header, whose `open` is the function for its type, mailed once; the
        // trustee owns its job from here on, and shares the rest through the state word.
        unsafe { trustee.mail_node(node.as_ptr().cast()) };
        Answer { node: node.cast() }
    }

    /// The job back, unsent; the node is freed.
    pub(crate) fn into_job(self) -> J {
        let node = ManuallyDrop::new(self).node;
        // SAFETY: not mailed, so this handle is the node's only user: the job is moved out once, and the node
        // freed without dropping it again (`ManuallyDrop`).
        unsafe {
            let job = ManuallyDrop::take(&mut *node.as_ref().job.get());
            free::<J, O>(node.cast());
            job
        }
    }
}

impl<T: 'static, R: Send + 'static, F: FnOnce(&mut T) -> R + Send + 'static> Unsent<Apply<T, F>, Outcome<R>> {
    /// `new(Apply { property, f })`, with `f` moved into the node by the caller's argument alone (no `Apply`
    /// value built on the stack first: see `without_job`).
    pub(crate) fn new_apply(property: SendPtr<Property<T>>, f: F) -> Self {
        let node = Self::without_job();
        // SAFETY: as in `new`: the job is uninitialized and laid out as an `Apply`, whose two fields are
        // written once each.
        unsafe {
            let job = (&raw mut (*node.as_ptr()).job).cast::<Apply<T, F>>();
            (&raw mut (*job).property).write(property);
            (&raw mut (*job).f).write(f);
        }
        Unsent { node }
    }

    /// The closure back, unsent, moved from the node into a box of its own without passing through the stack
    /// (the local shortcut of a large closure: see `without_job`); the node is freed.
    pub(crate) fn into_boxed_closure(self) -> Box<F> {
        let node = ManuallyDrop::new(self).node;
        let mut boxed = Box::<F>::new_uninit();
        // SAFETY: not mailed, so this handle is the node's only user: the closure is moved out once (copied,
        // and never dropped in the node, whose job is `ManuallyDrop` and freed without it); the property
        // pointer beside it needs no drop.
        unsafe {
            let job = (&raw mut (*node.as_ptr()).job).cast::<Apply<T, F>>();
            ptr::copy_nonoverlapping(&raw const (*job).f, boxed.as_mut_ptr(), 1);
            free::<Apply<T, F>, Outcome<R>>(node.cast());
            boxed.assume_init()
        }
    }
}

impl<J, O> Drop for Unsent<J, O> {
    /// Never mailed (a future dropped before its first poll): the job is dropped unrun with the node, which is
    /// freed even when a capture's destructor panics (review 26: the unwind skipped the free, and the node
    /// leaked).
    fn drop(&mut self) {
        struct Free<J, O>(NonNull<Node<J, O>>);
        impl<J, O> Drop for Free<J, O> {
            fn drop(&mut self) {
                // SAFETY: not mailed, so the `Unsent` was the node's only user, and its job has been dropped
                // (or its drop has panicked) by now: the node is freed without dropping it again.
                unsafe { free::<J, O>(self.0.cast()) };
            }
        }
        let _free = Free(self.node);
        // SAFETY: not mailed, so this handle is the node's only user; the job is dropped once, here.
        unsafe { ManuallyDrop::drop(&mut *self.node.as_ref().job.get()) };
    }
}

impl<O: Send + 'static> Answer<O> {
    /// Mails `job` to `trustee`; `waker` is woken once its output is there.
    #[cfg(test)]
    pub(crate) fn send<J: Job<Output = O>>(trustee: &TrusteeShared, job: J, waker: Waker) -> Self {
        Unsent::new(job).send(trustee, waker)
    }

    /// The job's output once the trustee has answered (`None` if the job was dropped without running);
    /// until then, `waker` is the one woken. Not to be called again after it returned `Ready`.
    pub(crate) fn poll(&mut self, waker: &Waker) -> Poll<Option<O>> {
        if self.poll_done(waker).is_pending() {
            return Poll::Pending;
        }
        // SAFETY: DONE, acquired: the trustee wrote the output and no longer touches it.
        Poll::Ready(unsafe { (*self.node.as_ref().output.get()).take() })
    }

    /// `poll`, leaving the output in the node: `Ready` once the trustee has answered (then `take_boxed`).
    #[inline(always)]
    pub(crate) fn poll_done(&mut self, waker: &Waker) -> Poll<()> {
        // SAFETY: the node lives until both sides let go, and this side lets go only in `drop`.
        let node = unsafe { self.node.as_ref() };
        let mut state = node.state.load(Ordering::Acquire);
        if state & DONE == 0 {
            // The waker is swapped only under REGISTERING (the only other change, while the future lives, is
            // DONE): a failed exchange means the answer came.
            match node
                .state
                .compare_exchange(state, state | REGISTERING, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => {
                    // SAFETY: under REGISTERING the trustee leaves the waker alone.
                    let slot = unsafe { &mut *node.waker.get() };
                    if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
                        *slot = Some(waker.clone());
                    }
                    // Release: the trustee sees the new waker; Acquire: the output, if it came meanwhile (the
                    // trustee saw REGISTERING then, and woke nobody: this poll answers).
                    state = node.state.fetch_and(!REGISTERING, Ordering::AcqRel);
                    if state & DONE == 0 {
                        return Poll::Pending;
                    }
                }
                Err(now) => state = now,
            }
        }
        debug_assert!(state & DONE != 0);
        Poll::Ready(())
    }

    /// After `poll_done` gave `Ready`: the output (`None` if the job was dropped without running), moved out
    /// of the node into a box of its own without passing through the stack, for a large result (the future's
    /// `poll_large`). Not to be called again.
    pub(crate) fn take_boxed(&mut self) -> Option<Box<O>> {
        // SAFETY: the node lives until both sides let go; DONE, acquired (`poll_done`): the trustee wrote the
        // output and no longer touches it.
        let slot = unsafe { self.node.as_ref() }.output.get();
        // SAFETY: as above, this side alone uses the output now.
        let output = unsafe { (*slot).as_mut() }?;
        let mut boxed = Box::<O>::new_uninit();
        // SAFETY: the output is moved (copied, then forgotten in the slot, never dropped there) into the box.
        unsafe {
            ptr::copy_nonoverlapping(output, boxed.as_mut_ptr(), 1);
            forget_output(slot);
            Some(boxed.assume_init())
        }
    }
}

/// Empties an output slot whose value was moved out, without dropping it. Out of line: the `None` written is
/// built in this frame, as large as the output, and the frame is gone before the caller goes on.
///
/// # Safety
/// `slot` is valid for writes, and its value has been moved out.
#[inline(never)]
unsafe fn forget_output<O>(slot: *mut Option<O>) {
    // SAFETY: by the contract; the old value is overwritten without being dropped.
    unsafe { slot.write(None) };
}

impl<O> Drop for Answer<O> {
    fn drop(&mut self) {
        // SAFETY: the node lives until both sides let go; this is this side's one letting go.
        if unsafe { lets_go_last(self.node) } {
            // SAFETY: both sides have let go (AcqRel: after all of the other's accesses).
            unsafe { (self.node.as_ref().free)(self.node) };
        }
    }
}

/// Lets go of the node for one side: true for the second side to do so, which must then free it (with an
/// output nobody took) and touch it no more.
///
/// # Safety
/// Called once per side.
unsafe fn lets_go_last<O>(node: NonNull<Shared<O>>) -> bool {
    // SAFETY: live until both sides let go; by the contract, this side has not yet.
    let shared = unsafe { node.as_ref() };
    // Usually the other side has let go already (the trustee does before it wakes the task): then a load
    // tells, and no read-modify-write is needed.
    shared.state.load(Ordering::Acquire) & LET_GO != 0
        || shared.state.fetch_or(LET_GO, Ordering::AcqRel) & LET_GO != 0
}

/// # Safety
/// `node` heads a `Node<J, O>` that nobody uses any more, whose job was moved out.
unsafe fn free<J, O>(node: NonNull<Shared<O>>) {
    // SAFETY: by the contract; the job is not dropped again (`ManuallyDrop`), the rest drops with the box.
    drop(unsafe { Box::from_raw(node.cast::<Node<J, O>>().as_ptr()) });
}

/// # Safety
/// `h` heads a `Node<J, J::Output>` made by `Unsent::new`, opened once.
unsafe fn open<J: Job<Output: Send>>(h: *mut MailHeader) -> Mail {
    // SAFETY: by the contract, `finish::<J>` fits the node, and a `Runnable` finishes it once.
    Mail::Run(unsafe { Runnable::new(h, finish::<J>) })
}

/// Runs (or drops) the node's job and answers.
///
/// # Safety
/// `h` heads a `Node<J, J::Output>` made by `Unsent::new`, finished once, on the trustee.
unsafe fn finish<J: Job<Output: Send>>(h: *mut MailHeader, run: bool) {
    let node = NonNull::new(h.cast::<Node<J, J::Output>>()).expect("a mailed node");
    // SAFETY: the job is the trustee's, moved out once, here.
    let job = unsafe { ManuallyDrop::take(&mut *node.as_ref().job.get()) };
    let answering = Answering { node };
    if run {
        // A job that must wait (see `job::run_job`) keeps `answering` until it runs; dropped unrun at
        // shutdown, it answers `None`.
        job::contained(move || job::run_job(job, move |output| answering.answer(Some(output))));
    } else {
        // Each on its own: a capture's destructor that panics must not unwind into the answer's wake (user code
        // too), or two panics would abort the process (review 69).
        job::contained(move || {
            let _ = unwind::drop_quietly(job);
            drop(answering);
        });
    }
}

/// The trustee's half, until it answers: answers `None` if dropped first.
struct Answering<J: Job> {
    node: NonNull<Node<J, J::Output>>,
}

impl<J: Job> Answering<J> {
    fn answer(self, output: Option<J::Output>) {
        let node = ManuallyDrop::new(self).node.cast::<Shared<J::Output>>();
        // SAFETY: the trustee has not let go (that happens here, once), so the node is live.
        let shared = unsafe { node.as_ref() };
        // SAFETY: only the trustee writes the output, before DONE; the future reads it only after.
        unsafe { *shared.output.get() = output };
        // Release: the output; Acquire: the waker the future last registered.
        let waker = if shared.state.fetch_or(DONE, Ordering::AcqRel) & REGISTERING == 0 {
            // SAFETY: DONE without REGISTERING: the future will not touch the waker again.
            unsafe { (*shared.waker.get()).take() }
        } else {
            None // the future is in `poll`, and answers from it
        };
        // SAFETY: the trustee's one letting go; the node is not touched after it but to be freed.
        if unsafe { lets_go_last(node) } {
            // The future is gone: nobody wakes or takes anything. The waker goes first, on its own: the output
            // goes with the node, and a destructor that panics in each would abort the process (a second panic
            // while the first unwinds; review 69).
            let _ = unwind::drop_quietly(waker);
            // SAFETY: both sides have let go (AcqRel: after all of the future's accesses).
            unsafe { (shared.free)(node) };
        } else if let Some(waker) = waker {
            relay::wake(waker);
        }
    }
}

impl<J: Job> Drop for Answering<J> {
    fn drop(&mut self) {
        Answering { node: self.node }.answer(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delegation::trustee::job::Always;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    #[derive(Default)]
    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<CountWakes>, Waker) {
        let count = Arc::new(CountWakes::default());
        (count.clone(), Waker::from(count))
    }


    /// Plays the worker: runs (or drops) the mail sent so far; returns how many nodes it opened.
    fn serve(trustee: &TrusteeShared, run: bool) -> usize {
        let mail = trustee.take_mail();
        let n = mail.len();
        for m in mail {
            let Mail::Run(r) = m else { unreachable!("only nodes are mailed here") };
            if run {
                r.run();
            }
        }
        n
    }

    /// A request written in place by `new_apply` drops its closure's captures once when dropped unsent, and
    /// `into_boxed_closure` moves a 4 KiB closure into a box that runs it once (Miri checks the copies and frees).
    #[test]
    fn an_apply_request_gives_back_its_large_closure_boxed_or_drops_it_once() {
        let captured = Arc::new(());
        let big = [7u8; 4096];
        let property = SendPtr(std::ptr::NonNull::<Property<u64>>::dangling().as_ptr());
        let c = captured.clone();
        let f = move |v: &mut u64| {
            *v += u64::from(big[4095]);
            Arc::strong_count(&c)
        };
        drop(Unsent::new_apply(property, f));
        assert_eq!(Arc::strong_count(&captured), 1);
        let c = captured.clone();
        let f = move |v: &mut u64| {
            *v += u64::from(big[4095]);
            let n = Arc::strong_count(&c);
            drop(c);
            n
        };
        let boxed = Unsent::new_apply(property, f).into_boxed_closure();
        assert_eq!(Arc::strong_count(&captured), 2);
        let mut v = 1;
        let boxed: Box<dyn FnOnce(&mut u64) -> usize> = boxed;
        assert_eq!(boxed(&mut v), 2);
        assert_eq!((v, Arc::strong_count(&captured)), (8, 1));
    }

    /// A request made but never sent (a future dropped before its first poll) drops its job once, unrun, and
    /// frees its node; one taken back (`into_job`, the local path) gives the job itself, and nothing is mailed
    /// either way (Miri checks the frees).
    #[test]
    fn an_unsent_request_drops_or_gives_back_its_job_once() {
        let trustee = &TrusteeShared::new(0);
        let captured = Arc::new(());
        let c = captured.clone();
        drop(Unsent::new(Always(move || drop(c))));
        assert_eq!(Arc::strong_count(&captured), 1);
        let c = captured.clone();
        let job = Unsent::new(Always(move || Arc::strong_count(&c))).into_job();
        assert_eq!(Arc::strong_count(&captured), 2);
        assert_eq!((job.0)(), 2);
        drop(job);
        assert_eq!(Arc::strong_count(&captured), 1);
        assert_eq!(serve(trustee, true), 0);
    }

    #[test]
    fn the_answer_wakes_the_task_once_and_the_next_poll_takes_it() {
        let trustee = &TrusteeShared::new(0);
        let (wakes, w) = waker();
        let mut answer = Answer::send(trustee, Always(|| 6 * 7), w.clone());
        assert_eq!(answer.poll(&w), Poll::Pending);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        assert_eq!(serve(trustee, true), 1);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(answer.poll(&w), Poll::Ready(Some(42)));
    }

    #[test]
    fn a_poll_with_another_waker_moves_the_wake_up_to_it() {
        let trustee = &TrusteeShared::new(0);
        let (first, w1) = waker();
        let (second, w2) = waker();
        let mut answer = Answer::send(trustee, Always(|| "done"), w1);
        assert_eq!(answer.poll(&w2), Poll::Pending);
        serve(trustee, true);
        assert_eq!((first.0.load(Ordering::SeqCst), second.0.load(Ordering::SeqCst)), (0, 1));
        assert_eq!(answer.poll(&w2), Poll::Ready(Some("done")));
    }

    /// The job still runs when its future is gone; its output is dropped once, by the trustee, and the node
    /// freed (Miri checks both).
    #[test]
    fn an_output_nobody_waits_for_is_dropped_once() {
        let trustee = &TrusteeShared::new(0);
        let output = Arc::new(());
        let (wakes, w) = waker();
        let sent = output.clone();
        drop(Answer::send(trustee, Always(move || sent), w));
        assert_eq!(Arc::strong_count(&output), 2, "the job holds its output until it runs");
        serve(trustee, true);
        assert_eq!(Arc::strong_count(&output), 1);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "nobody to wake");
    }

    #[test]
    fn a_job_dropped_unrun_answers_none_and_wakes() {
        let trustee = &TrusteeShared::new(0);
        let captured = Arc::new(());
        let (wakes, w) = waker();
        let held = captured.clone();
        let mut answer = Answer::send(trustee, Always(move || drop(held)), w.clone());
        assert_eq!(serve(trustee, false), 1);
        assert_eq!(Arc::strong_count(&captured), 1, "the unrun job was dropped");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(answer.poll(&w), Poll::Ready(None));
    }

    /// Sent after the trustee closed (its sender checked that it ran just before): the sender drops the job
    /// unrun at once, which answers `None` and wakes the task; nothing is left in the mailbox.
    #[test]
    fn a_job_sent_after_the_close_is_dropped_by_its_sender_and_answers_none() {
        let trustee = &TrusteeShared::new(0);
        trustee.close_mailbox();
        let captured = Arc::new(());
        let (wakes, w) = waker();
        let held = captured.clone();
        let mut answer = Answer::send(trustee, Always(move || drop(held)), w.clone());
        assert_eq!(Arc::strong_count(&captured), 1, "the unrun job was dropped by its sender");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(answer.poll(&w), Poll::Ready(None));
        assert_eq!(serve(trustee, true), 0, "nothing left for a worker");
    }

    /// A future polled with a new waker three times, on one thread, while the trustee answers on another:
    /// either a poll returns the answer, or the last waker registered is woken (exactly once) and the next
    /// poll returns it. A lost wake-up would hang the round: it fails after a second instead.
    #[test]
    fn an_answer_racing_a_waker_swap_is_never_lost() {
        const ROUNDS: usize = if cfg!(miri) { 20 } else { 5_000 };
        let trustee = &TrusteeShared::new(0);
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            // Stops when the rounds end, or one fails (the flag is set on unwinding too).
            struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let _stop = Stop(&stop);
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    serve(trustee, true);
                    std::hint::spin_loop();
                }
            });
            for round in 0..ROUNDS {
                let wakers: Vec<_> = (0..3).map(|_| waker()).collect();
                let woken = || wakers.iter().map(|(c, _)| c.0.load(Ordering::SeqCst)).collect::<Vec<_>>();
                let mut answer = Answer::send(trustee, Always(move || round), wakers[0].1.clone());
                let polled = wakers.iter().find_map(|(_, w)| match answer.poll(w) {
                    Poll::Ready(out) => Some(out),
                    Poll::Pending => None,
                });
                let got = match polled {
                    Some(out) => {
                        assert!(woken().iter().sum::<usize>() <= 1, "round {round}: {:?}", woken());
                        out
                    }
                    None => {
                        let start = std::time::Instant::now();
                        while woken()[2] == 0 {
                            assert!(start.elapsed().as_secs() < 1, "round {round}: lost wake-up, {:?}", woken());
                            std::thread::yield_now();
                        }
                        assert_eq!(woken(), [0, 0, 1], "round {round}: only the last waker is woken");
                        match answer.poll(&wakers[2].1) {
                            Poll::Ready(out) => out,
                            Poll::Pending => panic!("round {round}: woken, but no answer"),
                        }
                    }
                };
                assert_eq!(got, Some(round));
            }
        });
    }
}
