// KNOWN LIMIT (review 39). docs/entrust.md: "`#[entrust(skip)]` on a method leaves it out". Written under
// `#[cfg_attr(..)]` (skip it only in some builds), the skip is not seen: the method is validated (and would
// get stubs), and once rustc expands the `cfg_attr` the attribute runs on the method alone and says it only
// means something inside an `#[entrust]` impl block, which is where it is.
use trust_core::entrust;

#[entrust]
pub struct Account {
    balance: i64,
}

#[entrust]
impl Account {
    pub fn balance(&self) -> i64 {
        self.balance
    }

    #[cfg_attr(all(), entrust(skip))]
    pub fn close(self) -> i64 {
        self.balance
    }
}

fn main() {}
