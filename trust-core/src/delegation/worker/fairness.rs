//! How a worker shares its trustee between its own fibers, whose applies run inline (the local shortcut,
//! nanoseconds each), and remote clients, whose requests arrive in batches, one batch per round trip.
//!
//! Left alone, the local fibers win by far: between two batches of a remote client, they apply hundreds of
//! times, and a remote fiber waits a whole round trip for each request (measured: the slowest remote fiber
//! got a quarter of the mean). So local applies spend *credit*: each remote record served earns two and a
//! half of them ([`LOCAL_PER_REMOTE`] halves). A fiber about to apply inline without credit is *held*
//! (suspended, off the ready queue) until the next remote batch pays for it — but only while some remote
//! client is *saturated*: its last batch carried at least [`SATURATED`] records, so it has more requests than
//! a round trip carries, and that batch came less recently than a few gaps between such batches (see
//! [`saturated_for`]). A blocking thread with one request per round trip, or a client that went quiet, never
//! holds anyone up. Only inline applies wait: a held worker's fibers still send their requests to other
//! trustees, so two workers that are each other's remote clients never wait for each other. A turn of the
//! loop also stops resuming fibers after [`TURN_APPLIES`] inline applies, so channels are polled often.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use crate::delegation::trustee::shared;

/// Local applies a turn of the worker loop runs before it serves its channels again.
const TURN_APPLIES: u32 = 128;

/// Local applies each served remote record pays for, while remote clients are saturated, in halves (credit
/// is counted in half applies): remote fibers then get at least 1 / 3.5 of the trustee, and the slowest
/// fiber of a saturated counter about 1 / 1.75 of the mean. Measured with 2 x 256 fibers on one counter:
/// 2 gave fairness 0.60-0.65, 3 gave 0.48-0.49 and 30% more increments; 2.5 is between.
const LOCAL_PER_REMOTE: i64 = 5;

/// Credit one inline apply spends (half applies, see `LOCAL_PER_REMOTE`).
const APPLY_COST: i64 = 2;

/// Records in a batch that show its client has more requests than a round trip carries.
const SATURATED: usize = 8;

/// How long after a saturated batch the worker keeps throttling local applies: four gaps between the last two
/// saturated batches (a few of the remote client's round trips, however slow its worker runs: a debug build,
/// a loaded machine), within these bounds.
const SATURATED_FOR: (Duration, Duration) = (Duration::from_micros(50), Duration::from_millis(4));

fn saturated_for(gap: Duration) -> Duration {
    (gap * 4).clamp(SATURATED_FOR.0, SATURATED_FOR.1)
}

/// Unused credit kept, at most: a burst of remote work does not buy an unbounded local burst later.
const MAX_CREDIT: i64 = 4 * TURN_APPLIES as i64 * APPLY_COST;

/// Credit while no remote client is saturated: local applies are not counted against anything.
const UNLIMITED: i64 = i64::MAX / 2;

#[derive(Debug)]
pub(crate) struct Fairness {
    /// Inline applies allowed before the next look at the clock: `UNLIMITED` while no remote client is
    /// saturated, else what the served remote records paid for.
    credit: Cell<i64>,
    /// When the last saturated batch was served; `None` once `window` has passed.
    saturated: Cell<Option<Instant>>,
    /// How long a saturated batch keeps local applies throttled (`saturated_for`).
    window: Cell<Duration>,
    turn_applies: Cell<u32>,
    /// The clock said the window is still open, this turn: the fibers that find the credit spent after the
    /// first are held without asking it again (a clock read is 20-25 ns here: 7% of the samples of a saturated
    /// counter's workers when every held fiber asked).
    still_saturated: Cell<bool>,
    /// Fibers waiting for credit to apply inline.
    held: RefCell<Vec<usize>>,
}

impl Default for Fairness {
    fn default() -> Self {
        Fairness {
            credit: Cell::new(UNLIMITED),
            saturated: Cell::new(None),
            window: Cell::new(SATURATED_FOR.0),
            turn_applies: Cell::new(0),
            still_saturated: Cell::new(false),
            held: RefCell::default(),
        }
    }
}

impl Fairness {
    pub(crate) fn new_turn(&self) {
        self.turn_applies.set(0);
        self.still_saturated.set(false);
    }

    /// A remote batch of `records` was served.
    pub(crate) fn served(&self, records: usize) {
        if records >= SATURATED {
            let now = Instant::now();
            if let Some(last) = self.saturated.get() {
                self.window.set(saturated_for(now - last));
            }
            self.saturated.set(Some(now));
        } else if self.saturated.get().is_none() {
            return;
        }
        let earned = LOCAL_PER_REMOTE * records as i64;
        self.credit.set(self.credit.get().min(MAX_CREDIT).saturating_add(earned).min(MAX_CREDIT));
    }

    /// True when a fiber of this worker may apply inline now. One load and compare, but when the credit is
    /// spent.
    #[inline]
    pub(crate) fn may_apply_inline(&self) -> bool {
        self.credit.get() > 0 || self.refill()
    }

    /// Out of credit: unlimited again if no remote client has been saturated for the window (asked of the
    /// clock once a turn).
    #[cold]
    fn refill(&self) -> bool {
        // In a child forked by this worker's thread: never again (see `stop_in_forked_child`).
        if self.still_saturated.get() || shared::in_forked_child() {
            return false;
        }
        if let Some(at) = self.saturated.get()
            && at.elapsed() < self.window.get()
        {
            self.still_saturated.set(true);
            return false;
        }
        self.saturated.set(None);
        self.credit.set(UNLIMITED);
        true
    }

    /// In a child forked by this worker's thread (the `fork` handler, in the child): the credit is spent and
    /// never refilled there, so a fiber's next inline apply goes by `before_inline_apply`'s hold, whose
    /// suspension panics naming `fork`, as the docs promise for every `apply` in a forked child. The local
    /// shortcut itself stays as it is: it looks at no trustee state, and ran the closure on the child's copy of
    /// the value (review 68). A plain store: async-signal-safe, as a fork handler must be.
    pub(crate) fn stop_in_forked_child(&self) {
        self.credit.set(0);
    }

    /// A fiber of this worker applied inline.
    #[inline]
    pub(crate) fn applied_inline(&self) {
        self.turn_applies.set(self.turn_applies.get() + 1);
        self.credit.set(self.credit.get() - APPLY_COST);
    }

    /// Fiber `id` waits for credit; the caller suspends it.
    pub(crate) fn hold(&self, id: usize) {
        self.held.borrow_mut().push(id);
    }

    /// The held fibers, once they may apply inline again (the caller makes them ready).
    pub(crate) fn release(&self) -> Vec<usize> {
        if self.held.borrow().is_empty() || !self.may_apply_inline() {
            return Vec::new();
        }
        std::mem::take(&mut *self.held.borrow_mut())
    }

    /// True while fibers wait for credit: they are released within the saturation window (at most
    /// `SATURATED_FOR.1`), so their worker must not sleep past it.
    pub(crate) fn has_held(&self) -> bool {
        !self.held.borrow().is_empty()
    }

    /// True while the turn may resume more fibers.
    pub(crate) fn turn_open(&self) -> bool {
        self.turn_applies.get() < TURN_APPLIES
    }
}
