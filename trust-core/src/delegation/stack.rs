//! Fiber stacks: how they are mapped, guarded, counted and reused.
//!
//! **Many to a mapping.** Stacks are carved out of chunks: one anonymous `mmap` holds up to [`CHUNK_STACKS`]
//! stacks (fewer when they are huge: at most [`CHUNK_BYTES`] of them, or one), each with a guard page at its
//! low end, so running off a stack's end faults instead of corrupting the stack below it (see `overflow` for
//! the message that fault produces). On Linux 6.13 and later the guard is `madvise(MADV_GUARD_INSTALL)`: a
//! marker in the page tables that leaves the chunk one memory mapping. Older kernels refuse that advice
//! (EINVAL) and the guard page is `mprotect(PROT_NONE)` instead, which splits a mapping at each guard; there
//! a chunk holds one stack, two mappings. Which kind works is probed once.
//!
//! **A budget under `vm.max_map_count`.** Linux caps the mappings of a process (`vm.max_map_count`, 65,530
//! by default). At the cap every `mmap` fails — `malloc`'s, a new thread's, a library's — so fiber stacks
//! may take only the cap less a reserve for the rest of the process (an eighth, at least 4,096 mappings):
//! 3.6 million stacks of the default size with marker guards, so memory is the real limit (a waiting fiber
//! takes about 4.5 KiB), and 28,669 with protected pages. A chunk counts from its `mmap` to its `munmap`,
//! its stacks running or pooled; it is unmapped when the last of its stacks is dropped (a runtime's pool,
//! when the runtime is). `TRUST_MAX_FIBER_STACKS` limits the stacks too (tests use it to reach a limit
//! quickly).
//!
//! **Taken by the caller.** [`spawn`](crate::spawn) takes its fiber's stack on the calling thread before
//! the fiber is sent to a worker, so when no stack can be had (budget spent, or `mmap` failed) `spawn`
//! panics there, and a worker never fails for want of a stack. `launch` takes its stack on the trustee
//! and, failing, fails that `launch` (its caller gets the panic).
//!
//! **Reused.** Finished fibers' stacks go back to their runtime's [`StackPool`], which `spawn` and `launch`
//! draw from first, so reuse costs no budget; one pool for all workers means a stack freed on one worker
//! serves a `spawn` bound for another. The pool keeps up to 1,024 stacks as they are (their touched pages
//! resident, for the next fibers); past that it gives a stack's pages back to the OS (`MADV_DONTNEED`) and
//! keeps only its addresses, and a chunk whose stacks are all back that way is unmapped (its page tables
//! and its budget with it), so a burst of 100,000 fibers leaves nothing behind but the 1,024 warm stacks.

// Under Miri no fiber runs (see `prepare`), so most of this module is unused there.
#![cfg_attr(miri, allow(dead_code))]

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::num::NonZeroUsize;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use corosensei::stack::{MIN_STACK_SIZE, Stack, StackPointer};

pub(crate) mod overflow;

/// Finished fibers' stacks kept for reuse with their pages resident, at most; the pool keeps the others with
/// their pages given back.
const POOLED_STACKS: usize = 1024;

/// Stacks carved out of one mapping, with marker guards, at most.
const CHUNK_STACKS: usize = 64;

/// The most bytes carved out of one mapping, if one stack is not more: a chunk of 64 huge stacks could pass
/// what the kernel's overcommit heuristic allows one `mmap`, where one of them would not.
const CHUNK_BYTES: usize = 64 << 20;

/// `MADV_GUARD_INSTALL` (Linux 6.13), not yet in the `libc` crate.
const MADV_GUARD_INSTALL: libc::c_int = 102;

/// Linux's default `vm.max_map_count`, assumed when it cannot be read.
const DEFAULT_MAX_MAP_COUNT: usize = 65_530;

/// Stacks mapped now (running or pooled); never more than `Budget::max_stacks`.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Memory mappings that fiber stacks take now; never more than `Budget::max_mappings`.
static MAPPED: AtomicUsize = AtomicUsize::new(0);

