// Local probe (not committed): one plain thread pipelines N apply_then to worker 0's trustee.
use std::cell::Cell;
use trust_core::Runtime;
thread_local! { static THENS: Cell<u64> = const { Cell::new(0) }; }
fn count_then<R>(_: R) {
    THENS.set(THENS.get() + 1);
}
fn arg(i: usize, d: u64) -> u64 {
    std::env::args()
        .nth(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or(d)
}
fn main() {
    let n = arg(1, 10_000_000);
    let rt = Runtime::builder()
        .workers(arg(2, 1) as usize)
        .build()
        .unwrap();
    let client_work = arg(3, 0);
    let t = rt.trustee(0).entrust(0u64);
    t.apply(|c| *c += 0);
    let start = std::time::Instant::now();
    let mut x = 0u64;
    for _ in 0..n {
        t.apply_then(|c| *c += 1, count_then);
        for _ in 0..client_work {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
    trust_core::wait_pending();
    let el = start.elapsed();
    assert_eq!(THENS.get(), n);
    assert_eq!(t.apply(|c| *c), n);
    let start = std::time::Instant::now();
    for _ in 0..n {
        for _ in 0..client_work {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
    let work = start.elapsed();
    println!(
        "work={client_work}: {:.1} ns/op total, work alone {:.1} ns/op",
        el.as_nanos() as f64 / n as f64,
        work.as_nanos() as f64 / n as f64
    );
}
