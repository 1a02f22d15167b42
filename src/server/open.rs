//! The slots connections and calls take (counted, see `crate::slots`); the open connections,
//! so that at the cap the longest-idle one can make room for a newcomer; and the share of the
//! process's file descriptors that connections may use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::metrics::METRICS;
use crate::slots::{Slot, Slots};

/// Open connections.
pub static CONNECTIONS: LazyLock<Slots> = LazyLock::new(|| Slots::new(METRICS.connections.clone()));
/// Calls running, all connections.
pub static CALLS: LazyLock<Slots> = LazyLock::new(|| Slots::new(METRICS.in_flight.clone()));
/// The open RPC connections, for [`Open::evict_idlest`].
pub static OPEN: LazyLock<Open> = LazyLock::new(Open::default);

/// One open connection, as the connection cap sees it.
#[derive(Default)]
pub struct Conn {
    /// Its connection slot; taken from it when it is chosen to make room.
    slot: Mutex<Option<Slot<'static>>>,
    /// Calls read and not yet answered.
    busy: AtomicUsize,
    /// When it last read a request or wrote a reply, on [`Open`]'s clock.
    active: AtomicU64,
    /// Chosen to close for a newcomer.
    chosen: AtomicBool,
    evict: Notify,
}

impl Conn {
    /// It has just read a request or written replies, and has `busy` calls unanswered.
    pub fn active(&self, busy: usize) {
        self.busy.store(busy, Ordering::Relaxed);
        self.active.store(
            OPEN.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
    }

    /// Resolves once the connection was chosen to close for a newcomer.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

/// The open connections.
#[derive(Default)]
pub struct Open {
    table: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Ticks once per activity: a strict order of "last active", cheaper than a clock.
    clock: AtomicU64,
}

/// A connection's entry in [`OPEN`], removed (and its slot given back) on drop.
pub struct Registered {
    id: u64,
    pub conn: Arc<Conn>,
}

impl Open {
    fn table(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enters a new connection holding `slot`.
    pub fn register(&self, id: u64, slot: Slot<'static>) -> Registered {
        let conn = Arc::new(Conn {
            slot: Mutex::new(Some(slot)),
            ..Conn::default()
        });
        conn.active(0);
        self.table().insert(id, conn.clone());
        Registered { id, conn }
    }

    /// How many connections are registered (an evicted one stays until its task has ended).
    pub fn count(&self) -> usize {
        self.table().len()
    }

    /// Chooses the connection that has been idle longest with nothing in flight, tells it
    /// to close, and returns its slot for a newcomer; `None` when every connection is busy.
    pub fn evict_idlest(&self) -> Option<Slot<'static>> {
        let table = self.table();
        let victim = table
            .values()
            .filter(|c| c.busy.load(Ordering::Relaxed) == 0 && !c.chosen.load(Ordering::Relaxed))
            .min_by_key(|c| c.active.load(Ordering::Relaxed))?;
        victim.chosen.store(true, Ordering::Relaxed);
        let slot = victim.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        victim.evict.notify_one();
        slot
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        OPEN.table().remove(&self.id);
    }
}

/// Descriptors kept for everything but RPC connections: listeners, the metrics endpoint and
/// its connections, Twilio connections, logs and the runtime's own.
pub const RESERVED_DESCRIPTORS: u64 = 128;

/// RPC connections the open-file limit leaves room for (`usize::MAX` until measured).
static DESCRIPTOR_ROOM: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The connection cap in force: `max_connections`, or fewer if descriptors would run out.
pub fn connection_cap(max_connections: usize) -> usize {
    max_connections.min(DESCRIPTOR_ROOM.load(Ordering::Relaxed))
}

/// Raises the open-file limit to its hard limit and keeps [`RESERVED_DESCRIPTORS`] of it
/// out of the connections' reach. Returns the limit, and how many connections it leaves
/// room for.
pub fn reserve_descriptors() -> (u64, usize) {
    let limit = raise_open_file_limit();
    let room = limit.saturating_sub(RESERVED_DESCRIPTORS).max(1);
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    DESCRIPTOR_ROOM.store(room, Ordering::Relaxed);
    (limit, room)
}

/// The soft open-file limit, raised to the hard one first where it is lower.
fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return u64::MAX;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit through a valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        // rlim_t is u64 on the targets built for; the cast keeps others compiling.
        #[allow(clippy::unnecessary_cast)]
        let current = limit.rlim_cur as u64;
        current
    }
}
