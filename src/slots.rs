//! Counted slots: a limit that may change while slots are out (a reload, a budget that backs
//! off), and a wait for a slot in line — first come, first served, across every caller. The
//! count taken is also a gauge operators see.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Something counted against a limit; the count is also the metric operators see.
pub struct Slots {
    /// Slots out of this one alone (a gauge may be shared: every Twilio account's budget
    /// moves the same one, so it cannot say how many are this budget's).
    taken: AtomicUsize,
    gauge: Gauge,
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
    pub fn new(gauge: Gauge) -> Slots {
        Slots {
            taken: AtomicUsize::new(0),
            gauge,
            permits: Semaphore::new(0),
            limit: AtomicUsize::new(0),
            debt: AtomicUsize::new(0),
            resizing: Mutex::new(()),
        }
    }

    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::Relaxed)
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
        self.taken.fetch_add(1, Ordering::Relaxed);
        self.gauge.inc();
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
        self.slots.taken.fetch_sub(1, Ordering::Relaxed);
        self.slots.gauge.dec();
        if let Some(permit) = self.permit.take() {
            if self.slots.pay_debt(1) == 1 {
                permit.forget();
            }
        }
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

    #[tokio::test]
    async fn each_counts_its_own_slots_when_they_share_a_gauge() {
        let gauge = Gauge::default();
        let (ours, theirs) = (Slots::new(gauge.clone()), Slots::new(gauge.clone()));
        let _a = ours.try_take(5).unwrap();
        let _b: Vec<_> = (0..3).map(|_| theirs.try_take(5).unwrap()).collect();
        assert_eq!((ours.taken(), theirs.taken(), gauge.get()), (1, 3, 4));
    }
}
