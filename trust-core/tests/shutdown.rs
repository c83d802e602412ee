//! Shutdown, in a process of its own: every property still entrusted is dropped exactly once, the workers
//! stop, and handles used afterwards fail loudly (apply) or do nothing (drop).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use trust_core::{Runtime, Trust};

mod common; // its `rt()` is not used here: this process builds and shuts down its own runtime
use common::{CountsDrops, eventually, panic_message, worker_cpu_ticks};

/// Counts its drop, then panics: with a message, or with a payload that panics again when dropped.
struct PanicsWhenDropped {
    drops: Arc<AtomicUsize>,
    bomb: bool,
}

impl Drop for PanicsWhenDropped {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        if self.bomb {
            std::panic::panic_any(PanicsWhenDropped {
                drops: self.drops.clone(),
                bomb: false,
            });
        }
        panic!("a property's destructor panics at shutdown");
    }
}

fn worker_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("trust-worker"))
        .count()
}

#[test]
fn shutdown_drops_every_property_exactly_once_and_stops_the_workers() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    assert_eq!(worker_threads(), 2);
    // Idle workers sleep: over half a second, together they use well under a tenth of a core.
    rt.trustee(0).entrust(0u8).apply(|v| *v += 1);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let before = worker_cpu_ticks();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let idle = worker_cpu_ticks() - before;
    assert!(idle <= 5, "idle workers used {idle} clock ticks in 500 ms");
    let drops = Arc::new(AtomicUsize::new(0));
    let mut handles: Vec<_> = (0..100)
        .map(|i| rt.trustee(i % 2).entrust(CountsDrops(drops.clone())))
        .collect();
    // Four more whose destructors panic, two of them with a payload that panics when dropped: neither may
    // stop a worker before it has dropped the rest.
    let panicking = Arc::new(AtomicUsize::new(0));
    let _panicking: Vec<_> = (0..4)
        .map(|i| {
            rt.trustee(i % 2).entrust(PanicsWhenDropped {
                drops: panicking.clone(),
                bomb: i >= 2,
            })
        })
        .collect();
    let clones: Vec<_> = handles[..10].iter().map(Clone::clone).collect();
    // Half of them lose their last handle before shutdown (their drop may still be in flight).
    handles.truncate(50);
    // Sockets fibers wait on are shut down: a listener in `accept`, a connection in `read`.
    let listener = trust_core::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    drop(trust_core::spawn(move || {
        let _ = std::io::Read::read(&mut conn, &mut [0; 1]);
    }));
    drop(trust_core::spawn(move || {
        let _ = listener.accept();
    }));
    // And 400 fibers hammer a counter on trustee 0 without end: those on worker 1 keep two batches in flight
    // and most of them wait for room, their requests still in their frames when the runtime stops.
    let hammered = rt.trustee(0).entrust(0u64);
    for _ in 0..400 {
        let hammered = hammered.clone();
        drop(trust_core::spawn(move || {
            loop {
                hammered.apply(|c| *c += 1);
            }
        }));
    }
    std::thread::sleep(std::time::Duration::from_millis(50)); // the socket fibers wait, the others hammer
    rt.shutdown();
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    assert_eq!(
        std::io::Read::read(&mut client, &mut [0; 1]).unwrap(),
        0,
        "the connection ended"
    );
    assert_eq!(
        std::net::TcpStream::connect(addr).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused,
        "the listener stopped listening"
    );
    assert_eq!(
        drops.load(Ordering::SeqCst),
        100,
        "each of the 100 values dropped exactly once"
    );
    // `shutdown` joined them; a joined thread can still be listed for a moment, because the kernel wakes
    // `join` (it clears the thread's id) before it removes the task from /proc.
    eventually("no worker thread is left", || worker_threads() == 0);
    assert_eq!(
        panicking.load(Ordering::SeqCst),
        6,
        "four destructors and the two payloads they panicked with, each dropped once"
    );

    let err = catch_unwind(AssertUnwindSafe(|| handles[0].apply(|_| ()))).unwrap_err();
    assert!(panic_message(err).contains("has been shut down"));
    // So does `apply_then`, from this thread that has called before, and its closure and continuation are
    // dropped once, outside the thread's client: a destructor that calls the runtime meets the same message.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let then = CallsWhenDropped(handles[2].clone(), seen.clone());
    let f = CallsWhenDropped(handles[3].clone(), seen.clone());
    let err = catch_unwind(AssertUnwindSafe(|| {
        handles[1].apply_then(move |_| drop(f), move |()| drop(then))
    }))
    .unwrap_err();
    assert_eq!(panic_message(err), trust_core_shut_down_message());
    assert_eq!(
        *seen.lock().unwrap(),
        vec![trust_core_shut_down_message().to_string(); 2],
        "each destructor ran once and met the shut-down message"
    );
    // The async form fails the same way instead of staying pending forever.
    let tokio = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let err = catch_unwind(AssertUnwindSafe(|| {
        tokio.block_on(handles[1].apply_async(|_| ()));
    }))
    .unwrap_err();
    assert_eq!(panic_message(err), trust_core_shut_down_message());
    drop(handles);
    drop(clones);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        100,
        "handles dropped after shutdown do nothing"
    );
}

/// Calls `apply_then` on its handle when dropped, and records how that call panicked.
struct CallsWhenDropped(Trust<CountsDrops>, Arc<std::sync::Mutex<Vec<String>>>);

impl Drop for CallsWhenDropped {
    fn drop(&mut self) {
        let err =
            catch_unwind(AssertUnwindSafe(|| self.0.apply_then(|_| (), |()| ()))).unwrap_err();
        self.1.lock().unwrap().push(panic_message(err));
    }
}

fn trust_core_shut_down_message() -> &'static str {
    "the trust runtime has been shut down: no property can be entrusted or applied to after `Runtime::shutdown`"
}
