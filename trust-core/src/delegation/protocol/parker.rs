//! Sleeping without losing a wake-up: a thread that found nothing to do parks, and whoever gives it work
//! unparks it. Used by idle workers and by plain OS threads waiting for an answer.
//!
//! The protocol is Dekker's: the sleeper announces `sleeping` and then re-checks for work; the waker publishes
//! work and then checks `sleeping`; a fence on each side between the store and the load guarantees that at least
//! one of them sees the other's store. No read-modify-write is involved.
//!
//! The fences are asymmetric where Linux allows it (as folly's `asymmetric_thread_fence_light/heavy`): waking is
//! the hot path (once per published batch and per answer) and sleeping the rare one, so the waker's fence is a
//! compiler fence only, and the sleeper pays for both with `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which
//! makes every running thread of the process execute a full barrier before it returns. A SeqCst `mfence` on the
//! waker's side waits for the batch's stores to reach the trustee's cache (a cross-core transfer per line); the
//! compiler fence lets the waker go on. Where `membarrier` is unavailable (an old kernel, a seccomp filter) and
//! under loom and Miri, both sides use a SeqCst fence: the waker's cost is then one fence and one load.

use std::time::Duration;

use crate::delegation::protocol::sync::thread::{self, Thread};
use crate::delegation::protocol::sync::{AtomicBool, Ordering, fence};
use std::sync::atomic::compiler_fence;

/// On cache lines of its own: the waker reads `sleeping` after every batch or answer, and a neighbour in the
/// sleeper's heap written as often (a plain thread's client allocates its `apply_then` bookkeeping right
/// after it) would make those reads cache misses.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Parker {
    sleeping: AtomicBool,
    /// The fences are asymmetric (see the module docs); fixed at creation, so both sides agree.
    asymmetric: bool,
    thread: Thread,
    /// For a worker, which sleeps in `epoll_wait` so that sockets can wake it too (`worker::reactor`): the
    /// waker that ends that wait.
    #[cfg(not(loom))]
    poll: Option<mio::Waker>,
}

impl Parker {
    /// A parker for the calling thread.
    pub(crate) fn current() -> Self {
        Parker {
            sleeping: AtomicBool::new(false),
            asymmetric: asymmetric::available(),
            thread: thread::current(),
            #[cfg(not(loom))]
            poll: None,
        }
    }

    /// A parker for the calling thread, which sleeps by polling the `mio::Poll` that `waker` belongs to.
    #[cfg(not(loom))]
    pub(crate) fn polling(waker: mio::Waker) -> Self {
        Parker {
            poll: Some(waker),
            ..Parker::current()
        }
    }

    /// Called after publishing work the parker's thread may be waiting for.
    #[inline]
    pub(crate) fn wake(&self) {
        self.fence_light();
        if self.sleeping.load(Ordering::Relaxed) {
            #[cfg(not(loom))]
            if let Some(waker) = &self.poll {
                // An error means the eventfd is full of wake-ups already: the sleeper wakes either way.
                let _ = waker.wake();
                return;
            }
            self.thread.unpark();
        }
    }

    /// The hot side's fence of the handshake (and of the cold-channel doorbell's, `cold`): a compiler fence
    /// where the sleeper's `membarrier` stands in for the hardware fence (see the module docs).
    #[inline]
    pub(crate) fn fence_light(&self) {
        if self.asymmetric {
            compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }

    /// The rare side's fence of another Dekker handshake whose hot side fences with `wake` (the cold-channel
    /// doorbell, `cold`): a full barrier on every thread where the hot side's fence is a compiler fence.
    pub(crate) fn fence_heavy(&self) {
        if self.asymmetric {
            asymmetric::heavy_fence();
        } else {
            fence(Ordering::SeqCst);
        }
    }

    /// Parks the calling thread (which must own this parker) unless `has_work` says there is something to do.
    /// The timeout is a safety net only: every producer calls `wake`.
    pub(crate) fn park_unless(&self, has_work: impl FnOnce() -> bool, timeout: Duration) {
        self.sleep_unless(has_work, || thread::park_timeout(timeout));
    }

    /// `park_unless` for a thread that sleeps its own way (`sleep`), and that `wake` knows how to end.
    pub(crate) fn sleep_unless(&self, has_work: impl FnOnce() -> bool, sleep: impl FnOnce()) {
        self.sleeping.store(true, Ordering::Relaxed);
        self.fence_heavy();
        if !has_work() {
            sleep();
        }
        self.sleeping.store(false, Ordering::Relaxed);
    }
}

/// The heavy half of the asymmetric fence: `membarrier(2)`, registered once per process.
#[cfg(not(any(loom, miri)))]
mod asymmetric {
    use std::sync::OnceLock;

