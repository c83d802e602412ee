//! Throughput and latency against peers. Filled in by the benchmark issue.
fn main() {}
