//! How a worker shares its trustee between its own fibers, whose applies run inline (the local shortcut,
//! nanoseconds each), and remote clients, whose requests arrive in batches, one batch per round trip.
//!
//! Left alone, the local fibers win by far: between two batches of a remote client, they apply hundreds of
//! times, and a remote fiber waits a whole round trip for each request (measured: the slowest remote fiber
//! got a quarter of the mean). So local applies spend *credit*: each remote record served earns
//! [`LOCAL_PER_REMOTE`] of them. Out of credit, the worker's fibers wait and the worker serves its channels,
//! but only while some remote client is *saturated* — its last batch carried at least [`SATURATED`] records,
//! so it has more requests than a round trip carries — and only for [`SATURATED_FOR`] after that batch: a
//! blocking thread with one request per round trip, or a client that went quiet, never throttles anyone.
//! A turn of the loop also stops its local applies after [`TURN_APPLIES`], so channels are polled often.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Local applies a turn of the worker loop runs before it serves its channels again.
const TURN_APPLIES: u32 = 128;

/// Local applies each served remote record pays for, while remote clients are saturated: remote fibers
/// then get at least 1 / (1 + this) of the trustee.
const LOCAL_PER_REMOTE: i64 = 2;

/// Records in a batch that show its client has more requests than a round trip carries.
const SATURATED: usize = 8;

/// How long after a saturated batch the worker keeps throttling local applies (several round trips).
const SATURATED_FOR: Duration = Duration::from_micros(50);

/// Unused credit kept, at most: a burst of remote work does not buy an unbounded local burst later.
const MAX_CREDIT: i64 = 4 * TURN_APPLIES as i64;

#[derive(Debug, Default)]
pub(crate) struct Fairness {
    credit: Cell<i64>,
    /// When the last saturated batch was served; `None` once `SATURATED_FOR` has passed.
    saturated: Cell<Option<Instant>>,
    turn_applies: Cell<u32>,
}

impl Fairness {
    pub(crate) fn new_turn(&self) {
        self.turn_applies.set(0);
    }

    /// A remote batch of `records` was served.
    pub(crate) fn served(&self, records: usize) {
        let earned = LOCAL_PER_REMOTE * records as i64;
        self.credit.set((self.credit.get() + earned).min(MAX_CREDIT));
        if records >= SATURATED {
            self.saturated.set(Some(Instant::now()));
        }
    }

    /// A fiber of this worker applied inline.
    #[inline]
    pub(crate) fn applied_inline(&self) {
        self.turn_applies.set(self.turn_applies.get() + 1);
        self.credit.set(self.credit.get() - 1);
    }

    /// True when the worker's fibers may run now (they may apply inline).
    pub(crate) fn local_allowed(&self) -> bool {
        if self.turn_applies.get() >= TURN_APPLIES {
            return false;
        }
        if self.credit.get() > 0 {
            return true;
        }
        match self.saturated.get() {
            Some(at) if at.elapsed() < SATURATED_FOR => false,
            Some(_) => {
                self.saturated.set(None);
                true
            }
            None => true,
        }
    }
}
