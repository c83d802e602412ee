// Review 73 found this failing to compile (fixed). `#[entrust]` inside a `macro_rules!` template, given
// the type as a `$ty:ty` or `$p:path` fragment (the usual way to pass a type; `inside-macro-rules.rs` passes an
// `$ty:ident`) and an argument type as `$arg:ty`: rustc hands such fragments to the attribute wrapped in an
// invisible group, and `#[entrust]` read `impl $ty` as "not named by its path" ("`#[entrust]` goes on the
// inherent impl block of an `#[entrust]` struct, named by its path") and `memo: $arg` with `&str` as a borrow
// ("borrows from the caller ... only `&str`, `&[T]` and `&T` ... are copied").
use trust_core::entrust;

#[entrust]
pub struct Gauge {
    level: u64,
    memo: String,
}

macro_rules! adder {
    ($ty:ty, $name:ident, $step:expr) => {
        #[entrust]
        impl $ty {
            pub fn $name(&mut self) -> u64 {
                self.level += $step;
                self.level
            }
        }
    };
}

macro_rules! getter {
    ($p:path, $name:ident) => {
        #[entrust]
        impl $p {
            pub fn $name(&self) -> u64 {
                self.level
            }
        }
    };
}

macro_rules! memo_setter {
    ($ty:ident, $arg:ty) => {
        #[entrust]
        impl $ty {
            pub fn set_memo(&mut self, memo: $arg) -> usize {
                self.memo = memo.to_owned();
                self.memo.len()
            }
        }
    };
}

adder!(Gauge, up, 2);
getter!(crate::Gauge, level);
memo_setter!(Gauge, &str);

fn main() {
    let g = entrust(Gauge {
        level: 0,
        memo: String::new(),
    });
    assert_eq!(g.up(), 2);
    assert_eq!(g.level(), 2);
    let memo = String::from("four");
    assert_eq!(g.set_memo(&memo), 4);
}
