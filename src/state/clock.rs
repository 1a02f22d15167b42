//! The store's clock as seen from here, so a call can tell the script when it stops waiting.
//!
//! The script compares with the store's own `TIME`, never with this host's wall clock: each
//! heartbeat reads `TIME` and keeps where the store's clock stood at this process's monotonic
//! epoch, so the daemon's and the store's wall clocks may differ by any amount (NTP or not).
//! What is left is the heartbeat's own uncertainty (half its round trip, plus a millisecond),
//! which is added to every deadline: a call is never refused as late while it still waits,
//! and a late run is charged nothing as long as it runs more than that after the caller gave up.
//! Until the first heartbeat answers (before READY that is the start's own probe), no deadline
//! is passed and a late run would be charged as before.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

pub struct Clock {
    epoch: Instant,
    /// The store's time (µs) at `epoch`; 0 until learned.
    store_at_epoch: AtomicU64,
    /// What a deadline is given on top (µs): the last reading's uncertainty.
    slack: AtomicU64,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            epoch: Instant::now(),
            store_at_epoch: AtomicU64::new(0),
            slack: AtomicU64::new(0),
        }
    }

    /// `TIME` read as `store_now`, asked at `sent` and answered at `received`.
    pub fn learn(&self, sent: Instant, received: Instant, store_now: u64) {
        let half = received.saturating_duration_since(sent) / 2;
        let middle = micros(sent.saturating_duration_since(self.epoch) + half);
        let Some(at_epoch) = store_now.checked_sub(middle).filter(|at| *at > 0) else {
            return;
        };
        self.slack
            .store(micros(half + Duration::from_millis(1)), Ordering::Relaxed);
        self.store_at_epoch.store(at_epoch, Ordering::Relaxed);
    }

    /// `at` in the store's clock (µs), or 0 (no deadline) while the clock is unknown.
    pub fn store_time(&self, at: Instant) -> u64 {
        match self.store_at_epoch.load(Ordering::Relaxed) {
            0 => 0,
            base => base
                .saturating_add(micros(at.saturating_duration_since(self.epoch)))
                .saturating_add(self.slack.load(Ordering::Relaxed)),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_deadline_in_the_stores_clock_whatever_ours_says() {
        let clock = Clock::new();
        assert_eq!(clock.store_time(Instant::now()), 0, "unknown: no deadline");
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(4)).await;
        // The store's clock reads 5,000 s at the middle of the round trip.
        clock.learn(sent, Instant::now(), 5_000_000_000);
        let later = Instant::now() + Duration::from_millis(100);
        // 5,000 s + 2 ms (to the answer) + 100 ms, + 3 ms of slack (half the trip and 1 ms).
        assert_eq!(
            clock.store_time(later),
            5_000_000_000 + 2_000 + 100_000 + 3_000
        );
    }
}
