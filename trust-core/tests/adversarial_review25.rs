//! Review 25: README.md read as a new user reads it. Every code block of the tour is copied here as written
//! (README.md is not doc-tested), run, and its stated outputs checked; then claims next to the blocks.

// The README's blocks are copied as written, tuples of results and all.
#![allow(clippy::type_complexity)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{PUBLISH_EVERY, block_on, in_child, issue_lingering, panic_message, rt, within};
use trust_core::Trust;

// ---------------------------------------------------------------------------------------------------------
// Tour: Delegation, Many requests in flight, Blocking on the trustee (one process: the first block builds the
// runtime itself, with `?`).
// ---------------------------------------------------------------------------------------------------------

/// The README's "Delegation", "Many requests in flight" and "Blocking on the trustee" blocks, verbatim, in
/// one function that returns `Result` (the first block uses `?`). Returns what they computed.
#[allow(unused_variables)]
fn readme_tour() -> Result<(u64, u64, u64, u64, u64, u64, i64, i64), Box<dyn std::error::Error>> {
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
    let after_fibers = counter.apply(|c| *c);

    // --- ### Many requests in flight
    use trust_core::wait_pending;

    // Non-blocking: returns at once; the continuation runs later on *this* thread, never on the trustee.
    let printed = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    for _ in 0..1_000_000 {
        let p = printed.clone();
        counter.apply_then(
            |c| {
                *c += 1;
                *c
            },
            move |now| {
                if now % 100_000 == 0 {
                    p.borrow_mut().push(now)
                }
            },
        );
    }
    wait_pending(); // every apply_then of this thread (or fiber) is done and its continuation ran
    let printed_count = printed.borrow().len() as u64;

    // async/await, with tokio or any executor: the request is sent on first poll.
    let now_async = block_on(async { counter.apply_async(|c| *c).await });

    // --- ### Blocking on the trustee: `Latch` and `launch`
    use trust_core::Latch;

    let account: Trust<Latch<i64>> = rt.trustee(0).entrust(Latch::new(100));
    let other: Trust<i64> = rt.trustee(1).entrust(0);
    let other2 = other.clone();
    let moved = account.launch(move |latch| {
        // a fiber ON trustee 0: it may block
        let mut balance = latch.lock(); // fibers of one trustee exclude each other; no atomics
        *balance -= 10;
        other.apply(|o| *o += 10); // blocking delegation is fine here
        10
    }); // the trustee kept serving others meanwhile
    let balance = account.apply(|l| *l.get_mut());
    let other_now = other2.apply(|o| *o);
    assert_eq!(moved, 10);
    Ok((
        now,
        len,
        after_fibers,
        printed_count,
        now_async,
        moved as u64,
        balance,
        other_now,
    ))
}

