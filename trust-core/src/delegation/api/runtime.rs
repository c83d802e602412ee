//! The runtime: the set of workers (one trustee each), how it starts, and how it stops.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use crate::delegation::worker::context;
use crate::delegation::stack::{self, StackPool};
use crate::delegation::api::trust::Trust;
use crate::delegation::api::trustee::Trustee;
use crate::delegation::trustee::shared::{self, TrusteeShared};
use crate::delegation::worker::reactor::Reactor;
use crate::delegation::worker::run;
#[cfg(not(miri))]
use crate::delegation::worker::process;

static RUNTIME: OnceLock<&'static Runtime> = OnceLock::new();
static STARTING: Mutex<()> = Mutex::new(());

/// Default fiber stack: generous for deep user code; only the touched pages cost memory.
pub(crate) const DEFAULT_STACK_SIZE: usize = 256 * 1024;
/// Default worker thread stack: a main thread's, because delegated closures and their captures run on it.
const DEFAULT_WORKER_STACK_SIZE: usize = 8 * 1024 * 1024;

/// The set of workers. There is one per process: [`runtime()`] starts it with defaults on first use, or
/// [`Runtime::builder`] starts it configured.
pub struct Runtime {
    trustees: Box<[&'static TrusteeShared]>,
    next_spawn: AtomicUsize,
    next_local: AtomicUsize,
    stopped: Mutex<usize>,
    stopped_cv: Condvar,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Fiber stacks for every worker: `spawn` takes one on the calling thread.
    pub(crate) stacks: StackPool,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("workers", &self.trustees.len())
            .finish_non_exhaustive()
    }
}

/// Why a runtime could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A runtime already runs in this process, or ran and was shut down (one per process, never restarted:
    /// use [`runtime()`] to reach it).
    AlreadyStarted,
    /// `workers(0)`: a runtime needs at least one worker.
    NoWorkers,
    /// `workers(n)` or `TRUST_WORKERS` asks for more than [`MAX_WORKERS`] worker threads.
    TooManyWorkers {
        /// The number asked for.
        requested: usize,
    },
    /// The `TRUST_WORKERS` environment variable (read when `workers(n)` is not given) is not a positive
    /// integer: `value` is what it holds (lossily decoded if it is not UTF-8).
    BadWorkersVar {
        /// The variable's value.
        value: String,
    },
    /// The `TRUST_MAX_FIBER_STACKS` environment variable (the most fiber stacks alive at once) is set but not a
    /// positive integer: `value` is what it holds (lossily decoded if it is not UTF-8).
    BadMaxFiberStacksVar {
        /// The variable's value.
        value: String,
    },
    /// The operating system refused a worker its `epoll` set or its wake-up `eventfd` (the process is out of
    /// file descriptors, say). No worker was started.
    Epoll(std::io::Error),
    /// The operating system refused to start a worker thread. The workers already started were stopped
    /// again: no runtime runs, and a later [`RuntimeBuilder::build`] starts afresh.
    Spawn(std::io::Error),
    /// [`RuntimeBuilder::core_ids`] names a core this process may not run on.
    NoSuchCore {
        /// The core asked for.
        core: usize,
        /// The cores this process may run on.
        available: Vec<usize>,
    },
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::AlreadyStarted => f.write_str(
                "a trust runtime already runs in this process (or ran and was shut down: a runtime cannot be \
                 restarted); reach it with `trust_core::runtime()`",
            ),
            RuntimeError::NoWorkers => f.write_str("a trust runtime needs at least one worker; pass `workers(n)` with n >= 1"),
            RuntimeError::TooManyWorkers { requested } => write!(
                f,
                "a trust runtime has at most {MAX_WORKERS} workers, and {requested} were asked for (by `workers(n)` \
                 or TRUST_WORKERS): one worker per core is the usual choice"
            ),
            RuntimeError::BadWorkersVar { value } => write!(
                f,
                "TRUST_WORKERS={value:?} is not a number of worker threads: expected a positive integer \
                 such as TRUST_WORKERS=4 (or leave it unset for one worker per available CPU)"
            ),
            RuntimeError::BadMaxFiberStacksVar { value } => f.write_str(&stack::bad_max_stacks(value)),
            RuntimeError::Epoll(e) => write!(
                f,
                "cannot give a trust worker its epoll set and wake-up eventfd: {e} (each worker needs two file \
                 descriptors; raise `ulimit -n` or close some)"
            ),
            RuntimeError::Spawn(e) => write!(f, "cannot start a trust worker thread: {e}"),
            RuntimeError::NoSuchCore { core, available } => write!(
                f,
                "cannot pin a trust worker to core {core}: this process may run on cores {available:?} only; \
                 pass ids from that list to `core_ids`, or use `pin_workers(true)`"
            ),
        }
    }
}

