//! Runtime support for `#[entrust]`: the [`Entrusted`] trait that makes a struct's generated stubs callable on
//! `Trust<Struct>` (through `Deref`, so no import is needed at the call site), and the packing of arguments
//! and results ([`arg`], [`ret`]: each checks `Send + 'static` once, and its `on_unimplemented` wording is the
//! error a user sees). `&str` and `&[T]` arguments travel as `CopiedStr` / `CopiedSlice`
//! (`protocol::copied`).
//!
//! The two casts `Entrusted`'s contract allows (`Deref for Trust<T>` and `trust_of`) live beside the
//! items generated code names, in `crate::__private`: no `unsafe {}` here (`../shared/DESIGN.md` 2.1).
//!
//! Generated code reaches all of this as `::trust_core::__private::*`; none of it is public API.

use crate::delegation::protocol::copied::{CopiedSlice, CopiedStr};

/// A struct declared with `#[entrust]`: `Trust<Self>` dereferences to `Self::Stubs`, whose inherent methods
/// are the generated stubs.
///
/// # Safety
/// `Stubs` must be a `#[repr(transparent)]` struct whose only field is a `Trust<Self>`: a `&Trust<Self>` is
/// reinterpreted as a `&Self::Stubs` and back (`Deref for Trust<T>` and `trust_of`, in `crate::__private`).
/// `#[entrust]` on the struct generates both the stubs type and this impl; nothing else should implement it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an `#[entrust]` struct",
    label = "`#[entrust]` on this impl needs `#[entrust]` on the struct too",
    note = "add `#[entrust]` above the declaration of `{Self}`: it declares the struct delegable and generates \
            the type the stubs of its `#[entrust]` impl blocks live on"
)]
pub unsafe trait Entrusted: Send + 'static {
    /// The generated `#[repr(transparent)]` wrapper of `Trust<Self>` that holds the stubs.
    type Stubs;
}

/// An argument type a delegated method can take: it is moved into the request and read on the trustee's
/// thread.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an argument of a delegated method: it is not `Send`",
    label = "arguments move to the trustee's thread, so their types must be `Send`",
    note = "use a thread-safe type (`Arc` for `Rc`, an owned value for a borrow), or mark the method \
            `#[entrust(skip)]` and call it through `apply`"
)]
pub trait DelegatedArg: Send + 'static {}
impl<T: Send + 'static> DelegatedArg for T {}

/// The element type of a `&[T]` argument: cloned into the request, then read on the trustee's thread.
#[diagnostic::on_unimplemented(
    message = "`&[{Self}]` cannot be an argument of a delegated method: `{Self}` must be `Clone + Send`",
    label = "the elements are cloned into the request and read on the trustee's thread",
    note = "pass an owned `Vec<{Self}>` instead, or mark the method `#[entrust(skip)]` and call it through \
            `apply`"
)]
pub trait DelegatedSliceElem: Clone + Send + 'static {}
impl<T: Clone + Send + 'static> DelegatedSliceElem for T {}

/// A return type a delegated method can have: it is produced on the trustee's thread and moved back.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned by a delegated method: it is not `Send`",
    label = "the result comes back from the trustee's thread, so its type must be `Send`",
    note = "return a thread-safe owned value (`Arc` for `Rc`, `String` for a borrowed string), or mark the \
            method `#[entrust(skip)]` and call it through `apply`"
)]
pub trait DelegatedReturn: Send + 'static {}
impl<T: Send + 'static> DelegatedReturn for T {}

/// One packed argument of a stub, checked `Send + 'static` when it was packed by [`arg`], [`str_arg`] or
/// [`slice_arg`]. The check happens once, at the user's type and in the words above; the closures that
/// capture an `Arg` are then `Send` without rustc asking again (and reporting again) at every `apply*` call.
#[derive(Debug)]
pub struct Arg<A>(A);

// SAFETY: an `Arg<A>` is only made by `arg` (which requires `A: DelegatedArg`, so `A: Send`), `str_arg`
// (`CopiedStr` is `Send`) and `slice_arg` (`T: DelegatedSliceElem: Send`, so `CopiedSlice<T>` is `Send`):
// every value of this type holds a `Send` value. The impl has no bound on purpose: a bound would make rustc
// re-check it, and re-report its failure, wherever a closure capturing the argument must be `Send`.
unsafe impl<A> Send for Arg<A> {}

impl<A> Arg<A> {
    /// The argument, on the trustee.
    #[inline]
    pub fn into_inner(self) -> A {
        self.0
    }
}

/// Packs a moved argument; fails to compile, pointing at the argument's type, when it is not `Send + 'static`.
#[inline]
pub fn arg<A: DelegatedArg>(value: A) -> Arg<A> {
    Arg(value)
}

/// Packs a `&str` argument: copied into the request.
#[inline]
pub fn str_arg(value: &str) -> Arg<CopiedStr> {
    Arg(CopiedStr::new(value))
}

/// Packs a `&[T]` argument: its elements cloned into the request.
#[inline]
pub fn slice_arg<T: DelegatedSliceElem>(value: &[T]) -> Arg<CopiedSlice<T>> {
    Arg(CopiedSlice::new(value))
}

/// A stub's result on its way back, checked `Send + 'static` by [`ret`], for the same reason as [`Arg`].
#[derive(Debug)]
pub struct Returned<R>(R);

// SAFETY: only `ret` makes a `Returned<R>`, and it requires `R: DelegatedReturn`, so `R: Send`.
unsafe impl<R> Send for Returned<R> {}

impl<R> Returned<R> {
    /// The result, back on the caller's side.
    #[inline]
    pub fn into_inner(self) -> R {
        self.0
    }
}

/// Wraps a method's result on the trustee; fails to compile, pointing at the return type, when it is not
/// `Send + 'static`.
#[inline]
pub fn ret<R: DelegatedReturn>(value: R) -> Returned<R> {
    Returned(value)
}
