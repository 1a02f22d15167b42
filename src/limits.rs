//! Counted slots for connections and calls: a limit that a reload may change, and a wait for
//! a slot that costs nothing while it waits (backpressure, not a queue).

use std::sync::LazyLock;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use crate::metrics::METRICS;

/// Open connections.
pub static CONNECTIONS: LazyLock<Slots> = LazyLock::new(|| Slots::new(METRICS.connections.clone()));
/// Calls running, all connections.
pub static CALLS: LazyLock<Slots> = LazyLock::new(|| Slots::new(METRICS.in_flight.clone()));

/// Something counted against a limit; the count is also the metric operators see.
pub struct Slots {
    taken: Gauge,
    freed: Notify,
}

/// One taken slot, given back on drop.
pub struct Slot<'a>(&'a Slots);

impl Slots {
    pub fn new(taken: Gauge) -> Slots {
        Slots {
            taken,
            freed: Notify::new(),
        }
    }

    pub fn taken(&self) -> i64 {
        self.taken.get()
    }

    /// A slot if fewer than `limit` are taken.
    pub fn try_take(&self, limit: usize) -> Option<Slot<'_>> {
        // Take first, then check: two racing takers may both give back, never both exceed.
        if self.taken.inc() < limit as i64 {
            Some(Slot(self))
        } else {
            // No wake-up: nothing was freed (a waiter retrying here would wake itself).
            self.taken.dec();
            None
        }
    }

    /// Waits until a slot is free.
    pub async fn take(&self, limit: usize) -> Slot<'_> {
        // The common case, without registering as a waiter.
        if let Some(slot) = self.try_take(limit) {
            return slot;
        }
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a slot freed in between still wakes us.
            freed.as_mut().enable();
            if let Some(slot) = self.try_take(limit) {
                return slot;
            }
            freed.await;
        }
    }

    fn release(&self) {
        self.taken.dec();
        self.freed.notify_waiters();
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.release();
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
}
