//! The slots connections and calls take (counted, see `crate::slots`); the open connections,
//! so that at the cap a connection that was never served can make room for a newcomer; and
//! the share of the process's file descriptors that connections may use.
//!
//! At the cap, room is made in this order: a connection still in its TLS handshake, then one
//! that never completed a call, oldest first. A connection that was served (answered a call
//! that passed the caller-token check) is never closed for a newcomer, who is refused instead:
//! a newcomer is a stranger until it completes a call, and letting strangers push out known
//! callers is exactly what a flood wants. Idle served connections end by the idle timeout.
//!
//! The Unix socket keeps a reserve: TCP connections may hold at most the cap less an eighth
//! of it, and a TCP newcomer only ever makes room among TCP connections. A flood on TCP then
//! never costs the on-box forwarder its connections, with no second limit to size.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::metrics::METRICS;
use crate::slots::{Slot, Slots};

/// Open connections.
pub static CONNECTIONS: LazyLock<Slots> = LazyLock::new(|| Slots::new(METRICS.connections_gauge()));
/// Calls running, all connections.
pub static CALLS: LazyLock<Slots> = LazyLock::new(|| Slots::new(METRICS.in_flight_gauge()));
/// The open RPC connections, for [`Open::admit`].
pub static OPEN: LazyLock<Open> = LazyLock::new(Open::default);

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Unix,
    Tcp,
}

/// How far a connection got, in the order connections make room at the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Stage {
    /// Still in its TLS handshake.
    Handshake = 0,
    /// Has not completed a call.
    Stranger = 1,
    /// Was answered a call that passed the caller-token check: never closed for a newcomer.
    Served = 2,
}

impl Stage {
    fn of(value: u8) -> Stage {
        match value {
            0 => Stage::Handshake,
            1 => Stage::Stranger,
            _ => Stage::Served,
        }
    }
}

/// One open connection, as the connection cap sees it.
pub struct Conn {
    listener: Listener,
    /// Its connection slot; taken from it when it is chosen to make room.
    slot: Mutex<Option<Slot<'static>>>,
    /// A [`Stage`].
    stage: AtomicU8,
    /// Calls read and not yet answered.
    busy: AtomicUsize,
    /// Chosen to close for a newcomer.
    chosen: AtomicBool,
    evict: Notify,
}

impl Conn {
    /// It has just read a request or written replies, and has `busy` calls unanswered.
    pub fn active(&self, busy: usize) {
        self.busy.store(busy, Ordering::Relaxed);
    }

    /// Its TLS handshake is done.
    pub fn handshake_done(&self) {
        let _ = self.stage.compare_exchange(
            Stage::Handshake as u8,
            Stage::Stranger as u8,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// It was answered a call that passed the caller-token check.
    pub fn served(&self) {
        self.stage.store(Stage::Served as u8, Ordering::Relaxed);
    }

    fn stage(&self) -> Stage {
        Stage::of(self.stage.load(Ordering::Relaxed))
    }

    /// Resolves once the connection was chosen to close for a newcomer.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

/// The open connections.
#[derive(Default)]
pub struct Open {
    /// By id, which grows with each connection: the first is the oldest.
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    conns: BTreeMap<u64, Arc<Conn>>,
    /// TCP connections holding a slot.
    tcp: usize,
}

/// A connection's entry in [`OPEN`], removed (and its slot given back) on drop.
pub struct Registered {
    id: u64,
    pub conn: Arc<Conn>,
}

/// Why a newcomer was refused at the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every connection it could replace has a call in flight or was served.
    Full,
}

/// A newcomer let in: its entry, and whether another connection was closed for it.
pub struct Admitted {
    pub registered: Registered,
    pub evicted: bool,
}

/// Slots of `cap` kept for the Unix socket: an eighth, at least one (none with a cap of 1).
pub fn unix_reserve(cap: usize) -> usize {
    (cap / 8).max(1).min(cap.saturating_sub(1))
}

impl Open {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets a newcomer from `listener` in under `cap`, making room if needed (see the module
    /// doc), or refuses it. `stage` is where it starts: in its handshake, or a stranger.
    pub fn admit(
        &self,
        id: u64,
        listener: Listener,
        stage: Stage,
        cap: usize,
    ) -> Result<Admitted, Refused> {
        let mut table = self.table();
        let tcp_full = listener == Listener::Tcp && table.tcp >= cap - unix_reserve(cap);
        let free = if tcp_full {
            None
        } else {
            CONNECTIONS.try_take(cap)
        };
        let (slot, evicted) = match free {
            Some(slot) => (slot, false),
            None => (table.make_room(listener).ok_or(Refused::Full)?, true),
        };
        let conn = Arc::new(Conn {
            listener,
            slot: Mutex::new(Some(slot)),
            stage: AtomicU8::new(stage as u8),
            busy: AtomicUsize::new(0),
            chosen: AtomicBool::new(false),
            evict: Notify::new(),
        });
        if listener == Listener::Tcp {
            table.tcp += 1;
        }
        table.conns.insert(id, conn.clone());
        Ok(Admitted {
            registered: Registered { id, conn },
            evicted,
        })
    }

    /// How many connections are registered (an evicted one stays until its task has ended).
    pub fn count(&self) -> usize {
        self.table().conns.len()
    }
}

impl Table {
    /// Chooses the connection to close for a newcomer from `listener` (a TCP newcomer only
    /// replaces a TCP connection), tells it to close, and returns its slot; `None` when every
    /// candidate has a call in flight or was served.
    fn make_room(&mut self, listener: Listener) -> Option<Slot<'static>> {
        let victim = self
            .conns
            .iter()
            .filter(|(_, c)| listener == Listener::Unix || c.listener == Listener::Tcp)
            .filter(|(_, c)| {
                !c.chosen.load(Ordering::Relaxed)
                    && c.busy.load(Ordering::Relaxed) == 0
                    && c.stage() < Stage::Served
            })
            .min_by_key(|(id, c)| (c.stage(), **id))
            .map(|(_, c)| c.clone())?;
        victim.chosen.store(true, Ordering::Relaxed);
        if victim.listener == Listener::Tcp {
            self.tcp = self.tcp.saturating_sub(1);
        }
        let slot = victim.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        victim.evict.notify_one();
        slot
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut table = OPEN.table();
        table.conns.remove(&self.id);
        if self.conn.listener == Listener::Tcp && !self.conn.chosen.load(Ordering::Relaxed) {
            table.tcp = table.tcp.saturating_sub(1);
        }
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
