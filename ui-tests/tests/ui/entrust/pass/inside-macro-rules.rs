// `#[entrust]` written inside a `macro_rules!` template, with the type and the method's name from its caller, or
// the name alone: the stub's receiver and the `self` its body uses resolve alike (hygiene).
use trust_core::{Trust, entrust};

#[entrust]
pub struct Gauge {
    level: i64,
}

macro_rules! entrusted_getter {
    ($ty:ident, $name:ident, $field:ident) => {
        #[entrust]
        impl $ty {
            pub fn $name(&self) -> i64 {
                self.$field
            }
        }
    };
}

entrusted_getter!(Gauge, level, level);

macro_rules! gauge_doubler {
    ($name:ident) => {
        #[entrust]
        impl Gauge {
            pub fn $name(&self) -> i64 {
                self.level * 2
            }
        }
    };
}

gauge_doubler!(doubled);

fn main() {
    let gauge: Trust<Gauge> = entrust(Gauge { level: 7 });
    assert_eq!(gauge.level(), 7);
    assert_eq!(gauge.doubled(), 14);
}