impl std::error::Error for RuntimeError {}

/// The most worker threads a runtime has (each is an OS thread with its own stack and slots to every other).
pub const MAX_WORKERS: usize = 4096;

/// Configures the runtime; see [`Runtime::builder`].
#[derive(Debug, Clone)]
pub struct RuntimeBuilder {
    workers: Option<usize>,
    stack_size: usize,
    worker_stack_size: usize,
    /// Cores to pin worker `i` to (`cores[i % len]`); empty: not pinned.
    cores: Vec<usize>,
    pin: bool,
}

impl RuntimeBuilder {
    /// Number of worker threads (trustees). Default: `TRUST_WORKERS`, else the available parallelism.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Stack size of each fiber, in bytes (default 256 KiB, rounded up to whole pages; memory is committed only
    /// as it is touched). A fiber that overflows its stack hits a guard page, and the process aborts with a
    /// message naming this setting.
    pub fn fiber_stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = bytes;
        self
    }

    /// Stack size of each worker thread, in bytes: the OS stack the trustee runs delegated closures on,
    /// including their by-value captures (a closure capturing a 1 MiB array needs more than 1 MiB of it).
    /// Default 8 MiB, like a main thread (a spawned std thread gets 2 MiB); memory is committed only as it is
    /// touched. The operating system may round it up.
    pub fn worker_stack_size(mut self, bytes: usize) -> Self {
        self.worker_stack_size = bytes;
        self
    }

    /// Pins each worker thread to a core of its own (worker `i` to the `i`-th core this process may run on,
    /// round-robin), so a trustee's thread, and the values it holds, never migrate. Off by default.
    pub fn pin_workers(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// Pins worker `i` to core `ids[i % ids.len()]` (implies [`pin_workers`](Self::pin_workers)). `build`
    /// fails with [`RuntimeError::NoSuchCore`] for an id this process may not run on. An empty list is
    /// `pin_workers(true)`: the cores this process may run on, round-robin.
    pub fn core_ids(mut self, ids: impl IntoIterator<Item = usize>) -> Self {
        self.cores = ids.into_iter().collect();
        self.pin = true;
        self
    }

    /// Starts the workers. Fails if a runtime already runs (or ran) in this process, if the number of
    /// workers is 0 or over [`MAX_WORKERS`] or `TRUST_WORKERS` is not a positive integer, or if a worker
    /// thread cannot be started;
    /// on failure no worker is left running and no runtime is installed, so a later `build` starts afresh.
    pub fn build(self) -> Result<&'static Runtime, RuntimeError> {
        let _starting = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        if RUNTIME.get().is_some() {
            return Err(RuntimeError::AlreadyStarted);
        }
        let n = match self.workers {
            Some(n) => n,
            None => default_workers()?,
        };
        if n == 0 {
            return Err(RuntimeError::NoWorkers);
        }
        if n > MAX_WORKERS {
            return Err(RuntimeError::TooManyWorkers { requested: n });
        }
        let cores = self.worker_cores()?;
        if let Err(value) = stack::max_stacks_var() {
            return Err(RuntimeError::BadMaxFiberStacksVar { value });
        }
        // Made here, not on the workers: a worker that could not have them would never start, and this would
        // wait for it.
        let reactors = (0..n)
            .map(|_| Reactor::new())
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(RuntimeError::Epoll)?;
        stack::prepare();
        let trustees: Box<[&'static TrusteeShared]> = (0..n)
            .map(|i| &*Box::leak(Box::new(TrusteeShared::new(i))))
            .collect();
        let runtime: &'static Runtime = Box::leak(Box::new(Runtime {
            trustees,
            next_spawn: AtomicUsize::new(0),
            next_local: AtomicUsize::new(0),
            stopped: Mutex::new(0),
            stopped_cv: Condvar::new(),
            threads: Mutex::new(Vec::new()),
            stacks: StackPool::new(self.stack_size),
        }));
        for (&shared, reactor) in runtime.trustees.iter().zip(reactors) {
            let core = (!cores.is_empty()).then(|| cores[shared.index() % cores.len()]);
            let spawned = std::thread::Builder::new()
                .name(format!("trust-worker-{}", shared.index()))
                .stack_size(self.worker_stack_size)
                .spawn(move || {
                    if let Some(core) = core {
                        run::pin_to_core(core);
                    }
                    run::run(shared, &runtime.stacks, reactor);
                    *runtime.stopped.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                    runtime.stopped_cv.notify_all();
                });
            match spawned {
                Ok(thread) => runtime
                    .threads
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(thread),
                Err(e) => {
                    runtime.abort_start();
                    return Err(RuntimeError::Spawn(e));
                }
            }
        }
        while !runtime.trustees.iter().all(|t| t.is_started()) {
            std::thread::yield_now();
        }
        RUNTIME.set(runtime).expect("checked under STARTING");
        register_shutdown_at_exit(runtime);
        Ok(runtime)
    }
}

