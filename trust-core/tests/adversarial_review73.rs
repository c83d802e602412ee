//! Review 73: `#[entrust]` stubs as a hostile user writes and calls them, past what `entrust*.rs`,
//! `adversarial_entrust*.rs`, reviews 20/37/39 and session 10 cover.
//!
//! - Method shapes that must just work, each through the blocking, `_then` and `_async` stub, from a plain
//!   thread and from a fiber on each worker, against direct calls on a local copy: methods named like
//!   `Trust<T>`'s *private* methods (`is_local`, `header`, `apply_sized`, `property_ptr`: method lookup skips
//!   what it cannot reach) and like runtime functions (`new`, `launch`), `extern "C"` and `const fn` methods,
//!   `Self` by value, `&Self` and `Trust<Self>` arguments, `Self` results, an associated fn left alone; a
//!   zero-sized struct with zero-sized arguments and results and `()` spelled three ways; two structs named
//!   alike in two modules with `pub(crate)` methods in impls in a third; page-aligned (4096) arguments by
//!   value, `&T` and `&[T]`, result and struct.
//! - Stubs where the runtime is hostile: from a thread-local destructor that runs after the runtime's own
//!   client is gone; in a child forked by a plain thread and by a fiber on the property's worker (the local
//!   shortcut); after `Runtime::shutdown`, each with an argument whose drops are counted (once each).
//!
//! Findings, all at compile time, all fixed in trust-macros. Each is a UI case under `ui-tests/tests/ui/entrust/`;
//! the four `pass/` cases failed before the fix:
//! - `pass/async-stub-does-not-borrow-its-arguments.rs`: an `_async` stub's future borrows every `&str` /
//!   `&[T]` / `&T` argument, although the stub copied them into the request before the future exists: edition
//!   2024's return-position `impl Trait` captures every lifetime in scope. A helper returning
//!   `acct.set_memo_async(&format!(..))` is E0716, a `Vec` of such futures E0515, a future of local
//!   `&amounts` E0597 (rustc's own note suggests `use<..>`). The docs promise a borrow of the handle only.
//!   Fixed: `+ use<'_, impl params, early-bound method lifetimes>` (`expand::async_captures`).
//! - `pass/receiver-naming-the-struct.rs`: `self: &Counter` / `self: &'a mut Counter` (that is `&self` /
//!   `&mut self`) were rejected: "has a `self: &Counter` receiver, which cannot be delegated ... take one of
//!   those". Fixed: `types::reference_to_self` also accepts the impl's self type.
//! - `pass/deprecated-struct.rs`: a `#[deprecated]` `#[entrust]` struct warns "use of deprecated struct" at its
//!   own name from the generated stubs type and `Entrusted` impl, where no user `allow` reaches (an error
//!   under `deny(deprecated)` or `deny(warnings)`). Fixed: those items allow `deprecated` when the struct is.
//! - `pass/macro-rules-type-fragment.rs`: in a `macro_rules!`, `#[entrust] impl $t` with `$t:ty` or `$p:path`
//!   (the usual fragments for a type) was refused ("goes on the inherent impl block ... named by its path"),
//!   and an argument `memo: $a` with `$a:ty` = `&str` was called a borrow: rustc hands fragments over in
//!   invisible groups. Fixed: `types::ungroup`.
//! - `reference-to-unsized.rs` (message, not patched): a `&Path` / `&OsStr` argument gets our E0277 with a note
//!   to take `Path` by value (impossible), then three `[u8]: Sized` errors, one at `#[entrust]`.
//! - Known limits, now catalogued: `impl-through-plain-import.rs` (a plain `use model::Account;` is enough to
//!   miss `AccountStubs`; the docs named only renamed imports and aliases; rustc's help names the import),
//!   `stubs-type-name-taken.rs`, `entrust-twice-on-a-struct.rs` (rustc's E0428/E0119 only).
//!
//! Held: every test in this file. Those that shut the runtime down, fork, or run destructors after the
//! runtime's client run in a child process of their own with a deadline (`in_child!`); the rest under
//! `within`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

#[macro_use]
mod common;
use common::*;
use trust_core::{Trust, entrust, wait_pending};

const SHUT_DOWN: &str = "the trust runtime has been shut down: no property can be entrusted or applied to after \
     `Runtime::shutdown`";

// ---------------------------------------------------------------------------------------------------------
// 1. Shapes that must just work.

#[entrust]
#[derive(Debug, Clone, PartialEq)]
pub struct Names {
    n: u64,
}