/// Fibers that have settled their result (a joiner may have returned already) and not yet given their stack
/// back: a `take` at the budget waits a little for them instead of failing, so that a `spawn` right after a
/// `join` finds the joined fiber's stack.
static RETURNING: AtomicUsize = AtomicUsize::new(0);

/// The calling thread's own stack, as its range of addresses (`pthread_getattr_np`), or `None` where it cannot
/// be told (another OS, Miri). A plain thread's client keeps it: code running on another stack on that
/// thread (a `may` coroutine) is told apart by its stack pointer, with no call into `may`.
pub(crate) fn thread_stack() -> Option<std::ops::Range<usize>> {
    #[cfg(all(target_os = "linux", not(miri)))]
    {
        // SAFETY: `attr` is initialized by `pthread_getattr_np` before it is read and destroyed once; the
        // out-pointers point at locals.
        unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
                return None;
            }
            let (mut low, mut size) = (ptr::null_mut(), 0);
            let got = libc::pthread_attr_getstack(&attr, &mut low, &mut size);
            libc::pthread_attr_destroy(&mut attr);
            (got == 0 && size > 0).then(|| low as usize..low as usize + size)
        }
    }
    #[cfg(not(all(target_os = "linux", not(miri))))]
    None
}

/// The stack pointer: a point on the stack the caller runs on (inlined, it is the caller's). Read from the
/// register, not taken as the address of a local: AddressSanitizer moves a local whose address is taken to a
/// "fake stack" on its heap (to catch uses after return), and the address of a local then told a plain thread
/// it ran off its own stack (its `apply_then` missed the pipelining fast path for the general one) and an
/// interval lock's borrow on a fiber's stack from a thread's (its deadlock checks missed them, and tests that
/// expect their panic hung). Elsewhere (Miri, other architectures) the address of a local, which is on the
/// stack there.
#[inline(always)]
pub(crate) fn stack_pointer() -> usize {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        let sp: usize;
        // SAFETY: reads a register, touches no memory.
        unsafe { std::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
        sp
    }
    #[cfg(all(target_arch = "aarch64", not(miri)))]
    {
        let sp: usize;
        // SAFETY: as above.
        unsafe { std::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
        sp
    }
    #[cfg(not(all(any(target_arch = "x86_64", target_arch = "aarch64"), not(miri))))]
    {
        let here = 0u8;
        std::ptr::from_ref(&here).addr()
    }
}

/// Called by a fiber right before it settles its result: its stack comes back soon, by `give_back`.
pub(crate) fn returning() {
    RETURNING.fetch_add(1, Ordering::SeqCst);
}

/// How a stack's guard page is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GuardKind {
    /// `madvise(MADV_GUARD_INSTALL)`: the stack stays one mapping.
    Marker,
    /// `mprotect(PROT_NONE)`: the stack becomes two mappings.
    Protected,
}

impl GuardKind {
    /// Stacks of `len` bytes (guard page included) to carve out of one `mmap`.
    fn chunk_stacks(self, len: usize) -> usize {
        match self {
            GuardKind::Marker => (CHUNK_BYTES / len).clamp(1, CHUNK_STACKS),
            GuardKind::Protected => 1,
        }
    }

    /// The memory mappings a chunk of `stacks` takes: with protected pages, each guard page splits it.
    fn mappings(self, stacks: usize) -> usize {
        match self {
            GuardKind::Marker => 1,
            GuardKind::Protected => 2 * stacks,
        }
    }

    /// Makes the page at `page` a guard page.
    ///
    /// # Safety
    /// `page` is a page-aligned page of a mapping the caller owns and nothing else uses.
    unsafe fn install(self, page: *mut libc::c_void, page_size: usize) -> io::Result<()> {
        // SAFETY: by the contract; both calls only change how the page may be accessed.
        let r = unsafe {
            match self {
                GuardKind::Marker => libc::madvise(page, page_size, MADV_GUARD_INSTALL),
                GuardKind::Protected => libc::mprotect(page, page_size, libc::PROT_NONE),
            }
        };
        if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    fn call(self) -> &'static str {
        match self {
            GuardKind::Marker => "madvise(MADV_GUARD_INSTALL)",
            GuardKind::Protected => "mprotect(PROT_NONE)",
        }
    }
}

