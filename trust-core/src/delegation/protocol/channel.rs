//! What one client shares with one trustee: the slot pairs (`Lanes`), the client's parker (woken by answers),
//! and the flags the trustee reads when the client goes away or holds records not yet published.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32};

use crate::delegation::protocol::cold::Cold;
use crate::delegation::protocol::parker::Parker;
use crate::delegation::protocol::slot::Lanes;

/// The memory one client shares with one trustee.
#[derive(Debug)]
pub(crate) struct Channel {
    pub(crate) slots: Lanes,
    /// Woken when a batch is answered; `None` for clients that poll instead of parking.
    pub(crate) parker: Option<Arc<Parker>>,
    /// The client is gone; the trustee forgets the channel once its last batch is served.
    pub(crate) closed: AtomicBool,
    /// The trustee no longer looks at this channel every round: the client rings its doorbell after it
    /// publishes (see `cold`). On the line of `parker` and `closed`, which both sides read and neither writes
    /// often.
    pub(crate) cold: Cold,
    pub(crate) linger: Linger,
    /// The last batch the trustee took (ran, or began and paused in), written when it shuts down: a client
    /// that finds it shut down drops the records of later batches itself, unrun.
    pub(crate) taken: AtomicU32,
    /// When batch `taken` was paused, not answered: bytes of results its records before the pause wrote,
    /// which the client drops with their continuations. Written before `taken`.
    pub(crate) written: AtomicU32,
}

impl Channel {
    /// A channel for a client woken through `parker` (if any), made in place on the heap (see
    /// [`Lanes::init`]).
    pub(crate) fn new(parker: Option<Arc<Parker>>) -> Arc<Channel> {
        let mut channel = Arc::<Channel>::new_uninit();
        let p = Arc::get_mut(&mut channel)
            .expect("a new Arc has no other handle")
            .as_mut_ptr();
        // SAFETY: `p` points at the new, aligned allocation; every field is written before `assume_init`
        // (the lanes' bodies may stay uninitialized, see `Lanes::init`).
        unsafe {
            Lanes::init(&raw mut (*p).slots);
            (&raw mut (*p).parker).write(parker);
            (&raw mut (*p).closed).write(AtomicBool::new(false));
            (&raw mut (*p).cold).write(Cold::default());
            (&raw mut (*p).linger).write(Linger::default());
            (&raw mut (*p).taken).write(AtomicU32::new(0));
            (&raw mut (*p).written).write(AtomicU32::new(0));
            channel.assume_init()
        }
    }
}

/// The client holds records not yet published, all of which will be in batches numbered up to `through`.
/// Read by the trustee before it drops a property whose count reached zero (see `worker::run::Worker::retire`).
/// Written by the client at every batch, so on cache lines of its own, away from `parker`, which the trustee
/// reads after every batch.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Linger {
    pub(crate) lingering: AtomicBool,
    pub(crate) through: AtomicU32,
}
