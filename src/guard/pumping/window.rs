//! Conversion over a sliding window, kept as a ring of [`BUCKETS`] buckets of `window / BUCKETS`
//! each: sends and confirmations counted in the bucket of their time, read as the sum of the
//! buckets still inside the window. A bucket is reset when the ring comes round to it, so a
//! subject costs a fixed few bytes however long it lives. The store's script
//! (`state/gcra.lua`) keeps the same ring in a hash, field by field.

use std::time::Duration;

/// Buckets per window: the window slides in steps of a quarter (15 minutes of the default hour).
pub const BUCKETS: u64 = 4;

/// Sends and confirmations of one country or range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// Per slot: the bucket's number (time / bucket length), its sends and confirmations.
    slots: [(u64, u32, u32); BUCKETS as usize],
}

impl Window {
    /// Counts a send at `bucket`.
    pub fn sent(&mut self, bucket: u64) {
        let slot = self.slot(bucket);
        slot.1 = slot.1.saturating_add(1);
    }

    /// Counts a confirmation at `bucket`.
    pub fn confirmed(&mut self, bucket: u64) {
        let slot = self.slot(bucket);
        slot.2 = slot.2.saturating_add(1);
    }

    /// Sends and confirmations in the window that ends in `bucket`.
    pub fn totals(&self, bucket: u64) -> (u64, u64) {
        self.slots
            .iter()
            .filter(|(b, _, _)| *b + BUCKETS > bucket && *b <= bucket)
            .fold((0, 0), |(s, c), (_, sent, confirmed)| {
                (s + u64::from(*sent), c + u64::from(*confirmed))
            })
    }

    /// Whether nothing in it is still inside the window at `bucket` (then it may be dropped).
    pub fn is_stale(&self, bucket: u64) -> bool {
        self.totals(bucket) == (0, 0)
    }

    fn slot(&mut self, bucket: u64) -> &mut (u64, u32, u32) {
        let slot = &mut self.slots[(bucket % BUCKETS) as usize];
        if slot.0 != bucket {
            *slot = (bucket, 0, 0);
        }
        slot
    }
}

/// The bucket `elapsed` falls in, for a window of `window`.
pub fn bucket_of(elapsed: Duration, window: Duration) -> u64 {
    let length = (window.as_millis() as u64 / BUCKETS).max(1);
    elapsed.as_millis() as u64 / length
}

/// Whether `sent` sends with `confirmed` confirmations convert too little: at least
/// `min_sends` sends, and fewer than `min_percent` % of them confirmed.
pub fn converts_too_little(sent: u64, confirmed: u64, min_sends: u64, min_percent: u32) -> bool {
    sent >= min_sends && confirmed.saturating_mul(100) < sent.saturating_mul(min_percent.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_slides_by_buckets_and_forgets_what_left_it() {
        let mut window = Window::default();
        for _ in 0..10 {
            window.sent(0);
        }
        window.confirmed(1);
        window.sent(3);
        assert_eq!(window.totals(3), (11, 1));
        // Bucket 4's window is 1..=4: bucket 0's ten sends left it.
        assert_eq!(window.totals(4), (1, 1));
        window.sent(4); // takes bucket 0's slot
        assert_eq!(window.totals(4), (2, 1));
        assert!(window.is_stale(8));
        assert!(!window.is_stale(7));
    }

    #[test]
    fn too_little_needs_enough_sends_and_a_low_ratio() {
        assert!(!converts_too_little(19, 0, 20, 20));
        assert!(converts_too_little(20, 0, 20, 20));
        assert!(converts_too_little(20, 3, 20, 20));
        assert!(
            !converts_too_little(20, 4, 20, 20),
            "exactly 20 % is enough"
        );
        assert!(!converts_too_little(1000, 800, 20, 20));
        assert_eq!(
            bucket_of(Duration::from_secs(900), Duration::from_secs(3600)),
            1
        );
    }
}