/// How many fiber stacks this process may have, decided once.
#[derive(Debug)]
pub(crate) struct Budget {
    /// `TRUST_MAX_FIBER_STACKS` as the last runtime built read it (`usize::MAX`: unset).
    max_stacks: AtomicUsize,
    /// `vm.max_map_count` less what the rest of the process keeps.
    max_mappings: usize,
    max_map_count: usize,
    guard: GuardKind,
    page_size: usize,
}

/// Reads the stack budget's configuration (`TRUST_MAX_FIBER_STACKS`, checked by `build` first) for a runtime
/// being built, and installs the overflow handler (once per process). Under Miri nothing: fibers, their stacks, signals and
/// `/proc` are outside what it can run (it checks the delegation protocol with plain threads as clients).
pub(crate) fn prepare() {
    #[cfg(not(miri))]
    {
        // Read again for each runtime built (the budget itself is made once): a build that failed may have
        // been followed by a change of the variable.
        let max = max_stacks_var().ok().flatten().unwrap_or(usize::MAX);
        budget().max_stacks.store(max, Ordering::Relaxed);
        overflow::install_handler();
    }
}

/// `TRUST_MAX_FIBER_STACKS`: `None` when unset; `Err` with its value (lossily decoded) when it is not a positive
/// integer. `RuntimeBuilder::build` checks it first and returns the error.
pub(crate) fn max_stacks_var() -> Result<Option<usize>, String> {
    let Some(value) = std::env::var_os("TRUST_MAX_FIBER_STACKS") else {
        return Ok(None);
    };
    let value = value.to_string_lossy();
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(value.into_owned()),
    }
}

/// The process's stack budget, read on first use. Panics if `TRUST_MAX_FIBER_STACKS` is not a positive
/// integer (`build` returns that error before anything here runs).
pub(crate) fn budget() -> &'static Budget {
    static BUDGET: OnceLock<Budget> = OnceLock::new();
    BUDGET.get_or_init(|| {
        // SAFETY: sysconf only reads a system parameter.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let max_map_count = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(DEFAULT_MAX_MAP_COUNT);
        let max_stacks = max_stacks_var().unwrap_or_else(|value| panic!("{}", bad_max_stacks(&value)));
        Budget {
            max_stacks: AtomicUsize::new(max_stacks.unwrap_or(usize::MAX)),
            max_mappings: max_map_count - reserve(max_map_count),
            max_map_count,
            guard: probe_guard(page_size),
            page_size,
        }
    })
}

/// What is wrong with `TRUST_MAX_FIBER_STACKS={value}`, and how to fix it.
pub(crate) fn bad_max_stacks(value: &str) -> String {
    format!(
        "TRUST_MAX_FIBER_STACKS must be a positive integer (the most fiber stacks alive at once), got {value:?}; \
         leave it unset for a limit that follows vm.max_map_count"
    )
}

/// Mappings left to the rest of the process: an eighth of the cap, at least 4,096 (at most half the cap).
fn reserve(max_map_count: usize) -> usize {
    (max_map_count / 8).max(4096).min(max_map_count / 2)
}

/// Marker guards if this kernel takes them, else protected pages.
fn probe_guard(page_size: usize) -> GuardKind {
    let Some(probe) = map(2 * page_size) else {
        return GuardKind::Protected;
    };
    // SAFETY: a fresh mapping of two pages, advised and unmapped here only.
    unsafe {
        let works = GuardKind::Marker.install(probe, page_size).is_ok();
        libc::munmap(probe, 2 * page_size);
        if works { GuardKind::Marker } else { GuardKind::Protected }
    }
}

/// A fresh read-write anonymous mapping of `len` bytes.
fn map(len: usize) -> Option<*mut libc::c_void> {
    // MAP_STACK also keeps transparent huge pages out of stacks (Linux 6.7+).
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK;
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    // SAFETY: a new anonymous mapping at an address the kernel picks overlaps nothing.
    let p = unsafe { libc::mmap(ptr::null_mut(), len, prot, flags, -1, 0) };
    (p != libc::MAP_FAILED).then_some(p)
}