/// README "Delegation" / "Many requests in flight" / "Blocking on the trustee": the three blocks compile
/// (with the continuation's `println!` collecting into a vector instead, and the `.await` in a `block_on`)
/// and compute what their comments say: `apply` "blocks until done", "results come back by value",
/// `apply_with` adds the Vec's length (1 MiB), 1000 fibers add 1000, the 1,000,000 `apply_then`s are all done
/// after `wait_pending()`, and the launched fiber moves 10 from the latch to `other`.
#[test]
fn readme_tour_blocks_compute_what_they_say() {
    if !in_child("readme_tour_blocks_compute_what_they_say", &[], 60) {
        return;
    }
    let got = readme_tour().expect("the tour runs");
    let base = 1 + (1u64 << 20) + 1000;
    assert_eq!(
        got,
        (1, 1 + (1 << 20), base, 10, base + 1_000_000, 10, 90, 10),
        "(now, len, after fibers, continuations that printed, apply_async, moved, balance, other)"
    );
    common::child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// Tour: `#[entrust]` (the items at module level, where a user puts them).
// ---------------------------------------------------------------------------------------------------------

mod entrust_block {
    use trust_core::{Trust, entrust};

    #[entrust]
    pub struct Account {
        balance: i64,
        memo: String,
    }

    #[entrust]
    impl Account {
        pub fn deposit(&mut self, amount: i64) -> i64 {
            self.balance += amount;
            self.balance
        }
        pub fn balance(&self) -> i64 {
            self.balance
        }
        pub fn set_memo(&mut self, memo: &str) {
            self.memo = memo.to_owned()
        }
    }

    /// The block's statements, verbatim (the `println!` continuation kept), then what they did.
    #[allow(unused_variables)]
    pub fn run() -> (i64, i64, String) {
        let acct: Trust<Account> = entrust(Account {
            balance: 0,
            memo: String::new(),
        });
        acct.deposit(10); // blocking stub, the method's own signature
        acct.deposit_then(5, |b| println!("now {b}")); // non-blocking: args..., continuation
        let b = acct.balance_async(); // a future
        acct.set_memo("rent"); // &str, &[T], &T are copied into the request
        let after_future = crate::common::block_on(b);
        trust_core::wait_pending();
        let memo = acct.apply(|a| a.memo.clone());
        (after_future, acct.balance(), memo)
    }
}

/// README "Methods instead of closures: `#[entrust]`": the block compiles as written; `deposit(10)` then
/// `deposit_then(5, ..)` leave 15, the `balance_async()` future made before `set_memo` sees both deposits (a
/// plain thread's `apply_then`s go out with its next blocking call, and the future is polled after
/// `set_memo`), and `set_memo("rent")` stores "rent".
#[test]
fn readme_entrust_block_runs() {
    rt();
    let got = within(20, entrust_block::run);
    assert_eq!(got, (15, 15, "rent".to_owned()));
}

// ---------------------------------------------------------------------------------------------------------
// Tour: `trust_core::net`.
// ---------------------------------------------------------------------------------------------------------

/// The README's echo server block, verbatim but for the port (0, not 7000, which another program may hold);
/// returns the bound address. As first written, the block drew two `unused_must_use` warnings (`Fiber` is
/// `#[must_use]`; both `spawn`s dropped theirs): a crate that denies warnings rejected it. Now it names them.
fn readme_net_block() -> std::io::Result<std::net::SocketAddr> {
    use std::io::{Read, Write};
    use trust_core::net::TcpListener;

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let _server = trust_core::spawn(move || {
        while let Ok((mut conn, _)) = listener.accept() {
            // suspends only this fiber
            let _ = trust_core::spawn(move || {
                // one fiber per connection, on the workers
                let mut buf = [0; 4096];
                while let Ok(n @ 1..) = conn.read(&mut buf) {
                    let _ = conn.write_all(&buf[..n]);
                }
            });
        }
    });
    Ok(addr)
}

/// README "Sockets for fibers: `trust_core::net`": the echo server block compiles, and echoes what three
/// clients at once send, each its own bytes back (`accept` "suspends only this fiber", one fiber per
/// connection).
#[test]
fn readme_net_block_echoes() {
    use std::io::{Read, Write};
    rt();
    let addr = readme_net_block().expect("bind");
    within(20, move || {
        let clients: Vec<_> = (0..3u8)
            .map(|i| {
                std::thread::spawn(move || {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    let msg = vec![b'a' + i; 10_000];
                    s.write_all(&msg).unwrap();
                    let mut back = vec![0; msg.len()];
                    s.read_exact(&mut back).unwrap();
                    back == msg
                })
            })
            .collect();
        for c in clients {
            assert!(c.join().unwrap(), "each client gets its own bytes back");
        }
    });
}

// ---------------------------------------------------------------------------------------------------------
// Tour: `lock_all!`.
// ---------------------------------------------------------------------------------------------------------

/// The README's `lock_all!` block, verbatim; returns what it locked.
fn readme_lock_block() -> (i64, usize, i64) {
    use trust_core::lock::{Mutex, RwLock, ThreadKey};
    use trust_core::lock_all;

    let mut key = ThreadKey::get().expect("one key per thread");
    let (a, b, c) = (Mutex::new(1), Mutex::new(2), RwLock::new(String::new()));
    {
        let (mut ga, gb, gc) = lock_all!(&mut key, a, b, read c); // all or nothing, deadlock-free
        *ga += *gb;
        println!("{}", *gc);
    } // while guards live the key is borrowed: no second lock_all!

    trust_core::lock_ranks! { pub Ledger; pub Account; } // ranks, lowest first
    let ledger: Mutex<Vec<i64>, Ledger> = Mutex::ranked(Vec::new());
    let alice: Mutex<i64, Account> = Mutex::ranked(10);
    let (mut log, mut nested) = lock_all!(&mut key, ledger; nest); // NestedKey<'_, Ledger>
    let (a,) = lock_all!(&mut nested, alice); // Account > Ledger: fine; lower or equal: compile error
    log.push(*a);
    let got = (*a, log.len(), 0);
    drop(a);
    drop(log);
    (got.0, got.1, 0)
}

/// README "Holding several locks": the block compiles as written and locks what it says (`*ga += *gb`
/// makes `a` 3 — checked in a copy below — and the nested lock reaches `alice`'s 10).
#[test]
fn readme_lock_block_runs() {
    let got = within(10, readme_lock_block);
    assert_eq!(got, (10, 1, 0));
    // `*ga += *gb`: 1 + 2.
    within(10, || {
        use trust_core::lock::{Mutex, ThreadKey};
        use trust_core::lock_all;
        let mut key = ThreadKey::get().expect("one key per thread");
        let (a, b) = (Mutex::new(1), Mutex::new(2));
        {
            let (mut ga, gb) = lock_all!(&mut key, a, b);
            *ga += *gb;
        }
        let (ga,) = lock_all!(&mut key, a);
        assert_eq!(*ga, 3);
    });
}

// ---------------------------------------------------------------------------------------------------------
// Tour: interval locks.
// ---------------------------------------------------------------------------------------------------------

/// README "Locking sub-ranges": the block compiles as written; each of the 8 chunks of 2^17 bytes holds its
/// index, and `pixels.read(..16)` reads chunk 0's zeros.
#[test]
fn readme_interval_block_runs() {
    within(20, || {
        use trust_core::interval::IntervalRwLock;

        let pixels = IntervalRwLock::new(vec![0u8; 1 << 20]);
        std::thread::scope(|s| {
            for chunk in 0..8 {
                let pixels = &pixels;
                s.spawn(move || {
                    let mut rows = pixels.write(chunk << 17..(chunk + 1) << 17); // disjoint: all 8 at once
                    rows.fill(chunk as u8);
                });
            }
        });
        let head = pixels.read(..16); // reads share; writes exclude any overlap
        assert_eq!(&*head, &[0u8; 16]);
        for chunk in 0..8usize {
            let r = pixels.read(chunk << 17..(chunk + 1) << 17);
            assert!(r.iter().all(|&p| p == chunk as u8), "chunk {chunk}");
        }
        assert!(
            pixels.try_write(..16).is_err(),
            "writes exclude any overlap with a live read"
        );
    });
}

// ---------------------------------------------------------------------------------------------------------
// Tour: ghost.
// ---------------------------------------------------------------------------------------------------------

/// README "Branded token cells": the halo block compiles and its own `assert_eq!` holds.
#[test]
fn readme_ghost_block_runs() {
    within(10, || {
        use trust_core::ghost::{GhostAtomicBitset, GhostChaseLevDeque, GhostToken};

        GhostToken::new(|_token| {
            let visited = GhostAtomicBitset::new(1 << 10);
            let owner = GhostChaseLevDeque::new(1 << 10);
            let thief = owner.stealer(); // Clone + Send + Sync; `owner` itself cannot be shared
            visited.test_and_set(0);
            owner.push_bottom(0).unwrap();
            let stolen = std::thread::scope(|s| s.spawn(|| thief.steal()).join().unwrap());
            assert_eq!((stolen, visited.test(0)), (Some(0), true));
        });
    });
}

// ---------------------------------------------------------------------------------------------------------
// Many requests in flight: where a plain thread's unsent `apply_then`s go out.
// ---------------------------------------------------------------------------------------------------------

/// How a plain thread lets its one unsent `apply_then(+1)` on a value of trustee 0 go out.
#[derive(Clone, Copy, Debug)]
enum Then {
    /// `join` of a fiber that has already finished.
    JoinFinished,
    /// `join` of a fiber still sleeping.
    JoinRunning,
    /// `PUBLISH_EVERY` `apply_then`s to trustee 1 (a publish to another trustee).
    PublishElsewhere,
    /// A blocking `apply` to trustee 1.
    BlockingElsewhere,
    /// A blocking `launch` on a latch of trustee 1.
    LaunchElsewhere,
    /// `into_inner` of a value of trustee 1 ("They wait like `apply`").
    IntoInnerElsewhere,
}

/// A fresh plain thread (given a client by one blocking `apply`) issues one `apply_then(+1)` on `a`
/// (trustee 0), left unsent behind a batch in flight (`issue_lingering`: alone on an idle channel it would go
/// at once), then does `how`, then blocks on a std channel without touching the runtime again. This
/// thread reads `a` for up to 2 s; returns the last value read (1 once the request went out).
fn unsent_then_goes_out(how: Then) -> u64 {
    let rt = rt();
    let a = rt.trustee(0).entrust(0u64);
    let b = rt.trustee(1).entrust(0u64);
    let (a2, b2) = (a.clone(), b.clone());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let h = std::thread::spawn(move || {
        a2.apply(|_| ());
        b2.apply(|_| ());
        let f = trust_core::spawn(|| {
            trust_core::sleep(Duration::from_millis(200));
            7
        });
        let finished = trust_core::spawn(|| 7);
        while !finished.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        issue_lingering(&a2, |v| *v += 1);
        match how {
            Then::JoinFinished => assert_eq!(finished.join().unwrap(), 7),
            Then::JoinRunning => assert_eq!(f.join().unwrap(), 7),
            Then::PublishElsewhere => {
                for _ in 0..PUBLISH_EVERY {
                    b2.apply_then(|v| *v += 1, |()| ());
                }
            }
            Then::BlockingElsewhere => b2.apply(|v| *v += 1),
            Then::LaunchElsewhere => {
                let l = trust_core::runtime()
                    .trustee(1)
                    .entrust(trust_core::Latch::new(5u64));
                assert_eq!(l.launch(|l| *l.lock()), 5);
            }
            Then::IntoInnerElsewhere => {
                let v = trust_core::runtime().trustee(1).entrust(5u64);
                v.apply(|_| ());
                assert_eq!(v.into_inner(), Some(5));
            }
        }
        ready_tx.send(()).unwrap();
        let _ = go_rx.recv();
    });
    ready_rx.recv().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut seen = a.apply(|v| *v);
    while seen == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        seen = a.apply(|v| *v);
    }
    go_tx.send(()).unwrap();
    h.join().unwrap();
    seen
}

