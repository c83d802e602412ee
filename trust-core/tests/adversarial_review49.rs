//! Review 49: README.md read again as a new user reads it (review 25 did it first; the README has grown since).
//!
//! Block by block against `adversarial_review25.rs`: the "Delegation", `#[entrust]`, `Latch`/`launch`, echo
//! server (port 0 there, 7000 here: the only difference), `lock_all!`, interval and ghost blocks are unchanged
//! since review 25 copied them, and its tests still run them. The "Many requests in flight" block had changed:
//! review 25's copy had another comment ("Non-blocking: returns at once ... never on the trustee"), no `Trust`
//! import and a continuation that collected instead of printing. It is copied here as written, after the
//! "Delegation" block it continues and before the `Latch` block that continues it, in a child process (the
//! first block builds the process's runtime), with the `println!` kept: the parent reads the ten lines it
//! prints. The memcached block is a sketch (`/* ... */`) of `examples/src/memcached/`: its names and
//! signatures were checked against the source, and the example was run with the README's command.
//!
//! Found (README bugs, fixed): the "Many requests in flight" block began `use trust_core::{wait_pending,
//! Trust};`. It needs `counter` from the "Delegation" block, whose `use trust_core::{spawn, Runtime, Trust};`
//! already imports `Trust`: pasted after it, the block is error E0252 ("the name `Trust` is defined multiple
//! times"); in a scope of its own, `Trust` is an unused import (a crate that denies warnings rejects it). Now
//! `use trust_core::wait_pending;`. And "(`tests/launch_then.rs`)" named a path that does not exist from the
//! README's directory; the README names the others from the root (`trust-core/tests/net.rs`): now
//! `trust-core/tests/launch_then.rs`.
//!
//! Then the cheap claims: every link, anchor and path the README names exists
//! ([`every_link_anchor_and_path_the_readme_names_exists`]); every public name it mentions resolves
//! ([`readme_names`], which only has to compile); the bench targets and examples it names exist and CI runs
//! its test command; the numbers it gives for the runtime's constants (512 bytes, 256 KiB, 48, 256) are the
//! source's; and "Non-blocking (it waits only when its batches are full)" of `apply_then`, against a stalled
//! trustee (measured: 120 return at once, every run, then the thread waits; all 10,000 apply once released).
//! The copies are rustfmt's layout of the README's text (`|now| if .. { .. }` gains braces), otherwise as
//! written. The two Quick start commands: `cargo run --release --example fetch_and_add` ran (every count
//! checked, its table printed); `cargo test --workspace` is what `.ci/run` runs (with debug info off). The
//! memcached command served `set`/`get`/`delete`/`incr` over a socket as memcached does.
//!
//! Claims found false: none beyond the two fixed above. Not checked: the performance numbers (measurements
//! of one dated run), the memory figures (a million fibers, 10 million `apply_then`s: other tests measure
//! them), and prose that other review files already test.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{block_on, rt, within};

