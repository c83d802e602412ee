//! `trust_core::net`: sockets whose operations suspend only the calling fiber. Servers and clients as fibers,
//! as plain threads and mixed; timeouts; peers that vanish; a fiber waiting on a socket never holds up its
//! worker's trustee; misuse on a worker outside a fiber panics with a message that names the way out.

use std::io::{ErrorKind, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::*;
use trust_core::net::{TcpListener, TcpStream};
use trust_core::spawn;

/// Runs `f` on a thread of its own and fails the test if it takes more than 20 s.
fn within_deadline<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(r)) => r,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("hung: no answer within 20 s"),
    }
}

/// An echo server whose accept loop and connections are fibers; returns its address.
fn echo_server() -> std::net::SocketAddr {
    rt();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(spawn(move || {
        while let Ok((stream, _)) = listener.accept() {
            drop(spawn(move || echo(stream)));
        }
    }));
    addr
}

fn echo(mut stream: TcpStream) {
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

#[test]
fn plain_thread_clients_of_a_fiber_server_get_every_byte_back() {
    rt();
    let addr = echo_server();
    within_deadline(move || {
        let clients: Vec<_> = (0..16u8)
            .map(|c| {
                std::thread::spawn(move || {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    // 256 KiB per client: more than a socket buffer, so the server's writes wait too.
                    let sent: Vec<u8> = (0..256 * 1024)
                        .map(|i| (i as u8).wrapping_mul(31) ^ c)
                        .collect();
                    let writer = {
                        let (mut s, sent) = (s.try_clone().unwrap(), sent.clone());
                        std::thread::spawn(move || s.write_all(&sent).unwrap())
                    };
                    let mut got = vec![0; sent.len()];
                    s.read_exact(&mut got).unwrap();
                    writer.join().unwrap();
                    assert!(got == sent, "client {c} got other bytes back");
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
    });
}

#[test]
fn fiber_clients_of_a_fiber_server_many_more_connections_than_workers() {
    rt();
    let addr = echo_server();
    let total = within_deadline(move || {
        let done = Arc::new(AtomicUsize::new(0));
        let fibers: Vec<_> = (0..200u32)
            .map(|c| {
                let done = done.clone();
                spawn(move || {
                    let mut s = TcpStream::connect(addr).unwrap();
                    s.set_nodelay(true).unwrap();
                    let mut sum = 0u64;
                    for round in 0..20u32 {
                        let msg = (c * 1000 + round).to_le_bytes();
                        s.write_all(&msg).unwrap();
                        let mut back = [0; 4];
                        s.read_exact(&mut back).unwrap();
                        assert_eq!(back, msg);
                        sum += u64::from(u32::from_le_bytes(back));
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    sum
                })
            })
            .collect();
        let sum: u64 = fibers.into_iter().map(|f| f.join().unwrap()).sum();
        assert_eq!(done.load(Ordering::Relaxed), 200);
        sum
    });
    // Sum over c < 200, round < 20 of c * 1000 + round.
    assert_eq!(total, 20 * 1000 * (199 * 200 / 2) + 200 * (19 * 20 / 2));
}

#[test]
fn plain_threads_use_the_same_sockets_blocking() {
    rt();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    within_deadline(move || {
        let server = std::thread::spawn(move || {
            let (s, peer) = listener.accept().unwrap();
            assert_eq!(s.peer_addr().unwrap(), peer);
            echo(s);
        });
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"hello, trust").unwrap();
        let mut back = [0; 12];
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"hello, trust");
        drop(c);
        server.join().unwrap();
    });
}

#[test]
fn a_fiber_waiting_on_a_socket_does_not_hold_up_its_workers_trustee() {
    rt();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // A silent client on every worker: each server fiber waits in `read`.
    let silent: Vec<_> = (0..4)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (mut s, _) = listener.accept().unwrap();
            spawn(move || {
                let mut buf = [0; 8];
                s.read(&mut buf).map_err(|e| e.kind())
            })
        })
        .collect();
    for t in 0..rt().workers() {
        let counter = rt().trustee(t).entrust(0u64);
        let n = within_deadline(move || {
            for _ in 0..1000 {
                counter.apply(|c| *c += 1);
            }
            counter.apply(|c| *c)
        });
        assert_eq!(n, 1000, "trustee {t}");
    }
    // Closing the clients ends the reads: end of stream.
    drop(silent);
    for r in readers {
        assert_eq!(within_deadline(move || r.join().unwrap()), Ok(0));
    }
}

#[test]
fn read_timeouts_in_a_fiber_and_on_a_thread() {
    rt();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let _client = std::net::TcpStream::connect(addr).unwrap();
    let (s, _) = listener.accept().unwrap();
    assert_eq!(
        s.set_read_timeout(Some(Duration::ZERO)).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert_eq!(s.read_timeout().unwrap(), Some(Duration::from_millis(100)));
    let s = Arc::new(s);
    let in_fiber = {
        let s = s.clone();
        spawn(move || {
            let start = Instant::now();
            let e = (&*s).read(&mut [0; 8]).unwrap_err();
            (e.kind(), start.elapsed())
        })
    };
    let (kind, waited) = within_deadline(move || in_fiber.join().unwrap());
    assert_eq!(kind, ErrorKind::TimedOut);
    assert!(waited >= Duration::from_millis(100), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let start = Instant::now();
    assert_eq!(
        (&*s).read(&mut [0; 8]).unwrap_err().kind(),
        ErrorKind::TimedOut
    );
    assert!(start.elapsed() >= Duration::from_millis(100));
    s.set_read_timeout(None).unwrap();
    assert_eq!(s.read_timeout().unwrap(), None);
}

#[test]
fn many_fibers_sleeping_on_timeouts_all_wake_in_deadline_order() {
    rt();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let pairs: Vec<_> = (0..100)
        .map(|_| {
            let c = std::net::TcpStream::connect(addr).unwrap();
            (c, listener.accept().unwrap().0)
        })
        .collect();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let fibers: Vec<_> = pairs
        .into_iter()
        .enumerate()
        .map(|(i, (client, mut s))| {
            let order = order.clone();
            // Timeouts 10 ms apart, the longest for the first fiber started.
            let timeout = Duration::from_millis(300 + 10 * (99 - i as u64));
            s.set_read_timeout(Some(timeout)).unwrap();
            spawn(move || {
                let deadline = Instant::now() + timeout;
                let kind = s.read(&mut [0; 1]).unwrap_err().kind();
                let woke = Instant::now();
                assert!(woke >= deadline, "fiber {i} woke before its deadline");
                order
                    .lock()
                    .unwrap()
                    .push((i, deadline, trust_core::local_trustee().index()));
                drop(client);
                kind
            })
        })
        .collect();
    for f in fibers {
        assert_eq!(
            within_deadline(move || f.join().unwrap()),
            ErrorKind::TimedOut
        );
    }
    let order = order.lock().unwrap();
    assert_eq!(order.len(), 100);
    // Each deadline is measured where its wait starts: a worker busy with another test's fibers starts its
    // own later, so the order of start says little. Fibers of one worker woken one after the other must not
    // have deadlines out of order by more than scheduling slack (2 ms); the deadlines are 10 ms apart on each
    // worker. Across workers nothing orders the wake-ups: under load (CI's AddressSanitizer run beside other
    // jobs) one worker's fibers ran several milliseconds after the other's.
    let slack = Duration::from_millis(2);
    let inversions: Vec<_> = (0..rt().workers())
        .flat_map(|w| {
            let mine: Vec<_> = order.iter().filter(|o| o.2 == w).collect();
            mine.windows(2)
                .filter(|p| p[0].1 > p[1].1 + slack)
                .map(|p| (p[0].0, p[1].0))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        inversions.len() <= 2,
        "woken out of deadline order (fibers of one worker woken one after the other): {inversions:?}"
    );
}

#[test]
fn a_peer_that_resets_is_an_error_not_a_panic() {
    rt();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = std::net::TcpStream::connect(addr).unwrap();
    let (s, _) = listener.accept().unwrap();
    let writer = spawn(move || {
        // Writes into a connection whose peer is gone end in an error (EPIPE or ECONNRESET), never SIGPIPE.
        let chunk = [7u8; 64 * 1024];
        loop {
            if let Err(e) = (&s).write(&chunk) {
                return e.kind();
            }
        }
    });
    drop(client);
    let kind = within_deadline(move || writer.join().unwrap());
    assert!(
        matches!(kind, ErrorKind::BrokenPipe | ErrorKind::ConnectionReset),
        "{kind:?}"
    );
}

#[test]
fn connect_to_a_closed_port_is_refused_in_a_fiber() {
    rt();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let f = spawn(move || {
        TcpStream::connect(("127.0.0.1", port))
            .map(drop)
            .map_err(|e| e.kind())
    });
    assert_eq!(
        within_deadline(move || f.join().unwrap()),
        Err(ErrorKind::ConnectionRefused)
    );
}

#[test]
fn socket_io_inside_a_delegated_closure_panics_naming_spawn_and_the_trustee_keeps_serving() {
    rt();
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
    let property = rt().trustee(0).entrust(0u32);
    let l = listener.clone();
    let err = catch_unwind(AssertUnwindSafe(|| {
        property.apply(move |_| drop(l.accept()))
    }))
    .unwrap_err();
    let msg = panic_message(err);
    assert!(
        msg.contains("outside a fiber") && msg.contains("trust_core::spawn"),
        "{msg}"
    );
    assert_eq!(property.apply(|v| *v + 1), 1);
}

/// One socket, two fibers that are likely on different workers: one only reads, the other only writes, both
/// far more than a socket buffer holds, so each waits in its own worker's epoll set on the same fd.
#[test]
fn a_reader_and_a_writer_fiber_share_a_socket_across_workers() {
    rt();
    const BYTES: usize = 1 << 20;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let pattern = |i: usize| (i as u8).wrapping_mul(7);
    let spans = within_deadline(move || {
        let mut spans = 0;
        for _ in 0..4 {
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            let server = Arc::new(listener.accept().unwrap().0);
            let (r, w) = (server.clone(), server);
            let reader = spawn(move || {
                let mut got = vec![0; BYTES];
                (&*r).read_exact(&mut got).unwrap();
                assert!(
                    got.iter().enumerate().all(|(i, &b)| b == pattern(i)),
                    "reader got other bytes"
                );
                trust_core::local_trustee().index()
            });
            let writer = spawn(move || {
                let sent: Vec<u8> = (0..BYTES).map(|i| pattern(i) ^ 0xff).collect();
                (&*w).write_all(&sent).unwrap();
                trust_core::local_trustee().index()
            });
            let mut c2 = client.try_clone().unwrap();
            let client_writer = std::thread::spawn(move || {
                let sent: Vec<u8> = (0..BYTES).map(pattern).collect();
                c2.write_all(&sent).unwrap();
            });
            let mut got = vec![0; BYTES];
            client.read_exact(&mut got).unwrap();
            assert!(
                got.iter().enumerate().all(|(i, &b)| b == pattern(i) ^ 0xff),
                "client got other bytes"
            );
            client_writer.join().unwrap();
            spans += usize::from(reader.join().unwrap() != writer.join().unwrap());
        }
        spans
    });
    // `spawn` alternates between the 2 workers: a pair lands on one worker only if another test's spawn came
    // between its two spawns, which cannot happen to all four pairs but by a freak of scheduling.
    assert!(spans >= 1, "no pair of fibers ran on two workers");
}

#[test]
fn a_burst_of_600_connects_waits_in_the_backlog_not_for_a_syn_retransmit() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Nobody accepts: every connection waits in the backlog, whose handshake the kernel completes. With a
    // backlog of 128 the 130th connect's SYN is dropped and it waits a second for the retransmit.
    let connected: Vec<_> = (0..600)
        .map(|i| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                .unwrap_or_else(|e| panic!("connect {i}: {e}"))
        })
        .collect();
    assert_eq!(connected.len(), 600);
    drop(listener);
}

#[test]
fn connect_timeout_gives_up_on_a_peer_that_never_answers_in_a_fiber_and_on_a_thread() {
    rt();
    let (listener, _queued) = a_listener_that_never_answers();
    let addr = listener.local_addr().unwrap();
    let timeout = Duration::from_millis(300);
    let attempt = move || {
        let start = Instant::now();
        let kind = TcpStream::connect_timeout(&addr, timeout)
            .map(drop)
            .map_err(|e| e.kind());
        (kind, start.elapsed())
    };
    let f = spawn(attempt);
    for (kind, took) in [within_deadline(move || f.join().unwrap()), attempt()] {
        assert_eq!(kind, Err(ErrorKind::TimedOut));
        assert!(took >= timeout && took < Duration::from_secs(5), "{took:?}");
    }
    // A zero timeout is refused before anything is sent, as in std.
    let zero = TcpStream::connect_timeout(&addr, Duration::ZERO)
        .map(drop)
        .map_err(|e| e.kind());
    assert_eq!(zero, Err(ErrorKind::InvalidInput));
}

#[test]
fn connect_timeout_to_a_server_that_answers_is_a_working_stream() {
    rt();
    let addr = echo_server();
    let f = spawn(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
        s.write_all(b"ping").unwrap();
        let mut buf = [0; 4];
        s.read_exact(&mut buf).unwrap();
        buf
    });
    assert_eq!(&within_deadline(move || f.join().unwrap()), b"ping");
}

#[test]
fn a_cloned_stream_reads_in_one_fiber_while_the_original_writes_in_another_and_outlives_it() {
    rt();
    let addr = echo_server();
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let reader = stream.try_clone().unwrap();
    assert_ne!(
        std::os::fd::AsRawFd::as_raw_fd(&reader),
        std::os::fd::AsRawFd::as_raw_fd(&stream)
    );
    assert_eq!(
        reader.read_timeout().unwrap(),
        Some(Duration::from_secs(10))
    );
    assert_eq!(reader.peer_addr().unwrap(), addr);
    const BYTES: usize = 1 << 20;
    let read = spawn(move || {
        let mut got = vec![0u8; BYTES];
        (&reader).read_exact(&mut got).unwrap();
        (got, reader)
    });
    let written = spawn(move || {
        let data: Vec<u8> = (0..BYTES).map(|i| (i % 251) as u8).collect();
        (&stream).write_all(&data).unwrap();
        // The original goes; the clone keeps the connection open.
        drop(stream);
        data
    });
    let data = within_deadline(move || written.join().unwrap());
    let (got, reader) = within_deadline(move || read.join().unwrap());
    assert!(got == data, "the echo differs from what was written");
    // The clone still writes and reads after the original is gone.
    let f = spawn(move || {
        (&reader).write_all(b"after").unwrap();
        let mut buf = [0; 5];
        (&reader).read_exact(&mut buf).unwrap();
        buf
    });
    assert_eq!(&within_deadline(move || f.join().unwrap()), b"after");
}
