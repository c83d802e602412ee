// A guard stays on the thread that took its lock, even over a raw lock whose own guards may move (`spin`'s is
// `GuardSend`): on another thread it would hold the lock while that thread's key is free, and could wait for
// more locks there (E0277).
use trust_core::lock::{Mutex, ThreadKey, Unranked};

type SpinRaw = spin::mutex::Mutex<()>;

fn main() {
    let m: Mutex<u8, Unranked, SpinRaw> = Mutex::from_raw(<SpinRaw as lock_api::RawMutex>::INIT, 0);
    let mut key = ThreadKey::get().unwrap();
    let (guard,) = trust_core::lock_all!(&mut key, m);
    std::thread::scope(|s| {
        s.spawn(move || drop(guard));
    });
}
