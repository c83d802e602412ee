//! What one client and one trustee share: the slot pair, the sleep/wake handshake, the cold-channel doorbell,
//! the copies of `#[entrust]` stubs' `&str` / `&[T]` arguments,
//! and the facade over the atomics and threads they use (`std` normally, `loom` under `cfg(loom)`).

pub(crate) mod channel;
pub(crate) mod cold;
/// Not under loom: the `&str` / `&[T]` arguments of `#[entrust]` stubs, which no model uses.
#[cfg(not(loom))]
pub(crate) mod copied;
pub(crate) mod parker;
pub(crate) mod slot;
pub(crate) mod sync;
