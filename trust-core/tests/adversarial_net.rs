//! Adversarial tests of `trust_core::net`: zero-byte and 16 MiB transfers, 10,000 connections, half-closed
//! and reset peers, timeouts racing data, sockets moved between fibers and threads, socket I/O where a fiber
//! cannot wait (README "Sockets for fibers").

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::*;
use trust_core::net::{TcpListener, TcpStream};
use trust_core::{Latch, spawn};

#[test]
fn zero_byte_reads_and_writes_do_not_wait() {
    // A 0-byte read on an idle socket waits for data, as std's blocking read does on Linux (recv(0)
    // blocks); with a byte pending it must return Ok(0) at once and leave the byte there.
    rt();
    let (s, mut _c) = pair();
    _c.write_all(b"q").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let r = within(10, move || {
        spawn(move || {
            let mut s = s;
            let r = s.read(&mut []).map_err(|e| e.kind());
            let w = s.write(&[]).map_err(|e| e.kind());
            let mut one = [0u8; 1];
            let after = s.read(&mut one).map(|n| (n, one[0])).map_err(|e| e.kind());
            (r, w, after)
        })
        .join()
        .unwrap()
    });
    assert_eq!(r, (Ok(0), Ok(0), Ok((1, b'q'))));
    let (mut s, mut _c) = pair();
    _c.write_all(b"q").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(s.read(&mut []).unwrap(), 0);
    assert_eq!(s.write(&[]).unwrap(), 0);
}

#[test]
fn sixteen_mib_each_way_between_fibers() {
    rt();
    const N: usize = 16 << 20;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let pat = |i: usize| (i as u8) ^ ((i >> 8) as u8) ^ ((i >> 16) as u8);
    within(60, move || {
        let server = spawn(move || {
            let (s, _) = l.accept().unwrap();
            let s = Arc::new(s);
            let s2 = s.clone();
            let echo_writer = spawn(move || {
                let data: Vec<u8> = (0..N).map(|i| !pat(i)).collect();
                (&*s2).write_all(&data).unwrap();
            });
            let mut got = vec![0u8; N];
            (&*s).read_exact(&mut got).unwrap();
            echo_writer.join().unwrap();
            got.iter().enumerate().all(|(i, &b)| b == pat(i))
        });
        let client = spawn(move || {
            let c = Arc::new(TcpStream::connect(addr).unwrap());
            let c2 = c.clone();
            let w = spawn(move || {
                let data: Vec<u8> = (0..N).map(pat).collect();
                (&*c2).write_all(&data).unwrap();
            });
            let mut got = vec![0u8; N];
            (&*c).read_exact(&mut got).unwrap();
            w.join().unwrap();
            // Nobody writes more; the server closes after its checks: EOF.
            let ok = got.iter().enumerate().all(|(i, &b)| b == !pat(i));
            (ok, c)
        });
        let (client_ok, c) = client.join().unwrap();
        assert!(server.join().unwrap(), "server got other bytes");
        assert!(client_ok, "client got other bytes");
        let mut extra = [0u8; 1];
        assert_eq!(
            (&*c).read(&mut extra).unwrap(),
            0,
            "EOF after the server dropped"
        );
    });
}

#[test]
fn ten_thousand_connections_accepted_and_dropped_by_fibers() {
    rt();
    const N: usize = 10_000;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let s2 = served.clone();
    let acceptor = spawn(move || {
        let mut fibers = Vec::new();
        for _ in 0..N {
            let (mut c, _) = l.accept().unwrap();
            let served = s2.clone();
            fibers.push(spawn(move || {
                let mut b = [0u8; 4];
                let mut got = 0;
                loop {
                    match c.read(&mut b[got..]) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) => panic!("{e}"),
                    }
                    if got == 4 {
                        c.write_all(&b).unwrap();
                        got = 0;
                    }
                }
                served.fetch_add(1, Ordering::SeqCst);
            }));
            if fibers.len() > 256 {
                for f in fibers.drain(..) {
                    f.join().unwrap();
                }
            }
        }
        for f in fibers {
            f.join().unwrap();
        }
    });
    within(120, move || {
        let hs: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..N / 4 {
                        let mut c = std::net::TcpStream::connect(addr).unwrap();
                        let v = ((t * N + i) as u32).to_le_bytes();
                        c.write_all(&v).unwrap();
                        let mut back = [0u8; 4];
                        c.read_exact(&mut back).unwrap();
                        assert_eq!(back, v);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        acceptor.join().unwrap();
    });
    assert_eq!(served.load(Ordering::SeqCst), N);
}

