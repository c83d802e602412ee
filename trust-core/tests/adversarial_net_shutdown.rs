//! `Runtime::shutdown` while fibers are blocked in `accept` and `read` (its own process: shutdown is final).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

mod common;
use common::*;
use trust_core::net::TcpListener;
use trust_core::spawn;

/// README.md: "`Runtime::shutdown` shuts down every socket a fiber waited on". The peer of a fiber blocked
/// in `read` sees the connection end; a listener a fiber blocked in `accept` on stops accepting; shutdown
/// itself returns promptly.
#[test]
fn shutdown_with_fibers_blocked_in_accept_and_read() {
    rt();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let _acceptor = spawn(move || {
        let r = l.accept();
        let _ = r.map(|(s, _)| s);
    });
    let l2 = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr2 = l2.local_addr().unwrap();
    let mut peer = std::net::TcpStream::connect(addr2).unwrap();
    let (s, _) = l2.accept().unwrap();
    let _reader = spawn(move || {
        let mut s = s;
        let mut b = [0u8; 8];
        let _ = s.read(&mut b);
        let _ = s.read(&mut b);
    });
    peer.write_all(b"x").unwrap(); // first read returns, second waits
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    rt().shutdown();
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(6), "shutdown took {took:?}");
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 8];
    let r = peer.read(&mut b);
    assert!(
        matches!(r, Ok(0))
            || r.as_ref()
                .is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut),
        "peer of a fiber blocked in read did not see the end: {r:?}"
    );
    // The listener a fiber waited on in accept: shut down, so new connections fail or are reset.
    let c = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2));
    match c {
        Err(_) => {}
        Ok(mut c) => {
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let r = c.read(&mut b);
            assert!(
                !matches!(r, Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
                "connect to a shut-down listener hangs: {r:?}"
            );
        }
    }
    // Sockets after shutdown on a plain thread still work like std's.
    let l3 = TcpListener::bind("127.0.0.1:0").unwrap();
    let a3 = l3.local_addr().unwrap();
    let t = std::thread::spawn(move || l3.accept().map(|_| ()).map_err(|e| e.kind()));
    let _c3 = std::net::TcpStream::connect(a3).unwrap();
    assert_eq!(t.join().unwrap(), Ok(()));
}
