//! [`CopiedSlice`] and [`CopiedStr`]: owned copies of a `&[T]` or `&str` argument of an `#[entrust]` stub,
//! moved into the request: inline up to 64 bytes (`INLINE_BYTES`), so short ones allocate nothing, else boxed.
//! The inline buffer's raw writes and reads live here, with their safety argument; the stubs' support
//! (`api::entrust`) only names these types.

use std::fmt;
use std::marker::PhantomData;
use std::mem::{MaybeUninit, align_of, size_of};
use std::ops::Deref;
use std::ptr;

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
