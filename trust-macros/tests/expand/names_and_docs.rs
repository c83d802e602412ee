// Review 94: the generated locals are `__`-prefixed (a constant in scope cannot take them over); `use<..>` only
// where it leaves a borrowed argument's lifetime out; a raw-identifier method's variants link `Self::type`; a
// hidden method's variants are hidden; a seven-parameter method's `_then` stub allows `too_many_arguments`.
use trust_core::entrust;

#[entrust]
pub struct Ledger {
    total: u64,
}

#[entrust]
impl Ledger {
    pub fn r#type(&self) -> u64 {
        self.total
    }

    pub fn memo_len(&self, memo: &str) -> usize {
        memo.len()
    }

    #[doc(hidden)]
    pub fn hidden(&mut self, (a, b): (u64, u64)) {
        self.total = a + b;
    }

    pub fn post(&mut self, a: u64, b: u64, c: u64, d: u64, e: u64, _fee: u64) -> u64 {
        self.total += a + b + c + d + e;
        self.total
    }
}