impl Budget {
    /// The most fiber stacks alive at once: `TRUST_MAX_FIBER_STACKS`, else what the mappings allow stacks
    /// of the default size.
    pub(crate) fn max_stacks(&self) -> usize {
        let len = crate::delegation::api::runtime::DEFAULT_STACK_SIZE + self.page_size;
        let chunk = self.guard.chunk_stacks(len);
        let from_mappings = self.max_mappings / self.guard.mappings(chunk) * chunk;
        self.max_stacks.load(Ordering::Relaxed).min(from_mappings)
    }

    /// Counts a chunk of up to `wanted` stacks (at least one), as many as `TRUST_MAX_FIBER_STACKS` allows;
    /// returns how many, or why none.
    fn reserve(&self, wanted: usize) -> Result<usize, Cause> {
        let max = self.max_stacks.load(Ordering::Relaxed);
        let Ok(n) = LIVE.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < max).then(|| n + wanted.min(max - n))
        }) else {
            return Err(Cause::Stacks);
        };
        let stacks = wanted.min(max - n);
        let mappings = self.guard.mappings(stacks);
        let counted = MAPPED.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
            (m + mappings <= self.max_mappings).then_some(m + mappings)
        });
        if counted.is_err() {
            LIVE.fetch_sub(stacks, Ordering::Relaxed);
            return Err(Cause::Mappings);
        }
        Ok(stacks)
    }

    /// Releases a chunk of `stacks`.
    fn release(&self, stacks: usize) {
        LIVE.fetch_sub(stacks, Ordering::Relaxed);
        MAPPED.fetch_sub(self.guard.mappings(stacks), Ordering::Relaxed);
    }

    /// A `vm.max_map_count` worth suggesting.
    fn suggested_max_map_count(&self) -> usize {
        (self.max_map_count * 4).max(262_144)
    }
}

/// One `mmap` that fiber stacks are carved out of, counted in the [`budget`] (its stacks) until the last of
/// them is dropped.
#[derive(Debug)]
struct Chunk {
    start: usize,
    len: usize,
    stacks: usize,
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours, and none of its stacks is left: each holds the chunk, and corosensei
        // gives a stack back only once its coroutine is done or dropped.
        let r = unsafe { libc::munmap(self.start as *mut libc::c_void, self.len) };
        debug_assert_eq!(r, 0, "munmap of fiber stacks");
        budget().release(self.stacks);
    }
}

/// A fiber stack: part of a [`Chunk`], with a guard page at its low end.
#[derive(Debug)]
pub(crate) struct FiberStack {
    /// Lowest address: the guard page.
    bottom: usize,
    /// The stack's length, guard page included.
    len: usize,
    /// Mapped while this stack (or another of the chunk) lives.
    chunk: Arc<Chunk>,
}

/// The guard page of a stack, and the size of the stack above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GuardPage {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) stack_bytes: usize,
}

impl GuardPage {
    pub(crate) const NONE: GuardPage = GuardPage {
        start: 0,
        end: 0,
        stack_bytes: 0,
    };

    pub(crate) fn contains(&self, addr: usize) -> bool {
        (self.start..self.end).contains(&addr)
    }

    /// The stack above this guard page, the page included, as `(lowest, past the highest)` address.
    pub(crate) fn stack_bounds(&self) -> (usize, usize) {
        (self.start, self.end + self.stack_bytes)
    }
}

impl FiberStack {
    /// Maps one stack of `bytes` usable bytes (rounded up to whole pages).
    #[cfg(test)]
    fn new(bytes: usize) -> Result<Self, StackError> {
        Ok(Self::carve(bytes, 1)?.pop().expect("a chunk holds a stack"))
    }

