//! Review 80: the runtime invariants of ../shared/DESIGN.md section 4, each held to account by a test.
//!
//! Covered here:
//! - "No atomic read-modify-write on the delegation hot path; reference counts live on the trustee":
//!   `hot_path_sources_use_no_read_modify_write` scans the sources of the request/response path (slots,
//!   channel, parker, outbox, continuations, `call`, `Trust`, the property header) outside comments and test
//!   modules for `fetch_*`, `compare_exchange*` and `swap`, and holds the reference count to a plain `Cell` on
//!   the trustee (`cold.rs`'s doorbell `swap` is off the hot path by design: rung only on a cold channel).
//!   `the_scan_finds_a_read_modify_write_in_code` checks the scan itself. `trustee/job.rs`, `trustee/local.rs`
//!   and `worker/context.rs` are scanned too. `clone_and_drop_storms_count_exactly_on_the_trustee` checks the
//!   counts those plain cells keep (4 threads and 8 fibers, 24,000 clones).
//! - "Slots ... a request that cannot fit takes an explicit out-of-line path, never a panic":
//!   `batches_straddling_every_inline_limit_give_exact_results` sweeps closures (captures 0 to 1200 bytes, 8-,
//!   16-, 64- and 128-aligned) and results (0 to 600 bytes; 8-, 64- and 128-aligned) across the limits (128-byte
//!   primary block, 1136-byte body, 256-byte inline result, 512-byte box threshold) in batches of 48
//!   `apply_then`s from a plain thread and from fibers on both workers, mixed with blocking `apply`s.
//! - "The trustee never blocks inside a delegated closure except through `launch`":
//!   `every_blocking_call_inside_a_delegated_closure_panics_and_the_trustee_serves_on`: a blocking `apply`,
//!   `apply_with`, `try_unwrap`, `into_inner`, `Fiber::join` and `wait_pending` inside a closure each panic with
//!   the runtime's message (caught inside the closure), and both trustees keep serving with exact counts.
//! - "Soundness never depends on a fiber staying on one OS thread; re-read thread-locals after a suspension":
//!   `coroutines_counting_handles_across_yields_keep_exact_counts` (child process): 200 `may` coroutines on two
//!   `may` threads clone, yield (and move threads: tens to hundreds of moves a run), drop, apply and
//!   `apply_then`; a client kept across the yield would send from the wrong thread's SPSC channel.
//!
//! Already covered elsewhere:
//! - Slot layout (128-byte aligned primary block + 1 KiB overflow, 71 small records per batch, out-of-line
//!   records and results): `protocol/slot.rs` unit tests `layout_is_the_papers`,
//!   `small_records_batch_and_large_ones_go_out_of_line`; over-aligned and over-limit results/continuations:
//!   `adversarial_then_layout.rs`; big arguments out of line: `adversarial_review18.rs`, `adversarial_review20.rs`,
//!   `adversarial_review25.rs`, `adversarial_more.rs` (`apply_with` of 4 MiB).
//! - Reference counts without waiting: `clone.rs` (`clone_does_not_wait_behind_a_slow_request_in_flight`,
//!   `clones_sent_to_other_threads_and_dropped_there_drop_the_value_once`), `delegation.rs`.
//! - Soundness with fibers moving between OS threads (`may` has `work_steal` in its default features, on in
//!   every test build): `adversarial_review74.rs`
//!   (`coroutines_migrating_mid_wait_keep_exact_counts_and_their_continuations`), `adversarial_review15.rs`
//!   (cancellation racing the answer with work stealing), `adversarial_review69.rs` (`apply_async` futures moved
//!   between threads), `adversarial_interop.rs`. LLVM caching a thread-local's address across a call shows only in
//!   optimized builds: these tests (and the one above) catch it when run with `--release`.
//! - Blocking inside closures, further: `robustness.rs`, `try_unwrap.rs`, `adversarial_review39.rs`.
//!
//! Nothing found broken. Notes (documented, not findings): `trust_core::sleep` inside a delegated closure
//! sleeps the trustee's thread (its rustdoc says so), as `std::thread::sleep` would. `apply_async` does not
//! travel through the SPSC slots: its request is mailed (`trustee/shared.rs`, an atomic `swap` on the mailbox)
//! and answered through `trustee/oneshot.rs` (`compare_exchange`/`fetch_or` on its state word), so the async
//! path has read-modify-writes per request; the scan above is of the slot path only (`call.rs`'s push, flush,
//! wait), which DESIGN.md section 2 names the hot path.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[macro_use]
mod common;
use common::*;
use trust_core::{Trust, spawn, wait_pending};

