//! The trustee floor's side of a `Trust<T>`: [`Handle`], a property's address and its trustee, owning one of
//! the property's counted references; [`OnTrustee`], the proof that the caller runs on a trustee's thread; and
//! [`Local`], a property seen from its own trustee's thread, whose safe methods are the only way `api` reaches a
//! property's counts and value. The raw pointer stays inside this module; the arguments for its uses are here.
//!
//! Also the other owners a property has on its way: [`Fresh`] (allocated, not entrusted yet), [`Registration`]
//! (on its way to its trustee's registry) and [`Launched`] (a launched fiber's share of a latch).

use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::delegation::trustee::property::{self, Header, Property, SendPtr};
use crate::delegation::trustee::shared::TrusteeShared;

/// This thread is the worker thread of a trustee. Made only by the worker floor (`Worker::on_trustee`) from
/// the worker it runs; `!Send`, so it never leaves that thread (the worker's fibers stay on it too).
#[derive(Debug, Clone, Copy)]
pub(crate) struct OnTrustee {
    shared: &'static TrusteeShared,
    _not_send: PhantomData<*const ()>,
}

impl OnTrustee {
    /// # Safety
    /// This thread is `shared`'s worker thread.
    #[inline(always)]
    pub(crate) unsafe fn new(shared: &'static TrusteeShared) -> Self {
        OnTrustee {
            shared,
            _not_send: PhantomData,
        }
    }
}

/// A counted handle to a property: while it exists (and the runtime runs) the property is live, since its
/// count includes this handle, and nothing else but its address and its trustee is read off it. Its `Clone`
/// and `Drop` count it in and out on the trustee, which needs the client's channel: both are implemented in
/// `call` (`call::count`), the floor that has it.
pub(crate) struct Handle<T> {
    property: NonNull<Property<T>>,
    shared: &'static TrusteeShared,
    _owns: PhantomData<Property<T>>,
}

// SAFETY: the handle never touches the value itself (only `Local`, on the trustee's thread, does). `T: Send`
// because the value is created on one thread and used and dropped on the trustee's.
unsafe impl<T: Send> Send for Handle<T> {}
// SAFETY: `&Handle<T>` reaches the property only through `Local`, on its trustee's thread: as `Send`.
unsafe impl<T: Send> Sync for Handle<T> {}

impl<T> std::fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("property", &self.property)
            .field("trustee", &self.shared.index())
            .finish()
    }
}

impl<T> Handle<T> {
    /// # Safety
    /// `property` is live and a property of `shared`'s trustee, registered there or about to be (its
    /// registration sent before any request the new handle can send), and the new handle owns one of its
    /// counted references (or, once the runtime has shut down, none: nothing is counted any more).
    #[inline(always)]
    pub(crate) unsafe fn from_raw(property: NonNull<Property<T>>, shared: &'static TrusteeShared) -> Self {
        Handle {
            property,
            shared,
            _owns: PhantomData,
        }
    }

    /// The property's trustee.
    #[inline(always)]
    pub(crate) fn shared(&self) -> &'static TrusteeShared {
        self.shared
    }

    /// The property's address, for a record that runs on the trustee (see `job::Apply`).
    #[inline(always)]
    pub(crate) fn as_ptr(&self) -> *mut Property<T> {
        self.property.as_ptr()
    }

    #[inline(always)]
    pub(crate) fn header(&self) -> SendPtr<Header> {
        SendPtr(self.property.as_ptr().cast())
    }

    /// The property seen from its trustee's thread, when `here` is that thread (one pointer comparison).
    #[inline(always)]
    pub(crate) fn local(&self, here: OnTrustee) -> Option<Local<'_, T>> {
        std::ptr::eq(here.shared, self.shared).then_some(Local {
            property: self.property,
            _here: PhantomData,
        })
    }

    /// A second handle, counted in here, when `here` is the property's trustee.
    #[inline]
    pub(crate) fn clone_here(&self, here: OnTrustee) -> Option<Self> {
        let local = self.local(here)?;
        // SAFETY: on the property's trustee, which `self` keeps live.
        unsafe { property::incref(local.header()) };
        // SAFETY: as above; the count just added is the new handle's.
        Some(unsafe { Handle::from_raw(self.property, self.shared) })
    }

    /// A second handle, whose count is on its way to the trustee.
    ///
    /// # Safety
    /// One more count of the property has been sent to its trustee, ahead of any request the copy can send
    /// (see `call::count`: the sender stays counted until it has been served); or the runtime has shut down,
    /// and nothing is counted any more.
    #[inline]
    pub(crate) unsafe fn counted_copy(&self) -> Self {
        // SAFETY: live while `self` is (the runtime running), and the count is the copy's, by the contract.
        unsafe { Handle::from_raw(self.property, self.shared) }
    }

    /// Gives up this handle's count, on the property's trustee (panics elsewhere), and returns the property's
    /// address: whether the count reached zero is decided by the caller's retirement of it (`Worker::take`).
    pub(crate) fn give_up(self, here: OnTrustee) -> NonNull<Property<T>> {
        let local = self.local(here).expect("reference counts change on the trustee");
        // SAFETY: on the property's trustee, for the count `self` owned; `self` is not dropped (below), so the
        // count is given up once.
        let _ = unsafe { property::add_refs(local.header(), -1) };
        let property = self.property;
        std::mem::forget(self);
        property
    }
}

