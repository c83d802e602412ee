// Lock orders come only from `lock_ranks!`: `LockAfter` is sealed. This impl would let two `Account`
// locks nest, one inside the other, so two threads could take a pair in opposite orders and deadlock;
// the error names `lock_ranks!`.
use trust_core::lock::LockAfter;
use trust_core::lock_ranks;

lock_ranks! { Account; }

impl LockAfter<Account> for Account {}

fn main() {}