    // From `linux/membarrier.h` (a stable ABI).
    const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
    const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
    const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

    /// True when `heavy_fence` works in this process (checked and registered on first use).
    pub(super) fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            // SAFETY: `membarrier` takes no pointers; QUERY returns a bit set of the supported commands.
            let supported = unsafe { membarrier(MEMBARRIER_CMD_QUERY) };
            supported >= 0
                && supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED != 0
                // SAFETY: as above; registration lasts for the life of the process.
                && unsafe { membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) } == 0
        })
    }

    /// A full barrier on every running thread of the process, the caller included.
    pub(super) fn heavy_fence() {
        // SAFETY: as in `available`, which registered the process before any parker used this.
        let r = unsafe { membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) };
        // Registered, so it cannot fail (EPERM means unregistered): a failure would lose wake-ups.
        assert_eq!(
            r, 0,
            "membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) failed after registration"
        );
    }

    /// # Safety
    /// `cmd` is a membarrier command that takes no other argument.
    unsafe fn membarrier(cmd: libc::c_int) -> libc::c_int {
        // SAFETY: by the contract; flags 0, cpu_id unused.
        unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) as libc::c_int }
    }
}

/// Under loom and Miri the fences stay symmetric (neither models `membarrier`).
#[cfg(any(loom, miri))]
mod asymmetric {
    pub(super) fn available() -> bool {
        false
    }
    pub(super) fn heavy_fence() {
        unreachable!("asymmetric fences are off under loom and Miri")
    }
}

/// How a waiting thread spends its time: spin, then yield the core, then sleep.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct Backoff {
    step: u32,
    spins: u32,
    yields: u32,
}

#[cfg(not(loom))]
impl Backoff {
    /// For a client waiting for an answer: short, because on an oversubscribed machine the trustee it waits
    /// for may need this very core.
    pub(crate) fn client() -> Self {
        Backoff {
            step: 0,
            spins: 64,
            yields: 32,
        }
    }

    /// For an idle worker: longer, because its next request usually comes within microseconds, and waking a
    /// parked worker costs a system call on both sides. It yields early all the same: an idle worker round
    /// (mail, channels, fibers) takes 50-100 ns, and a client thread on its core (more threads than cores) gets
    /// the core only when the worker yields. With 300 spinning rounds, a plain thread calling both workers of
    /// a 2-core machine in turn waited 12-17 us per `apply`; with 30, 3 us (`counters-1024`'s `trust_apply`
    /// row: 0.04-0.06 -> 0.18-0.25 M ops/s), while the one-client round trip stays where it was.
    ///
    /// One pause per spinning round. The fourteenth session tried 16 (an idle worker's round
    /// reads the request lane its client is filling, taking the line from the client's next store): one
    /// thread's pipelined `apply_then` gained a tenth in the VM's slow mode (medians 45.8 -> 50.8 M ops/s),
    /// but in its fast mode, where the bare ring's round trip is 105-134 ns, 16 pauses (some 0.4 us) made the
    /// blocking round trip 472-498 ns against 104-135 with one (six alternating runs, fifteenth session):
    /// 4x the ring's, where the target is 1.15x.
    pub(crate) fn worker() -> Self {
        Backoff {
            step: 0,
            spins: 30,
            yields: 50,
        }
    }

    /// One round of waiting; returns true when the caller should now park.
    #[inline]
    pub(crate) fn snooze(&mut self) -> bool {
        self.step += 1;
        if self.step <= self.spins {
            std::hint::spin_loop();
            false
        } else if self.step <= self.spins + self.yields {
            std::thread::yield_now();
            false
        } else {
            true
        }
    }