/// Strips `//` comments, and the code from the first top-level test module on (a `#[cfg(..test..)]` line at
/// column 0 followed by `mod`); test-only methods inside `impl`s stay in (they only widen the scan).
fn code_of(source: &str) -> String {
    let lines: Vec<&str> = source.lines().collect();
    let end = (0..lines.len())
        .find(|&i| {
            lines[i].starts_with("#[cfg(")
                && lines[i].contains("test")
                && lines.get(i + 1).is_some_and(|l| l.starts_with("mod "))
        })
        .unwrap_or(lines.len());
    lines[..end]
        .iter()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The scan sees what it looks for: a read-modify-write in code is found, one in a comment or a test module is not.
#[test]
fn the_scan_finds_a_read_modify_write_in_code() {
    let code = code_of(
        "fn a() { x.fetch_add(1, R); } // y.swap(1)\n#[cfg(test)]\nmod tests { z.swap(1); }\n",
    );
    assert!(code.contains("fetch_add"));
    assert!(!code.contains("swap"));
    let code = code_of("    #[cfg(test)]\n    fn t() { z.compare_exchange(0, 1); }\n");
    assert!(code.contains("compare_exchange"));
}

#[test]
fn hot_path_sources_use_no_read_modify_write() {
    let files: [(&str, &str); 12] = [
        (
            "protocol/slot.rs",
            include_str!("../src/delegation/protocol/slot.rs"),
        ),
        (
            "protocol/channel.rs",
            include_str!("../src/delegation/protocol/channel.rs"),
        ),
        (
            "protocol/parker.rs",
            include_str!("../src/delegation/protocol/parker.rs"),
        ),
        (
            "protocol/sync.rs",
            include_str!("../src/delegation/protocol/sync.rs"),
        ),
        (
            "client/outbox.rs",
            include_str!("../src/delegation/client/outbox.rs"),
        ),
        (
            "client/then.rs",
            include_str!("../src/delegation/client/then.rs"),
        ),
        ("call.rs", include_str!("../src/delegation/call.rs")),
        (
            "api/trust.rs",
            include_str!("../src/delegation/api/trust.rs"),
        ),
        (
            "trustee/property.rs",
            include_str!("../src/delegation/trustee/property.rs"),
        ),
        (
            "trustee/job.rs",
            include_str!("../src/delegation/trustee/job.rs"),
        ),
        (
            "trustee/local.rs",
            include_str!("../src/delegation/trustee/local.rs"),
        ),
        (
            "worker/context.rs",
            include_str!("../src/delegation/worker/context.rs"),
        ),
    ];
    let rmw = [
        "fetch_add",
        "fetch_sub",
        "fetch_or",
        "fetch_and",
        "fetch_xor",
        "fetch_update",
        "fetch_max",
        "fetch_min",
        "fetch_nand",
        "compare_exchange",
        ".swap(",
    ];
    let mut found = Vec::new();
    for (name, source) in files {
        let code = code_of(source);
        for (n, line) in code.lines().enumerate() {
            for op in rmw {
                if line.contains(op) {
                    found.push(format!("{name}:{}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert_eq!(
        found,
        Vec::<String>::new(),
        "read-modify-write on the hot path"
    );
    // The reference count is a plain cell in the property's header, written on the trustee only.
    let property = code_of(include_str!("../src/delegation/trustee/property.rs"));
    assert!(
        property.contains("refs: Cell<isize>"),
        "the reference count is no longer a plain Cell"
    );
    assert!(
        !property.contains("Atomic"),
        "an atomic in the property header"
    );
}

/// 4 threads and 8 fibers (on both workers) each clone a handle 2,000 times, dropping the clones in
/// batches: the value is dropped exactly once, only after the last handle, and every increment lands.
#[test]
fn clone_and_drop_storms_count_exactly_on_the_trustee() {
    within(60, || {
        let drops = Arc::new(AtomicUsize::new(0));
        let t = rt().trustee(1).entrust((0u64, CountsDrops(drops.clone())));
        let mut threads = Vec::new();
        for _ in 0..4 {
            let t = t.clone();
            threads.push(std::thread::spawn(move || storm(&t)));
        }
        let mut fibers = Vec::new();
        for i in 0..8 {
            let t = t.clone();
            let on = rt().trustee(i % 2).entrust(());
            fibers.push(on.apply(move |_| spawn(move || storm(&t))));
        }
        for h in threads {
            h.join().unwrap();
        }
        for f in fibers {
            f.join().unwrap();
        }
        assert_eq!(t.apply(|v| v.0), 12 * 2_000);
        assert_eq!(load(&drops), 0, "dropped with a handle alive");
        drop(t);
        eventually("the value dropped once", || load(&drops) == 1);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(load(&drops), 1);
    });
}

fn storm(t: &Trust<(u64, CountsDrops)>) {
    let mut kept = Vec::new();
    for i in 0..2_000u32 {
        kept.push(t.clone());
        if i % 97 == 0 {
            kept.last().unwrap().apply(|v| v.0 += 1);
            kept.clear();
        } else {
            kept.last().unwrap().apply_then(|v| v.0 += 1, |()| ());
        }
    }
    drop(kept);
    wait_pending();
}

#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct A16([u64; 2]);
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct A64([u64; 8]);
#[derive(Clone, Copy)]
#[repr(C, align(128))]
struct A128([u64; 16]);

/// One round of requests on `t` straddling the slot's limits; returns the sum the continuations saw and the
/// sum expected. `N` bytes of capture per closure.
fn round<const N: usize>(t: &Trust<u64>, seen: &Arc<AtomicUsize>, k: u64) -> u64 {
    let cap = [k as u8; N];
    let s = seen.clone();
    // Closure of N bytes; result of N/2 bytes (0 to 600).
    t.apply_then(
        move |v| {
            *v += 1;
            let sum: u64 = cap.iter().map(|&b| b as u64).sum();
            let mut r = [0u8; N];
            if N > 0 {
                r[N - 1] = 1;
            }
            (sum, r)
        },
        move |(sum, r)| {
            let last = r.last().copied().unwrap_or(1) as u64;
            s.fetch_add((sum + last) as usize, Ordering::SeqCst);
        },
    );
    N as u64 * k + 1
}

/// Requests with over-aligned captures and results; returns the expected sum of the continuations.
fn aligned(t: &Trust<u64>, seen: &Arc<AtomicUsize>, k: u64) -> u64 {
    let (a, b, c) = (A16([k; 2]), A64([k; 8]), A128([k; 16]));
    let s = seen.clone();
    t.apply_then(
        move |v| {
            *v += 1;
            let r = A64([a.0[0] + b.0[7]; 8]);
            (r, A128([c.0[15]; 16]))
        },
        move |(r, q)| {
            let ok = (&raw const r as usize).is_multiple_of(64)
                && (&raw const q as usize).is_multiple_of(128);
            s.fetch_add((r.0[7] + q.0[0] + u64::from(ok)) as usize, Ordering::SeqCst);
        },
    );
    3 * k + 1
}

/// 48 requests per sweep (a publish's worth), a blocking `apply` after each sweep; exact sums. Returns how
/// many requests it made.
fn sweep(t: &Trust<u64>, sweeps: u64) -> u64 {
    let seen = Arc::new(AtomicUsize::new(0));
    let mut want = 0u64;
    let mut applied = 0u64;
    for k in 0..sweeps {
        for j in 0..4 {
            let k = k * 4 + j;
            want += round::<0>(t, &seen, k);
            want += round::<7>(t, &seen, k);
            want += round::<104>(t, &seen, k);
            want += round::<112>(t, &seen, k);
            want += round::<120>(t, &seen, k);
            want += round::<256>(t, &seen, k);
            want += round::<257>(t, &seen, k);
            want += round::<504>(t, &seen, k);
            want += round::<512>(t, &seen, k);
            want += round::<513>(t, &seen, k);
            want += round::<1200>(t, &seen, k);
            want += aligned(t, &seen, k);
            applied += 12;
        }
        let big = [k as u8; 1136];
        let r = t.apply(move |v| {
            *v += 1;
            [big[1135]; 600]
        });
        applied += 1;
        assert_eq!(r, [k as u8; 600]);
    }
    wait_pending();
    assert_eq!(seen.load(Ordering::SeqCst) as u64, want);
    applied
}

#[test]
fn batches_straddling_every_inline_limit_give_exact_results() {
    within(60, || {
        let t = rt().trustee(1).entrust(0u64);
        assert_eq!(sweep(&t, 10), 10 * 49);
        assert_eq!(t.apply(|v| *v), 10 * 49);
        // Fibers on both workers: the local shortcut (worker 1) and a channel (worker 0).
        let mut fibers = Vec::new();
        for i in 0..4 {
            let t = t.clone();
            let on = rt().trustee(i % 2).entrust(());
            fibers.push(on.apply(move |_| spawn(move || assert_eq!(sweep(&t, 5), 5 * 49))));
        }
        for f in fibers {
            if let Err(p) = f.join() {
                panic!("a fiber panicked: {}", panic_message(p));
            }
        }
        assert_eq!(t.apply(|v| *v), 10 * 49 + 4 * 5 * 49);
    });
}

/// Runs `f` inside a closure on trustee 0 and returns its panic message ("" if it did not panic).
fn message_inside_closure(f: impl FnOnce() + Send + 'static) -> String {
    let on0 = rt().trustee(0).entrust(0u64);
    on0.apply(move |v| {
        *v += 1;
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(()) => String::new(),
            Err(p) => panic_message(p),
        }
    })
}

#[test]
fn every_blocking_call_inside_a_delegated_closure_panics_and_the_trustee_serves_on() {
    within(60, || {
        let _ = quiet();
        let other = rt().trustee(1).entrust(10u64);
        let nested = "blocking delegation from inside a delegated closure";

        let o = other.clone();
        let m = message_inside_closure(move || {
            o.apply(|v| *v += 1000);
        });
        assert!(m.contains(nested), "apply: {m:?}");

        let o = other.clone();
        let m = message_inside_closure(move || {
            o.apply_with(|v, a: u64| *v += a, 1000);
        });
        assert!(m.contains(nested), "apply_with: {m:?}");

        let o = other.clone();
        let m = message_inside_closure(move || {
            let _ = o.try_unwrap();
        });
        assert!(
            m.contains("inside a delegated closure"),
            "try_unwrap: {m:?}"
        );

        let lone = rt().trustee(1).entrust(7u64);
        let m = message_inside_closure(move || {
            let _ = lone.into_inner();
        });
        assert!(
            m.contains("inside a delegated closure"),
            "into_inner: {m:?}"
        );

        let m = message_inside_closure(|| {
            let h = spawn(|| 5u8);
            let _ = h.join();
        });
        assert!(m.contains("waiting for a fiber inside"), "join: {m:?}");

        let o = other.clone();
        let m = message_inside_closure(move || {
            o.apply_then(|v| *v += 1, |()| ());
            wait_pending();
        });
        assert!(!m.is_empty(), "wait_pending inside a closure did not panic");

        // Both trustees serve on, with exact values: only the `apply_then` (sent, not waited for) ran.
        eventually("the apply_then ran", || other.apply(|v| *v) == 11);
        let on0 = rt().trustee(0).entrust(1u64);
        assert_eq!(on0.apply(|v| *v + 1), 2);
        trustee_0_serves();
    });
}

/// 200 `may` coroutines on two `may` threads (work stealing on: `may`'s default features), each 100 times:
/// clones a handle (a count change sent through the client of the thread it is on), yields to `may` (it may
/// resume on the other thread), drops the clone there, applies, yields again, and sends an `apply_then`. A
/// client or thread-local kept across a suspension would send from the wrong thread's channel (a data race
/// on an SPSC slot, lost or doubled counts). The totals are exact and the value is dropped once, at the end.
#[test]
fn coroutines_counting_handles_across_yields_keep_exact_counts() {
    in_child!(
        "coroutines_counting_handles_across_yields_keep_exact_counts",
        60
    );
    may::config().set_workers(2);
    let drops = Arc::new(AtomicUsize::new(0));
    let t = rt().trustee(1).entrust((0u64, CountsDrops(drops.clone())));
    let hs: Vec<_> = (0..200)
        .map(|_| {
            let t = t.clone();
            coroutine(move || {
                let mut moved = 0u32;
                for _ in 0..100 {
                    let before = std::thread::current().id();
                    let c = t.clone();
                    may::coroutine::yield_now();
                    drop(c);
                    t.apply(|v| v.0 += 1);
                    may::coroutine::yield_now();
                    let c = t.clone();
                    t.apply_then(move |v| v.0 += 1, move |()| drop(c));
                    moved += u32::from(std::thread::current().id() != before);
                }
                wait_pending();
                moved
            })
        })
        .collect();
    let moved: u32 = within(40, move || hs.into_iter().map(|h| h.join().unwrap()).sum());
    assert_eq!(t.apply(|v| v.0), 200 * 100 * 2);
    assert_eq!(load(&drops), 0, "dropped with a handle alive");
    drop(t);
    eventually("the value dropped once", || load(&drops) == 1);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(load(&drops), 1);
    println!("{moved} thread changes seen across yields");
    child_ok();
}