fn repo_file(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn repo_path_exists(path: &str) -> bool {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
        .exists()
}

// ---------------------------------------------------------------------------------------------------------
// The tour's first three blocks, in the order a reader runs them.
// ---------------------------------------------------------------------------------------------------------

/// The README's "Delegation", "Many requests in flight" and "Blocking on the trustee" blocks, as written, in
/// one function that returns `Result` (the first uses `?`); the one `.await` is wrapped in `block_on`.
/// Returns (the counter after the 1,000,000 `apply_then`s and `wait_pending()`, `apply_async`'s `now`, the
/// counter before the `apply_then`s, `moved`).
#[allow(unused_variables)]
fn readme_tour() -> Result<(u64, u64, u64, i32), Box<dyn std::error::Error>> {
    // --- ### Delegation
    use trust_core::{Runtime, Trust, spawn};

    // Optional: configure the runtime before first use (else: TRUST_WORKERS, or one worker per core).
    let rt = Runtime::builder().workers(2).build()?;

    let counter: Trust<u64> = rt.trustee(0).entrust(0); // or `entrust(0)`: the local trustee
    counter.apply(|c| *c += 1); // runs on trustee 0's thread; blocks until done
    let now = counter.apply(|c| *c); // results come back by value

    // Arguments move with the request; a closure or argument over 512 bytes travels out of line (boxed).
    // Pass megabytes as a `Vec` or `Box`: by value they are copied a few times on the caller's stack first.
    let len = counter.apply_with(
        |c, v: Vec<u8>| {
            *c += v.len() as u64;
            *c
        },
        vec![0; 1 << 20],
    );

    // Fibers: an `apply` inside a fiber suspends only that fiber; thousands per worker are fine.
    let fibers: Vec<_> = (0..1000)
        .map(|_| {
            let c = counter.clone();
            spawn(move || c.apply(|c| *c += 1))
        })
        .collect();
    for f in fibers {
        f.join().unwrap();
    }
    let before = counter.apply(|c| *c);

    // --- ### Many requests in flight: `apply_then`, `wait_pending`, `apply_async`
    use trust_core::wait_pending;

    // Non-blocking (it waits only when its batches are full); the continuation runs later on *this* thread.
    for _ in 0..1_000_000 {
        counter.apply_then(
            |c| {
                *c += 1;
                *c
            },
            |now| {
                if now % 100_000 == 0 {
                    println!("{now}")
                }
            },
        );
    }
    wait_pending(); // every apply_then of this thread (or fiber) is done and its continuation ran
    let after = counter.apply(|c| *c);

    // async/await, with tokio or any executor: the request is sent on first poll.
    let now = block_on(async { counter.apply_async(|c| *c).await });

    // --- ### Blocking on the trustee: `Latch` and `launch`
    use trust_core::Latch;

    let account: Trust<Latch<i64>> = rt.trustee(0).entrust(Latch::new(100));
    let other: Trust<i64> = rt.trustee(1).entrust(0);
    let moved = account.launch(move |latch| {
        // a fiber ON trustee 0: it may block
        let mut balance = latch.lock(); // fibers of one trustee exclude each other; no atomics
        *balance -= 10;
        other.apply(|o| *o += 10); // blocking delegation is fine here
        10
    }); // the trustee kept serving others meanwhile
    Ok((after, now, before, moved))
}

/// README "Many requests in flight", between the blocks before and after it: compiles as written (since the
/// import fix), `wait_pending()` returns with all 1,000,000 `apply_then`s applied, and the continuation
/// printed exactly the multiples of 100,000 the counter passed, in order, on this thread (the child's
/// stdout): the counter starts the loop at 1 + 2^20 + 1000 = 1,049,577, so 1,100,000 to 2,000,000, ten
/// lines. `apply_async` then reads 2,049,577 and the launched fiber moves 10.
#[test]
fn readme_many_requests_block_prints_what_it_says() {
    const NAME: &str = "readme_many_requests_block_prints_what_it_says";
    if common::is_child() {
        common::watchdog(NAME, 60);
        let (after, now, before, moved) = readme_tour().expect("the tour runs");
        println!("TOUR {after} {now} {before} {moved}");
        common::child_ok();
        return;
    }
    let out = common::child_output(NAME, &[], 65);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "child failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<u64> = stdout
        .lines()
        .filter(|l| !l.starts_with("TOUR"))
        // The first shares its line with libtest's "test NAME ... " (the child runs with --nocapture).
        .filter_map(|l| l.split_whitespace().last()?.parse().ok())
        .collect();
    let base = 1 + (1u64 << 20) + 1000;
    assert_eq!(
        printed,
        (11..=20).map(|k| k * 100_000).collect::<Vec<u64>>(),
        "the lines the continuation printed"
    );
    let tour = format!("TOUR {} {} {base} 10", base + 1_000_000, base + 1_000_000);
    assert!(
        stdout.lines().any(|l| l == tour),
        "expected {tour:?} in {stdout}"
    );
}

/// README "Many requests in flight": "Non-blocking (it waits only when its batches are full)". A plain thread
/// with a channel to trustee 0 (one blocking `apply` first) issues 10,000 `apply_then`s while trustee 0 is
/// held inside a closure. Expected: the first ones return without waiting (the count of issued calls climbs
/// while nothing is served), then the thread waits (the count stops below 10,000: its batches are full);
/// once the trustee is released every one is applied and every continuation runs.
#[test]
fn apply_then_returns_until_its_batches_are_full_then_waits() {
    const N: usize = 10_000;
    let v = rt().trustee(0).entrust(0u64);
    let gate = rt().trustee(0).entrust(());
    let issued = Arc::new(AtomicUsize::new(0));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (start_tx, start_rx) = std::sync::mpsc::channel::<()>();
    let client = {
        let (v, issued) = (v.clone(), issued.clone());
        std::thread::spawn(move || {
            v.apply(|_| ()); // a channel to trustee 0
            ready_tx.send(()).unwrap();
            start_rx.recv().unwrap();
            let ran = std::rc::Rc::new(std::cell::Cell::new(0usize));
            for _ in 0..N {
                let ran = ran.clone();
                v.apply_then(
                    |c| {
                        *c += 1;
                        *c
                    },
                    move |_| ran.set(ran.get() + 1),
                );
                issued.fetch_add(1, Ordering::SeqCst);
            }
            trust_core::wait_pending();
            ran.get()
        })
    };
    ready_rx.recv().unwrap();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let staller = std::thread::spawn(move || {
        gate.apply(move |_| {
            held_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(Duration::from_secs(20));
        })
    });
    held_rx.recv().unwrap();
    start_tx.send(()).unwrap();
    // Two batches of `PUBLISH_EVERY` go out without waiting; then wait for the count to stop moving for
    // 500 ms (a thread descheduled past the two batches still passes: fewer than N).
    let deadline = Instant::now() + Duration::from_secs(10);
    while issued.load(Ordering::SeqCst) < 2 * common::PUBLISH_EVERY {
        assert!(
            Instant::now() < deadline,
            "only {} apply_thens returned with the trustee held",
            issued.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut last = usize::MAX;
    let mut still_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = issued.load(Ordering::SeqCst);
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() > Duration::from_millis(500) {
            break;
        }
        assert!(Instant::now() < deadline, "the count kept moving: {now}");
    }
    // Measured: 120, every run.
    eprintln!("apply_thens issued before the thread waited: {last}");
    assert!(
        last < N,
        "all {N} apply_thens returned with the trustee held: none waited for a full batch"
    );
    release_tx.send(()).unwrap();
    staller.join().unwrap();
    let ran = within(20, move || client.join().unwrap());
    assert_eq!(
        (ran, v.apply(|c| *c)),
        (N, N as u64),
        "(continuations run, value)"
    );
}

// ---------------------------------------------------------------------------------------------------------
// Claims checked against the tree.
// ---------------------------------------------------------------------------------------------------------

/// GitHub's anchor for a heading: lower case, punctuation but `-` and `_` dropped, spaces to `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every relative link of README.md (`[..](path#anchor)`, or `[..](#anchor)` within it) names a file that
/// exists and, with an anchor, a heading of that file; every path in backquotes under `docs/`, `examples/`,
/// `scripts/`, `trust-core/`, `trust-macros/` or `ui-tests/` exists (a `*` glob matches at least one file).
#[test]
fn every_link_anchor_and_path_the_readme_names_exists() {
    let readme = repo_file("README.md");
    let mut checked = Vec::new();
    for link in readme.split("](").skip(1) {
        let target = &link[..link.find(')').unwrap()];
        if target.starts_with("http") {
            continue;
        }
        let (path, frag) = target.split_once('#').unwrap_or((target, ""));
        // `(#anchor)`: a heading of README.md itself.
        let path = if path.is_empty() { "README.md" } else { path };
        assert!(repo_path_exists(path), "link to a missing file: {target}");
        if !frag.is_empty() {
            let headings: Vec<String> = repo_file(path)
                .lines()
                .filter(|l| l.starts_with('#'))
                .map(|l| anchor(l.trim_start_matches('#')))
                .collect();
            assert!(
                headings.iter().any(|h| h == frag),
                "no heading of {path} has the anchor {frag}"
            );
        }
        checked.push(target.to_owned());
    }
    for quoted in readme.split('`').skip(1).step_by(2) {
        let roots = [
            "docs/",
            "examples/",
            "scripts/",
            "trust-core/",
            "trust-macros/",
            "ui-tests/",
            "tests/",
        ];
        if !roots.iter().any(|r| quoted.starts_with(r)) || quoted.contains(' ') {
            continue;
        }
        if let Some((dir, pattern)) = quoted.rsplit_once('/').filter(|(_, p)| p.contains('*')) {
            let (prefix, suffix) = pattern.split_once('*').unwrap();
            let dir_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(dir);
            let matches = std::fs::read_dir(&dir_path)
                .unwrap()
                .filter(|e| {
                    let n = e.as_ref().unwrap().file_name().into_string().unwrap();
                    n.starts_with(prefix) && n.ends_with(suffix)
                })
                .count();
            assert!(matches > 0, "{quoted} matches no file");
        } else {
            assert!(
                repo_path_exists(quoted),
                "README names a missing path: {quoted}"
            );
        }
        checked.push(quoted.to_owned());
    }
    for named in [
        "trust-core/tests/adversarial_net.rs",
        "trust-core/tests/adversarial_review44.rs",
        "trust-core/tests/launch_then.rs",
        "trust-core/src/delegation/call.rs",
        "scripts/memcached-bench.sh",
        "docs/performance-history.md",
    ] {
        assert!(repo_path_exists(named), "{named}");
    }
    // Layout: the runtime's floors, and one folder per macro.
    for dir in [
        "protocol",
        "trustee",
        "client",
        "worker",
        "api",
        "stack",
        "../lock",
        "../ghost",
        "../interval",
    ] {
        assert!(
            repo_path_exists(&format!("trust-core/src/delegation/{dir}")),
            "{dir}"
        );
    }
    for dir in ["entrust", "lock_all"] {
        assert!(
            repo_path_exists(&format!("trust-macros/src/{dir}")),
            "{dir}"
        );
    }
    for guide in [
        "delegation",
        "entrust",
        "lock",
        "ghost",
        "interval",
        "performance",
        "memcached",
    ] {
        assert!(repo_path_exists(&format!("docs/{guide}.md")), "{guide}");
    }
    assert!(checked.len() >= 25, "checked only {checked:?}");
}

/// The README's benchmark commands name bench targets of trust-core; its examples (the "Examples:" list,
/// `--example X` in its commands) are exactly the examples package's; CI runs the README's test command and
/// every example but the memcached server (which its own test drives).
#[test]
fn the_readmes_commands_name_what_exists() {
    let readme = repo_file("README.md");
    let cargo = repo_file("trust-core/Cargo.toml");
    let benches: Vec<&str> = readme
        .split("--bench ")
        .skip(1)
        .map(|s| s.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        benches,
        [
            "ghost_halo",
            "contention",
            "lock",
            "ghost",
            "ghost_halo",
            "interval"
        ]
    );
    for b in &benches {
        assert!(
            cargo.contains(&format!("name = \"{b}\"")),
            "no bench target {b}"
        );
    }
    let mut examples: Vec<String> =
        std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples"))
            .unwrap()
            .filter_map(|e| {
                let n = e.unwrap().file_name().into_string().unwrap();
                n.strip_suffix(".rs").map(str::to_owned)
            })
            .collect();
    examples.sort();
    let list = readme.split("\nExamples: ").nth(1).unwrap();
    let list = &list[..list.find("\n\n").unwrap()];
    // "`fetch_and_add` (main), ..., `transfer` (`launch` + `Latch`), ...": the first name of each item.
    let mut listed: Vec<String> = list
        .split("), ")
        .map(|item| item.split('`').nth(1).unwrap().to_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, examples, "the README's \"Examples:\" list");
    for ex in readme.split("--example ").skip(1) {
        let name = ex.split_whitespace().next().unwrap();
        if name != "NAME" {
            assert!(examples.iter().any(|e| e == name), "no example {name}");
        }
    }
    let ci = repo_file(".ci/run");
    assert!(readme.contains("cargo test --workspace "));
    assert!(ci.contains("\nCARGO_PROFILE_DEV_DEBUG=0 cargo test --workspace\n"));
    let ci_examples = ci
        .split("for example in ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    let mut ci_examples: Vec<&str> = ci_examples.split_whitespace().collect();
    ci_examples.push("memcached");
    ci_examples.sort();
    assert_eq!(ci_examples, examples);
}

/// The numbers the README gives for the runtime's constants are the source's: "over 512 bytes ... boxed",
/// "Stacks are 256 KiB by default", "A plain thread publishes 48 at a time", "`entrust` to another trustee
/// waits for that trustee past 256 queued registrations".
#[test]
fn the_readmes_numbers_are_the_sources() {
    let flat = repo_file("README.md")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for (claim, file, constant) in [
        (
            "a closure or argument over 512 bytes travels out of line (boxed)",
            "trust-core/src/delegation/api/trust.rs",
            "const BOX_ABOVE: usize = 512;",
        ),
        (
            "Stacks are 256 KiB by default",
            "trust-core/src/delegation/api/runtime.rs",
            "const DEFAULT_STACK_SIZE: usize = 256 * 1024;",
        ),
        (
            "A plain thread publishes 48 at a time",
            "trust-core/src/delegation/client/outbox.rs",
            "const PUBLISH_EVERY: usize = 48;",
        ),
        (
            "waits for that trustee past 256 queued registrations",
            "trust-core/src/delegation/trustee/shared.rs",
            "const REGISTERING_MAX: usize = 256;",
        ),
    ] {
        assert!(flat.contains(claim), "README no longer says {claim:?}");
        assert!(repo_file(file).contains(constant), "{file}: {constant}");
    }
    assert_eq!(common::PUBLISH_EVERY, 48);
    // "44 cases in the [catalogue](ui-tests/README.md) (10 of them known limits whose error is still rustc's,
    // marked there)": review 25 counts the 44; the known limits are the catalogue's rows marked so.
    let said: usize = flat
        .split(" of them known limits whose error is still rustc's")
        .next()
        .and_then(|before| before.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .expect("README.md says how many known limits the catalogue has");
    let marked = repo_file("ui-tests/README.md")
        .lines()
        .filter(|l| l.contains("](tests/ui/entrust/") && l.starts_with("| KNOWN LIMIT"))
        .count();
    assert_eq!(
        said, marked,
        "known limits: README says {said}, the catalogue marks {marked}"
    );
}

/// Every public name the README mentions resolves, and the methods it names exist with the receivers it
/// implies. Never run: it only has to compile.
#[allow(
    dead_code,
    unused_imports,
    unused_must_use,
    clippy::let_underscore_future
)]
fn readme_names(
    t: trust_core::Trust<u64>,
    rt: &'static trust_core::Runtime,
    s: trust_core::net::TcpStream,
    l: &mut trust_core::interval::IntervalRwLock<u8>,
) {
    use trust_core::ghost::{
        GhostAtomicBitset, GhostAtomicBool, GhostAtomicU32, GhostAtomicU64, GhostAtomicUsize,
        GhostCell, GhostChaseLevDeque, GhostLazyLock, GhostOnceCell, GhostStealer, GhostToken,
        GhostTreiberStack, static_token, with_static_token_mut,
    };
    use trust_core::interval::{IntervalMutex, IntervalRwLock};
    use trust_core::lock::{LockContext, Mutex, NestedKey, Poisonable, RwLock, ThreadKey};
    use trust_core::net::{TcpListener, TcpStream};
    use trust_core::{
        Fiber, JoinHandle, Latch, Runtime, Trust, entrust, local_trustee, lock_all, lock_ranks,
        sleep, spawn, wait_pending, yield_now,
    };
    let _: fn(Trust<u64>) -> Result<u64, Trust<u64>> = Trust::try_unwrap;
    let _: fn(Trust<u64>) -> Option<u64> = Trust::into_inner;
    let _: fn(&Runtime) = Runtime::shutdown;
    let _ = Runtime::metrics;
    let _ = Runtime::builder()
        .workers(2)
        .fiber_stack_size(1 << 18)
        .worker_stack_size(1 << 20)
        .pin_workers(true)
        .core_ids([0, 1])
        .build();
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(None);
    let _ = s.set_write_timeout(None);
    let _ = s.try_clone();
    let _ = TcpStream::from_std;
    let _ = TcpListener::from_std;
    let _ = TcpStream::connect_timeout;
    t.apply_async(|c| *c);
    let lt = rt.trustee(0).entrust(Latch::new(0u64));
    lt.launch_then(|l| *l.lock(), |_| ());
    let _ = l.try_read(..);
    let _ = l.try_write(..);
    let _ = l.read_async(1..);
    let _ = l.write_async(..=2);
    let _ = l.prioritized(3);
    let _ = l.replace_container(vec![0u8]);
    let _ = l.take_container();
    let _: IntervalMutex<u8> = IntervalMutex::new(vec![0u8]);
    let _ = GhostAtomicBitset::new(8).test_and_set(0);
    let _ = GhostTreiberStack::push_batch;
}
