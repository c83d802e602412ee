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
//!
//! `Rank`, `LockAfter` and `MaxRank` are sealed: each needs a hidden marker trait that only
//! `lock_ranks!` implements, so no impl written by hand can order locks inconsistently (review 89
//! found two that deadlocked: `impl LockAfter<X> for X`, and a `Rank` of 0 marked `DeclaredRank`).

/// A lock rank: a marker type whose `RANK` orders the locks that carry it.
///
/// Declared only through [`lock_ranks!`](crate::lock_ranks), which keeps `RANK` and the
/// [`LockAfter`] impls consistent: the trait is sealed (a hand-written impl could break the
/// deadlock-freedom promise).
pub trait Rank: 'static + seal::Rank {
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
impl seal::Rank for Unranked {}

/// Marks the ranks made by [`lock_ranks!`](crate::lock_ranks); everything above [`Unranked`].
pub trait DeclaredRank: Rank {}

/// What a bare `ThreadKey` holds: nothing, so any lock may be taken with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NoneHeld;

/// `Self` may be locked by a thread whose highest held rank is `Held`.
///
/// `lock_ranks!` implements it for every pair (higher, lower); this crate implements it for every
/// rank after [`NoneHeld`], and for every declared rank after [`Unranked`]. A missing impl is the
/// compile error for a nesting that could deadlock. Sealed, as [`Rank`] is: a hand-written impl
/// (`impl LockAfter<R> for R {}`, say) would let locks nest out of order.
#[diagnostic::on_unimplemented(
    message = "cannot lock a `{Self}` lock while holding a `{Held}` lock",
    label = "`{Self}` is not ranked above `{Held}`",
    note = "a thread that holds locks may only take locks of a strictly higher rank: list `{Self}` \
            after `{Held}` in `lock_ranks!`, or take these locks together in one `lock_all!` \
            (locks of equal rank must be taken together)"
)]
pub trait LockAfter<Held>: seal::LockAfter<Held> {}

impl<R: Rank> LockAfter<NoneHeld> for R {}
impl<R: Rank> seal::LockAfter<NoneHeld> for R {}
impl<R: DeclaredRank> LockAfter<Unranked> for R {}
impl<R: DeclaredRank> seal::LockAfter<Unranked> for R {}

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
pub trait MaxRank<Other>: seal::MaxRank<Other> {
    /// The higher rank.
    type Output: Rank;
}

impl<R: Rank> MaxRank<R> for R {
    type Output = R;
}
impl<R: Rank> seal::MaxRank<R> for R {}
impl<R: DeclaredRank> MaxRank<Unranked> for R {
    type Output = R;
}
impl<R: DeclaredRank> seal::MaxRank<Unranked> for R {}
impl<R: DeclaredRank> MaxRank<R> for Unranked {
    type Output = R;
}
impl<R: DeclaredRank> seal::MaxRank<R> for Unranked {}

/// The seals of the rank traits: public, so that `lock_ranks!`'s expansion in the user's crate can
/// implement them (through `trust_core::__private::seal`), and hidden, so that only it does. Each names
/// the one way to get a rank or an order.
#[doc(hidden)]
pub mod seal {
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not a lock rank declared with `lock_ranks!`",
        label = "ranks are declared only with `lock_ranks!`",
        note = "list `{Self}` in a `lock_ranks!` invocation (lowest first) instead of implementing \
                `Rank` by hand: a hand-written rank could order locks inconsistently and deadlock"
    )]
    pub trait Rank {}

    #[diagnostic::on_unimplemented(
        message = "`LockAfter<{Held}>` for `{Self}` can only come from `lock_ranks!`",
        label = "lock orders are declared only with `lock_ranks!`",
        note = "a `{Self}` lock may be taken while a `{Held}` lock is held only if one `lock_ranks!` \
                lists `{Held}` before `{Self}`; a hand-written order could let two threads nest the same \
                locks in opposite orders and deadlock"
    )]
    pub trait LockAfter<Held> {}

    #[diagnostic::on_unimplemented(
        message = "`MaxRank<{Other}>` for `{Self}` can only come from `lock_ranks!`",
        label = "the higher of two ranks is declared only with `lock_ranks!`",
        note = "list `{Self}` and `{Other}` in one `lock_ranks!` invocation instead of implementing \
                `MaxRank` by hand"
    )]
    pub trait MaxRank<Other> {}
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
        impl $crate::__private::seal::Rank for $name {}

        impl $crate::lock::DeclaredRank for $name {}

        $crate::__lock_ranks!(@declare $rank + 1; $($rest)*);
    };
    (@pairs) => {};
    (@pairs $low:ident $($high:ident)*) => {
        $(
            impl $crate::lock::LockAfter<$low> for $high {}
            impl $crate::__private::seal::LockAfter<$low> for $high {}
            impl $crate::lock::MaxRank<$low> for $high {
                type Output = $high;
            }
            impl $crate::__private::seal::MaxRank<$low> for $high {}
            impl $crate::lock::MaxRank<$high> for $low {
                type Output = $high;
            }
            impl $crate::__private::seal::MaxRank<$high> for $low {}
        )*
        $crate::__lock_ranks!(@pairs $($high)*);
    };
}
