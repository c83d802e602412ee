//! `#[entrust]` with shapes the docs do not exclude: pattern arguments, `mut` bindings, `_` arguments, const
//! generics, where clauses, an explicit `self: &Self` receiver, and a Drop impl that panics.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use trust_core::{Runtime, Trust, entrust, wait_pending};

fn rt() -> &'static Runtime {
    static RT: std::sync::OnceLock<&'static Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| Runtime::builder().workers(2).build().unwrap())
}

#[entrust]
#[derive(Debug)]
pub struct Shapes<const N: usize> {
    cells: [u64; N],
}

#[entrust]
impl<const N: usize> Shapes<N> {
    pub fn put(&mut self, (i, v): (usize, u64)) -> u64 {
        self.cells[i % N] = v;
        self.cells.iter().sum()
    }
    pub fn bump(&mut self, mut by: u64, _: u8) -> u64 {
        by += 1;
        self.cells[0] += by;
        self.cells[0]
    }
    #[allow(
        clippy::needless_arbitrary_self_type,
        reason = "the macro must accept the explicit form too"
    )]
    pub fn len_typed(self: &Self) -> usize {
        N
    }
}

#[entrust]
#[derive(Debug)]
pub struct Wh<T>
where
    T: Send + 'static,
{
    items: Vec<T>,
}

#[entrust]
impl<T> Wh<T>
where
    T: Clone + Send + 'static,
{
    pub fn push(&mut self, t: T) -> usize {
        self.items.push(t);
        self.items.len()
    }
    pub fn push_ref(&mut self, t: &T) -> usize {
        self.items.push(t.clone());
        self.items.len()
    }
}

#[test]
fn entrust_const_generics_pattern_args_and_where_clauses() {
    let rt = rt();
    let s: Trust<Shapes<4>> = rt.trustee(0).entrust(Shapes { cells: [0; 4] });
    assert_eq!(s.put((1, 5)), 5);
    assert_eq!(s.put((6, 7)), 12);
    assert_eq!(s.bump(1, 0), 2);
    assert_eq!(s.len_typed(), 4);
    let w: Trust<Wh<String>> = rt.trustee(1).entrust(Wh { items: vec![] });
    assert_eq!(w.push("a".into()), 1);
    assert_eq!(w.push_ref(&"b".to_string()), 2);
    w.push_then("c".into(), |n| assert_eq!(n, 3));
    wait_pending();
    assert_eq!(w.apply(|w| w.items.concat()), "abc");
}

#[derive(Debug)]
pub struct Count(Arc<AtomicUsize>);

#[entrust]
#[derive(Debug)]
pub struct Bomb {
    drops: Count,
    n: u64,
}

impl Drop for Bomb {
    fn drop(&mut self) {
        self.drops.0.fetch_add(1, Ordering::SeqCst);
        panic!("Bomb dropped");
    }
}

#[entrust]
impl Bomb {
    pub fn inc(&mut self) -> u64 {
        self.n += 1;
        self.n
    }
}

/// An entrusted struct whose Drop panics, last handle dropped from a thread, a fiber and into_inner: each
/// value dropped once, the trustee keeps serving.
#[test]
fn entrusted_struct_whose_drop_panics() {
    let rt = rt();
    let drops = Arc::new(AtomicUsize::new(0));
    for i in 0..30 {
        let b: Trust<Bomb> = rt.trustee(i % 2).entrust(Bomb {
            drops: Count(drops.clone()),
            n: 0,
        });
        assert_eq!(b.inc(), 1);
        match i % 3 {
            0 => drop(b),
            1 => trust_core::spawn(move || drop(b)).join().unwrap(),
            _ => {
                let v = b.into_inner().unwrap();
                assert_eq!(v.n, 1);
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(v)));
                assert!(r.is_err());
            }
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while drops.load(Ordering::SeqCst) < 30 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(drops.load(Ordering::SeqCst), 30);
    let t = rt.trustee(0).entrust(1u64);
    assert_eq!(t.apply(|v| *v + 1), 2);
    let t = rt.trustee(1).entrust(1u64);
    assert_eq!(t.apply(|v| *v + 2), 3);
}