    /// Maps a chunk of up to `wanted` stacks of `bytes` usable bytes each (rounded up to whole pages), as
    /// many as the budget and the guard kind allow, at least one.
    fn carve(bytes: usize, wanted: usize) -> Result<Vec<Self>, StackError> {
        let budget = budget();
        let page = budget.page_size;
        // A size so large that rounding it up to pages, plus the guard page, overflows: no mapping can hold it.
        let Some((bytes, len)) = bytes
            .max(MIN_STACK_SIZE)
            .checked_next_multiple_of(page)
            .and_then(|bytes| Some((bytes, bytes.checked_add(page)?)))
        else {
            let cause = Cause::Os("mmap", io::Error::from_raw_os_error(libc::ENOMEM));
            return Err(StackError { cause, bytes });
        };
        let error = |cause| Err(StackError { cause, bytes });
        let stacks = match budget.reserve(wanted.clamp(1, budget.guard.chunk_stacks(len))) {
            Ok(stacks) => stacks,
            Err(cause) => return error(cause),
        };
        let Some(start) = map(len * stacks) else {
            let e = io::Error::last_os_error();
            budget.release(stacks);
            return error(Cause::Os("mmap", e));
        };
        // From here, dropping `chunk` (with the stacks made so far) unmaps it and releases its budget.
        let chunk = Arc::new(Chunk {
            start: start as usize,
            len: len * stacks,
            stacks,
        });
        (0..stacks)
            .map(|i| {
                let bottom = start as usize + i * len;
                // SAFETY: the lowest page of a stack of the mapping just made, which nothing else knows of.
                if let Err(e) = unsafe { budget.guard.install(bottom as *mut libc::c_void, page) } {
                    let cause = Cause::Os(budget.guard.call(), e);
                    return Err(StackError { cause, bytes });
                }
                Ok(FiberStack {
                    bottom,
                    len,
                    chunk: chunk.clone(),
                })
            })
            .collect()
    }

    pub(crate) fn guard_page(&self) -> GuardPage {
        let page_size = budget().page_size;
        GuardPage {
            start: self.bottom,
            end: self.bottom + page_size,
            stack_bytes: self.len - page_size,
        }
    }

    /// Gives the stack's pages back to the OS; they read as zeros when touched again. Its guard page stays.
    fn discard_pages(&self) {
        let page_size = budget().page_size;
        // SAFETY: the stack's own pages above its guard, which no coroutine runs on any more (the pool holds
        // it); `MADV_DONTNEED` on private anonymous memory only drops their contents.
        let r = unsafe {
            libc::madvise(
                (self.bottom + page_size) as *mut libc::c_void,
                self.len - page_size,
                libc::MADV_DONTNEED,
            )
        };
        debug_assert_eq!(r, 0, "madvise(MADV_DONTNEED) of a fiber stack");
    }
}

// SAFETY: the stack has a guard page below at least `MIN_STACK_SIZE` usable bytes; `base` and `limit` are
// page-aligned, hence aligned to `STACK_ALIGNMENT`, and fixed for the stack's life.
unsafe impl Stack for FiberStack {
    fn base(&self) -> StackPointer {
        StackPointer::new(self.bottom + self.len).expect("a mapping does not end at address 0")
    }

    fn limit(&self) -> StackPointer {
        NonZeroUsize::new(self.bottom).expect("a mapping does not start at address 0")
    }
}

/// Why no stack could be had.
#[derive(Debug)]
pub(crate) struct StackError {
    cause: Cause,
    /// The stack size asked for.
    bytes: usize,
}

