//! An entrusted value and its bookkeeping, all of it touched only on its trustee's thread: the reference count
//! (clones and drops are counted here, not with atomics), the re-entrancy flag, and the trustee's registry of
//! live properties (so that shutdown drops each exactly once).

use std::cell::{Cell, UnsafeCell};
use std::panic::{self, AssertUnwindSafe};
use std::ptr::NonNull;

use crate::delegation::trustee::handle::Fresh;
use crate::delegation::trustee::shared::{self, SHUT_DOWN};
use crate::delegation::trustee::{local, unwind};

pub(crate) const REENTRANT: &str = "re-entrant `apply`: this property is already borrowed by the closure running on \
     it, and a second `&mut T` would alias the first; do the nested work inside the outer closure instead";

pub(crate) const LAUNCHED: &str = "`apply` on a latch that launched fibers share, from inside a delegated \
     closure: it would have to wait for them, and the trustee cannot wait. Use `apply_then`, or `launch`";

pub(crate) const APPLY_ON_OWN_LATCH: &str = "`apply` (or `apply_async`, `apply_with`) on the `Trust<Latch<T>>` \
     whose `launch` runs this fiber: it hands out `&mut Latch<T>`, so it would wait for every launched fiber to \
     end, this one included. The fiber already holds `&Latch<T>`: lock the latch instead";

pub(crate) const APPLY_JOINED_BY_LAUNCHED: &str = "`apply` (or `apply_with`) on a `Trust<Latch<T>>` from a fiber \
     that a fiber launched on that latch joins (directly, or through fibers joining each other on this worker): \
     it hands out `&mut Latch<T>`, so it would wait for every launched fiber to end, the joining one included, \
     which waits for this fiber. Use `apply_then`, or `launch` and lock the latch";

/// Type-erased part of a property; `Property<T>` starts with it, so a `*mut Header` identifies a property.
#[derive(Debug)]
pub(crate) struct Header {
    /// Handles counted so far. Signed: a clone's increment and the clone's own decrement travel on different
    /// channels, so the decrement can arrive first and the count dip below its true value, even below zero.
    refs: Cell<isize>,
    in_use: Cell<bool>,
    /// Plain applies waiting for the launched fibers to end (paused records, fibers waiting inline): while
    /// any wait, new launches wait behind them (see [`applies_wait`]).
    applies_waiting: Cell<u32>,
    /// Fibers started by `launch` that share the value (a `Latch`) right now.
    launched: Cell<usize>,
    /// Position in the trustee's registry.
    index: Cell<usize>,
    /// While the property is retired (see `worker::run::Worker::retire`): the group it was last retired in;
    /// else 0.
    retiring: Cell<u64>,
    release: unsafe fn(*mut Header, Release),
}

/// What [`Header::release`] lets go of: the whole property, or (at shutdown, in two steps) its value, then its
/// memory.
#[derive(Debug, Clone, Copy)]
enum Release {
    Both,
    Value,
    Memory,
}

/// On cache lines of its own (128 bytes, the pair the adjacent-line prefetcher moves together): properties
/// are allocated by whichever thread entrusts them, so two entrusted one after the other to different
/// trustees would otherwise share a line, and their two workers would take it from each other on every
/// request. Measured with 1,024 counters entrusted alternately to two trustees, fibers incrementing random
/// ones: +26% (64-byte alignment: +12%).
#[repr(C, align(128))]
#[derive(Debug)]
pub(crate) struct Property<T> {
    header: Header,
    value: UnsafeCell<T>,
}

unsafe fn release<T>(header: *mut Header, what: Release) {
    // `header` came from `Property::<T>::allocate` (the header is the first field of a repr(C) struct); the
    // value is dropped once and the memory freed once: when the count reached zero, or at shutdown.
    let p = header.cast::<Property<T>>();
    match what {
        // SAFETY: as above.
        Release::Both => drop(unsafe { Box::from_raw(p) }),
        // SAFETY: as above; the memory stays allocated, and nothing reads the value again.
        Release::Value => unsafe { std::ptr::drop_in_place((*p).value.get()) },
        // SAFETY: as above, the value already dropped: the allocation is freed without dropping it again.
        Release::Memory => drop(unsafe { Box::from_raw(p.cast::<std::mem::ManuallyDrop<Property<T>>>()) }),
    }
}

