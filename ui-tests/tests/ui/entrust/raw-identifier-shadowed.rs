// REVIEW 39 FINDING. docs/entrust.md: "a method named like a method of `Trust<T>` (`apply`, ..., `into_inner`,
// `clone`, ...): its stub could never be reached" is a compile error. Written as a raw identifier
// (`r#into_inner`, the same name), the check is bypassed: the stub is generated, and the call on the handle
// reaches `Trust::into_inner` instead (here a type mismatch far from the cause).
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
