// Review 73 found this failing to compile (fixed). docs/entrust.md: "`&str`, `&[T]` and `&T` arguments
// are copied into the request"; "The `_async` futures borrow the handle". The stub copies the arguments before
// the future exists, so the future must not borrow them: but edition 2024's return-position `impl Trait`
// captures every lifetime in scope, the arguments' too: a future made from a local or temporary string cannot
// leave the function that made it (E0597/E0515/E0716 below). (A `Pin<Box<dyn Future + 'a>>` of it happens
// to compile: the stub's `+ '_` bound is all its liveness needs.)
use std::future::Future;

use trust_core::{Trust, entrust};

#[entrust]
pub struct Account {
    memo: String,
    total: u64,
}

#[entrust]
impl Account {
    pub fn set_memo(&mut self, memo: &str) -> usize {
        self.memo = memo.to_owned();
        self.memo.len()
    }
    pub fn add_all(&mut self, amounts: &[u64], extra: &u64) -> u64 {
        self.total += amounts.iter().sum::<u64>() + extra;
        self.total
    }
}

/// A helper that prepares a request from a computed string, as a future the caller awaits later.
fn memo_later(acct: &Trust<Account>, n: u64) -> impl Future<Output = usize> + Send + '_ {
    acct.set_memo_async(&format!("memo {n}"))
}

/// Futures of temporaries, collected to be joined later.
fn many(acct: &Trust<Account>) -> Vec<impl Future<Output = usize> + Send + '_> {
    (0..3u64)
        .map(|i| acct.set_memo_async(&format!("memo {i}")))
        .collect()
}

fn sum_later(acct: &Trust<Account>) -> impl Future<Output = u64> + Send + '_ {
    let amounts = vec![1, 2, 3];
    let extra = 4;
    acct.add_all_async(&amounts, &extra)
}

#[entrust]
pub struct Ring<T, const N: usize> {
    items: Vec<T>,
}

#[entrust]
impl<T: Clone + Send + 'static, const N: usize> Ring<T, N> {
    pub fn push_all(&mut self, xs: &[T]) -> usize {
        self.items.extend_from_slice(xs);
        self.items.len().min(N)
    }
    /// A receiver lifetime the argument shares: this future may borrow `tag` (the signature says so).
    pub fn tagged<'a>(&'a self, tag: &'a str) -> usize {
        tag.len() + self.items.len()
    }
    /// An early-bound lifetime (in the where clause), which the closure's type carries.
    pub fn bounded<'b>(&self, tag: &'b str) -> usize
    where
        'b: 'b,
    {
        tag.len()
    }
}

fn ring_later<T: Clone + Send + 'static, const N: usize>(
    ring: &Trust<Ring<T, N>>,
    x: T,
) -> impl Future<Output = usize> + Send + '_ {
    let xs = vec![x.clone(), x];
    ring.push_all_async(&xs)
}

fn main() {
    let ring = trust_core::entrust(Ring::<u8, 4> { items: Vec::new() });
    let tag = String::from("t");
    let _ = (
        ring_later(&ring, 1),
        ring.tagged_async(&tag),
        ring.bounded_async(&tag),
    );
    let acct = trust_core::entrust(Account {
        memo: String::new(),
        total: 0,
    });
    let _ = (memo_later(&acct, 1), many(&acct), sum_later(&acct));
}