impl<T> Property<T> {
    /// A new property with one reference, not yet registered with its trustee.
    pub(crate) fn allocate(value: T) -> Fresh<T> {
        let property = Box::into_raw(Box::new(Property {
            header: Self::new_header(),
            value: UnsafeCell::new(value),
        }));
        Fresh(NonNull::new(property).expect("allocated"))
    }

    /// `allocate` for a value over `BOX_ABOVE` bytes: written straight into the allocation, not built into a
    /// `Property` on the stack first (in a debug build, each step copied it: a 32 KiB value entrusted from a
    /// fiber took three copies of the value of its 256 KiB stack, review 38).
    #[inline(never)]
    pub(crate) fn allocate_in_place(value: T) -> Fresh<T> {
        let property = Box::into_raw(Box::<Property<T>>::new_uninit()).cast::<Property<T>>();
        // SAFETY: a fresh allocation for a `Property<T>`, each field written once; `UnsafeCell<T>` is laid out
        // as `T`.
        unsafe {
            (&raw mut (*property).header).write(Self::new_header());
            (&raw mut (*property).value).cast::<T>().write(value);
        }
        Fresh(NonNull::new(property).expect("allocated"))
    }

    #[inline(always)]
    fn new_header() -> Header {
        Header {
            refs: Cell::new(1),
            in_use: Cell::new(false),
            applies_waiting: Cell::new(0),
            launched: Cell::new(0),
            index: Cell::new(usize::MAX),
            retiring: Cell::new(0),
            release: release::<T>,
        }
    }
}

/// Marks a property borrowed for as long as it lives, and this thread as running a delegated closure.
struct Borrow<'a> {
    header: &'a Header,
}

impl<'a> Borrow<'a> {
    #[inline]
    fn new(header: &'a Header) -> Self {
        if header.launched.get() != 0 {
            refuse(LAUNCHED);
        }
        if header.in_use.replace(true) {
            refuse(if local::closing() { SHUT_DOWN } else { REENTRANT });
        }
        local::enter_delegated();
        Borrow { header }
    }
}

#[cold]
#[inline(never)]
fn refuse(why: &str) -> ! {
    panic!("{why}")
}

impl Drop for Borrow<'_> {
    #[inline]
    fn drop(&mut self) {
        self.header.in_use.set(false);
        local::leave_delegated();
    }
}

/// Runs `f` on the property's value, on the trustee's thread. A panic in `f` unwinds to the caller.
///
/// # Safety
/// `p` is a live property of `worker`'s trustee, and this is `worker`'s thread.
#[inline]
pub(crate) unsafe fn apply_local<T, R>(p: *mut Property<T>, f: impl FnOnce(&mut T) -> R) -> R {
    // SAFETY: live by the contract; only this thread touches it, and `Borrow` rules out a second `&mut`.
    let property = unsafe { &*p };
    let _borrow = Borrow::new(&property.header);
    // SAFETY: as above.
    f(unsafe { &mut *property.value.get() })
}

/// A shared reference to the value, for launched fibers.
///
/// # Safety
/// `p` live, on its trustee thread, and no `&mut` to the value exists while the reference does (the
/// property's `launched` count makes applies wait).
pub(crate) unsafe fn value_ref<'a, T>(p: *mut Property<T>) -> &'a T {
    // SAFETY: by the contract.
    unsafe { &*(*p).value.get() }
}

/// `apply_local` for a delegated request: a panic (re-entrancy included) is caught and returned, so the trustee
/// keeps serving and the caller resumes it.
///
/// # Safety
/// As for `apply_local`.
#[inline]
pub(crate) unsafe fn apply_caught<T, R>(
    p: *mut Property<T>,
    f: impl FnOnce(&mut T) -> R,
) -> std::thread::Result<R> {
    // SAFETY: forwarded.
    let result = panic::catch_unwind(AssertUnwindSafe(|| unsafe { apply_local(p, f) }));
    shared::end_if_forked();
    result
}

/// The live properties of one trustee. Owned by the worker; never borrowed across user code.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    live: Vec<*mut Header>,
}

impl Registry {
    /// # Safety
    /// `h` is a property of this trustee, not yet registered.
    pub(crate) unsafe fn adopt(&mut self, h: *mut Header) {
        // SAFETY: by the contract.
        unsafe { (*h).index.set(self.live.len()) };
        self.live.push(h);
    }