/// README "Many requests in flight", batching: "A plain thread publishes its `apply_then`s (and
/// `launch_then`s) 48 at a time ..., so the last few of a burst go out at its next publish to any trustee, its
/// next blocking call (to any trustee) or `Fiber::join`". Here the `Fiber::join` is of a fiber that has
/// already finished: the request should go out all the same (expected: `a` reads 1 within 2 s).
///
/// Found: `a` stays 0. `Fiber::join` publishes the thread's unsent requests only inside its
/// `while !self.is_finished()` loop (api/fiber.rs:324-337), so a join that finds the fiber done returns
/// without publishing.
#[test]
fn fiber_join_of_a_finished_fiber_sends_the_threads_unsent_apply_thens() {
    assert_eq!(
        within(20, || unsent_then_goes_out(Then::JoinFinished)),
        1,
        "the apply_then issued before `Fiber::join` never went out while the thread waited elsewhere"
    );
}

/// Same sentence, `Fiber::join` of a fiber still running (sleeping 200 ms): `a` reads 1.
#[test]
fn fiber_join_of_a_running_fiber_sends_the_threads_unsent_apply_thens() {
    assert_eq!(within(20, || unsent_then_goes_out(Then::JoinRunning)), 1);
}

/// Same sentence, "its next publish to any trustee": `PUBLISH_EVERY` `apply_then`s to trustee 1 send trustee
/// 0's one too.
#[test]
fn a_publish_to_another_trustee_sends_the_threads_unsent_apply_thens() {
    assert_eq!(
        within(20, || unsent_then_goes_out(Then::PublishElsewhere)),
        1
    );
}

