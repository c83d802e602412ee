//! A memcached-compatible server on `#[entrust]` shards (see `docs/memcached.md`).
//!
//! Run: `cargo run --release --example memcached -- --port 11211 --memory-mb 64 [--listen ADDR] [-c N]
//! [-I SIZE] [--idle-timeout S] [--workers N]`

use trust_core::Runtime;
use trust_examples::memcached::{Config, Server};

const USAGE: &str = "usage: memcached [--port N (11211)] [--listen ADDR (127.0.0.1)] [--memory-mb N (64)] \
     [-c MAX_CONNECTIONS (1024)] [-I MAX_ITEM_SIZE (1m)] [--idle-timeout SECS (0 = never)] [--workers N] \
     [--lenient-keys]";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    let (config, workers) = match Config::from_args(args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("memcached: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let mut builder = Runtime::builder();
    if let Some(n) = workers {
        builder = builder.workers(n);
    }
    if let Err(e) = builder.build() {
        eprintln!("memcached: cannot start the runtime: {e}");
        std::process::exit(1);
    }
    let server = match Server::start(config.clone()) {
        Ok(server) => server,
        // Cannot listen, the descriptor limit is below `-c`, or `-I` is over half the memory (the message
        // says which).
        Err(e) => {
            eprintln!("memcached: {e}");
            std::process::exit(1);
        }
    };
    eprintln!(
        "memcached (trust) listening on {}, {} MiB, {} shards",
        server.local_addr(),
        config.memory_mb,
        trust_core::runtime().workers()
    );
    server.wait();
}
