//! Workloads that deadlock with plain mutexes (two threads locking the same pair in opposite
//! orders): 4 threads move money between random pairs of 16 accounts, naming the pair in random
//! argument order. They must finish, and the money must add up exactly.

use std::thread;

use trust_core::lock::{LockAllError, LockCollection, Mutex, RetryingLockCollection, ThreadKey};
use trust_core::{lock_all, lock_ranks, try_lock_all};

const ACCOUNTS: usize = 16;
const THREADS: usize = 4;
const START: i64 = 1_000;
// Miri runs each step thousands of times slower; a few hundred transfers still interleave.
const TRANSFERS: usize = if cfg!(miri) { 200 } else { 20_000 };

/// xorshift64*: a fixed-seed generator per thread, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }

    /// Two distinct indices below `n`, in random order.
    fn pair(&mut self, n: usize) -> (usize, usize) {
        let first = self.below(n);
        let second = (first + 1 + self.below(n - 1)) % n;
        (first, second)
    }
}

fn total(accounts: &[Mutex<i64>]) -> i64 {
    let mut key = ThreadKey::get().unwrap();
    accounts.iter().map(|a| *a.lock(&mut key)).sum()
}

#[test]
fn random_pairs_in_random_order_with_lock_all() {
    let accounts: Vec<Mutex<i64>> = (0..ACCOUNTS).map(|_| Mutex::new(START)).collect();
    thread::scope(|s| {
        for t in 0..THREADS {
            let accounts = &accounts;
            s.spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1));
                let mut key = ThreadKey::get().unwrap();
                for _ in 0..TRANSFERS {
                    let (from, to) = rng.pair(ACCOUNTS);
                    let amount = rng.below(50) as i64;
                    let (mut a, mut b) = lock_all!(&mut key, accounts[from], accounts[to]);
                    *a -= amount;
                    *b += amount;
                }
            });
        }
    });
    assert_eq!(total(&accounts), START * ACCOUNTS as i64);
}

#[test]
fn lock_all_collections_and_retrying_collections_interoperate() {
    // Each thread takes pairs its own way; the sorted ones agree on one order and the retrying
    // one never waits while holding, so together they still cannot deadlock.
    let accounts: Vec<Mutex<i64>> = (0..ACCOUNTS).map(|_| Mutex::new(START)).collect();
    let duplicates = std::sync::atomic::AtomicUsize::new(0);
    thread::scope(|s| {
        for t in 0..THREADS {
            let (accounts, duplicates) = (&accounts, &duplicates);
            s.spawn(move || {
                let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (t as u64 + 7));
                let mut key = ThreadKey::get().unwrap();
                let mut moves = 0;
                for _ in 0..TRANSFERS / 4 {
                    // Not always distinct: an equal pair must be refused, never deadlock.
                    let (from, to) = (rng.below(ACCOUNTS), rng.below(ACCOUNTS));
                    let amount = rng.below(50) as i64;
                    let (a, b) = (&accounts[from], &accounts[to]);
                    let moved = match t {
                        0 => match try_lock_all!(&mut key, a, b) {
                            Ok((mut a, mut b)) => {
                                *a -= amount;
                                *b += amount;
                                true
                            }
                            Err(LockAllError::WouldBlock) => false,
                            Err(LockAllError::Duplicate { .. }) => {
                                duplicates.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                false
                            }
                        },
                        1 => LockCollection::try_new((a, b))
                            .map(|pair| {
                                pair.scoped_lock(&mut key, |(a, b)| {
                                    **a -= amount;
                                    **b += amount;
                                })
                            })
                            .is_some(),
                        2 => RetryingLockCollection::try_new((a, b))
                            .map(|pair| {
                                let mut guard = pair.lock(&mut key);
                                *guard.0 -= amount;
                                *guard.1 += amount;
                            })
                            .is_some(),
                        _ => {
                            if from == to {
                                false
                            } else {
                                let (mut a, mut b) = lock_all!(&mut key, a, b);
                                *a -= amount;
                                *b += amount;
                                true
                            }
                        }
                    };
                    moves += usize::from(moved);
                }
                assert!(moves > 0, "thread {t} never moved money");
            });
        }
    });
    assert_eq!(total(&accounts), START * ACCOUNTS as i64);
    assert!(
        duplicates.into_inner() > 0,
        "equal pairs should have come up"
    );
}

lock_ranks! {
    Branch;
    Account;
}

#[test]
fn nested_ranks_under_contention() {
    // Branch totals (rank `Branch`) are locked first, then the accounts (rank `Account`) inside
    // them: the two levels nest, and each level takes its pair by address.
    const BRANCHES: usize = 4;
    let branches: Vec<Mutex<i64, Branch>> = (0..BRANCHES)
        .map(|_| Mutex::ranked(START * (ACCOUNTS / BRANCHES) as i64))
        .collect();
    let accounts: Vec<Mutex<i64, Account>> = (0..ACCOUNTS).map(|_| Mutex::ranked(START)).collect();
    thread::scope(|s| {
        for t in 0..THREADS {
            let (branches, accounts) = (&branches, &accounts);
            s.spawn(move || {
                let mut rng = Rng(0x1234_5678_9abc_def1 ^ (t as u64 + 3));
                let mut key = ThreadKey::get().unwrap();
                for _ in 0..TRANSFERS / 4 {
                    let (from, to) = rng.pair(ACCOUNTS);
                    let amount = rng.below(50) as i64;
                    let (bf, bt) = (from % BRANCHES, to % BRANCHES);
                    if bf == bt {
                        let (_branch, mut inner) = lock_all!(&mut key, branches[bf]; nest);
                        let (mut a, mut b) = lock_all!(&mut inner, accounts[from], accounts[to]);
                        *a -= amount;
                        *b += amount;
                    } else {
                        let (mut x, mut y, mut inner) =
                            lock_all!(&mut key, branches[bf], branches[bt]; nest);
                        let (mut a, mut b) = lock_all!(&mut inner, accounts[from], accounts[to]);
                        *a -= amount;
                        *b += amount;
                        *x -= amount;
                        *y += amount;
                    }
                }
            });
        }
    });
    let mut key = ThreadKey::get().unwrap();
    let mut per_branch = [0i64; BRANCHES];
    for (i, account) in accounts.iter().enumerate() {
        per_branch[i % BRANCHES] += *account.lock(&mut key);
    }
    let branch_totals: Vec<i64> = branches.iter().map(|b| *b.lock(&mut key)).collect();
    assert_eq!(branch_totals, per_branch);
    assert_eq!(per_branch.iter().sum::<i64>(), START * ACCOUNTS as i64);
}
