// The guards of a `Vec` (or slice, or `Box<[_]>`) collection are a `Guards`, used as a slice: nothing can take
// them out whole and leave the collection's guard empty (a `Box<[MutexRef]>` could be `mem::take`n), so the
// locks cannot stay held past `unlock` with the key free again.
// Expected: E0277 (`Guards<...>: Default` is not satisfied).
use trust_core::lock::{LockCollection, Mutex, ThreadKey};

fn main() {
    let all = LockCollection::new(vec![Mutex::new(1u8), Mutex::new(2u8)]);
    let mut guard = all.lock(ThreadKey::get().unwrap());
    let escaped = std::mem::take(&mut *guard);
    let _key = LockCollection::<Vec<Mutex<u8>>>::unlock(guard);
    drop(escaped);
}
