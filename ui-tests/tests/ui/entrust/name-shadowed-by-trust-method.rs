// A method named like a method of `Trust<T>` (`apply`, `into_inner`, `clone`, ...) would get an unreachable stub.
use trust_core::entrust;

#[entrust]
pub struct Job {
    runs: u32,
}

#[entrust]
impl Job {
    pub fn apply(&mut self) -> u32 {
        self.runs += 1;
        self.runs
    }

    pub fn into_inner(&mut self) -> u32 {
        self.runs
    }
}

fn main() {}