/// A property on its own trustee's thread, for as long as `'a` (a borrowed `Handle`, or a running record)
/// keeps it live. `!Send`.
#[derive(Debug)]
pub(crate) struct Local<'a, T> {
    property: NonNull<Property<T>>,
    _here: PhantomData<(&'a Property<T>, *const ())>,
}

impl<T> Clone for Local<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Local<'_, T> {}

impl<'a, T> Local<'a, T> {
    /// # Safety
    /// `property` is live for `'a`, and this is its trustee's thread (a record running there, say: see
    /// `job::Launch`).
    #[inline(always)]
    pub(crate) unsafe fn new(property: *mut Property<T>) -> Self {
        Local {
            property: NonNull::new(property).expect("a property"),
            _here: PhantomData,
        }
    }

    #[inline(always)]
    fn header(&self) -> *mut Header {
        self.property.as_ptr().cast()
    }

    /// The property's address, as the scheduler and the latch checks name it.
    #[inline(always)]
    pub(crate) fn addr(&self) -> usize {
        self.property.as_ptr() as usize
    }

    /// True while fibers started by `launch` share the property.
    #[inline(always)]
    pub(crate) fn launched(&self) -> bool {
        // SAFETY: live and on its trustee's thread (the type's invariant).
        unsafe { property::launched(self.header()) }
    }

    /// True while a closure, or a launched fiber, is using the property.
    #[inline(always)]
    pub(crate) fn in_use(&self) -> bool {
        // SAFETY: as in `launched`.
        unsafe { property::in_use(self.header()) }
    }

    /// True while a plain apply waits for the launched fibers (see [`property::applies_wait`]).
    #[inline(always)]
    pub(crate) fn applies_wait(&self) -> bool {
        // SAFETY: as in `launched`.
        unsafe { property::applies_wait(self.header()) }
    }

    /// Counts a plain apply in or out of waiting for the launched fibers.
    #[inline(always)]
    pub(crate) fn set_applies_waiting(&self, delta: i32) {
        // SAFETY: as in `launched`.
        unsafe { property::set_applies_waiting(self.header(), delta) }
    }

    /// Runs `f` on the value, inline; a panic in `f` unwinds to the caller (see [`property::apply_local`]).
    /// Always inlined, as `Local`'s other methods: the local shortcut calls `apply_local` as it did, with no frame
    /// between (in a debug build, each frame a closure passes through copies it).
    #[inline(always)]
    pub(crate) fn apply<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: as in `launched`; `apply_local` refuses a second `&mut` (re-entrancy, launched fibers).
        unsafe { property::apply_local(self.property.as_ptr(), f) }
    }

    /// `apply` with a panic caught and returned (see [`property::apply_caught`]).
    #[inline(always)]
    pub(crate) fn apply_caught<R>(&self, f: impl FnOnce(&mut T) -> R) -> std::thread::Result<R> {
        // SAFETY: as in `apply`.
        unsafe { property::apply_caught(self.property.as_ptr(), f) }
    }

    /// Counts a launched fiber in: the returned share gives it `&T` until dropped.
    ///
    /// The value may be in use when this is called: `launch_then` inside a closure delegated to the same latch
    /// counts its fiber in while that closure's `&mut` to the value lives. The `&T` is sound all the same because
    /// the share is first read inside the new fiber, which `fiber::start_here` only queues: it runs after the
    /// closure has returned, and plain applies stay away while the count is up (review 100).
    pub(crate) fn launch(&self) -> Launched<T> {
        // SAFETY: as in `launched`.
        unsafe { property::set_launched(self.header(), 1) };
        Launched {
            property: self.property,
            _here: PhantomData,
        }
    }
}

