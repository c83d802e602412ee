//! A fiber that overflows its stack hits its guard page: the process aborts with a message that names the
//! setting to raise, like Rust's own for threads — never a bare SIGSEGV, never silent corruption. Each case
//! crashes a child process (this test binary run again).

use std::hint::black_box;
use std::os::unix::process::ExitStatusExt;
use std::process::Output;

mod common;
use common::*;

/// Recurses until the stack runs out; each frame holds a buffer the optimiser cannot drop.
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 64]);
    black_box(recurse(depth + 1)) + frame[0]
}

fn crash_in_child(name: &str) -> (Output, String) {
    let out = run_in_child(name, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stderr)
}

#[test]
fn a_fiber_overflowing_its_stack_aborts_with_a_message() {
    if is_child() {
        rt();
        let _ = trust_core::spawn(|| recurse(0)).join();
        unreachable!("the fiber's overflow aborts the process");
    }
    let (out, stderr) = crash_in_child("a_fiber_overflowing_its_stack_aborts_with_a_message");
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{stderr}");
    for part in [
        "fiber on thread 'trust-worker-",
        "has overflowed its 256 KiB stack",
        "Runtime::builder().fiber_stack_size(..)",
    ] {
        assert!(stderr.contains(part), "{stderr:?} lacks {part:?}");
    }
}

#[test]
fn a_thread_overflowing_its_stack_still_gets_rusts_message() {
    if is_child() {
        rt(); // installs the fiber overflow handler, which must pass thread overflows on to Rust's
        let thread = std::thread::Builder::new()
            .name("deep".into())
            .stack_size(256 * 1024)
            .spawn(|| recurse(0))
            .unwrap();
        let _ = thread.join();
        unreachable!("the thread's overflow aborts the process");
    }
    let (out, stderr) = crash_in_child("a_thread_overflowing_its_stack_still_gets_rusts_message");
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{stderr}");
    // Rust's message: "thread 'deep' (<thread id>) has overflowed its stack".
    assert!(stderr.contains("thread 'deep'"), "{stderr}");
    assert!(stderr.contains("has overflowed its stack"), "{stderr}");
}

#[test]
fn another_fault_in_a_fiber_is_still_a_plain_segfault() {
    if is_child() {
        rt();
        let _ = trust_core::spawn(|| {
            // SAFETY: none: this reads an address that is mapped but inaccessible, to fault on purpose.
            unsafe {
                let page = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                std::ptr::read_volatile(page.cast::<u8>())
            }
        })
        .join();
        unreachable!("the fault kills the process");
    }
    let (out, stderr) = crash_in_child("another_fault_in_a_fiber_is_still_a_plain_segfault");
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{stderr}");
    assert!(!stderr.contains("overflowed"), "{stderr}");
}