/// Same sentence, "its next blocking call (to any trustee)": a blocking `apply` to trustee 1.
#[test]
fn a_blocking_call_to_another_trustee_sends_the_threads_unsent_apply_thens() {
    assert_eq!(
        within(20, || unsent_then_goes_out(Then::BlockingElsewhere)),
        1
    );
}

/// Same sentence, "its next blocking call (to any trustee)": a blocking `launch` on a latch of trustee 1.
#[test]
fn a_launch_on_another_trustee_sends_the_threads_unsent_apply_thens() {
    assert_eq!(
        within(20, || unsent_then_goes_out(Then::LaunchElsewhere)),
        1
    );
}

/// Same sentence with `into_inner` of a value of trustee 1, which README "Delegation" says waits "like `apply`".
#[test]
fn an_into_inner_on_another_trustee_sends_the_threads_unsent_apply_thens() {
    assert_eq!(
        within(20, || unsent_then_goes_out(Then::IntoInnerElsewhere)),
        1
    );
}

/// README "Methods instead of closures": "What cannot be delegated ... is a compile error on the offending
/// token that says why and what to do: 31 cases in the [catalogue](ui-tests/README.md)." Counts the failing
/// `#[entrust]` cases (the `.rs` files of `ui-tests/tests/ui/entrust/`, not `pass/`) and the catalogue's rows
/// that are not "(passes)".
///
/// Found: 31 and 31 (d5017ca added `stub-name-collision-across-blocks`) while README.md said 30: the number is
/// now read from README.md, so the next case added must update it.
#[test]
fn the_entrust_catalogue_has_the_number_of_cases_the_readme_says() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui-tests/tests/ui/entrust");
    let files = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "rs")
        })
        .count();
    let catalogue = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui-tests/README.md"),
    )
    .unwrap();
    let rows = catalogue
        .lines()
        .filter(|l| l.contains("](tests/ui/entrust/") && !l.contains("(passes)"))
        .count();
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )
    .unwrap();
    let said: usize = readme
        .split(" cases in the [catalogue](ui-tests/README.md)")
        .next()
        .and_then(|before| before.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("README.md says how many cases the catalogue has");
    assert_eq!(
        (files, rows),
        (said, said),
        "(failing cases on disk, catalogue rows): README says {said}"
    );
}