/// A launched fiber's share of a property (a `Latch`): counted in `launched`, which keeps the property live
/// (a retired property is dropped only once not in use) and plain applies away from the value (they wait, or
/// refuse), so a shared reference to it is sound. `!Send`: the fiber stays on its trustee's thread.
#[derive(Debug)]
pub(crate) struct Launched<T> {
    property: NonNull<Property<T>>,
    _here: PhantomData<*const ()>,
}

impl<T> Launched<T> {
    /// The shared value.
    pub(crate) fn value(&self) -> &T {
        // SAFETY: live, on its trustee's thread, and no `&mut` to the value while the share is counted (see
        // the type's doc).
        unsafe { property::value_ref(self.property.as_ptr()) }
    }

    pub(crate) fn addr(&self) -> usize {
        self.property.as_ptr() as usize
    }

    /// Counts the fiber out; true when no launched fiber shares the property any more.
    pub(crate) fn end(self) -> bool {
        let header = self.property.as_ptr().cast::<Header>();
        drop(self);
        // SAFETY: on its trustee's thread; the count just dropped kept the property live, and only the worker's
        // loop (or its shutdown) drops a property, not this call.
        !unsafe { property::launched(header) }
    }
}

impl<T> Drop for Launched<T> {
    fn drop(&mut self) {
        // SAFETY: live while counted, on its trustee's thread.
        unsafe { property::set_launched(self.property.as_ptr().cast(), -1) };
    }
}

/// A property allocated for `entrust` (by `Property::allocate` or `allocate_in_place`, its only makers), with
/// one count, not yet registered with any trustee: dropped, it drops the value (on the dropping thread) and
/// frees the property.
#[derive(Debug)]
pub(crate) struct Fresh<T>(pub(super) NonNull<Property<T>>);

impl<T> Fresh<T> {
    /// Entrusts the property to `shared`'s trustee: its handle, owning the one count, and the registration to
    /// run on that trustee (`Worker::adopt`) before any request the handle sends.
    pub(crate) fn entrust_to(self, shared: &'static TrusteeShared) -> (Handle<T>, Registration) {
        let property = self.0;
        std::mem::forget(self);
        let registration = Registration {
            header: SendPtr(property.as_ptr().cast()),
            shared,
        };
        // SAFETY: live (the registration drops it only once the runtime has shut down), of `shared`'s trustee
        // once the registration runs, which the caller sends ahead of the handle; the one count is the handle's.
        (unsafe { Handle::from_raw(property, shared) }, registration)
    }

    /// The property, for its trustee's registry (`Worker::adopt_fresh`), and its address.
    pub(crate) fn into_raw(self) -> NonNull<Property<T>> {
        let property = self.0;
        std::mem::forget(self);
        property
    }
}

impl<T> Drop for Fresh<T> {
    fn drop(&mut self) {
        // SAFETY: fresh from `Property::allocate`, and nobody else has it: the value is dropped with its box,
        // once.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

/// A fresh property on its way to its trustee's registry (in the record `entrust` sends): dropped unrun (sent
/// as the trustee shut down, which then never runs it), it drops the property, which nothing else would.
#[derive(Debug)]
pub(crate) struct Registration {
    header: SendPtr<Header>,
    shared: &'static TrusteeShared,
}

impl Registration {
    /// The trustee it goes to.
    pub(crate) fn shared(&self) -> &'static TrusteeShared {
        self.shared
    }

    /// The property, to register now.
    pub(crate) fn into_header(self) -> *mut Header {
        let h = self.header.get();
        std::mem::forget(self);
        h
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Records are dropped unrun only once their trustee has closed; a registration dropped while it runs
        // (never) leaves its property be, since its handle may still reach it.
        if self.shared.is_running() {
            return;
        }
        // SAFETY: unregistered and dropped by nothing else (`entrust_to` made the one registration); unrun, the
        // runtime shutting down (checked above), and the trustee serves no request on the value any more: it drops
        // records unrun itself only once its close has served what was sent, and other threads drop theirs only
        // once it has closed (`Outbox::drop` waits for that: while it was still closing, review 100 saw the value
        // dropped under another client's closure).
        unsafe { property::drop_unregistered(self.header.get()) }
    }
}
