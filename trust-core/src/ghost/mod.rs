//! Branded token cells (GhostCell): one zero-sized, non-clonable token grants access to any number of
//! cells, with aliasing XOR mutability checked at compile time and no runtime borrow state.
//!
//! This is the `GhostCell` of "GhostCell: Separating Permissions from Data in Rust" (Yanovski, Dang,
//! Jung, Dreyer; ICFP 2021), whose soundness RustBelt proves, with the API of the `ghost-cell` crate 0.2:
//!
//! - [`GhostToken::new`] runs a closure with a token of a *fresh* brand `'brand`, which cannot escape.
//! - [`GhostCell<'brand, T>`](GhostCell) is a `T` (same layout). `cell.borrow(&token)` gives `&T`,
//!   `cell.borrow_mut(&mut token)` gives `&mut T`; the borrow checker, applied to the token, makes every
//!   `&mut T` of the brand unique.
//! - [`GhostBorrowMut`]: several distinct cells mutably at once, `(&a, &b).borrow_mut(&mut token)`,
//!   with a runtime overlap check that returns [`GhostAliasingError`] instead of aliasing.
//! - [`GhostOnceCell`] and [`GhostLazyCell`]: write once under `&mut token`, read under `&token`.
//! - [`parallel_read_then_commit`]: read cells on every core under `&token`, then apply the results
//!   under `&mut token`.
//!
//! Branded concurrency (halo parity), for parallel traversals whose pieces share one brand:
//!
//! - [`GhostAtomicUsize`], [`GhostAtomicU64`], [`GhostAtomicU32`], [`GhostAtomicBool`]: std atomics with a
//!   brand, `repr(transparent)`, no overhead.
//! - [`GhostAtomicBitset`]: a word-packed visited set; `test_and_set` is one `fetch_or`.
//! - [`GhostTreiberStack`]: a lock-free MPMC stack of indices, ABA-safe with a tagged head, `push_batch`.
//! - [`GhostChaseLevDeque`] and [`GhostStealer`]: a fixed-capacity Chase-Lev work-stealing deque.
//! - [`static_token()`], [`with_static_token`], [`with_static_token_mut`]: the global `'static` token.
//! - [`GhostLazyLock`]: a lazy value initialised by whichever `&token` holder reads it first.
//!
//! `Send`/`Sync` follow the paper: `GhostToken: Send + Sync`; `GhostCell<T>: Send` iff `T: Send`, and
//! `Sync` iff `T: Send + Sync`. Share `&token` among scoped threads to read in parallel, or move the
//! token from thread to thread to hand over the right to write.
//!
//! ```
//! use trust_core::ghost::{GhostCell, GhostToken};
//!
//! // A cycle of nodes pointing at each other: awkward with `RefCell`, free with a token.
//! struct Node<'brand, 'a> {
//!     value: u32,
//!     next: Option<&'a GhostCell<'brand, Node<'brand, 'a>>>,
//! }
//!
//! GhostToken::new(|mut token| {
//!     let a = GhostCell::new(Node { value: 1, next: None });
//!     let b = GhostCell::new(Node { value: 2, next: Some(&a) });
//!     a.borrow_mut(&mut token).next = Some(&b);
//!
//!     // Walk the cycle, doubling every value.
//!     let mut node = &a;
//!     for _ in 0..2 {
//!         node.borrow_mut(&mut token).value *= 2;
//!         node = node.borrow(&token).next.unwrap();
//!     }
//!     assert_eq!((a.borrow(&token).value, b.borrow(&token).value), (2, 4));
//! });
//! ```

mod atomic;
mod bitset;
mod cell;
mod deque;
mod lazy_lock;
mod multi;
mod once;
mod parallel;
mod static_token;
mod sync;
mod token;
mod treiber;

pub use atomic::{GhostAtomicBool, GhostAtomicU32, GhostAtomicU64, GhostAtomicUsize};
pub use bitset::{GhostAtomicBitset, GhostAtomicBitsetIter};
pub use deque::{GhostChaseLevDeque, GhostStealer};
pub use lazy_lock::GhostLazyLock;
pub use static_token::{static_token, with_static_token, with_static_token_mut};
pub use treiber::GhostTreiberStack;

pub use cell::GhostCell;
pub use multi::{GhostAliasingError, GhostBorrow, GhostBorrowMut};
pub use once::{GhostLazyCell, GhostOnceCell};
pub use parallel::{Shard, parallel_read_then_commit, parallel_read_then_commit_with};
pub use token::GhostToken;

/// Runs the code blocks of the user guide, `docs/ghost.md`, as doctests, so the guide cannot drift
/// from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/ghost.md")]
struct GuideExamples;