/// README "Delegation": "`Trust<T>` is `Send + Sync + Clone`" — for a `T` that is `Send` but not `Sync`
/// too (a `Cell`, which only its trustee touches); and the latch block's "a fiber ON trustee 0".
#[test]
fn trust_of_a_cell_is_send_sync_clone_and_launch_runs_on_the_latchs_trustee() {
    fn send_sync_clone<X: Send + Sync + Clone>(_: &X) {}
    let c: Trust<std::cell::Cell<u64>> = rt().trustee(0).entrust(std::cell::Cell::new(1));
    send_sync_clone(&c);
    let c2 = c.clone();
    assert_eq!(within(10, move || c2.apply(|c| c.get())), 1);
    let l = rt().trustee(0).entrust(trust_core::Latch::new(0u64));
    assert_eq!(
        within(10, move || l
            .launch(|_| trust_core::local_trustee().index())),
        0
    );
}

// ---------------------------------------------------------------------------------------------------------
// Shutdown.
// ---------------------------------------------------------------------------------------------------------

/// What `CallsAtShutdown`'s destructor saw.
static AT_SHUTDOWN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

const SHUT_DOWN_MESSAGE: &str = "the trust runtime has been shut down: no property can be entrusted or applied to after `Runtime::shutdown`";

/// An entrusted value whose destructor uses handles of two other values (one per trustee).
struct CallsAtShutdown {
    others: [Trust<common::CountsDrops>; 2],
    ran: Arc<AtomicUsize>,
    captures: Arc<AtomicUsize>,
}