#[derive(Debug)]
enum Cause {
    /// `TRUST_MAX_FIBER_STACKS` stacks are mapped.
    Stacks,
    /// The mappings left to fiber stacks are taken.
    Mappings,
    /// A system call failed.
    Os(&'static str, io::Error),
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let budget = budget();
        let (max_map_count, suggested) = (budget.max_map_count, budget.suggested_max_map_count());
        f.write_str("trust: cannot start a fiber: ")?;
        match &self.cause {
            Cause::Mappings => write!(
                f,
                "all {} fiber stacks this process allows are in use. {}, and Linux allows a process \
                 vm.max_map_count = {max_map_count} of them ({} are kept for the rest of the process). Let \
                 fibers finish first, or raise the limit: `sudo sysctl -w vm.max_map_count={suggested}`",
                LIVE.load(Ordering::Relaxed),
                match budget.guard {
                    GuardKind::Marker => "Up to 64 stacks take a memory mapping",
                    GuardKind::Protected => "Each stack takes 2 memory mappings (its guard page is one)",
                },
                reserve(max_map_count),
            ),
            Cause::Stacks => write!(
                f,
                "all {} fiber stacks this process allows are in use (TRUST_MAX_FIBER_STACKS={0}; without it \
                 the limit follows vm.max_map_count = {max_map_count}). Let fibers finish first, or raise \
                 TRUST_MAX_FIBER_STACKS",
                budget.max_stacks.load(Ordering::Relaxed),
            ),
            Cause::Os(call, e) => write!(
                f,
                "{call} for a {} KiB fiber stack failed ({e}) with {} fiber stacks mapped. If the process has \
                 reached vm.max_map_count = {max_map_count} memory mappings, raise it: `sudo sysctl -w \
                 vm.max_map_count={suggested}`; otherwise memory is short, the process's address space is limited \
                 (`ulimit -v`, RLIMIT_AS), or the stack size too large (set it with \
                 `RuntimeBuilder::fiber_stack_size`)",
                self.bytes / 1024,
                LIVE.load(Ordering::Relaxed),
            ),
        }
    }
}

/// Finished fibers' stacks, for reuse by any worker; all of one size (the runtime's `fiber_stack_size`).
#[derive(Debug)]
pub(crate) struct StackPool {
    bytes: usize,
    free: Mutex<Free>,
    /// Held while a chunk is carved (see `carve`).
    carving: Mutex<()>,
}

/// A pool's stacks.
#[derive(Debug, Default)]
struct Free {
    /// As their fibers left them (at most `POOLED_STACKS`).
    warm: Vec<FiberStack>,
    /// Their pages given back, or never touched (the rest of a new chunk), by chunk: a chunk whose stacks
    /// are all here is unmapped, which gives back its page tables and its guard markers too (page tables
    /// that hold a marker stay, so `MADV_DONTNEED` alone kept about 0.5 KiB a fiber of the largest burst).
    cold: Vec<Vec<FiberStack>>,
    /// Where each chunk's cold stacks are in `cold`, by the chunk's address.
    chunks: HashMap<usize, usize>,
}

impl Free {
    fn take(&mut self) -> Option<FiberStack> {
        if let Some(stack) = self.warm.pop() {
            return Some(stack);
        }
        let group = self.cold.last_mut()?;
        let stack = group.pop().expect("no group in `cold` is empty");
        if group.is_empty() {
            self.cold.pop();
            self.chunks.remove(&stack.chunk.start);
        }
        Some(stack)
    }

    /// True when `stack` is the last of its chunk's stacks not cold yet.
    fn completes_chunk(&self, stack: &FiberStack) -> bool {
        let cold = self.chunks.get(&stack.chunk.start).map_or(0, |&i| self.cold[i].len());
        cold + 1 >= stack.chunk.stacks
    }

    /// Keeps a cold stack; gives back the stacks of its chunk when they are all here, for the caller to drop
    /// (unmapping the chunk) after unlocking.
    fn put_cold(&mut self, stack: FiberStack) -> Option<Vec<FiberStack>> {
        let (key, all) = (stack.chunk.start, stack.chunk.stacks);
        let i = *self.chunks.entry(key).or_insert_with(|| {
            self.cold.push(Vec::new());
            self.cold.len() - 1
        });
        self.cold[i].push(stack);
        if self.cold[i].len() < all {
            return None;
        }
        self.chunks.remove(&key);
        let group = self.cold.swap_remove(i);
        if let Some(moved) = self.cold.get(i) {
            self.chunks.insert(moved[0].chunk.start, i);
        }
        Some(group)
    }
}

