//! Quiet channels stop costing their trustee: a worker looks at every channel it serves on every round of its
//! loop, one load each, and a thousand plain threads that called once and stay alive made each round a
//! thousand cache misses (a blocking `apply` from another thread took 5.9 us instead of 0.5). So a trustee
//! with many channels marks those that have been quiet for long [`Cold`] and stops looking at them; a client
//! that publishes a batch on a cold channel (or closes it, or announces records not yet published, which a
//! retire must read) rings the trustee's [`Doorbell`], and the trustee, which looks at the doorbell once per
//! round (and before a retire), then looks at its cold channels and warms those that need it.
//!
//! The handshake is Dekker's, as in `parker`: the trustee marks a channel cold, fences, and looks at the
//! channel once more; the client publishes, fences, and looks at the mark. At least one of them sees the
//! other's store: the trustee the batch (it warms the channel again at once), or the client the mark (it
//! rings). The fences are the parker's pair: the client's is the one its trustee's `Parker::wake` makes after
//! every publish anyway (a compiler fence where `membarrier` works), the trustee's `Parker::fence_heavy`,
//! paid once per sweep that cools any channel. Ringing is a swap, not a store: when two clients ring, the
//! trustee's swap that reads the second ring must also see the first client's batch, and only read-modify-
//! writes carry a release sequence from one thread's store to another's.
//!
//! A worker about to sleep looks at its hot channels and at the doorbell, not at its cold channels (a
//! thousand looks were microseconds): a ring is work published like a batch, so the client wakes the worker
//! after ringing, and `parker`'s handshake covers it.

use crate::delegation::protocol::sync::{AtomicBool, Ordering};

/// A channel's mark, written by its trustee, read by its client after each publish.
#[derive(Debug, Default)]
pub(crate) struct Cold(AtomicBool);

impl Cold {
    /// Client, after publishing and fencing: true when the trustee no longer looks at this channel, so the
    /// caller must ring its doorbell.
    #[inline]
    pub(crate) fn is_cold(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Trustee: stops looking at the channel. The caller then fences (`Parker::fence_heavy`) and looks at
    /// the channel once more, warming it if a batch came meanwhile.
    pub(crate) fn cool(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Trustee: looks at the channel on every round again.
    pub(crate) fn warm(&self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// A trustee's doorbell, rung by clients that published on a cold channel.
#[derive(Debug, Default)]
pub(crate) struct Doorbell(AtomicBool);

impl Doorbell {
    /// Client: after publishing on a channel it found cold. Release, in a read-modify-write (see the module
    /// docs): the trustee that answers the ring sees the batch.
    pub(crate) fn ring(&self) {
        self.0.swap(true, Ordering::Release);
    }

    /// Trustee: one load per round.
    #[inline]
    pub(crate) fn is_rung(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Trustee: takes the ring, if any; its cold channels must then be looked at (every batch published
    /// before a ring this reads is visible).
    pub(crate) fn answer(&self) -> bool {
        self.0.swap(false, Ordering::Acquire)
    }
}

/// The handshake, model-checked: whatever the interleaving, a batch published on a channel its trustee is
/// cooling is seen, by the trustee's second look or through the doorbell.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use crate::delegation::protocol::sync::{AtomicU32, fence};
    use loom::sync::Arc;
    use loom::thread;

    /// The client's side of a publish (the fence stands for `Parker::wake`'s, symmetric under loom).
    fn publish(seq: &AtomicU32, cold: &Cold, bell: &Doorbell) {
        seq.store(1, Ordering::Release);
        fence(Ordering::SeqCst);
        if cold.is_cold() {
            bell.ring();
        }
    }

    #[test]
    fn a_batch_published_while_its_channel_cools_is_seen() {
        loom::model(|| {
            let shared = Arc::new((AtomicU32::new(0), Cold::default(), Doorbell::default()));
            let client = {
                let shared = shared.clone();
                thread::spawn(move || publish(&shared.0, &shared.1, &shared.2))
            };
            let (seq, cold, bell) = &*shared;
            cold.cool();
            fence(Ordering::SeqCst);
            let seen_now = seq.load(Ordering::Acquire) == 1;
            if seen_now {
                cold.warm();
            }
            client.join().unwrap();
            // Not seen at the second look: the client saw the mark and rang, and the ring shows the batch.
            if !seen_now {
                assert!(
                    bell.answer(),
                    "a batch on a cold channel with no ring: it would never be served"
                );
                assert_eq!(seq.load(Ordering::Relaxed), 1);
            }
        });
    }

    #[test]
    fn one_answer_to_two_rings_sees_both_batches() {
        loom::model(|| {
            let shared = Arc::new((
                [AtomicU32::new(0), AtomicU32::new(0)],
                [Cold::default(), Cold::default()],
                Doorbell::default(),
            ));
            for c in &shared.1 {
                c.cool();
            }
            let clients: Vec<_> = (0..2)
                .map(|i| {
                    let shared = shared.clone();
                    thread::spawn(move || publish(&shared.0[i], &shared.1[i], &shared.2))
                })
                .collect();
            let (seqs, _, bell) = &*shared;
            let mut seen = [false; 2];
            // The trustee's rounds: each ring it answers shows every batch rung before it.
            while seen != [true; 2] {
                if bell.answer() {
                    for (s, seq) in seen.iter_mut().zip(seqs) {
                        *s |= seq.load(Ordering::Relaxed) == 1;
                    }
                } else {
                    thread::yield_now();
                }
            }
            for c in clients {
                c.join().unwrap();
            }
        });
    }
}