impl Drop for CallsAtShutdown {
    fn drop(&mut self) {
        let mut seen = Vec::new();
        for (i, other) in self.others.iter().enumerate() {
            let clone = other.clone();
            drop(clone);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| other.apply(|_| ())));
            seen.push(format!(
                "apply {i}: {}",
                r.map_or_else(panic_message, |()| "returned".into())
            ));
            let (ran, ran2) = (self.ran.clone(), self.ran.clone());
            let capture = common::CountsDrops(self.captures.clone());
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                other.apply_then(
                    move |_| {
                        let _c = capture;
                        ran.fetch_add(1, Ordering::SeqCst);
                    },
                    move |()| {
                        ran2.fetch_add(1, Ordering::SeqCst);
                    },
                )
            }));
            seen.push(format!(
                "apply_then {i}: {}",
                r.map_or_else(panic_message, |()| "returned".into())
            ));
        }
        AT_SHUTDOWN.lock().unwrap().extend(seen);
    }
}

/// README "Shutdown": "A value's destructor that runs at shutdown can still clone and drop handles of other
/// values; an `apply` to one of them panics with the shutdown message (they are being dropped too), and an
/// `apply_then` is dropped unrun." A value of trustee 0 holds handles of values of trustee 0 and trustee 1;
/// its destructor clones and drops each, `apply`s to each and `apply_then`s to each. Expected: each `apply`
/// panics with the shut-down message, no closure or continuation runs, each `apply_then`'s capture is dropped
/// once, and each of the three values is dropped once.
///
/// Found: the `apply` to the value of trustee 0 (the destructor's own) panics with the shut-down message, but
/// the `apply` to trustee 1's panics with "blocking delegation from inside a delegated closure ... Use
/// `apply_then` ... or `launch`" (neither works at shutdown): `call_from` (call.rs:189-191) rejects any
/// blocking call on a worker outside a fiber before it looks at whether the runtime is shut down. The counts
/// hold (nothing ran, captures and values dropped once each).
#[test]
fn a_destructor_at_shutdown_meets_the_shutdown_message() {
    if !in_child(
        "a_destructor_at_shutdown_meets_the_shutdown_message",
        &[],
        20,
    ) {
        return;
    }
    let _ = common::quiet();
    let (drops, ran, captures) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let others = [0, 1].map(|i| rt().trustee(i).entrust(common::CountsDrops(drops.clone())));
    let x = rt().trustee(0).entrust(CallsAtShutdown {
        others,
        ran: ran.clone(),
        captures: captures.clone(),
    });
    x.apply(|_| ());
    rt().shutdown();
    let seen = AT_SHUTDOWN.lock().unwrap().clone();
    assert_eq!(
        (
            ran.load(Ordering::SeqCst),
            captures.load(Ordering::SeqCst),
            drops.load(Ordering::SeqCst)
        ),
        (0, 2, 2),
        "(closures and continuations run, apply_then captures dropped, values dropped); destructor saw {seen:#?}"
    );
    let applies: Vec<&String> = seen.iter().filter(|s| s.starts_with("apply ")).collect();
    assert_eq!(
        applies,
        [
            format!("apply 0: {SHUT_DOWN_MESSAGE}"),
            format!("apply 1: {SHUT_DOWN_MESSAGE}")
        ]
        .iter()
        .collect::<Vec<_>>(),
        "all the destructor saw: {seen:#?}"
    );
    drop(x);
    common::child_ok();
}

// ---------------------------------------------------------------------------------------------------------
// Fibers: large values by value.
// ---------------------------------------------------------------------------------------------------------

const KIB32: usize = 32 * 1024;

fn ones() -> [u8; KIB32] {
    [1u8; KIB32]
}

fn sum(a: &[u8; KIB32]) -> u64 {
    a.iter().map(|&b| b as u64).sum()
}

#[inline(never)]
fn big_apply(v: &Trust<u64>) -> u64 {
    let big = ones();
    v.apply(move |_| sum(&big))
}

#[inline(never)]
fn big_apply_with(v: &Trust<u64>) -> u64 {
    v.apply_with(|_, a: [u8; KIB32]| sum(&a), ones())
}

#[inline(never)]
fn big_apply_then(v: &Trust<u64>) -> u64 {
    let big = ones();
    let got = std::rc::Rc::new(std::cell::Cell::new(0));
    let g = got.clone();
    v.apply_then(move |_| sum(&big), move |s| g.set(s));
    trust_core::wait_pending();
    got.get()
}

