//! Runtime support for `#[entrust]`: the [`Entrusted`] trait that makes a struct's generated stubs callable on
//! `Trust<Struct>` (through `Deref`, so no import is needed at the call site), the packing of arguments and
//! results ([`arg`], [`ret`]: each checks `Send + 'static` once, and its `on_unimplemented` wording is the
//! error a user sees), and [`CopiedStr`] / [`CopiedSlice`], which carry `&str` and `&[T]` arguments inside the
//! request (inline up to 64 bytes, `INLINE_BYTES`, so short ones allocate nothing).
//!
//! Generated code reaches all of this as `::trust_core::__private::*`; none of it is public API.

use std::fmt;
use std::marker::PhantomData;
use std::mem::{MaybeUninit, align_of, size_of};
use std::ops::Deref;
use std::ptr;

use crate::delegation::api::trust::Trust;

/// A struct declared with `#[entrust]`: `Trust<Self>` dereferences to `Self::Stubs`, whose inherent methods
/// are the generated stubs.
///
/// # Safety
/// `Stubs` must be a `#[repr(transparent)]` struct whose only field is a `Trust<Self>`: a `&Trust<Self>` is
/// reinterpreted as a `&Self::Stubs` and back. `#[entrust]` on the struct generates both the stubs type and
/// this impl; nothing else should implement it.
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

impl<T: Entrusted> Deref for Trust<T> {
    type Target = T::Stubs;

    /// The stubs `#[entrust]` generated for `T`: `acct.deposit(5)` on a `Trust<Account>` finds `deposit` here.
    #[inline]
    fn deref(&self) -> &T::Stubs {
        // SAFETY: by the `Entrusted` contract `T::Stubs` is `#[repr(transparent)]` over `Trust<T>`: same size,
        // alignment and validity, so the reference may be reinterpreted; it borrows `self` for its lifetime.
        unsafe { &*ptr::from_ref(self).cast::<T::Stubs>() }
    }
}

/// The handle inside a stubs value: what a generated stub delegates through.
#[inline]
pub fn trust_of<T: Entrusted>(stubs: &T::Stubs) -> &Trust<T> {
    // SAFETY: the inverse of `Deref for Trust<T>`: every `T::Stubs` is a transparent `Trust<T>` (contract).
    unsafe { &*ptr::from_ref(stubs).cast::<Trust<T>>() }
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

/// Bytes of a `&str` or `&[T]` argument carried inside the request itself; longer ones are boxed (one
/// allocation). 64 bytes keep a stub with one short string argument inside the slot's 128-byte primary block.
pub const INLINE_BYTES: usize = 64;

#[repr(C, align(8))]
struct InlineBuf([MaybeUninit<u8>; INLINE_BYTES]);

enum Repr<T> {
    /// `len` clones of the elements at the start of `buf`.
    Inline {
        len: usize,
        buf: InlineBuf,
    },
    Heap(Box<[T]>),
}

/// An owned copy of a `&[T]` argument (`T: Clone`), moved into the request: elements that fit in
/// 64 bytes (`INLINE_BYTES`) and need at most 8-byte alignment travel inside it, longer slices are boxed.
pub struct CopiedSlice<T> {
    repr: Repr<T>,
    /// Owns `T`s: `Send`, `Sync` and drop checking follow `T` (the inline buffer is plain bytes).
    _owns: PhantomData<T>,
}

impl<T: Clone> CopiedSlice<T> {
    /// Clones the elements of `src`, in place when they fit.
    pub fn new(src: &[T]) -> Self {
        let inline = align_of::<T>() <= align_of::<InlineBuf>()
            && size_of::<T>()
                .checked_mul(src.len())
                .is_some_and(|n| n <= INLINE_BYTES);
        let repr = if inline {
            let mut buf = InlineBuf([MaybeUninit::uninit(); INLINE_BYTES]);
            let base = buf.0.as_mut_ptr().cast::<T>();
            // Drops the clones made so far if a `clone` panics.
            struct Partial<T> {
                base: *mut T,
                done: usize,
            }
            impl<T> Drop for Partial<T> {
                fn drop(&mut self) {
                    // SAFETY: the first `done` elements at `base` were written and not yet handed over.
                    unsafe {
                        ptr::drop_in_place(ptr::slice_from_raw_parts_mut(self.base, self.done))
                    }
                }
            }
            let mut partial = Partial { base, done: 0 };
            for item in src {
                // SAFETY: `inline` checked that `src.len()` elements fit in the buffer and that its alignment
                // (8) suffices for `T`; element `done` is in bounds and not yet written.
                unsafe { base.add(partial.done).write(item.clone()) };
                partial.done += 1;
            }
            std::mem::forget(partial);
            Repr::Inline {
                len: src.len(),
                buf,
            }
        } else {
            Repr::Heap(src.into())
        };
        CopiedSlice {
            repr,
            _owns: PhantomData,
        }
    }
}

impl<T> CopiedSlice<T> {
    /// True when the elements travel inside the request (no allocation was made).
    pub fn is_inline(&self) -> bool {
        matches!(self.repr, Repr::Inline { .. })
    }
}

impl<T> Deref for CopiedSlice<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        match &self.repr {
            // SAFETY: `new` wrote `len` initialized, aligned `T`s at the start of `buf`; moving the buffer
            // moved them bitwise, as any Rust move does.
            Repr::Inline { len, buf } => unsafe {
                std::slice::from_raw_parts(buf.0.as_ptr().cast::<T>(), *len)
            },
            Repr::Heap(b) => b,
        }
    }
}

