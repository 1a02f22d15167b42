//! The rules of one phone's codes, as a plain value: the in-memory book runs them directly,
//! and `state/codes.lua` runs the same rules in the shared store. Times are microseconds on
//! one clock (this process's, or the store's).

use super::mac::Mac;

/// Codes a phone may have waiting at once: asking again keeps the earlier ones good (an SMS
/// that arrives late still works), up to this many; the oldest goes first.
pub const MAX_LIVE: usize = 3;

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A live code: it, and every other code of the phone, is now spent.
    Accepted,
    /// No live code matches (or none is waiting: the two are never told apart).
    Invalid,
    /// The code was good but its lifetime has passed.
    Expired,
    /// Too many wrong codes: refused until this many µs from now.
    Locked { for_us: u64 },
    /// This wrong code was the last one allowed: locked from now for this many µs.
    LockedNow { for_us: u64 },
}

/// One phone's codes and wrong guesses.
#[derive(Debug, Default, Clone)]
pub struct Entry {
    /// HMAC and expiry of each code, live or recently expired (kept one lifetime more, so
    /// a code typed late is told `expired` rather than `invalid`).
    codes: Vec<(Mac, u64)>,
    wrong: u32,
    /// While in the future, every check is refused; 0 when not locked.
    locked_until: u64,
}

impl Entry {
    /// Adds a code issued `now` that lives `lifetime`; past [`MAX_LIVE`] the one that
    /// expires first is dropped, and codes past their grace are forgotten.
    pub fn keep(&mut self, mac: Mac, now: u64, lifetime: u64) {
        self.codes
            .retain(|&(_, expires)| expires.saturating_add(lifetime) > now);
        if self.codes.len() >= MAX_LIVE {
            if let Some(oldest) = (0..self.codes.len()).min_by_key(|&i| self.codes[i].1) {
                self.codes.remove(oldest);
            }
        }
        self.codes.push((mac, now.saturating_add(lifetime)));
    }

    /// Checks `mac` at `now`; `max_attempts` wrong codes lock the phone until its last live
    /// code would have expired (and spend its codes).
    pub fn check(&mut self, mac: &Mac, now: u64, max_attempts: u32) -> Verdict {
        if self.locked_until > now {
            return Verdict::Locked {
                for_us: self.locked_until - now,
            };
        }
        if self.locked_until > 0 {
            // The lock is over: the guesses are forgiven; codes issued since are good.
            self.locked_until = 0;
            self.wrong = 0;
        }
        // Every code is compared (no early exit): the time says nothing of which matched.
        let mut matched = None;
        for (i, (kept, _)) in self.codes.iter().enumerate() {
            if kept.matches(mac) {
                matched = Some(i);
            }
        }
        if let Some(i) = matched {
            if self.codes[i].1 > now {
                *self = Entry::default();
                return Verdict::Accepted;
            }
            return Verdict::Expired;
        }
        let live_until = self
            .codes
            .iter()
            .map(|&(_, expires)| expires)
            .filter(|&expires| expires > now)
            .max();
        let Some(live_until) = live_until else {
            return Verdict::Invalid;
        };
        self.wrong += 1;
        if self.wrong >= max_attempts {
            self.locked_until = live_until;
            self.codes.clear();
            return Verdict::LockedNow {
                for_us: live_until - now,
            };
        }
        Verdict::Invalid
    }

    /// Whether anything here still matters at `now` (an entry that does not can go).
    pub fn matters(&self, now: u64, lifetime: u64) -> bool {
        self.locked_until > now
            || self
                .codes
                .iter()
                .any(|&(_, expires)| expires.saturating_add(lifetime) > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFE: u64 = 300_000_000;

    fn mac(n: u8) -> Mac {
        Mac([n; 32])
    }

    #[test]
    fn a_code_is_good_once_and_spends_the_others() {
        let mut e = Entry::default();
        e.keep(mac(1), 0, LIFE);
        e.keep(mac(2), 10, LIFE);
        assert_eq!(e.check(&mac(1), 20, 5), Verdict::Accepted);
        assert_eq!(e.check(&mac(1), 30, 5), Verdict::Invalid);
        assert_eq!(e.check(&mac(2), 30, 5), Verdict::Invalid);
    }

    #[test]
    fn three_live_codes_at_most_the_oldest_dropped() {
        let mut e = Entry::default();
        for n in 1..=4 {
            e.keep(mac(n), u64::from(n), LIFE);
        }
        assert_eq!(e.clone().check(&mac(1), 10, 5), Verdict::Invalid);
        for n in 2..=4 {
            assert_eq!(e.clone().check(&mac(n), 10, 5), Verdict::Accepted, "{n}");
        }
    }

    #[test]
    fn expired_then_forgotten() {
        let mut e = Entry::default();
        e.keep(mac(1), 0, LIFE);
        assert_eq!(e.clone().check(&mac(1), LIFE, 5), Verdict::Expired);
        assert_eq!(e.check(&mac(1), LIFE - 1, 5), Verdict::Accepted);
        let mut e = Entry::default();
        e.keep(mac(1), 0, LIFE);
        assert!(e.matters(2 * LIFE - 1, LIFE));
        assert!(!e.matters(2 * LIFE, LIFE));
        // A wrong code with nothing live counts for nothing.
        for _ in 0..10 {
            assert_eq!(e.check(&mac(9), LIFE + 1, 3), Verdict::Invalid);
        }
        assert_eq!(e.wrong, 0);
    }

    #[test]
    fn wrong_codes_lock_until_the_last_live_code_expires() {
        let mut e = Entry::default();
        e.keep(mac(1), 0, LIFE);
        e.keep(mac(2), 100, LIFE);
        for _ in 0..4 {
            assert_eq!(e.check(&mac(9), 200, 5), Verdict::Invalid);
        }
        assert_eq!(
            e.check(&mac(9), 200, 5),
            Verdict::LockedNow {
                for_us: LIFE + 100 - 200
            }
        );
        // Even the right code is refused while locked.
        assert!(matches!(e.check(&mac(2), 300, 5), Verdict::Locked { .. }));
        // A code issued during the lock is good once the lock is over.
        e.keep(mac(3), 400, LIFE);
        assert!(matches!(e.check(&mac(3), 500, 5), Verdict::Locked { .. }));
        assert_eq!(e.check(&mac(3), LIFE + 100, 5), Verdict::Accepted);
    }
}