/// Runs `Runtime::shutdown` at process exit, and closes the trustees in a child forked after the runtime
/// started. Not under Miri, which cannot call `atexit` or `pthread_atfork` (foreign functions): there the
/// workers simply stop with the process.
#[cfg(not(miri))]
fn register_shutdown_at_exit(runtime: &'static Runtime) {
    extern "C" fn shutdown_at_exit() {
        // `exit` called on a worker (in a fiber, a delegated closure or a continuation): the shutdown would wait
        // for this very worker, so the process ends without it, with its exit code, as it would without this
        // handler (the entrusted values are not dropped, as statics are not). Nor in a forked child: it has no
        // workers to wait for (the values there are the parent's, copied).
        if context::worker().is_some() || shared::in_forked_child() {
            return;
        }
        if let Some(rt) = RUNTIME.get() {
            // A panic must not cross this `extern "C"` frame (it would abort the exit); `shutdown` contains the
            // panics of user destructors itself.
            let _ = std::panic::catch_unwind(|| rt.shutdown());
        }
    }
    process::at_exit(shutdown_at_exit);
    process::close_in_forked_children(&runtime.trustees);
}

#[cfg(miri)]
fn register_shutdown_at_exit(_: &'static Runtime) {}

impl RuntimeBuilder {
    /// The cores the workers are pinned to, checked against the cores this process may run on; empty when
    /// they are not pinned.
    fn worker_cores(&self) -> Result<Vec<usize>, RuntimeError> {
        if !self.pin {
            return Ok(Vec::new());
        }
        let available = run::allowed_cores();
        if self.cores.is_empty() {
            return Ok(available);
        }
        match self.cores.iter().find(|core| !available.contains(core)) {
            Some(&core) => Err(RuntimeError::NoSuchCore { core, available }),
            None => Ok(self.cores.clone()),
        }
    }
}

/// The number of workers `TRUST_WORKERS` asks for, else the available parallelism.
fn default_workers() -> Result<usize, RuntimeError> {
    let value = match std::env::var("TRUST_WORKERS") {
        Ok(value) => value,
        Err(std::env::VarError::NotPresent) => {
            return Ok(std::thread::available_parallelism().map_or(1, |n| n.get()));
        }
        Err(std::env::VarError::NotUnicode(value)) => value.to_string_lossy().into_owned(),
    };
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(RuntimeError::BadWorkersVar { value }),
    }
}