impl<T> Drop for CopiedSlice<T> {
    fn drop(&mut self) {
        if let Repr::Inline { len, buf } = &mut self.repr {
            // SAFETY: as in `deref`; the elements are dropped once, here (a `Heap` box drops itself).
            unsafe {
                ptr::drop_in_place(ptr::slice_from_raw_parts_mut(
                    buf.0.as_mut_ptr().cast::<T>(),
                    *len,
                ))
            }
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for CopiedSlice<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// An owned copy of a `&str` argument, moved into the request: inline up to 64 bytes (`INLINE_BYTES`), else boxed.
pub struct CopiedStr(CopiedSlice<u8>);

impl CopiedStr {
    /// Copies `src`.
    #[inline]
    pub fn new(src: &str) -> Self {
        CopiedStr(CopiedSlice::new(src.as_bytes()))
    }

    /// True when the string travels inside the request (no allocation was made).
    pub fn is_inline(&self) -> bool {
        self.0.is_inline()
    }
}

impl Deref for CopiedStr {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        // SAFETY: the bytes were copied from a `&str` (`new` is the only constructor).
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

impl fmt::Debug for CopiedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[test]
    fn short_strings_are_inline_and_long_ones_boxed() {
        let short = CopiedStr::new("rent");
        assert!(short.is_inline());
        assert_eq!(&*short, "rent");
        let exact = "x".repeat(INLINE_BYTES);
        assert!(CopiedStr::new(&exact).is_inline());
        let long = "y".repeat(INLINE_BYTES + 1);
        let copied = CopiedStr::new(&long);
        assert!(!copied.is_inline());
        assert_eq!(&*copied, long);
        assert_eq!(&*CopiedStr::new(""), "");
        assert_eq!(format!("{:?}", CopiedStr::new("a\"b")), r#""a\"b""#);
    }

    #[test]
    fn slices_clone_their_elements_and_drop_them_once() {
        let counter = Rc::new(());
        let src = vec![counter.clone(), counter.clone(), counter.clone()];
        let copied = CopiedSlice::new(&src);
        assert!(copied.is_inline());
        assert_eq!(Rc::strong_count(&counter), 7);
        assert_eq!(copied.len(), 3);
        let moved = copied; // a bitwise move, as into a request
        drop(moved);
        assert_eq!(Rc::strong_count(&counter), 4);

        let many: Vec<u64> = (0..9).collect();
        let copied = CopiedSlice::new(&many);
        assert!(!copied.is_inline(), "72 bytes do not fit in 64");
        assert_eq!(&*copied, &many[..]);
        assert!(CopiedSlice::new(&many[..8]).is_inline());
    }

    #[test]
    fn over_aligned_and_zero_sized_elements() {
        #[derive(Clone, Debug, PartialEq)]
        #[repr(align(16))]
        struct Wide(u8);
        let copied = CopiedSlice::new(&[Wide(1), Wide(2)]);
        assert!(
            !copied.is_inline(),
            "16-byte alignment exceeds the buffer's 8"
        );
        assert_eq!(&*copied, &[Wide(1), Wide(2)]);
        let units = vec![(); 1000];
        let copied = CopiedSlice::new(&units);
        assert!(copied.is_inline());
        assert_eq!(copied.len(), 1000);
    }

    #[test]
    fn a_panicking_clone_drops_the_clones_already_made() {
        thread_local!(static LIVE: Cell<i32> = const { Cell::new(0) });
        struct Bomb(bool);
        impl Clone for Bomb {
            fn clone(&self) -> Self {
                assert!(!self.0, "boom");
                LIVE.with(|l| l.set(l.get() + 1));
                Bomb(false)
            }
        }
        impl Drop for Bomb {
            fn drop(&mut self) {
                LIVE.with(|l| l.set(l.get() - 1));
            }
        }
        let src = [Bomb(false), Bomb(false), Bomb(true)];
        LIVE.with(|l| l.set(3));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| CopiedSlice::new(&src)));
        assert!(r.is_err());
        assert_eq!(LIVE.with(Cell::get), 3, "the two clones made were dropped");
        drop(src);
        assert_eq!(LIVE.with(Cell::get), 0);
    }
}
