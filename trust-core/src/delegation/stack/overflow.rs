//! Fiber stack overflow: a fiber that runs into its guard page gets a message like the one Rust prints for a
//! thread (`thread 'main' has overflowed its stack`), and the process aborts — not a bare SIGSEGV.
//!
//! When the runtime starts, a SIGSEGV and SIGBUS handler is installed once for the process (on the
//! alternate signal stack: the fiber's own stack is exhausted). The scheduler keeps the guard page of the
//! fiber it is resuming in a thread-local `Cell` ([`set_running`]); the handler compares the faulting address
//! with it. A hit is reported with `write(2)` from a buffer on the signal stack — no allocation, no lock —
//! and ends in `abort()`. Any other fault goes to the handler installed before ours, as if ours were not
//! there: Rust's own, which reports overflows of thread stacks, or the default action (the fault recurs
//! once the handler returns).

use std::cell::Cell;
use std::mem;
use std::ptr;
use std::sync::{Once, OnceLock};

use libc::{c_int, c_void, siginfo_t};

use super::GuardPage;

thread_local! {
    /// The guard page of the fiber this thread is running, `NONE` between fibers.
    static RUNNING: Cell<GuardPage> = const { Cell::new(GuardPage::NONE) };
    /// The index of the worker this thread is, for the message.
    static WORKER: Cell<usize> = const { Cell::new(usize::MAX) };
}

const SIGNALS: [c_int; 2] = [libc::SIGSEGV, libc::SIGBUS];

/// The handlers ours replaced, by position in `SIGNALS`.
static PREVIOUS: [OnceLock<libc::sigaction>; 2] = [const { OnceLock::new() }; 2];

/// Size of the signal stack this module gives a worker thread that has none.
const SIGNAL_STACK_BYTES: usize = 64 * 1024;

/// Records the guard page of the fiber about to be resumed on this thread (`NONE` once it is suspended).
#[inline]
pub(crate) fn set_running(guard: GuardPage) {
    RUNNING.with(|r| r.set(guard));
}

/// The guard page of the fiber this thread is running (`NONE` between fibers).
pub(crate) fn running() -> GuardPage {
    RUNNING.with(Cell::get)
}

/// Installs the fault handler, once for the process.
pub(crate) fn install_handler() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        for (signal, previous) in SIGNALS.into_iter().zip(&PREVIOUS) {
            // SAFETY: `sigaction` on a zeroed struct reads the current disposition; the new one names a
            // handler with the SA_SIGINFO signature, runnable on any thread at any time.
            unsafe {
                let mut old: libc::sigaction = mem::zeroed();
                libc::sigaction(signal, ptr::null(), &mut old);
                let _ = previous.set(old);
                let mut action: libc::sigaction = mem::zeroed();
                action.sa_sigaction = on_fault as *const () as libc::sighandler_t;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(signal, &action, ptr::null_mut());
            }
        }
    });
}

unsafe extern "C" fn on_fault(signal: c_int, info: *mut siginfo_t, context: *mut c_void) {
    // SAFETY: the kernel hands an SA_SIGINFO handler a valid `siginfo_t`.
    let addr = unsafe { (*info).si_addr() } as usize;
    let running = RUNNING.with(Cell::get);
    if running.contains(addr) {
        report_overflow(running);
    }
    let previous = SIGNALS.iter().position(|&s| s == signal).and_then(|i| PREVIOUS[i].get());
    match previous {
        Some(p) if p.sa_flags & libc::SA_SIGINFO != 0 && p.sa_sigaction > libc::SIG_IGN => {
            // SAFETY: an SA_SIGINFO handler has this signature; it gets the arguments we got.
            unsafe {
                let handler: unsafe extern "C" fn(c_int, *mut siginfo_t, *mut c_void) =
                    mem::transmute(p.sa_sigaction);
                handler(signal, info, context);
            }
        }
        // Anything else: restore the previous disposition (or the default, which a zeroed action is). The
        // faulting instruction runs again when we return, and faults again under it.
        _ => {
            // SAFETY: an all-zero `sigaction` is a valid value.
            let default = unsafe { mem::zeroed() };
            // SAFETY: `previous` was read from the kernel.
            unsafe { libc::sigaction(signal, previous.unwrap_or(&default), ptr::null_mut()) };
        }
    }
}

/// Writes the overflow message to stderr and aborts; only async-signal-safe calls.
fn report_overflow(running: GuardPage) -> ! {
    let mut m = Message::default();
    m.push(b"\nfiber on thread 'trust-worker-");
    m.push_number(WORKER.with(Cell::get));
    m.push(b"' has overflowed its ");
    m.push_number(running.stack_bytes / 1024);
    m.push(b" KiB stack; raise it with `Runtime::builder().fiber_stack_size(..)`\n");
    m.push(b"fatal runtime error: fiber stack overflow, aborting\n");
    // SAFETY: `write` and `abort` are async-signal-safe; the buffer is valid for `len` bytes.
    unsafe {
        libc::write(libc::STDERR_FILENO, m.bytes.as_ptr().cast(), m.len);
        libc::abort()
    }
}

/// A message built without allocating; what does not fit is cut.
struct Message {
    bytes: [u8; 256],
    len: usize,
}

impl Default for Message {
    fn default() -> Self {
        Message {
            bytes: [0; 256],
            len: 0,
        }
    }
}

impl Message {
    fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn push_number(&mut self, mut n: usize) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

/// Set up by a worker thread for its life: its index for the message, and a signal stack if it has none
/// (Rust gives its threads one only when it installed its own handler). Dropping it removes that stack.
#[derive(Debug)]
pub(crate) struct WorkerSignals {
    signal_stack: Option<*mut c_void>,
}

impl WorkerSignals {
    pub(crate) fn enter(index: usize) -> Self {
        WORKER.with(|w| w.set(index));
        // SAFETY: a null new stack only reads the current one.
        let has_stack = unsafe {
            let mut current: libc::stack_t = mem::zeroed();
            libc::sigaltstack(ptr::null(), &mut current);
            current.ss_flags & libc::SS_DISABLE == 0
        };
        if has_stack {
            return WorkerSignals { signal_stack: None };
        }
        let signal_stack = super::map(SIGNAL_STACK_BYTES).filter(|&sp| {
            let stack = libc::stack_t {
                ss_sp: sp,
                ss_flags: 0,
                ss_size: SIGNAL_STACK_BYTES,
            };
            // SAFETY: `sp` is a fresh mapping of `ss_size` bytes; it stays mapped until `drop`, or is
            // unmapped here if the kernel refuses it.
            unsafe {
                let installed = libc::sigaltstack(&stack, ptr::null_mut()) == 0;
                if !installed {
                    libc::munmap(sp, SIGNAL_STACK_BYTES);
                }
                installed
            }
        });
        WorkerSignals { signal_stack }
    }
}

impl Drop for WorkerSignals {
    fn drop(&mut self) {
        WORKER.with(|w| w.set(usize::MAX));
        if let Some(sp) = self.signal_stack {
            // SAFETY: we are not on the signal stack (not in a handler); disable it, then unmap it.
            unsafe {
                let disable = libc::stack_t {
                    ss_sp: ptr::null_mut(),
                    ss_flags: libc::SS_DISABLE,
                    ss_size: 0,
                };
                libc::sigaltstack(&disable, ptr::null_mut());
                libc::munmap(sp, SIGNAL_STACK_BYTES);
            }
        }
    }
}