#[entrust]
impl Names {
    /// `Trust<T>` has a `pub(crate) fn is_local(&self) -> bool`: unreachable from here, so lookup goes on.
    pub fn is_local(&self) -> u64 {
        self.n + 1
    }
    /// A private `fn header(&self)` of `Trust<T>`.
    pub fn header(&self) -> u64 {
        self.n + 2
    }
    /// A private `fn apply_sized` of `Trust<T>` (generic, with `F: FnOnce(&mut T) -> R`).
    pub fn apply_sized(&mut self) -> u64 {
        self.n += 3;
        self.n
    }
    pub fn property_ptr(&self) -> u64 {
        self.n + 4
    }
    pub fn new(&self) -> Self {
        Names { n: self.n + 5 }
    }
    pub fn launch(&mut self) -> u64 {
        self.n += 6;
        self.n
    }
    pub extern "C" fn ext(&self) -> u64 {
        self.n + 7
    }
    pub const fn konst(&self) -> u64 {
        self.n + 8
    }
    pub fn absorb(&mut self, other: Self) -> u64 {
        self.n += other.n;
        self.n
    }
    pub fn peek_other(&self, other: &Self) -> u64 {
        self.n * 100 + other.n
    }
    /// A handle to another value, moved to the trustee (its `_then` continuation, on a worker, is not here).
    pub fn n_of(&self, other: Trust<Self>) -> u64 {
        // On trustee 1, to a value of trustee 1: the local shortcut.
        other.apply(|o| o.n) * 1000 + self.n
    }
    /// An associated function: stays as it is, no stub.
    pub fn zero() -> Self {
        Names { n: 0 }
    }
}

/// Every stub of the odd names returns what the direct call on a local copy returns: from a plain thread to
/// trustee 1, then from a fiber on worker 0 and from one on worker 1 (the local shortcut). Each kind in
/// turn (blocking, `_then` + `wait_pending`, `_async` via `block_on`) on a fresh value `n = 10`.
#[test]
fn methods_named_like_the_handles_private_methods_and_odd_kinds_through_every_stub() {
    within(30, || {
        quiet();
        fn run(kind: u8) -> Vec<u64> {
            let t = rt().trustee(1).entrust(Names { n: 10 });
            let other = rt().trustee(1).entrust(Names { n: 9 });
            let out = Arc::new(Mutex::new(Vec::new()));
            macro_rules! call {
                ($m:ident, $then:ident, $async:ident $(, $arg:expr)*) => {
                    match kind {
                        0 => out.lock().unwrap().push(t.$m($($arg),*)),
                        1 => {
                            let o = out.clone();
                            t.$then($($arg,)* move |r| o.lock().unwrap().push(r));
                            wait_pending();
                        }
                        _ => out.lock().unwrap().push(block_on(t.$async($($arg),*))),
                    }
                };
            }
            call!(is_local, is_local_then, is_local_async);
            call!(header, header_then, header_async);
            call!(apply_sized, apply_sized_then, apply_sized_async);
            call!(property_ptr, property_ptr_then, property_ptr_async);
            call!(launch, launch_then, launch_async);
            call!(ext, ext_then, ext_async);
            call!(konst, konst_then, konst_async);
            call!(absorb, absorb_then, absorb_async, Names { n: 100 });
            call!(
                peek_other,
                peek_other_then,
                peek_other_async,
                &Names { n: 7 }
            );
            call!(n_of, n_of_then, n_of_async, other.clone());
            let made = match kind {
                0 => t.new(),
                1 => {
                    let o = Arc::new(Mutex::new(None));
                    let o2 = o.clone();
                    t.new_then(move |r| *o2.lock().unwrap() = Some(r));
                    wait_pending();
                    o.lock().unwrap().take().unwrap()
                }
                _ => block_on(t.new_async()),
            };
            let mut v = out.lock().unwrap().clone();
            v.push(made.n);
            v.push(t.apply(|s| s.n));
            v
        }
        // Direct calls on a local copy: n = 10.
        let mut l = Names { n: 10 };
        let o = Names { n: 9 };
        let want = vec![
            l.is_local(),
            l.header(),
            l.apply_sized(),
            l.property_ptr(),
            l.launch(),
            l.ext(),
            l.konst(),
            l.absorb(Names { n: 100 }),
            l.peek_other(&Names { n: 7 }),
            o.n * 1000 + l.n,
            l.new().n,
            l.n,
        ];
        assert_eq!(
            want,
            vec![11, 12, 13, 17, 19, 26, 27, 119, 11907, 9119, 124, 119]
        );
        assert_eq!(Names::zero(), Names { n: 0 });
        for kind in 0..3 {
            assert_eq!(run(kind), want, "from a plain thread, kind {kind}");
        }
        calibrate();
        for w in 0..2 {
            for kind in 0..3 {
                let got = spawn_on(w, move || run(kind)).join().unwrap();
                assert_eq!(got, want, "from a fiber on worker {w}, kind {kind}");
            }
        }
    });
}

