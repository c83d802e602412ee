use trust_core::*;
#[test]
fn smoke() {
    let c = entrust(0u64);
    for _ in 0..1000 {
        c.apply(|c| *c += 1);
    }
    assert_eq!(c.apply(|c| *c), 1000);
    let fibers: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            spawn(move || {
                for _ in 0..1000 {
                    c.apply(|c| *c += 1)
                }
            })
        })
        .collect();
    for f in fibers {
        f.join().unwrap();
    }
    assert_eq!(c.apply(|c| *c), 9000);
}
