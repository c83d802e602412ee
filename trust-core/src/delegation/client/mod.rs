//! A client's side of delegation: an outbox per trustee it talks to, and the continuations of its
//! `apply_then`s.

pub(crate) mod outbox;
pub(crate) mod then;
