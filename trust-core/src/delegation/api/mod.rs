//! What users name: [`Trust`](trust::Trust), [`Trustee`](trustee::Trustee), [`Runtime`](runtime::Runtime),
//! fibers, [`Latch`](latch::Latch) with `launch`, [`ApplyFuture`](future::ApplyFuture), and the support of
//! `#[entrust]`.

pub(crate) mod entrust;
pub(crate) mod fiber;
pub(crate) mod future;
pub(crate) mod latch;
pub(crate) mod metrics;
pub mod net;
pub(crate) mod runtime;
pub(crate) mod trust;
pub(crate) mod trustee;