    /// Rounds waited since the last reset.
    pub(crate) fn rounds(&self) -> u32 {
        self.step
    }

    pub(crate) fn reset(&mut self) {
        self.step = 0;
    }
}

/// The handshake under loom: a waker publishes work and calls `wake`; the sleeper re-checks for work and calls
/// `park_unless` until it has seen all of it. Under loom `park_unless` parks with no timeout, so a lost wake-up
/// (the sleeper parks after the waker decided it was awake) would block the sleeper for good: loom reports it
/// as a deadlock. Removing either SeqCst fence makes these models fail that way. Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p trust-core --lib --release loom_model`.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use crate::delegation::protocol::sync::AtomicU32;
    use loom::sync::Arc;

    /// The waker publishes `rounds` pieces of work (numbered 1, 2, ...), waking the sleeper after each.
    fn handshake(rounds: u32) {
        loom::model(move || {
            let work = Arc::new(AtomicU32::new(0));
            let parker = Arc::new(Parker::current());
            let waker = {
                let (work, parker) = (work.clone(), parker.clone());
                loom::thread::spawn(move || {
                    for n in 1..=rounds {
                        // Release, as the slot protocol publishes a batch or an answer.
                        work.store(n, Ordering::Release);
                        parker.wake();
                    }
                })
            };
            let mut seen = 0;
            while seen != rounds {
                let now = work.load(Ordering::Acquire);
                if now != seen {
                    seen = now;
                    continue;
                }
                parker.park_unless(
                    || work.load(Ordering::Acquire) != seen,
                    Duration::from_millis(10),
                );
            }
            // Not joined: loom's `join` blocks on a primitive that the waker's (legitimate, spurious) unpark
            // would end early, tripping an assertion inside loom. Loom runs the waker to its end anyway.
            drop(waker);
        });
    }

    #[test]
    fn one_wake_up_is_never_lost() {
        handshake(1);
    }

    /// Two rounds: the sleeper may park again after a wake-up whose token it did not need.
    #[test]
    fn two_wake_ups_are_never_lost() {
        handshake(2);
    }
}

/// The handshake with real threads and the fences this machine uses (asymmetric where `membarrier` works;
/// loom models the symmetric one above): two threads hand a counter back and forth, each parking at once
/// (no spinning) with an hour's timeout, so one lost wake-up stops the game and the test fails on its
/// deadline instead of hiding behind a short timeout. With the sleeper's `membarrier` removed it failed in
/// about half the runs (a race: not every run hits the window).
#[cfg(all(test, not(loom), not(miri)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::{Arc, Barrier, OnceLock, mpsc};

    #[test]
    fn no_wake_up_is_lost_between_real_threads() {
        const ROUNDS: u64 = 200_000;
        let turn = Arc::new(AtomicU64::new(0));
        let parkers: Arc<[OnceLock<Arc<Parker>>; 2]> = Arc::new([OnceLock::new(), OnceLock::new()]);
        let barrier = Arc::new(Barrier::new(2));
        let (done_tx, done_rx) = mpsc::channel();
        for me in 0..2u64 {
            let (turn, parkers, barrier, done_tx) = (
                turn.clone(),
                parkers.clone(),
                barrier.clone(),
                done_tx.clone(),
            );
            std::thread::spawn(move || {
                let mine = parkers[me as usize]
                    .get_or_init(|| Arc::new(Parker::current()))
                    .clone();
                assert_eq!(mine.asymmetric, asymmetric::available());
                barrier.wait();
                let other = parkers[1 - me as usize]
                    .get()
                    .expect("both registered")
                    .clone();
                for round in 0..ROUNDS {
                    let my_turn = 2 * round + me;
                    while turn.load(Ordering::Acquire) != my_turn {
                        mine.park_unless(
                            || turn.load(Ordering::Acquire) == my_turn,
                            Duration::from_secs(3600),
                        );
                    }
                    turn.store(my_turn + 1, Ordering::Release);
                    other.wake();
                }
                done_tx.send(()).unwrap();
            });
        }
        for _ in 0..2 {
            done_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("a wake-up was lost: a player parked for good");
        }
        assert_eq!(turn.load(Ordering::Acquire), 2 * ROUNDS);
    }
}
