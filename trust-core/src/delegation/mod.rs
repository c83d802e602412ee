//! The delegation runtime (`Trust<T>`), floor by floor; each floor imports only the floors below it.
//!
//! - [`protocol`]: what one client and one trustee share — the request/response slot pair, the channel, the
//!   sleep/wake handshake — and the loom facade over their atomics. This floor is what loom models.
//! - [`trustee`]: what runs on a trustee — entrusted properties and their counts, the jobs a record runs.
//! - [`client`]: a client's outboxes (building, publishing, collecting answers) and its continuations.
//! - [`worker`]: the worker thread — its loop (serve, collect, schedule, flush, sleep), the fiber scheduler,
//!   the one thread-local that says which worker (and fiber) is running.
//! - [`call`]: the client hot path — classify the caller once, then push, flush, wait.
//! - [`api`]: what users name — `Trust`, `Trustee`, `Runtime`, fibers, `Latch`, `ApplyFuture`.
//!
//! [`stack`] (fiber stacks and their guard pages) depends on nothing here. `unsafe` lives in `protocol`,
//! `trustee`, `client`, `worker`, `call` and `stack`; `api` has none but `unsafe impl Send/Sync` (and the
//! declaration of the `unsafe trait Entrusted`): it reaches a property through `trustee::handle`'s safe
//! methods. `.ci/run` checks it.

pub(crate) mod api;
pub(crate) mod call;
pub(crate) mod client;
pub(crate) mod protocol;
pub(crate) mod stack;
pub(crate) mod trustee;
pub(crate) mod worker;
