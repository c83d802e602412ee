//! `kv`: a `HashMap<u64, u64>` of 1M keys, 90% reads and 10% writes (a write increments the key's value),
//! keys drawn Zipf(0.99): a handful of keys take most operations. Every map is filled with all keys first,
//! so every read hits. The final check: the sum of all values grew by exactly the writes done.
//!
//! Keys come from one precomputed stream (`bit 63` marks a write), each thread starting at its own offset,
//! so the generator's cost is not measured and every implementation sees the same mix.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};

use dashmap::DashMap;
use trust_core::{Runtime, Trust};

use crate::counter::{FIBERS_PER_WORKER, count_then, pipelined};
use crate::harness::{Bench, Padded, Stop, check};
use crate::rng::{Rng, Zipf};

const SCENARIO: &str = "kv";
const KEYS: u64 = 1 << 20;
const STREAM: usize = 1 << 20;
const WRITE: u64 = 1 << 63;
const LOCK_SHARDS: usize = 16;

/// The operation stream, computed once.
fn stream() -> &'static [u64] {
    static STREAM_CELL: OnceLock<Box<[u64]>> = OnceLock::new();
    STREAM_CELL.get_or_init(|| {
        let zipf = Zipf::new(KEYS, 0.99);
        let mut rng = Rng::new(42);
        (0..STREAM)
            .map(|_| {
                let key = zipf.sample(&mut rng);
                if rng.next_u64().is_multiple_of(10) {
                    key | WRITE
                } else {
                    key
                }
            })
            .collect()
    })
}

