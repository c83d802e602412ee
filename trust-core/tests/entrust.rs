//! `#[entrust]` end to end: every stub returns what the direct method call returns (100,000 random operations
//! against a local copy), `&str` / `&[T]` arguments, generic structs, several impl blocks, `skip`, the
//! non-blocking and async stubs, panics, and the function and the attribute named `entrust` side by side.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use trust_core::{Runtime, Trust, entrust, spawn, wait_pending};

/// Every test in this binary shares one runtime of 2 workers, whatever the machine.
fn rt() -> &'static Runtime {
    static RT: OnceLock<&'static Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::builder()
            .workers(2)
            .build()
            .expect("first runtime of this process")
    })
}

/// The `Account` of ../shared/DESIGN.md section 3.2.
#[entrust]
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Account {
    balance: i64,
    memo: String,
}

#[entrust]
impl Account {
    /// Adds `amount` and returns the new balance.
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

    /// An associated function: left as it is, no stub.
    pub fn with_balance(balance: i64) -> Self {
        Account {
            balance,
            memo: String::new(),
        }
    }
}

/// A second impl block of the same struct, with `skip` and `Self` in a signature.
#[entrust]
impl Account {
    pub fn memo(&self) -> String {
        self.memo.clone()
    }

    /// `Self` in a stub's signature means `Account`, not the stubs type.
    pub fn snapshot(&self) -> Self {
        self.clone()
    }

    /// Withdraws if the balance allows; an error names the shortfall.
    pub fn withdraw(&mut self, amount: i64) -> Result<i64, String> {
        if amount > self.balance {
            return Err(format!("short by {}", amount - self.balance));
        }
        self.balance -= amount;
        Ok(self.balance)
    }

    #[entrust(skip)]
    pub fn balance_ref(&self) -> &i64 {
        &self.balance
    }

    pub fn fail(&mut self, message: &str) {
        panic!("{message}")
    }
}

#[test]
fn design_example() {
    rt();
    let acct: Trust<Account> = entrust(Account::with_balance(0));
    assert_eq!(acct.deposit(10), 10);
    assert_eq!(acct.balance(), 10);
    acct.set_memo("rent");
    assert_eq!(acct.memo(), "rent");
    assert_eq!(acct.withdraw(25), Err("short by 15".to_owned()));
    assert_eq!(acct.withdraw(4), Ok(6));
    assert_eq!(
        acct.snapshot(),
        Account {
            balance: 6,
            memo: "rent".into()
        }
    );
    // The skipped method has no stub, but `apply` still reaches it.
    assert_eq!(acct.apply(|a| *a.balance_ref()), 6);
}

#[test]
fn long_strings_and_empty_ones() {
    let acct = rt().trustee(1).entrust(Account::default());
    let long = "x".repeat(10_000);
    acct.set_memo(&long);
    assert_eq!(acct.memo(), long);
    acct.set_memo("");
    assert_eq!(acct.memo(), "");
    acct.set_memo("naïve ünïcödé ✓");
    assert_eq!(acct.memo(), "naïve ünïcödé ✓");
}

#[test]
fn a_panic_in_the_method_resumes_in_the_caller() {
    let acct = rt().trustee(0).entrust(Account::with_balance(3));
    let payload = catch_unwind(AssertUnwindSafe(|| acct.fail("overdrawn"))).unwrap_err();
    assert_eq!(payload.downcast_ref::<String>().unwrap(), "overdrawn");
    assert_eq!(acct.deposit(1), 4, "the property stays usable");
}

#[test]
fn non_blocking_stubs_run_their_continuations_in_issue_order() {
    use std::cell::RefCell;
    use std::rc::Rc;
    let acct = rt().trustee(1).entrust(Account::default());
    let seen = Rc::new(RefCell::new(Vec::new()));
    for i in 1..=100 {
        let seen = seen.clone();
        acct.deposit_then(i, move |b| seen.borrow_mut().push(b));
    }
    let done = Rc::new(RefCell::new(false));
    let d = done.clone();
    acct.set_memo_then("then", move || *d.borrow_mut() = true);
    wait_pending();
    let expected: Vec<i64> = (1..=100)
        .scan(0, |s, i| Some(*s + i).inspect(|&v| *s = v))
        .collect();
    assert_eq!(*seen.borrow(), expected);
    assert!(*done.borrow());
    assert_eq!(acct.memo(), "then");
}

