//! Lock ranks: marker types that fix, at compile time, the order in which locks may be nested.
//!
//! A rank is a zero-sized type named in a lock's type (`Mutex<T, Accounts>`). Ranks are declared once,
//! lowest first, with [`lock_ranks!`](crate::lock_ranks); the macro gives each a [`Rank::RANK`]
//! number and writes, for every pair, the two facts the type checker needs:
//!
//! - [`LockAfter<Low>`] for the higher rank: a thread holding `Low` locks may still lock it;
//! - [`MaxRank`] in both directions: the higher of the two, so `lock_all!(..; nest)` can name the
//!   highest rank it now holds.
//!
//! Stable Rust (no `generic_const_exprs`) cannot compare two const numbers in a trait bound, so the
//! order is written out as impls, one per pair (quadratic in the number of ranks, which stays small:
//! a dozen ranks is already a deep lock hierarchy). The `RANK` numbers are used only to *sort* the
//! locks of one `lock_all!` call, inside a `const` block; the nesting rule is checked through the
//! impls, so its error names both ranks (see [`LockAfter`]).
//!
//! Two separate `lock_ranks!` lists are unrelated: their locks can be taken together in one call
//! (ordered by `RANK`, then address, which is still one global order), but neither can be nested
//! inside the other.

/// A lock rank: a marker type whose `RANK` orders the locks that carry it.
///
/// Implement it only through [`lock_ranks!`](crate::lock_ranks), which keeps `RANK` and the
/// [`LockAfter`] impls consistent. A hand-written impl cannot break memory safety, but it can break
/// the deadlock-freedom promise.
pub trait Rank: 'static {
    /// Position in the declaring list: 1 for the first (lowest) rank. [`Unranked`] is 0.
    const RANK: u32;
}

/// The rank of every lock that does not name one: `Mutex<T>` is `Mutex<T, Unranked>`.
///
/// Unranked locks sit below every declared rank. They may be taken together with any other locks in
/// one `lock_all!`, and declared ranks may be nested inside them, but an unranked lock can never be
/// taken while the thread holds any lock: take all of them in one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Unranked;

impl Rank for Unranked {
    const RANK: u32 = 0;
}

/// Marks the ranks made by [`lock_ranks!`](crate::lock_ranks); everything above [`Unranked`].
pub trait DeclaredRank: Rank {}

/// What a bare `ThreadKey` holds: nothing, so any lock may be taken with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NoneHeld;

/// `Self` may be locked by a thread whose highest held rank is `Held`.
///
/// `lock_ranks!` implements it for every pair (higher, lower); this crate implements it for every
/// rank after [`NoneHeld`], and for every declared rank after [`Unranked`]. A missing impl is the
/// compile error for a nesting that could deadlock. Implement it only through `lock_ranks!`: a
/// hand-written impl (`impl LockAfter<R> for R {}`, say) cannot break memory safety, but it lets locks
/// nest out of order, which breaks the deadlock-freedom promise.
#[diagnostic::on_unimplemented(
    message = "cannot lock a `{Self}` lock while holding a `{Held}` lock",
    label = "`{Self}` is not ranked above `{Held}`",
    note = "a thread that holds locks may only take locks of a strictly higher rank: list `{Self}` \
            after `{Held}` in `lock_ranks!`, or take these locks together in one `lock_all!` \
            (locks of equal rank must be taken together)"
)]
pub trait LockAfter<Held> {}

impl<R: Rank> LockAfter<NoneHeld> for R {}
impl<R: DeclaredRank> LockAfter<Unranked> for R {}

/// The higher of two ranks, computed by the type checker (`Output`).
///
/// `lock_all!(..; nest)` folds it over the ranks it took to type the [`NestedKey`] it returns.
///
/// [`NestedKey`]: super::NestedKey
#[diagnostic::on_unimplemented(
    message = "ranks `{Self}` and `{Other}` are not in one `lock_ranks!` list",
    label = "`lock_all!(..; nest)` cannot tell which of `{Self}` and `{Other}` is higher",
    note = "declare both ranks in the same `lock_ranks!` invocation, or drop `; nest`"
)]
pub trait MaxRank<Other> {
    /// The higher rank.
    type Output: Rank;
}

impl<R: Rank> MaxRank<R> for R {
    type Output = R;
}
impl<R: DeclaredRank> MaxRank<Unranked> for R {
    type Output = R;
}
impl<R: DeclaredRank> MaxRank<R> for Unranked {
    type Output = R;
}

/// Declares lock ranks, lowest first: one unit struct per rank, plus the impls that order them.
///
/// ```
/// use trust_core::lock::{Mutex, RwLock, ThreadKey, Rank};
/// use trust_core::{lock_all, lock_ranks};
///
/// lock_ranks! {
///     /// The bank's ledger: always taken first.
///     pub Ledger;
///     /// One account.
///     pub Account;
///     pub Audit;
/// }
///
/// assert!(Ledger::RANK < Account::RANK && Account::RANK < Audit::RANK);
///
/// let ledger: RwLock<Vec<i64>, Ledger> = RwLock::ranked(Vec::new());
/// let (alice, bob): (Mutex<i64, Account>, Mutex<i64, Account>) = (Mutex::ranked(10), Mutex::ranked(0));
/// let mut key = ThreadKey::get().unwrap();
///
/// // Hold the ledger, then nest the two accounts (a higher rank) inside.
/// let (mut ledger, mut key) = lock_all!(&mut key, ledger; nest);
/// let (mut a, mut b) = lock_all!(&mut key, alice, bob);
/// *a -= 5;
/// *b += 5;
/// ledger.push(5);
/// assert_eq!((*a, *b, ledger.len()), (5, 5, 1));
/// ```
///
/// Each declared rank `R` gets `Rank::RANK` (1, 2, ... in list order), [`DeclaredRank`], and, for
/// every rank `Low` listed before it, `LockAfter<Low>` and `MaxRank` both ways. Attributes and doc
/// comments on a rank are kept; the structs derive `Debug, Clone, Copy, PartialEq, Eq, Hash,
/// Default`.
#[macro_export]
macro_rules! lock_ranks {
    ($($(#[$meta:meta])* $vis:vis $name:ident;)+) => {
        $crate::__lock_ranks!(@declare 1u32; $($(#[$meta])* $vis $name;)+);
        $crate::__lock_ranks!(@pairs $($name)+);
    };
}

/// `lock_ranks!`'s steps, in a macro of their own: a `macro_rules!` arm cannot be private, and these write
/// `RANK`s and `LockAfter` impls that only the whole list keeps consistent (review 61: `@pairs A2 B1` called
/// by hand ordered a rank above one of a higher `RANK`, and two threads deadlocked). Not part of the API.
#[doc(hidden)]
#[macro_export]
macro_rules! __lock_ranks {
    (@declare $rank:expr;) => {};
    (@declare $rank:expr; $(#[$meta:meta])* $vis:vis $name:ident; $($rest:tt)*) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        $vis struct $name;

        impl $crate::lock::Rank for $name {
            const RANK: u32 = $rank;
        }

        impl $crate::lock::DeclaredRank for $name {}

        $crate::__lock_ranks!(@declare $rank + 1; $($rest)*);
    };
    (@pairs) => {};
    (@pairs $low:ident $($high:ident)*) => {
        $(
            impl $crate::lock::LockAfter<$low> for $high {}
            impl $crate::lock::MaxRank<$low> for $high {
                type Output = $high;
            }
            impl $crate::lock::MaxRank<$high> for $low {
                type Output = $high;
            }
        )*
        $crate::__lock_ranks!(@pairs $($high)*);
    };
}
