// On errors the user's item is still emitted (without `#[entrust(skip)]`), with one `compile_error!` per
// problem; methods without errors keep their stubs.
use trust_core::entrust;

#[entrust]
pub enum NotAStruct {
    A,
}

#[entrust]
impl Account {
    pub fn close(self) -> i64 {
        self.balance
    }

    pub fn read_into(&self, out: &mut i64) {
        *out = self.balance;
    }

    pub fn balance(&self) -> i64 {
        self.balance
    }
}