    pub(crate) fn remove(&mut self, h: *mut Header) {
        // SAFETY: registered properties are live until removed here.
        let i = unsafe { (*h).index.get() };
        debug_assert_eq!(self.live[i], h);
        self.live.swap_remove(i);
        if let Some(&moved) = self.live.get(i) {
            // SAFETY: as above.
            unsafe { (*moved).index.set(i) };
        }
    }

    pub(crate) fn take_all(&mut self) -> Vec<*mut Header> {
        std::mem::take(&mut self.live)
    }
}

/// Another handle to `h` exists.
///
/// # Safety
/// On `h`'s trustee thread, `h` live.
pub(crate) unsafe fn incref(h: *mut Header) {
    // SAFETY: by the contract.
    let refs = unsafe { &(*h).refs };
    refs.set(refs.get() + 1);
}

/// Counts `delta` handles of `h` in (positive) or out (negative); true when handles were counted out and the
/// count is zero or below. Then the caller *retires* the property (again) rather than drop it (see
/// `worker::run::Worker::retire`): requests and count changes sent before may still be on their way from other
/// clients, and the value is dropped once every one of them has been served, if the count is zero then.
///
/// # Safety
/// On `h`'s trustee thread, `h` live.
#[must_use = "a count out to zero or below retires the property"]
pub(crate) unsafe fn add_refs(h: *mut Header, delta: isize) -> bool {
    // SAFETY: by the contract.
    let header = unsafe { &*h };
    let old = header.refs.get();
    header.refs.set(old + delta);
    delta < 0 && old + delta <= 0
}

/// The retired group `h` was last retired in, or 0 while it is not retired.
///
/// # Safety
/// On `h`'s trustee thread, `h` live.
pub(crate) unsafe fn retiring(h: *mut Header) -> u64 {
    // SAFETY: by the contract.
    unsafe { (*h).retiring.get() }
}

/// Sets what `retiring` reads.
///
/// # Safety
/// On `h`'s trustee thread, `h` live.
pub(crate) unsafe fn set_retiring(h: *mut Header, group: u64) {
    // SAFETY: by the contract.
    unsafe { (*h).retiring.set(group) }
}

/// True when the counted handles of `h` are zero.
///
/// # Safety
/// On `h`'s trustee thread, `h` live.
pub(crate) unsafe fn unreferenced(h: *mut Header) -> bool {
    // SAFETY: by the contract.
    unsafe { (*h).refs.get() == 0 }
}

/// True while fibers started by `launch` share the property.
///
/// # Safety
/// `h` live, on its trustee thread.
pub(crate) unsafe fn launched(h: *mut Header) -> bool {
    // SAFETY: by the contract.
    unsafe { (*h).launched.get() > 0 }
}

/// Counts a launched fiber in or out.
///
/// # Safety
/// `h` live, on its trustee thread.
pub(crate) unsafe fn set_launched(h: *mut Header, delta: isize) {
    // SAFETY: by the contract.
    let launched = unsafe { &(*h).launched };
    launched.set(launched.get().wrapping_add_signed(delta));
}

/// True while a plain apply waits for the property's launched fibers to end: a new launch then waits too,
/// behind it. Launches are readers of the value (`&Latch<T>`) and an apply its writer (`&mut Latch<T>`); with
/// launches let in while an apply waited, overlapping ones kept it waiting for as long as they came.
///
/// # Safety
/// `h` live, on its trustee thread.
pub(crate) unsafe fn applies_wait(h: *mut Header) -> bool {
    // SAFETY: by the contract.
    unsafe { (*h).applies_waiting.get() > 0 }
}

/// Counts a plain apply in or out of waiting for the launched fibers.
///
/// # Safety
/// `h` live, on its trustee thread.
pub(crate) unsafe fn set_applies_waiting(h: *mut Header, delta: i32) {
    // SAFETY: by the contract.
    let waiting = unsafe { &(*h).applies_waiting };
    waiting.set(waiting.get().wrapping_add_signed(delta));
}

/// True while a closure, or a launched fiber, is using the property.
///
/// # Safety
/// `h` live, on its trustee thread.
pub(crate) unsafe fn in_use(h: *mut Header) -> bool {
    // SAFETY: by the contract.
    unsafe { (*h).in_use.get() || (*h).launched.get() > 0 }
}

