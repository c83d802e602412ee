// A `ThreadKey` belongs to the thread that took it: it cannot be sent to another thread (E0277).
use trust_core::lock::ThreadKey;

fn main() {
    let key = ThreadKey::get().unwrap();
    std::thread::spawn(move || drop(key));
}