#[test]
fn async_stubs_work_under_tokio() {
    let acct = rt().trustee(0).entrust(Account::with_balance(100));
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let total = tokio.block_on(async {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let acct = acct.clone();
                tokio::spawn(async move {
                    for _ in 0..100 {
                        acct.deposit_async(1).await;
                    }
                    acct.set_memo_async("async").await;
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        acct.balance_async().await
    });
    assert_eq!(total, 900);
    assert_eq!(acct.memo(), "async");
}

/// A generic struct: its stubs are generic too, with the struct's bounds.
#[entrust]
#[derive(Debug)]
pub struct Stack<T: Clone + Send + 'static> {
    items: Vec<T>,
}

#[entrust]
impl<T: Clone + Send + 'static> Stack<T> {
    pub fn push(&mut self, item: T) -> usize {
        self.items.push(item);
        self.items.len()
    }

    pub fn extend(&mut self, items: &[T]) -> usize {
        self.items.extend_from_slice(items);
        self.items.len()
    }

    pub fn pop(&mut self) -> Option<T> {
        self.items.pop()
    }

    pub fn to_vec(&self) -> Vec<T> {
        self.items.clone()
    }
}

/// A method whose bound is on the struct's parameter, in the method's own `where` clause.
#[entrust]
impl<T: Clone + Send + 'static> Stack<T> {
    pub fn total(&self) -> T
    where
        T: std::iter::Sum<T>,
    {
        self.items.iter().cloned().sum()
    }
}

#[test]
fn generic_structs_and_slices() {
    let numbers = rt().trustee(1).entrust(Stack::<u64> { items: vec![] });
    assert_eq!(numbers.push(1), 1);
    assert_eq!(numbers.extend(&[2, 3, 4]), 4);
    assert_eq!(numbers.extend(&(5..=100).collect::<Vec<_>>()), 100);
    assert_eq!(numbers.total(), 5050);
    assert_eq!(numbers.pop(), Some(100));
    let words = rt().trustee(0).entrust(Stack::<String> { items: vec![] });
    let owned = vec!["a".to_owned(), "b".to_owned()];
    assert_eq!(words.extend(&owned), 2);
    assert_eq!(words.to_vec(), owned);
    assert_eq!(words.pop().as_deref(), Some("b"));
}

#[test]
fn fibers_share_a_property_through_stubs() {
    let acct = rt().trustee(0).entrust(Account::default());
    let fibers: Vec<_> = (0..32)
        .map(|_| {
            let acct = acct.clone();
            spawn(move || (0..200).map(|_| acct.deposit(1)).max().unwrap())
        })
        .collect();
    let highest = fibers.into_iter().map(|f| f.join().unwrap()).max();
    assert_eq!(highest, Some(6400));
    assert_eq!(acct.balance(), 6400);
}

/// A struct with every kind of argument, for the random comparison.
#[entrust]
#[derive(Debug, Clone, Default, PartialEq)]
struct Ledger {
    balance: i64,
    names: Vec<String>,
    bytes: Vec<u8>,
    ops: u64,
}

#[entrust]
impl Ledger {
    fn add(&mut self, amount: i64) -> i64 {
        self.ops += 1;
        self.balance = self.balance.wrapping_add(amount);
        self.balance
    }

    fn take(&mut self, amount: i64) -> Result<i64, i64> {
        self.ops += 1;
        if amount > self.balance {
            return Err(self.balance);
        }
        self.balance -= amount;
        Ok(self.balance)
    }

    fn name(&mut self, name: &str, times: usize) -> usize {
        self.ops += 1;
        for _ in 0..times {
            self.names.push(name.to_owned());
        }
        self.names.len()
    }