/// A zero-sized struct, zero-sized arguments and results, `()` spelled three ways.
#[entrust]
#[derive(Debug, Default)]
pub struct Nothing;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unit;

pub type Alias = ();

#[entrust]
impl Nothing {
    pub fn echo(&self, u: Unit, v: ((), Unit), w: &Unit) -> (Unit, (), [Unit; 3]) {
        let _ = (v, w);
        (u, (), [Unit; 3])
    }
    #[allow(clippy::unused_unit)] // `-> ()` written out on purpose
    pub fn unit(&mut self, _: ()) -> () {}
    pub fn alias(&mut self) -> Alias {}
}

/// README of `#[entrust]`: "`then()` for `-> ()` or no return type ... a `()` behind an alias ... gets
/// `then(())`". Each stub of a zero-sized struct with zero-sized arguments and results gives them back.
#[test]
fn a_zero_sized_struct_with_zero_sized_arguments_and_results() {
    within(30, || {
        let t = rt().trustee(1).entrust(Nothing);
        let want = (Unit, (), [Unit; 3]);
        assert_eq!(t.echo(Unit, ((), Unit), &Unit), want);
        assert_eq!(block_on(t.echo_async(Unit, ((), Unit), &Unit)), want);
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        t.echo_then(Unit, ((), Unit), &Unit, move |x| {
            assert_eq!(x, (Unit, (), [Unit; 3]));
            r.fetch_add(1, Ordering::SeqCst);
        });
        let r = ran.clone();
        t.unit_then((), move || {
            r.fetch_add(10, Ordering::SeqCst);
        });
        let r = ran.clone();
        t.alias_then(move |()| {
            r.fetch_add(100, Ordering::SeqCst);
        });
        wait_pending();
        assert_eq!(load(&ran), 111);
        t.unit(());
        t.alias();
        block_on(t.unit_async(()));
        block_on(t.alias_async());
        assert!(t.into_inner().is_some());
    });
}

pub mod left {
    #[trust_core::entrust]
    #[derive(Debug)]
    pub struct Tally {
        pub n: u64,
    }
}

pub mod right {
    #[trust_core::entrust]
    #[derive(Debug)]
    pub struct Tally {
        pub n: i32,
    }
}

mod impls {
    use trust_core::entrust;

    #[entrust]
    impl crate::left::Tally {
        pub(crate) fn add(&mut self, k: u64) -> u64 {
            self.n += k;
            self.n
        }
    }

    #[entrust]
    impl super::right::Tally {
        pub(crate) fn add(&mut self, k: i32) -> i32 {
            self.n -= k;
            self.n
        }
    }
}

/// Two structs named `Tally` in two modules, their impls in a third module by two paths (`crate::left::` and
/// `super::right::`), methods `pub(crate)` and of one name: each handle finds its own stubs.
#[test]
fn two_structs_of_one_name_in_two_modules_with_impls_in_a_third() {
    within(30, || {
        let l = rt().trustee(0).entrust(left::Tally { n: 1 });
        let r = rt().trustee(1).entrust(right::Tally { n: 1 });
        assert_eq!(l.add(5), 6);
        assert_eq!(r.add(5), -4);
        assert_eq!(block_on(l.add_async(10)), 16);
        assert_eq!(block_on(r.add_async(10)), -14);
    });
}

// ---------------------------------------------------------------------------------------------------------
// 2. Stubs where the runtime is hostile.

/// Counts its drops: an argument that must be dropped exactly once, wherever the call ends.
#[derive(Debug)]
pub struct Token(Arc<AtomicUsize>);