/// The process's runtime, started with defaults on first use (workers: `TRUST_WORKERS`, else the available
/// parallelism).
///
/// Panics, with the [`RuntimeError`]'s message, when it cannot start: `TRUST_WORKERS` is not a positive
/// integer, or the OS refuses a worker thread. Use [`Runtime::builder`] to get the error as a value.
pub fn runtime() -> &'static Runtime {
    if let Some(rt) = RUNTIME.get() {
        return rt;
    }
    match Runtime::builder().build() {
        Ok(rt) => rt,
        // Another thread started it between our check and our build.
        Err(RuntimeError::AlreadyStarted) => RUNTIME.get().expect("started"),
        Err(e) => panic!("{e}"),
    }
}

impl Runtime {
    /// A builder for the process's runtime.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder {
            workers: None,
            stack_size: DEFAULT_STACK_SIZE,
            worker_stack_size: DEFAULT_WORKER_STACK_SIZE,
            cores: Vec::new(),
            pin: false,
        }
    }

    /// Number of workers, hence of trustees.
    pub fn workers(&self) -> usize {
        self.trustees.len()
    }

    /// The trustee of worker `index`. Panics when `index >= self.workers()`.
    pub fn trustee(&self, index: usize) -> Trustee {
        match self.trustees.get(index) {
            Some(&shared) => Trustee { shared },
            None => panic!(
                "no trustee {index}: this runtime has {} workers (indices 0..{})",
                self.workers(),
                self.workers()
            ),
        }
    }

    /// A worker thread could not be started: stops the ones that were (they have nothing to serve yet) and
    /// waits for them to exit, so that a failed `build` leaves no thread behind. The half-built runtime
    /// itself stays leaked (a few hundred bytes): it was never installed, so nothing can reach it.
    fn abort_start(&self) {
        for t in self.trustees.iter() {
            t.begin_close();
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
    }

    pub(crate) fn next_spawn_trustee(&self) -> &'static TrusteeShared {
        self.trustees[self.next_spawn.fetch_add(1, Ordering::Relaxed) % self.trustees.len()]
    }

    /// Stops the runtime: every worker answers what it was already sent, drops every property still
    /// entrusted (each exactly once), and exits. Runs by itself at process exit (but not when `exit` is
    /// called on a worker: it would wait for that worker; the process then ends without dropping them; nor in
    /// a process forked after the runtime started, which has no workers: there it returns at once).
    /// Afterwards `entrust`, `apply` and `spawn` panic, and dropping a `Trust` does nothing. A `join` of a
    /// fiber it finds suspended returns the shutdown panic. Waits up to 5 seconds for the workers (a fiber
    /// stuck in an endless loop cannot be stopped).
    ///
    /// **A runtime cannot be restarted.** It is one per process for the process's whole life: after
    /// `shutdown`, [`runtime()`] still returns this (stopped) runtime, and [`Runtime::builder`]`.build()`
    /// returns [`RuntimeError::AlreadyStarted`]. Shut down only when the process is done with delegation.
    ///
    /// Panics when called from a worker (it would wait for itself).
    pub fn shutdown(&self) {
        assert!(
            context::worker().is_none(),
            "`Runtime::shutdown` called on a worker: it waits for the workers to stop; call it from a plain thread"
        );
        if shared::in_forked_child() {
            // No worker to stop (`fork` copied none); the values are the parent's.
            return;
        }
        for t in self.trustees.iter() {
            t.begin_close();
        }
        let stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let (stopped, _) = self
            .stopped_cv
            .wait_timeout_while(stopped, Duration::from_secs(5), |n| {
                *n < self.trustees.len()
            })
            .unwrap_or_else(|e| e.into_inner());
        if *stopped == self.trustees.len() {
            // Every worker has left its loop: joining only waits for the threads to finish exiting.
            for thread in self
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain(..)
            {
                let _ = thread.join();
            }
        }
    }
}

/// This worker's trustee; from a thread that is not a worker, one chosen round-robin.
pub fn local_trustee() -> Trustee {
    if let Some(w) = context::worker() {
        return Trustee { shared: w.shared };
    }
    let rt = runtime();
    rt.trustee(rt.next_local.fetch_add(1, Ordering::Relaxed) % rt.workers())
}

/// Entrusts `value` to [`local_trustee()`].
pub fn entrust<T: Send + 'static>(value: T) -> Trust<T> {
    local_trustee().entrust(value)
}