    fn append(&mut self, bytes: &[u8]) -> u64 {
        self.ops += 1;
        self.bytes.extend_from_slice(bytes);
        self.bytes.iter().map(|&b| u64::from(b)).sum()
    }

    fn last_name(&self) -> Option<String> {
        self.names.last().cloned()
    }

    fn truncate(&mut self, (names, bytes): (usize, usize)) -> (usize, usize) {
        self.ops += 1;
        self.names.truncate(names);
        self.bytes.truncate(bytes);
        (self.names.len(), self.bytes.len())
    }

    fn state(&self) -> (i64, usize, usize, u64) {
        (self.balance, self.names.len(), self.bytes.len(), self.ops)
    }
}

/// xorshift64*: a reproducible sequence without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Drives `remote` and a local copy with the same `ops` random operations from `seed`, comparing every
/// result; returns the local copy.
fn random_operations(seed: u64, ops: usize, remote: &Trust<Ledger>) -> Ledger {
    let words = ["", "a", "rent", "groceries", "ünïcödé", &"long".repeat(40)];
    let mut local = Ledger::default();
    let (r, l) = (remote, &mut local);
    let mut rng = Rng(seed);
    let mut bytes = Vec::new();
    for _ in 0..ops {
        match rng.below(7) {
            0 => {
                let amount = rng.below(1000) as i64 - 300;
                assert_eq!(r.add(amount), l.add(amount));
            }
            1 => {
                let amount = rng.below(800) as i64;
                assert_eq!(r.take(amount), l.take(amount));
            }
            2 => {
                let word = words[rng.below(words.len() as u64) as usize];
                let times = rng.below(3) as usize;
                assert_eq!(r.name(word, times), l.name(word, times));
            }
            3 => {
                bytes.clear();
                bytes.extend((0..rng.below(100)).map(|_| rng.next() as u8));
                assert_eq!(r.append(&bytes), l.append(&bytes));
            }
            4 => assert_eq!(r.last_name(), l.last_name()),
            5 => {
                let cut = (rng.below(50) as usize, rng.below(500) as usize);
                assert_eq!(r.truncate(cut), l.truncate(cut));
            }
            _ => assert_eq!(r.state(), l.state()),
        }
    }
    local
}

/// 100,000 operations in all: 8 fibers, each with its own ledger on the *other* worker's trustee (so every
/// call crosses threads) and its own local copy; many calls in flight keep this fast in debug builds.
#[test]
fn hundred_thousand_random_operations_match_direct_calls() {
    const FIBERS: usize = 8;
    const OPS: usize = 100_000 / FIBERS;
    let fibers: Vec<_> = (0..FIBERS)
        .map(|f| {
            // `spawn` places fibers round-robin over the 2 workers; the ledger goes to the other one.
            let remote = rt().trustee((f + 1) % 2).entrust(Ledger::default());
            spawn(move || {
                let local = random_operations(0x9e37_79b9_7f4a_7c15 ^ f as u64, OPS, &remote);
                (remote, local)
            })
        })
        .collect();
    let mut ops = 0;
    for fiber in fibers {
        let (remote, local) = fiber.join().unwrap();
        assert_eq!(remote.apply(|l| l.clone()), local);
        ops += local.ops;
    }
    // 5 of the 7 kinds of operation mutate (and count themselves): about 5/7 of 100,000, exactly this many
    // for these seeds.
    assert_eq!(ops, 71_213);
}

/// The function `trust_core::entrust` and the attribute `#[trust_core::entrust]` in one file, by full path.
mod both_namespaces {
    #[trust_core::entrust]
    #[derive(Debug)]
    pub struct Counter(u64);

    #[trust_core::entrust]
    impl Counter {
        pub fn bump(&mut self) -> u64 {
            self.0 += 1;
            self.0
        }
    }

    #[test]
    fn function_and_attribute_coexist() {
        super::rt();
        let c = trust_core::entrust(Counter(5));
        assert_eq!(c.bump(), 6);
        let n = trust_core::entrust(5u8);
        assert_eq!(n.apply(|n| *n), 5);
    }
}

