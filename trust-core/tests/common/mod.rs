//! Shared by the delegation test binaries: each binary is a process with one runtime of 2 workers.

#![allow(dead_code)] // each test binary uses part of it

use std::any::Any;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use trust_core::Runtime;

/// This process's runtime: 2 workers, whatever the machine.
pub fn rt() -> &'static Runtime {
    static RT: OnceLock<&'static Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::builder()
            .workers(2)
            .build()
            .expect("first runtime of this process")
    })
}

/// The message of a panic payload (`panic!` with or without arguments).
pub fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_default(),
    }
}

/// Counts its drops.
pub struct CountsDrops(pub Arc<AtomicUsize>);

impl Drop for CountsDrops {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