/// Drops an unregistered property; a panic in `T::drop` is reported and swallowed so the trustee keeps serving.
///
/// # Safety
/// `h` is live, on its trustee thread, and nobody will use it again.
pub(crate) unsafe fn drop_unregistered(h: *mut Header) {
    // SAFETY: forwarded.
    unsafe { drop_value(h, Release::Both) }
}

/// Shutdown: drops the value of every property of `live` (the trustee's registry, taken), exactly once, and
/// returns them for [`free_at_shutdown`]. A destructor may reach another of them (through a handle its value
/// holds): it must find that one neither dropped nor freed under it. So all are first marked in use (an
/// `apply` to any of them from a destructor panics with the shutdown message; an `apply_then` to one stays
/// queued, and is dropped unrun), then their values are dropped, and their memory is freed only once no
/// destructor can run any more (a clone's count, or the in-use check, still reads it).
///
/// # Safety
/// Each of `live` is live, a property of this thread's trustee, and nobody uses its value after this.
pub(crate) unsafe fn drop_values_at_shutdown(live: Vec<*mut Header>) -> Vec<*mut Header> {
    for &h in &live {
        // SAFETY: by the contract.
        unsafe { (*h).in_use.set(true) };
    }
    for &h in &live {
        // SAFETY: by the contract; its memory outlives the loop.
        unsafe { drop_value(h, Release::Value) };
    }
    live
}

/// Frees the properties [`drop_values_at_shutdown`] dropped the values of.
///
/// # Safety
/// Those properties, once no destructor that could reach one runs any more.
pub(crate) unsafe fn free_at_shutdown(dropped: Vec<*mut Header>) {
    for h in dropped {
        // SAFETY: by the contract: its value is dropped.
        unsafe { ((*h).release)(h, Release::Memory) };
    }
}

/// Drops the value of `h` (and its memory too, for `Release::Both`), as a delegated closure: a panic in
/// `T::drop` is reported and swallowed so the trustee keeps serving.
///
/// # Safety
/// `h` is live, on its trustee thread, and nobody uses its value again.
unsafe fn drop_value(h: *mut Header, what: Release) {
    local::enter_delegated();
    // SAFETY: by the contract.
    let panicked = unwind::panicked(|| unsafe { ((*h).release)(h, what) });
    local::leave_delegated();
    shared::end_if_forked();
    if panicked {
        eprintln!(
            "trust: a property's destructor panicked on its trustee; the trustee keeps serving"
        );
    }
}

/// Moves the value out of an unregistered property and frees the rest (the value is not dropped).
///
/// # Safety
/// `p` is live, on its trustee thread, unregistered, unreferenced, and nobody will use it again.
pub(crate) unsafe fn take_unregistered<T>(p: *mut Property<T>) -> T {
    // SAFETY: by the contract, `p` came from `Property::<T>::allocate` and this is its last use.
    let property = unsafe { Box::from_raw(p) };
    property.value.into_inner()
}

/// A raw pointer that a record may carry to the trustee. Read it with `get` inside closures, so the closure
/// captures the wrapper (which is `Send`) rather than the bare pointer field.
#[derive(Debug)]
pub(crate) struct SendPtr<T>(pub(crate) *mut T);

impl<T> SendPtr<T> {
    #[inline(always)]
    pub(crate) fn get(&self) -> *mut T {
        self.0
    }
}

impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SendPtr<T> {}

impl<T> PartialEq for SendPtr<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<T> Eq for SendPtr<T> {}

impl<T> std::hash::Hash for SendPtr<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

// SAFETY: the pointee is a property, which only its trustee thread dereferences; the pointer itself is just an
// address on the way there.
unsafe impl<T> Send for SendPtr<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_allocated_one_after_the_other_never_share_a_pair_of_cache_lines() {
        let (a, b) = (Property::allocate(1u8).into_raw().as_ptr(), Property::allocate(2u8).into_raw().as_ptr());
        assert_eq!(a as usize % 128, 0);
        assert_eq!(b as usize % 128, 0);
        assert!((a as usize).abs_diff(b as usize) >= 128);
        // SAFETY: allocated above and never registered: each is freed here, once.
        unsafe {
            release::<u8>(a.cast(), Release::Both);
            release::<u8>(b.cast(), Release::Both);
        }
    }
}