#[test]
fn half_closed_connection_reply_after_eof() {
    rt();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap(); // until the client's FIN
        // The write half is still open.
        s.write_all(format!("got {}", all.len()).as_bytes())
            .unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        // Reading again after EOF is still EOF, not a hang.
        let mut b = [0u8; 8];
        s.read(&mut b).unwrap()
    });
    let reply = within(20, move || {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(&vec![1u8; 300_000]).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut r = String::new();
        c.read_to_string(&mut r).unwrap();
        (r, server.join().unwrap())
    });
    assert_eq!(reply, ("got 300000".to_string(), 0));
}

/// "A peer that resets is an `io::Error`" (README.md): a fiber blocked in `read` when the RST arrives.
#[test]
fn peer_reset_while_a_fiber_is_blocked_in_read_is_an_error() {
    rt();
    for _ in 0..5 {
        let (s, c) = pair();
        let reader = spawn(move || {
            let mut s = s;
            let mut b = [0u8; 16];
            let first = s.read(&mut b).map_err(|e| e.kind());
            let second = s.read(&mut b).map_err(|e| e.kind());
            (first, second)
        });
        std::thread::sleep(Duration::from_millis(30)); // the fiber is now waiting
        linger0(&c);
        drop(c); // RST
        let (first, _second) = within(10, move || reader.join().unwrap());
        assert_eq!(first, Err(ErrorKind::ConnectionReset));
    }
}

#[test]
fn write_timeouts_fire_in_a_fiber_and_on_a_thread() {
    rt();
    let (s, c) = pair();
    s.set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let f = spawn(move || {
        let t0 = Instant::now();
        let chunk = vec![0u8; 1 << 20];
        let mut sent = 0usize;
        let e = loop {
            match (&s).write(&chunk) {
                Ok(n) => sent += n,
                Err(e) => break e.kind(),
            }
            if sent > 1 << 30 {
                break ErrorKind::Other;
            }
        };
        (e, t0.elapsed())
    });
    let (e, took) = within(20, move || f.join().unwrap());
    assert_eq!(e, ErrorKind::TimedOut);
    assert!(took < Duration::from_secs(5), "{took:?}");
    drop(c);
    // Thread.
    let (s, _c) = pair();
    s.set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let (e, _) = within(20, move || {
        let chunk = vec![0u8; 1 << 20];
        loop {
            if let Err(e) = (&s).write(&chunk) {
                return (e.kind(), ());
            }
        }
    });
    assert_eq!(e, ErrorKind::TimedOut);
}