impl Drop for Token {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[entrust]
#[derive(Debug, Default)]
pub struct Book {
    total: u64,
    memo: String,
}

#[entrust]
impl Book {
    pub fn add(&mut self, k: u64) -> u64 {
        self.total += k;
        self.total
    }
    pub fn note(&mut self, memo: &str, tokens: Vec<Token>) -> usize {
        self.memo.push_str(memo);
        tokens.len()
    }
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// Issues every kind of stub on drop: registered before the thread's runtime client, so it runs after that
/// client is destroyed (std destroys thread-locals in reverse order of registration).
struct LateStubs(Option<(Trust<Book>, mpsc::Sender<Vec<u64>>)>);

impl Drop for LateStubs {
    fn drop(&mut self) {
        let Some((b, report)) = self.0.take() else {
            return;
        };
        let mut seen = vec![b.add(1)];
        let got = Arc::new(AtomicUsize::new(0));
        let g = got.clone();
        b.add_then(10, move |t| {
            g.store(t as usize, Ordering::SeqCst);
        });
        wait_pending();
        seen.push(load(&got) as u64);
        seen.push(block_on(b.add_async(100)));
        let drops = Arc::new(AtomicUsize::new(0));
        seen.push(b.note("late", vec![Token(drops.clone()), Token(drops.clone())]) as u64);
        seen.push(load(&drops) as u64);
        let _ = report.send(seen);
    }
}

thread_local! {
    static LATE: std::cell::RefCell<LateStubs> = const { std::cell::RefCell::new(LateStubs(None)) };
}

/// README: "Thread-local destructors may delegate too, even those that run after the runtime's own"; the
/// stubs are `apply`/`apply_then`/`apply_async` ("the runtime's rules apply to stubs as to `apply`"). A
/// destructor that runs after the client: the blocking stub gives 1, the `_then` stub's continuation runs in
/// its `wait_pending` (11), the `_async` stub awaited gives 111, a `&str` + `Vec<Token>` call gives 2 and drops
/// both tokens (2). The value counts 111 and holds "late".
#[test]
fn every_stub_from_a_thread_local_destructor_after_the_runtime_client() {
    in_child!(
        "every_stub_from_a_thread_local_destructor_after_the_runtime_client",
        20
    );
    let b = rt().trustee(1).entrust(Book::default());
    let (tx, rx) = mpsc::channel();
    let (b2, b3) = (b.clone(), b.clone());
    thread::spawn(move || {
        LATE.with(|l| *l.borrow_mut() = LateStubs(Some((b2, tx))));
        assert_eq!(b3.total(), 0); // the client thread-local, registered last: destroyed first
    })
    .join()
    .unwrap();
    let seen = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the late destructor reported");
    assert_eq!(seen, vec![1, 11, 111, 2, 2]);
    assert_eq!(b.total(), 111);
    assert_eq!(b.apply(|b| b.memo.clone()), "late");
    child_ok();
}

/// In a forked child: each stub kind on `b` must panic naming fork (bit set) and never run (the child's copy
/// of the value is left alone). Returns a bit mask: 1 blocking, 2 `_then`, 4 `_async` panicked naming fork;
/// 64 if any ran; plus 8 if the argument tokens were dropped exactly once each.
fn stubs_in_a_forked_child(b: &Trust<Book>) -> i32 {
    std::panic::set_hook(Box::new(|_| {}));
    let drops = Arc::new(AtomicUsize::new(0));
    let mut code = 0;
    let blocking = catch_unwind(AssertUnwindSafe(|| {
        b.note("child", vec![Token(drops.clone())])
    }));
    match blocking {
        Ok(_) => code |= 64,
        Err(p) => {
            if panic_message(p).contains("forked after it started") {
                code |= 1;
            }
        }
    }
    let then = catch_unwind(AssertUnwindSafe(|| {
        b.note_then("child", vec![Token(drops.clone())], |_| ());
        wait_pending();
    }));
    if names_fork(then) {
        code |= 2;
    }
    let fut = catch_unwind(AssertUnwindSafe(|| {
        block_on(b.note_async("child", vec![Token(drops.clone())]))
    }));
    match fut {
        Ok(_) => code |= 64,
        Err(p) => {
            if panic_message(p).contains("forked after it started") {
                code |= 4;
            }
        }
    }
    if load(&drops) == 3 {
        code |= 8;
    }
    code
}

/// docs/delegation.md: in a forked child "every call into the runtime ... panics at once naming `fork`"; the
/// stubs are those calls. Forked by a plain thread (a remote trustee) and by a fiber on the value's own
/// worker (the local shortcut: the blocking and `_then` stubs run inline there otherwise): every stub panics
/// naming fork and drops its `Vec<Token>` argument once (code 15), within 10 s; the parent's value is
/// untouched (0, "").
#[test]
fn every_stub_in_a_forked_child_panics_naming_fork_and_drops_its_argument() {
    in_child!(
        "every_stub_in_a_forked_child_panics_naming_fork_and_drops_its_argument",
        60
    );
    quiet();
    let b = rt().trustee(0).entrust(Book::default());
    let b1 = b.clone();
    let (code, took) = forked(10, move || stubs_in_a_forked_child(&b1));
    assert_eq!(code, Some(15), "forked by a plain thread, after {took:?}");
    calibrate();
    let b2 = b.clone();
    let pid = spawn_on(0, move || {
        fork_running(move || stubs_in_a_forked_child(&b2))
    })
    .join()
    .unwrap();
    let (code, took) = reap(pid, 10);
    assert_eq!(
        code,
        Some(15),
        "forked by a fiber on the value's worker, after {took:?}"
    );
    assert_eq!(b.total(), 0);
    assert_eq!(b.apply(|b| b.memo.clone()), "");
    child_ok();
}

/// After `Runtime::shutdown`, each stub kind panics with the shutdown message and drops its moved argument
/// exactly once (the `_async` future made before the shutdown and the one made after); a `&str` argument's
/// copy is dropped with it. 3 tokens dropped, 3 panics.
#[test]
fn every_stub_after_shutdown_drops_its_argument_once() {
    in_child!("every_stub_after_shutdown_drops_its_argument_once", 20);
    quiet();
    let b: &'static Trust<Book> = Box::leak(Box::new(rt().trustee(1).entrust(Book::default())));
    assert_eq!(b.add(1), 1);
    let drops = Arc::new(AtomicUsize::new(0));
    let early = b.note_async("x", vec![Token(drops.clone())]);
    rt().shutdown();
    let mut msgs = Vec::new();
    let d = drops.clone();
    msgs.push(
        catch_unwind(AssertUnwindSafe(|| b.note("y", vec![Token(d)]))).map_err(panic_message),
    );
    let d = drops.clone();
    msgs.push(
        catch_unwind(AssertUnwindSafe(|| {
            b.note_then("z", vec![Token(d)], |_| unreachable!());
            wait_pending();
            0
        }))
        .map_err(panic_message),
    );
    msgs.push(catch_unwind(AssertUnwindSafe(|| block_on(early))).map_err(panic_message));
    let msgs: Vec<_> = msgs.into_iter().map(|m| m.err()).collect();
    for m in &msgs {
        assert_eq!(m.as_deref(), Some(SHUT_DOWN));
    }
    assert_eq!(load(&drops), 3, "each argument dropped once");
    child_ok();
}

/// A page-aligned value.
#[repr(align(4096))]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Page(u64);

#[entrust]
#[derive(Debug)]
#[repr(align(4096))]
pub struct Pages {
    sum: u64,
}

#[entrust]
impl Pages {
    /// Checks where each argument and `self` live: a misaligned one gives `u64::MAX`.
    pub fn put(&mut self, by_value: Page, by_ref: &Page, slice: &[Page]) -> Page {
        let aligned = |p: *const Page| (p as usize).is_multiple_of(4096);
        let here = (self as *const Pages as usize).is_multiple_of(4096);
        if !(here && aligned(&by_value) && aligned(by_ref) && slice.iter().all(|p| aligned(p))) {
            return Page(u64::MAX);
        }
        self.sum += by_value.0 + by_ref.0 + slice.iter().map(|p| p.0).sum::<u64>();
        Page(self.sum)
    }
}

/// Page-aligned (4096) arguments by value, as `&T` and as `&[T]`, a page-aligned result and a page-aligned
/// entrusted struct, through every stub from a plain thread and from a fiber on each worker: every value is
/// where its alignment says (else the method returns `u64::MAX`), and the sums are exact (1 + 2 + 3 + 4 = 10
/// per call, 9 calls).
#[test]
fn page_aligned_arguments_results_and_struct_through_every_stub() {
    within(30, || {
        let p = rt().trustee(1).entrust(Pages { sum: 0 });
        fn three(p: &Trust<Pages>) -> Vec<u64> {
            let slice = [Page(3), Page(4)];
            let mut got = vec![p.put(Page(1), &Page(2), &slice).0];
            let out = Arc::new(Mutex::new(0));
            let o = out.clone();
            p.put_then(Page(1), &Page(2), &slice, move |r| *o.lock().unwrap() = r.0);
            wait_pending();
            got.push(*out.lock().unwrap());
            got.push(block_on(p.put_async(Page(1), &Page(2), &slice)).0);
            got
        }
        assert_eq!(three(&p), vec![10, 20, 30]);
        calibrate();
        let mut all = Vec::new();
        for w in 0..2 {
            let p = p.clone();
            all.extend(spawn_on(w, move || three(&p)).join().unwrap());
        }
        assert_eq!(all, vec![40, 50, 60, 70, 80, 90]);
    });
}
