//! The atomics, fences and `Arc` of the lock-free worklists (`treiber.rs`, `deque.rs`): `std` normally, `loom`
//! under `cfg(loom)`, so the same code is model-checked (the facade pattern of tokio's `loom` module).

#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicIsize, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

#[cfg(not(loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    AtomicIsize, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

/// Keeps a hot atomic on its own cache line pair (128 bytes: the adjacent-line prefetcher pulls lines in
/// pairs), so the owner's `bottom` and the stealers' `top` do not false-share, as crossbeam's `CachePadded`.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> core::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