#[test]
fn timeout_values_zero_tiny_and_huge() {
    rt();
    let (s, mut c) = pair();
    assert_eq!(
        s.set_read_timeout(Some(Duration::ZERO)).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(s.read_timeout().unwrap(), None);
    s.set_read_timeout(Some(Duration::MAX)).unwrap();
    // As std's: a timeout past what the clock can count reads back as none.
    assert_eq!(s.read_timeout().unwrap(), None);
    s.set_write_timeout(Some(Duration::from_nanos(1))).unwrap();
    let f = spawn(move || {
        let mut b = [0u8; 3];
        let r = (&s).read_exact(&mut b).map(|_| b).map_err(|e| e.kind());
        (r, s)
    });
    std::thread::sleep(Duration::from_millis(50));
    c.write_all(b"abc").unwrap();
    let (r, s) = within(10, move || f.join().unwrap());
    assert_eq!(r, Ok(*b"abc"));
    // 1 ns read timeout with nothing to read: TimedOut promptly, then data still readable.
    s.set_read_timeout(Some(Duration::from_nanos(1))).unwrap();
    let f = spawn(move || {
        let mut b = [0u8; 1];
        let first = (&s).read(&mut b).map_err(|e| e.kind());
        (first, s)
    });
    let (first, s) = within(10, move || f.join().unwrap());
    assert_eq!(first, Err(ErrorKind::TimedOut));
    c.write_all(b"z").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let f = spawn(move || {
        let mut b = [0u8; 1];
        (&s).read(&mut b).map(|_| b[0]).map_err(|e| e.kind())
    });
    assert_eq!(within(10, move || f.join().unwrap()), Ok(b'z'));
}

/// Timeouts racing data arrival on many fibers: each read ends either with data or TimedOut, and after a
/// TimedOut the data that arrives is still read (no lost wake-up through stale deadlines / reused ids).
#[test]
fn timeouts_racing_data_never_lose_a_wakeup() {
    rt();
    let pairs: Vec<_> = (0..200).map(|_| pair()).collect();
    let mut fibers = Vec::new();
    let mut clients = Vec::new();
    for (i, (s, c)) in pairs.into_iter().enumerate() {
        s.set_read_timeout(Some(Duration::from_micros(500 + (i as u64 % 7) * 300)))
            .unwrap();
        fibers.push(spawn(move || {
            let mut b = [0u8; 1];
            let mut timeouts = 0;
            loop {
                match (&s).read(&mut b) {
                    Ok(1) => return (b[0], timeouts),
                    Ok(_) => panic!("EOF"),
                    Err(e) if e.kind() == ErrorKind::TimedOut => timeouts += 1,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
        clients.push(c);
    }
    let results = within(30, move || {
        for (i, c) in clients.iter_mut().enumerate() {
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            c.write_all(&[i as u8]).unwrap();
        }
        let r: Vec<_> = fibers.into_iter().map(|f| f.join().unwrap()).collect();
        drop(clients);
        r
    });
    for (i, (b, _)) in results.iter().enumerate() {
        assert_eq!(*b, i as u8);
    }
}

#[test]
fn socket_io_in_an_apply_then_continuation_panics_naming_spawn() {
    rt();
    let l = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = l.local_addr().unwrap();
    let msg = Arc::new(std::sync::Mutex::new(None::<String>));
    let (m2, l2) = (msg.clone(), l.clone());
    let f = spawn(move || {
        let t = trust_core::local_trustee().entrust(0u32);
        t.apply_then(
            |v| *v + 1,
            move |_| {
                let r = catch_unwind(AssertUnwindSafe(|| drop(l2.accept())));
                *m2.lock().unwrap() = Some(match r {
                    Ok(()) => "no panic".into(),
                    Err(p) => panic_message(p),
                });
            },
        );
        trust_core::wait_pending();
    });
    let _c = std::net::TcpStream::connect(addr).unwrap();
    within(10, move || f.join().unwrap());
    let m = msg.lock().unwrap().clone().unwrap();
    assert!(
        m.contains("outside a fiber") && m.contains("trust_core::spawn"),
        "{m}"
    );
}

/// A `launch`ed fiber "may block" (../shared/DESIGN.md): socket I/O inside it should suspend, not panic.
#[test]
fn socket_io_inside_a_launched_fiber() {
    rt();
    let (s, mut c) = pair();
    let latched = rt().trustee(1).entrust(Latch::new(Some(s)));
    let f = spawn(move || {
        latched.launch(|l| {
            let mut g = l.lock();
            let s = g.as_mut().unwrap();
            let mut b = [0u8; 2];
            s.read_exact(&mut b).map(|_| b).map_err(|e| e.to_string())
        })
    });
    std::thread::sleep(Duration::from_millis(30));
    c.write_all(b"hi").unwrap();
    let r = within(10, move || f.join().map_err(panic_message));
    assert_eq!(r, Ok(Ok(*b"hi")));
}

/// A socket a fiber waited on, then used by a plain thread, then by fibers on the other worker, then
/// dropped while another socket takes its fd number: every wait still wakes.
#[test]
fn sockets_move_between_fibers_threads_and_reused_fd_numbers() {
    rt();
    for round in 0..100 {
        let (s, mut c) = pair();
        let fd = s.as_raw_fd();
        let s = spawn(move || {
            let mut b = [0u8; 1];
            (&s).read_exact(&mut b).unwrap();
            s
        });
        std::thread::sleep(Duration::from_micros(200));
        c.write_all(b"a").unwrap();
        let s = within(10, move || s.join().unwrap());
        // Plain thread, blocking.
        c.write_all(b"b").unwrap();
        let mut b = [0u8; 1];
        (&s).read_exact(&mut b).unwrap();
        assert_eq!(&b, b"b");
        drop(s); // closes fd
        let (s2, mut c2) = pair();
        let reused = s2.as_raw_fd() == fd;
        let f = spawn(move || {
            let mut b = [0u8; 1];
            (&s2).read_exact(&mut b).map(|_| b[0]).map_err(|e| e.kind())
        });
        std::thread::sleep(Duration::from_micros(200));
        c2.write_all(b"c").unwrap();
        assert_eq!(
            within(10, move || f.join().unwrap()),
            Ok(b'c'),
            "round {round} reused {reused}"
        );
    }
}