/// Which shard holds `key`: a multiplicative hash, so the hot (small) keys spread over the shards.
#[inline]
fn shard(key: u64, shards: usize) -> usize {
    ((key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize) % shards
}

fn filled(keys: impl Iterator<Item = u64>) -> HashMap<u64, u64> {
    keys.map(|k| (k, 0)).collect()
}

fn sharded(shards: usize) -> Vec<HashMap<u64, u64>> {
    (0..shards)
        .map(|s| filled((0..KEYS).filter(|&k| shard(k, shards) == s)))
        .collect()
}

/// One thread's walk along the stream, from its own offset; counts the writes it hands out.
struct Walk {
    stream: &'static [u64],
    at: usize,
    writes: u64,
}

impl Walk {
    fn new(thread: usize) -> Self {
        Walk {
            stream: stream(),
            at: thread.wrapping_mul(65_537) % STREAM,
            writes: 0,
        }
    }

    /// The next key, and whether the operation is a write.
    #[inline]
    fn next(&mut self) -> (u64, bool) {
        let e = self.stream[self.at];
        self.at = (self.at + 1) % STREAM;
        let write = e & WRITE != 0;
        self.writes += u64::from(write);
        (e & !WRITE, write)
    }
}

/// Runs the walk of thread `t` until the stop, with blocking reads and writes; returns the operations done
/// and adds the writes to `writes`.
#[inline]
fn drive(
    t: usize,
    stop: &Stop,
    writes: &AtomicU64,
    mut read: impl FnMut(u64),
    mut write: impl FnMut(u64),
) -> u64 {
    let mut walk = Walk::new(t);
    let mut ops = 0;
    while stop.running() {
        match walk.next() {
            (k, true) => write(k),
            (k, false) => read(k),
        }
        ops += 1;
    }
    writes.fetch_add(walk.writes, Ordering::Relaxed);
    ops
}

/// A lock-based map: what the shared thread body needs.
trait Kv: Sync {
    fn get(&self, k: u64) -> u64;
    fn bump(&self, k: u64);
    fn total(&self) -> u64;
}

impl Kv for Mutex<HashMap<u64, u64>> {
    fn get(&self, k: u64) -> u64 {
        self.lock().unwrap()[&k]
    }
    fn bump(&self, k: u64) {
        *self.lock().unwrap().get_mut(&k).unwrap() += 1;
    }
    fn total(&self) -> u64 {
        self.lock().unwrap().values().sum()
    }
}

impl Kv for RwLock<HashMap<u64, u64>> {
    fn get(&self, k: u64) -> u64 {
        self.read().unwrap()[&k]
    }
    fn bump(&self, k: u64) {
        *self.write().unwrap().get_mut(&k).unwrap() += 1;
    }
    fn total(&self) -> u64 {
        self.read().unwrap().values().sum()
    }
}

impl<M: Kv + Send> Kv for Vec<Padded<M>> {
    fn get(&self, k: u64) -> u64 {
        self[shard(k, self.len())].get(k)
    }
    fn bump(&self, k: u64) {
        self[shard(k, self.len())].bump(k)
    }
    fn total(&self) -> u64 {
        self.iter().map(|m| m.total()).sum()
    }
}

impl Kv for DashMap<u64, u64> {
    fn get(&self, k: u64) -> u64 {
        *DashMap::get(self, &k).unwrap()
    }
    fn bump(&self, k: u64) {
        *self.get_mut(&k).unwrap() += 1;
    }
    fn total(&self) -> u64 {
        self.iter().map(|e| *e.value()).sum()
    }
}

fn locked<K: Kv>(b: &mut Bench, imp: &'static str, n: usize, kv: &K) {
    let writes = AtomicU64::new(0);
    let before = kv.total();
    b.threads(SCENARIO, imp, n, |t, stop| {
        let mut sum = 0u64;
        let ops = drive(t, stop, &writes, |k| sum += kv.get(k), |k| kv.bump(k));
        black_box(sum);
        ops
    });
    check(SCENARIO, imp, n, writes.into_inner(), kv.total() - before);
}

fn trust_total(shards: &[Trust<HashMap<u64, u64>>]) -> u64 {
    shards
        .iter()
        .map(|s| s.apply(|m| m.values().sum::<u64>()))
        .sum()
}

pub fn run(b: &mut Bench, rt: &Runtime) {
    stream();
    let std_mutex = Mutex::new(filled(0..KEYS));
    let std_rwlock = RwLock::new(filled(0..KEYS));
    let std_mutex_x16: Vec<Padded<Mutex<_>>> = sharded(LOCK_SHARDS)
        .into_iter()
        .map(|m| Padded(Mutex::new(m)))
        .collect();
    let std_rwlock_x16: Vec<Padded<RwLock<_>>> = sharded(LOCK_SHARDS)
        .into_iter()
        .map(|m| Padded(RwLock::new(m)))
        .collect();
    let dash: DashMap<u64, u64> = (0..KEYS).map(|k| (k, 0)).collect();
    // One shard per trustee, each built here and moved to its trustee.
    let trust: &'static [Trust<HashMap<u64, u64>>] = Box::leak(
        sharded(rt.workers())
            .into_iter()
            .enumerate()
            .map(|(i, m)| rt.trustee(i).entrust(m))
            .collect::<Box<[_]>>(),
    );
    let workers = rt.workers();

    for &n in &b.cfg.threads.clone() {
        locked(b, "std_mutex", n, &std_mutex);
        locked(b, "std_rwlock", n, &std_rwlock);
        locked(b, "std_mutex_x16", n, &std_mutex_x16);
        locked(b, "std_rwlock_x16", n, &std_rwlock_x16);
        locked(b, "dashmap", n, &dash);

        let writes = AtomicU64::new(0);
        let before = trust_total(trust);
        b.threads(SCENARIO, "trust_apply", n, |t, stop| {
            let mut sum = 0u64;
            let ops = drive(
                t,
                stop,
                &writes,
                |k| sum += trust[shard(k, workers)].apply(move |m| m[&k]),
                |k| trust[shard(k, workers)].apply(move |m| *m.get_mut(&k).unwrap() += 1),
            );
            black_box(sum);
            ops
        });
        check(
            SCENARIO,
            "trust_apply",
            n,
            writes.into_inner(),
            trust_total(trust) - before,
        );

        let writes = AtomicU64::new(0);
        let before = trust_total(trust);
        b.threads(SCENARIO, "trust_apply_then", n, |t, stop| {
            let mut walk = Walk::new(t);
            let ops = pipelined(stop, || match walk.next() {
                (k, true) => trust[shard(k, workers)]
                    .apply_then(move |m| *m.get_mut(&k).unwrap() += 1, count_then),
                (k, false) => trust[shard(k, workers)].apply_then(move |m| m[&k], count_then),
            });
            writes.fetch_add(walk.writes, Ordering::Relaxed);
            ops
        });
        check(
            SCENARIO,
            "trust_apply_then",
            n,
            writes.into_inner(),
            trust_total(trust) - before,
        );

        let writes = std::sync::Arc::new(AtomicU64::new(0));
        let before = trust_total(trust);
        let w = writes.clone();
        b.fibers(
            SCENARIO,
            "trust_fibers",
            n,
            FIBERS_PER_WORKER,
            move |f, stop| {
                let mut sum = 0u64;
                let ops = drive(
                    f,
                    stop,
                    &w,
                    |k| sum += trust[shard(k, workers)].apply(move |m| m[&k]),
                    |k| trust[shard(k, workers)].apply(move |m| *m.get_mut(&k).unwrap() += 1),
                );
                black_box(sum);
                ops
            },
        );
        check(
            SCENARIO,
            "trust_fibers",
            n,
            writes.load(Ordering::Relaxed),
            trust_total(trust) - before,
        );
    }
    b.table(
        SCENARIO,
        "`*_x16`: 16 shards, each its own lock and map. `trust_*`: one shard per trustee (2). \
         `trust_apply_then`: reads and writes pipelined from the OS threads.",
    );
}
