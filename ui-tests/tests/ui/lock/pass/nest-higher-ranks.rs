// Nesting strictly increasing ranks compiles: unranked, then `Ledger`, then two `Account`s at once
// (equal ranks together in one call), then `Audit`.
use trust_core::lock::{Mutex, RwLock, ThreadKey};
use trust_core::{lock_all, lock_ranks};

lock_ranks! { Ledger; Account; Audit; }

fn main() {
    let config = RwLock::new(String::from("cfg"));
    let ledger: Mutex<Vec<i64>, Ledger> = Mutex::ranked(Vec::new());
    let (alice, bob): (Mutex<i64, Account>, Mutex<i64, Account>) = (Mutex::ranked(10), Mutex::ranked(0));
    let audit: RwLock<u32, Audit> = RwLock::ranked(0);

    let mut key = ThreadKey::get().unwrap();
    let (cfg, mut key) = lock_all!(&mut key, read config; nest);
    let (mut log, mut key) = lock_all!(&mut key, ledger; nest);
    let (mut a, mut b, mut key) = lock_all!(&mut key, alice, bob; nest);
    let (mut n,) = lock_all!(&mut key, write audit);
    *a -= 3;
    *b += 3;
    log.push(3);
    *n += 1;
    assert_eq!((cfg.len(), *a, *b, *n), (3, 7, 3, 1));
}