impl StackPool {
    pub(crate) fn new(bytes: usize) -> Self {
        StackPool {
            bytes,
            free: Mutex::new(Free::default()),
            carving: Mutex::new(()),
        }
    }

    fn free(&self) -> std::sync::MutexGuard<'_, Free> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pooled stack, warm first.
    fn pooled(&self) -> Option<FiberStack> {
        self.free().take()
    }

    /// A stack of a new chunk, whose other stacks are pooled. One caller at a time, looking at the pool again
    /// first: a chunk counts in the budget from before it is mapped until its spare stacks are pooled, and a
    /// `spawn` that found the pool empty meanwhile would else fail at a budget the chunk is about to serve.
    fn carve(&self) -> Result<FiberStack, StackError> {
        let _carving = self.carving.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stack) = self.pooled() {
            return Ok(stack);
        }
        let mut stacks = FiberStack::carve(self.bytes, CHUNK_STACKS)?;
        let stack = stacks.pop().expect("a chunk holds a stack");
        let mut free = self.free();
        for spare in stacks {
            let none = free.put_cold(spare);
            debug_assert!(none.is_none(), "one of the chunk's stacks is in use");
        }
        Ok(stack)
    }

    /// A pooled stack, else a new one. At the budget, waits up to `patience` for the stacks of fibers that are
    /// finishing (`returning`). Only up to: a finishing fiber still runs user code (its unjoined result's
    /// `Drop`, which may suspend it, or spawn), and it may be on the caller's own worker, which cannot give its
    /// stack back while the caller waits.
    pub(crate) fn take(&self, patience: Duration) -> Result<FiberStack, StackError> {
        let mut deadline = None;
        loop {
            // Read before the pool: a fiber that is not counted any more gave its stack to the pool first.
            let returning = RETURNING.load(Ordering::SeqCst);
            match self.pooled().map_or_else(|| self.carve(), Ok) {
                Err(e) if returning > 0 && matches!(e.cause, Cause::Stacks | Cause::Mappings) => {
                    let deadline = *deadline.get_or_insert_with(|| Instant::now() + patience);
                    if Instant::now() >= deadline {
                        return Err(e);
                    }
                    std::thread::yield_now();
                }
                taken => return taken,
            }
        }
    }

    /// `give`, for the stack of a fiber that called `returning`.
    pub(crate) fn give_back(&self, stack: FiberStack) {
        self.give(stack);
        RETURNING.fetch_sub(1, Ordering::SeqCst);
    }

    /// Keeps `stack` for reuse: as it is while the pool has fewer than `POOLED_STACKS` so, else with its
    /// pages given back (after unlocking: a system call).
    pub(crate) fn give(&self, stack: FiberStack) {
        let mut free = self.free();
        if free.warm.len() < POOLED_STACKS {
            free.warm.push(stack);
            return;
        }
        if !free.completes_chunk(&stack) {
            drop(free);
            stack.discard_pages();
            free = self.free();
        }
        // The last of a chunk's stacks unmaps it (its pages need no giving back first): after unlocking.
        let unmapped = free.put_cold(stack);
        drop(free);
        drop(unmapped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_is_writable_down_to_its_guard_page() {
        let stack = FiberStack::new(10_000).unwrap();
        let guard = stack.guard_page();
        assert_eq!(guard.stack_bytes, 12_288, "rounded up to whole pages");
        assert_eq!(stack.limit().get(), guard.start);
        assert_eq!(stack.base().get(), guard.end + guard.stack_bytes);
        for addr in (guard.end..stack.base().get()).step_by(4096) {
            // SAFETY: inside the stack's read-write part, which nothing else uses.
            unsafe { (addr as *mut u8).write_volatile(1) };
        }
    }

    #[test]
    fn the_default_limit_message_names_the_setting_and_the_sysctl() {
        let message = StackError {
            cause: Cause::Mappings,
            bytes: 256 * 1024,
        }
        .to_string();
        for part in ["vm.max_map_count = ", "sudo sysctl -w vm.max_map_count=", "fiber stacks"] {
            assert!(message.contains(part), "{message:?} lacks {part:?}");
        }
    }
}
