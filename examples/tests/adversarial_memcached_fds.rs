//! The memcached example when the process runs out of file descriptors (its own binary: it fills this
//! process's descriptor table, which no other test may share).

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use trust_examples::memcached::{Config, Server};

/// `ServerHandle::stop` "stops accepting", also when the descriptor table is full. Then `accept` fails with
/// EMFILE: the accept loop waits 10 ms before it tries again (it used to retry at once, forever, burning a
/// core), and a client waits in the backlog meanwhile, as in memcached 1.6 (`accept_new_conns(false)` until a
/// connection closes). `stop`'s own wake-up connect fails too: it retries every 10 ms until the accept loop,
/// whose failing `accept` now looks at `stopping`, has returned (it used to wait until descriptors were
/// freed). The client that waited in the backlog is then reset with the listener.
#[test]
fn stop_and_clients_when_descriptors_run_out() {
    let server = Server::start(Config {
        port: 0,
        ..Config::default()
    })
    .unwrap();
    let addr = server.local_addr();
    // A served connection first, so the connection path is warm.
    let mut warm = TcpStream::connect(addr).unwrap();
    warm.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    warm.write_all(b"version\r\n").unwrap();
    let mut buf = [0; 64];
    let n = warm.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"VERSION 1.6.0-trust\r\n");

    // Opened before the table is full: read again with a seek.
    let mut stat = File::open("/proc/self/stat").unwrap();
    // Fill the descriptor table, then free exactly one for the client's socket.
    let mut files = Vec::new();
    while let Ok(f) = File::open("/dev/null") {
        files.push(f);
        assert!(files.len() < 1_000_000, "no descriptor limit");
    }
    files.pop();
    let mut client = TcpStream::connect(addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    client.write_all(b"version\r\n").unwrap();
    let answer = match client.read(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => format!("no answer ({e})"),
    };

    let cpu_before = cpu_ticks(&mut stat);
    thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(&mut stat) - cpu_before;

    let (done_tx, done_rx) = mpsc::channel();
    let stopper = thread::spawn(move || {
        server.stop();
        let _ = done_tx.send(());
    });
    let stopped = done_rx.recv_timeout(Duration::from_secs(3)).is_ok();
    // Free the descriptors: whatever was stuck goes on now.
    drop(files);
    stopper.join().unwrap();
    assert!(
        answer.starts_with("no answer") && spent < 30 && stopped,
        "with no descriptor left: the client's `version` got {answer:?} (want: no answer, it waits in the \
         backlog); the process used {spent} CPU ticks (1/100 s) in the next second (want < 30); stop() \
         returned within 3 s: {stopped}"
    );
    // The listener is closed: the client that waited in its backlog is reset, and nothing listens any more.
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let after = client.read(&mut buf);
    assert!(
        matches!(&after, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{after:?}"
    );
    let refused = TcpStream::connect(addr).map(drop);
    assert!(
        matches!(&refused, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "{refused:?}"
    );
    // The connection served before goes on being served.
    warm.write_all(b"version\r\n").unwrap();
    let n = warm.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"VERSION 1.6.0-trust\r\n");
}

/// utime + stime of this process, in clock ticks.
fn cpu_ticks(file: &mut File) -> u64 {
    use std::io::Seek;
    file.rewind().unwrap();
    let mut stat = String::new();
    file.read_to_string(&mut stat).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}
