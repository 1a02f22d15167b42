//! Counted slots for connections and calls: a limit that a reload may change, and a wait for
//! a slot in line (first come, first served across every connection); the open connections,
//! so that at the cap the longest-idle one can make room for a newcomer; and the share of the
//! process's file descriptors that connections may use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, Semaphore, SemaphorePermit};

use crate::metrics::METRICS;

/// Open connections.
pub static CONNECTIONS: LazyLock<Slots> = LazyLock::new(|| Slots::new(METRICS.connections.clone()));
/// Calls running, all connections.
pub static CALLS: LazyLock<Slots> = LazyLock::new(|| Slots::new(METRICS.in_flight.clone()));
/// The open RPC connections, for [`Open::evict_idlest`].
pub static OPEN: LazyLock<Open> = LazyLock::new(Open::default);

/// Something counted against a limit; the count is also the metric operators see.
pub struct Slots {
    taken: Gauge,
    /// One permit per slot; tokio's semaphore hands freed permits to its waiters in the
    /// order they asked, so a wait is a place in one line shared by every connection.
    permits: Semaphore,
    /// The limit the permits are sized for (a reload may change it).
    limit: AtomicUsize,
    /// Permits to forget as they come back: the limit was lowered while they were out.
    debt: AtomicUsize,
    resizing: Mutex<()>,
}

/// One taken slot, given back on drop.
pub struct Slot<'a> {
    slots: &'a Slots,
    permit: Option<SemaphorePermit<'a>>,
}

impl Slots {
    pub fn new(taken: Gauge) -> Slots {
        Slots {
            taken,
            permits: Semaphore::new(0),
            limit: AtomicUsize::new(0),
            debt: AtomicUsize::new(0),
            resizing: Mutex::new(()),
        }
    }

    pub fn taken(&self) -> i64 {
        self.taken.get()
    }

    /// A slot if fewer than `limit` are taken and nobody is waiting for one.
    pub fn try_take(&self, limit: usize) -> Option<Slot<'_>> {
        self.resize(limit);
        self.permits.try_acquire().ok().map(|p| self.slot(p))
    }

    /// Waits in line until a slot is free. Dropping the future leaves the line.
    pub async fn take(&self, limit: usize) -> Slot<'_> {
        if let Some(slot) = self.try_take(limit) {
            return slot;
        }
        match self.permits.acquire().await {
            Ok(permit) => self.slot(permit),
            // Only a closed semaphore refuses, and this one is never closed.
            Err(_) => std::future::pending().await,
        }
    }

    fn slot<'a>(&'a self, permit: SemaphorePermit<'a>) -> Slot<'a> {
        self.taken.inc();
        Slot {
            slots: self,
            permit: Some(permit),
        }
    }

    /// Sizes the permits for `limit`; a no-op (one load) unless the limit changed.
    fn resize(&self, limit: usize) {
        if self.limit.load(Ordering::Acquire) == limit {
            return;
        }
        let _resizing = self.resizing.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.limit.load(Ordering::Acquire);
        if limit > old {
            let grow = limit - old;
            let paid = self.pay_debt(grow);
            self.permits.add_permits(grow - paid);
        } else {
            let cut = old - limit;
            let forgotten = self.permits.forget_permits(cut);
            self.debt.fetch_add(cut - forgotten, Ordering::AcqRel);
        }
        self.limit.store(limit, Ordering::Release);
    }

    /// Takes up to `n` off the debt; returns how much it took.
    fn pay_debt(&self, n: usize) -> usize {
        let mut paid = 0;
        let _ = self
            .debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |debt| {
                paid = debt.min(n);
                Some(debt - paid)
            });
        paid
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.slots.taken.dec();
        if let Some(permit) = self.permit.take() {
            if self.slots.pay_debt(1) == 1 {
                permit.forget();
            }
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn slots_refuse_past_the_limit_and_wake_a_waiter() {
        let slots = Slots::new(Gauge::default());
        let a = slots.try_take(2).unwrap();
        let _b = slots.try_take(2).unwrap();
        assert!(slots.try_take(2).is_none());
        assert_eq!(slots.taken(), 2);
        let waiter = slots.take(2);
        tokio::pin!(waiter);
        assert!(waiter.as_mut().now_or_never().is_none());
        drop(a);
        let _c = waiter.await;
        assert_eq!(slots.taken(), 2);
    }

    #[tokio::test]
    async fn freed_slots_go_to_waiters_in_the_order_they_asked() {
        let slots = Slots::new(Gauge::default());
        let held = slots.try_take(1).unwrap();
        let mut first = Box::pin(slots.take(1));
        let mut second = Box::pin(slots.take(1));
        assert!(first.as_mut().now_or_never().is_none());
        assert!(second.as_mut().now_or_never().is_none());
        drop(held);
        // A newcomer does not jump the line.
        assert!(slots.try_take(1).is_none());
        assert!(second.as_mut().now_or_never().is_none());
        let got = first.await;
        drop(got);
        let _ = second.await;
    }

    #[tokio::test]
    async fn a_reload_may_lower_or_raise_the_limit_while_slots_are_out() {
        let slots = Slots::new(Gauge::default());
        let held: Vec<_> = (0..3).map(|_| slots.try_take(3).unwrap()).collect();
        // Lowered to 1 with 3 out: none is free until two of them came back.
        assert!(slots.try_take(1).is_none());
        let mut held = held.into_iter();
        drop(held.next());
        assert!(slots.try_take(1).is_none());
        drop(held.next());
        assert!(slots.try_take(1).is_none());
        drop(held.next());
        let one = slots.try_take(1).unwrap();
        assert!(slots.try_take(1).is_none());
        // Raised: room at once.
        let _more: Vec<_> = (0..4).map(|_| slots.try_take(5).unwrap()).collect();
        assert!(slots.try_take(5).is_none());
        drop(one);
        assert_eq!(slots.taken(), 4);
    }
}