#[inline(never)]
fn big_apply_async(v: &Trust<u64>) -> u64 {
    let big = ones();
    block_on(v.apply_async(move |_| sum(&big)))
}

#[inline(never)]
fn big_launch(v: &Trust<u64>) -> u64 {
    let l = rt()
        .trustee(v.apply(|_| trust_core::local_trustee().index()))
        .entrust(trust_core::Latch::new(0u64));
    let big = ones();
    l.launch(move |_| sum(&big))
}

#[inline(never)]
fn big_spawn(_: &Trust<u64>) -> u64 {
    let big = ones();
    trust_core::spawn(move || sum(&big)).join().unwrap()
}

/// One call with a 32 KiB array by value, each in a frame of its own (a fiber that held all of them in one
/// frame would run out of stack by itself in a debug build).
#[inline(never)]
fn big_by_value(op: usize, t: usize) -> u64 {
    const OPS: [(&str, fn(&Trust<u64>) -> u64); 6] = [
        ("apply", big_apply),
        ("apply_with", big_apply_with),
        ("apply_then", big_apply_then),
        ("apply_async", big_apply_async),
        ("launch", big_launch),
        ("spawn", big_spawn),
    ];
    let v = rt().trustee(t).entrust(0u64);
    eprintln!(
        "op {} to trustee {t} from worker {}",
        OPS[op].0,
        trust_core::local_trustee().index()
    );
    (OPS[op].1)(&v)
}

/// README "Delegation", Fibers: "`apply`, `apply_then`, `apply_with`, `launch` and `spawn` box a closure or
/// argument over 512 bytes as they receive it, but the caller's own copies remain (about four of the value in
/// a debug build, so a 64 KiB array by value overflows a 256 KiB fiber stack there; a 32 KiB one fits).
/// `apply_async` puts its closure in the request's allocation when the future is made". From a fiber with the
/// default 256 KiB stack, a 32 KiB array goes by value (captured, or as the argument) through each of them,
/// to the fiber's own trustee and to the other one, each call in a frame of its own. Expected: every call
/// returns the array's sum (32,768: an array of ones), no overflow (the child's stderr names the op that
/// overflowed).
#[test]
fn a_32_kib_array_by_value_fits_a_default_fiber_stack_through_every_call() {
    if !in_child(
        "a_32_kib_array_by_value_fits_a_default_fiber_stack_through_every_call",
        &[],
        30,
    ) {
        return;
    }
    let _ = common::quiet();
    common::calibrate();
    for w in 0..2 {
        let got = common::spawn_on(w, move || {
            let mut sums = Vec::new();
            // `apply_async` last: it is the one that overflows. Found: the other five fit, to either trustee;
            // `apply_async` of the 32 KiB capture aborts ("fiber ... has overflowed its 256 KiB stack"): the
            // closure is copied by value through `apply_async` (api/trust.rs:247), `ApplyFuture::new` and its
            // `Apply { f }` (api/future.rs:51-56) and `Unsent::new`'s `Box::new(Node { .. ManuallyDrop::new(job) })`
            // (trustee/oneshot.rs:77-88) before it reaches the heap, where the others box it as they receive it.
            for op in [0, 1, 2, 4, 5, 3] {
                for t in 0..2 {
                    sums.push(big_by_value(op, t));
                }
            }
            sums
        });
        assert_eq!(
            got.join().unwrap(),
            vec![KIB32 as u64; 12],
            "fiber on worker {w}"
        );
    }
    common::child_ok();
}

/// README "Delegation", Fibers: "`apply_async` puts its closure in the request's allocation when the future is
/// made, so the future is small". An `apply_async` future whose closure captures 32 KiB: at most 64 bytes.
#[test]
fn an_apply_async_future_is_small_whatever_its_closure_captures() {
    let v = rt().trustee(0).entrust(0u64);
    let got = within(10, move || {
        let big = ones();
        let f = v.apply_async(move |_| sum(&big));
        let size = std::mem::size_of_val(&f);
        (size, block_on(f))
    });
    assert!(got.0 <= 64, "the future takes {} bytes", got.0);
    assert_eq!(got.1, KIB32 as u64);
}
