// A method written as a raw identifier is checked by its name: `r#into_inner` is `into_inner`, a method of
// `Trust<T>` that method lookup finds before the stub (review 39 found the check bypassed, and the call on
// the handle reaching `Trust::into_inner`, with a type mismatch far from the cause).
use trust_core::entrust;

#[entrust]
pub struct Job {
    runs: u32,
}

#[entrust]
impl Job {
    pub fn r#into_inner(&self) -> u32 {
        self.runs
    }
}

fn main() {
    let job = entrust(Job { runs: 2 });
    let runs: u32 = job.into_inner();
    assert_eq!(runs, 2);
}