/// The stubs' own locals (`this`, `args`, `then`, `result`, `future`) are hygienic: parameters of those names
/// are the user's. The impl block may live in another module than the struct and name it by path.
mod hygiene_and_paths {
    pub mod model {
        #[trust_core::entrust]
        #[derive(Debug, Default)]
        pub struct Names {
            pub sum: i64,
        }
    }

    pub mod logic {
        #[trust_core::entrust]
        impl super::model::Names {
            pub fn mix(
                &mut self,
                this: i64,
                args: i64,
                then: i64,
                result: i64,
                future: i64,
            ) -> i64 {
                self.sum += this * 10_000 + args * 1000 + then * 100 + result * 10 + future;
                self.sum
            }
        }
    }

    #[test]
    fn user_names_do_not_clash_with_generated_ones() {
        super::rt();
        let names = trust_core::entrust(model::Names::default());
        assert_eq!(names.mix(1, 2, 3, 4, 5), 12_345);
        let seen = std::rc::Rc::new(std::cell::Cell::new(0));
        let s = seen.clone();
        names.mix_then(1, 1, 1, 1, 1, move |v| s.set(v));
        trust_core::wait_pending();
        assert_eq!(seen.get(), 12_345 + 11_111);
    }
}

/// `&T` arguments (`T: Clone + Send + 'static`), as `HashMap::get` takes its key: the value is cloned into the
/// request and the method gets a reference to the clone; each clone happens on the caller, once per call.
mod reference_arguments {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static CLONES: AtomicUsize = AtomicUsize::new(0);

    /// A key that counts its clones.
    #[derive(Debug, PartialEq, Eq, Hash)]
    pub struct Key(pub String);

    impl Clone for Key {
        fn clone(&self) -> Self {
            CLONES.fetch_add(1, Ordering::Relaxed);
            Key(self.0.clone())
        }
    }

    #[trust_core::entrust]
    #[derive(Debug, Default)]
    pub struct Table {
        map: HashMap<Key, u64>,
    }

    #[trust_core::entrust]
    impl Table {
        pub fn insert(&mut self, key: Key, value: u64) -> Option<u64> {
            self.map.insert(key, value)
        }

        pub fn get(&self, key: &Key) -> Option<u64> {
            self.map.get(key).copied()
        }

        // A named lifetime on purpose: `&'a Key` is cloned like `&Key`.
        #[allow(clippy::needless_lifetimes)]
        pub fn add<'a>(&mut self, key: &'a Key, amount: &u64, name: &str) -> u64 {
            let v = self.map.entry(key.clone()).or_insert(0);
            *v += *amount + name.len() as u64;
            *v
        }

        pub fn sum_of(&self, keys: &(Key, Key)) -> u64 {
            [&keys.0, &keys.1]
                .into_iter()
                .filter_map(|k| self.map.get(k))
                .sum()
        }
    }

    #[test]
    fn reference_arguments_are_cloned_into_the_request() {
        super::rt();
        let table = trust_core::entrust(Table::default());
        let a = Key("a".to_owned());
        let b = Key("b".to_owned());
        assert_eq!(table.insert(Key("a".to_owned()), 7), None);
        let before = CLONES.load(Ordering::Relaxed);
        assert_eq!(table.get(&a), Some(7));
        assert_eq!(table.get(&b), None);
        // One clone per `&Key` argument, made by the stub.
        assert_eq!(CLONES.load(Ordering::Relaxed) - before, 2);
        // `&'a Key` and `&u64` beside `&str`; the method clones the key once more to insert it.
        assert_eq!(table.add(&b, &5, "xyz"), 8);
        assert_eq!(table.add(&b, &1, ""), 9);
        assert_eq!(table.sum_of(&(a.clone(), b.clone())), 16);
        let got = std::rc::Rc::new(std::cell::Cell::new(None));
        let g = got.clone();
        table.get_then(&a, move |v| g.set(v));
        trust_core::wait_pending();
        assert_eq!(got.get(), Some(7));
        let fut = table.get_async(&b);
        drop(b);
        let tokio = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(tokio.block_on(fut), Some(9));
        assert_eq!(a, Key("a".to_owned()));
    }
}
