//! `apply_async` under tokio: exact totals from many tasks, panics, and cancellation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

mod common;
use common::*;
use trust_core::Trust;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_tasks_times_a_thousand_increments_are_exact() {
    let per_task: u64 = 1000;
    let counter: Trust<u64> = rt().trustee(1).entrust(0);
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let counter = counter.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    counter.apply_async(|c| *c += 1).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(counter.apply_async(|c| *c).await, 1000 * per_task);
}

#[tokio::test]
async fn a_panic_resumes_in_the_awaiting_task() {
    let counter = rt().trustee(0).entrust(1u64);
    let c = counter.clone();
    let err = tokio::spawn(async move { c.apply_async(|_| -> u64 { panic!("async boom") }).await })
        .await
        .unwrap_err();
    assert_eq!(*err.into_panic().downcast::<&str>().unwrap(), "async boom");
    assert_eq!(counter.apply_async(|c| *c).await, 1);
}

#[tokio::test]
async fn a_future_dropped_after_sending_leaks_nothing() {
    let counter = rt().trustee(1).entrust(0u64);
    let drops = Arc::new(AtomicUsize::new(0));
    for _ in 0..100 {
        let d = drops.clone();
        let mut fut = Box::pin(counter.apply_async(move |c| {
            *c += 1;
            CountsDrops(d)
        }));
        // Poll once (this sends the request), then drop the future before the answer.
        let waker = std::task::Waker::noop();
        let _ = fut
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker));
        drop(fut);
    }
    // Futures in flight at the same time are not ordered among themselves (a request whose slot is busy goes
    // by the trustee's mailbox): wait, with a deadline, until all 100 ran and their results were dropped.
    let mut waited = 0;
    while (counter.apply_async(|c| *c).await < 100 || drops.load(Ordering::SeqCst) < 100)
        && waited < 5000
    {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        waited += 1;
    }
    assert_eq!(counter.apply_async(|c| *c).await, 100);
    assert_eq!(drops.load(Ordering::SeqCst), 100);
}

use std::future::Future;

#[test]
fn apply_async_never_blocks_its_executor_thread_behind_a_slow_request() {
    // A slow request keeps this thread's slot to trustee 1 busy for 300 ms; sending a second request must not
    // wait for it (an executor thread that waited would stall every other task on it).
    let slow = rt().trustee(1).entrust(0u64);
    let fast = slow.clone();
    let inside = Arc::new(AtomicBool::new(false));
    let now_inside = inside.clone();
    let mut first = Box::pin(slow.apply_async(move |v| {
        now_inside.store(true, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(300));
        *v += 1;
    }));
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    assert!(first.as_mut().poll(&mut cx).is_pending());
    // The trustee is now inside the slow closure (waited for, not guessed with a fixed pause).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !inside.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(
        inside.load(Ordering::SeqCst),
        "the slow request never started"
    );
    let mut second = Box::pin(fast.apply_async(|v| *v += 10));
    let started = std::time::Instant::now();
    assert!(second.as_mut().poll(&mut cx).is_pending());
    let waited = started.elapsed();
    assert!(
        waited < std::time::Duration::from_millis(150),
        "the first poll waited {waited:?}"
    );
    let tokio = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    tokio.block_on(async { (first.await, second.await) });
    assert_eq!(slow.apply(|v| *v), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_tasks_in_flight_at_once_each_get_their_own_answer() {
    const TASKS: u64 = 100_000;
    let counter: Trust<u64> = rt().trustee(0).entrust(0);
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let counter = counter.clone();
            tokio::spawn(async move {
                counter
                    .apply_async(move |c| std::mem::replace(c, *c + i + 1))
                    .await
            })
        })
        .collect();
    let mut seen = Vec::with_capacity(TASKS as usize);
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    // Each task saw the counter just before its own addition: all distinct, and the final sum is exact.
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(
        seen.len() as u64,
        TASKS,
        "two tasks saw the same counter value"
    );
    assert_eq!(counter.apply_async(|c| *c).await, TASKS * (TASKS + 1) / 2);
}

/// The waker a future is woken with is the one of its latest poll: polled first with a waker that does
/// nothing, then awaited by a task while the trustee is still busy, it must wake that task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_polled_again_with_another_waker_wakes_the_new_one() {
    let slow = rt().trustee(1).entrust(0u64);
    for round in 0..20u64 {
        let mut fut = Box::pin(slow.apply_async(move |c| {
            std::thread::sleep(std::time::Duration::from_millis(5));
            *c += 1;
            round
        }));
        let waker = std::task::Waker::noop();
        assert!(
            fut.as_mut()
                .poll(&mut std::task::Context::from_waker(waker))
                .is_pending()
        );
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), fut)
            .await
            .expect("woken through the waker of the latest poll");
        assert_eq!(got, round);
    }
    assert_eq!(slow.apply_async(|c| *c).await, 20);
}

