//! A stub call allocates nothing when its packed arguments fit the slot: a short `&str` or `&[T]` is copied
//! into the request itself. Counted with a global allocator, in a test binary of its own (the count is
//! process-wide).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use trust_core::{Runtime, Trust, entrust};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to `System`, counting; no other behaviour.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[entrust]
#[derive(Debug, Default)]
struct Tally {
    bytes: usize,
    sum: u64,
}

#[entrust]
impl Tally {
    /// Counts the bytes of `text` without keeping it: the method itself allocates nothing.
    fn count(&mut self, text: &str) -> usize {
        self.bytes += text.len();
        self.bytes
    }

    fn add_all(&mut self, values: &[u32]) -> u64 {
        self.sum += values.iter().map(|&v| u64::from(v)).sum::<u64>();
        self.sum
    }

    fn two(&mut self, a: &str, b: &str) -> usize {
        self.bytes += a.len() + b.len();
        self.bytes
    }
}

/// Allocations made while `f` runs, anywhere in the process.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    f();
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

#[test]
fn short_str_and_slice_arguments_allocate_nothing() {
    let rt = Runtime::builder()
        .workers(2)
        .build()
        .expect("first runtime of this process");
    let tally: Trust<Tally> = rt.trustee(1).entrust(Tally::default());
    // Warm up: the first call from this thread creates its channel to the trustee.
    tally.count("warm-up");
    tally.add_all(&[1]);
    tally.two("a", "b");

    let short = "rent, groceries"; // 15 bytes: travels inline
    let n = allocations(|| {
        for _ in 0..1000 {
            tally.count(short);
        }
    });
    assert_eq!(n, 0, "a stub with a short `&str` allocated");

    let values: [u32; 16] = std::array::from_fn(|i| i as u32); // 64 bytes: exactly the inline capacity
    let n = allocations(|| {
        for _ in 0..1000 {
            tally.add_all(&values);
        }
    });
    assert_eq!(n, 0, "a stub with a short `&[u32]` allocated");

    let n = allocations(|| {
        for _ in 0..1000 {
            tally.two(short, short);
        }
    });
    assert_eq!(n, 0, "two short strings still fit the slot");

    // Longer than the inline capacity: one allocation, the boxed copy.
    let long = "x".repeat(100);
    let n = allocations(|| {
        for _ in 0..1000 {
            tally.count(&long);
        }
    });
    assert_eq!(n, 1000, "a long `&str` is boxed once per call");

    let bytes = 7 + 2 + 1000 * 15 + 1000 * 30 + 1000 * 100;
    assert_eq!(tally.count(""), bytes);
    assert_eq!(tally.add_all(&[]), 1 + 1000 * 120);
}
