//! What one client and one trustee share: the slot pair, the sleep/wake handshake, the cold-channel doorbell,
//! and the facade over the atomics and threads they use (`std` normally, `loom` under `cfg(loom)`).

pub(crate) mod channel;
pub(crate) mod cold;
pub(crate) mod parker;
pub(crate) mod slot;
pub(crate) mod sync;