/// A fiber may drive an `apply_async` future itself (polling, and yielding to the other fibers meanwhile):
/// the request goes by mail from the worker like from any thread (or applies at once on the counter's own).
#[test]
fn a_fiber_can_poll_an_apply_async_future_to_completion() {
    let counter = Arc::new(rt().trustee(1).entrust(0u64));
    let fibers: Vec<_> = (0..8)
        .map(|_| {
            let counter = counter.clone();
            trust_core::spawn(move || {
                let waker = std::task::Waker::noop();
                let mut cx = std::task::Context::from_waker(waker);
                let mut sum = 0;
                for i in 1..=100u64 {
                    let mut fut = std::pin::pin!(counter.apply_async(move |c| {
                        *c += i;
                        i
                    }));
                    sum += loop {
                        match fut.as_mut().poll(&mut cx) {
                            std::task::Poll::Ready(v) => break v,
                            std::task::Poll::Pending => trust_core::yield_now(),
                        }
                    };
                }
                sum
            })
        })
        .collect();
    for f in fibers {
        assert_eq!(f.join().unwrap(), 5050);
    }
    assert_eq!(counter.apply(|c| *c), 8 * 5050);
}

/// An `apply_async` on a `Latch` that a launched fiber holds waits on the trustee (its mailed request is
/// retried once the fiber is done), and then answers: the order is the launch's, then the future's.
#[tokio::test]
async fn apply_async_on_a_latch_held_by_a_launched_fiber_answers_after_it() {
    let latched = rt()
        .trustee(0)
        .entrust(trust_core::Latch::new(Vec::<&str>::new()));
    let slow = rt().trustee(1).entrust(());
    let l2 = latched.clone();
    let (started, has_started) = std::sync::mpsc::channel();
    let launched = std::thread::spawn(move || {
        l2.launch(move |l| {
            let mut log = l.lock();
            log.push("launch start");
            started.send(()).unwrap();
            // The launched fiber suspends, holding the latch, for 50 ms.
            slow.apply(|_| std::thread::sleep(std::time::Duration::from_millis(50)));
            log.push("launch end");
        })
    });
    has_started.recv().unwrap();
    let len = latched
        .apply_async(|l| {
            l.get_mut().push("async");
            l.get_mut().len()
        })
        .await;
    launched.join().unwrap();
    assert_eq!(len, 3);
    assert_eq!(
        latched.apply_async(|l| l.get_mut().clone()).await,
        ["launch start", "launch end", "async"]
    );
}

/// The trustee wakes one task of the answers it gives together and leaves the others for that task's poll to
/// wake (`trustee::relay`). Here that task is never polled again (its waker does nothing), and the trustee is
/// kept busy by a thread pipelining `apply_then`s: the other task must still be woken, by the trustee itself.
#[test]
fn a_task_is_woken_even_when_the_one_woken_before_it_is_never_polled_and_the_trustee_is_busy() {
    use std::sync::atomic::AtomicBool;
    use std::task::{Context, Poll, Wake, Waker};
    struct Woken(AtomicBool);
    impl Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let counter = Arc::new(rt().trustee(0).entrust(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let (counter, stop) = (counter.clone(), stop.clone());
        std::thread::spawn(move || {
            // A slow request first, so that both futures below are mailed while the trustee is in it and
            // answered in one pass; then a steady stream, so that the trustee never idles.
            counter.apply(|_| std::thread::sleep(std::time::Duration::from_millis(30)));
            while !stop.load(Ordering::Relaxed) {
                counter.apply_then(|c| *c += 1, |()| {});
            }
            trust_core::wait_pending();
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(10));
    let woken = Arc::new(Woken(AtomicBool::new(false)));
    let waker = Waker::from(woken.clone());
    let mut woken_by_trustee = Box::pin(counter.apply_async(|_| 1u8));
    let mut never_polled_again = Box::pin(counter.apply_async(|_| 2u8));
    assert!(
        woken_by_trustee
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    assert!(
        never_polled_again
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending()
    );
    // Not polled until woken (a poll would drain the relay itself): a wake-up that never comes fails.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !woken.0.load(Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline,
            "the task was never woken"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let got = woken_by_trustee
        .as_mut()
        .poll(&mut Context::from_waker(&waker));
    assert_eq!(got, Poll::Ready(1));
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
    drop(never_polled_again);
}
