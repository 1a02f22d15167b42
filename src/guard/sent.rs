//! What was sent, for as long as a code lives: the last SID per number (confirmOTP by phone
//! needs it for Twilio's Message Feedback), the codes already sent (the same phone and code
//! again is answered with the first SID, nothing sent), and the resend cooldown per number.
//!
//! In memory every map is the two-generation bounded map, keyed by a hash under a
//! per-process random key: no number and no code is kept. With a shared store the records are
//! keyed hashes there too (`state/sent.rs`), and this is the `local` fallback.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::guard::bounded::BoundedMap;
use crate::guard::pumping::Subject;

/// `resend_dedup` and `resend_cooldown`, and how long a code lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The same phone and code again within `lifetime`: the first SID, nothing sent.
    pub dedup: bool,
    /// Waits between sends to one number, growing with each send (empty: off).
    pub cooldown: Vec<Duration>,
    pub lifetime: Duration,
    /// Records kept at most per map.
    pub max_keys: usize,
}

/// A cooldown streak: when its last send went and how many sends it holds.
#[derive(Debug, Clone, Copy)]
struct Streak {
    last: Instant,
    sends: u32,
}

/// The last message to a number.
#[derive(Debug, Clone)]
struct Last {
    sid: String,
    /// When its code stops counting.
    until: Instant,
    /// What its confirmation is counted under (`None`: the pumping guard is off).
    subject: Option<Subject>,
    confirmed: bool,
}

/// A confirmation found: the message's SID, what it counts under, and whether it is the
/// first (only the first counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    pub sid: String,
    pub subject: Option<Subject>,
    pub first: bool,
}

/// A send's keys in these maps, hashed once per call: by `Sent::keys` when it is checked,
/// and used again when it is recorded.
#[derive(Debug, Clone, Copy)]
pub struct Keys {
    phone: u64,
    /// The phone and the code together (`None`: dedup is off).
    code: Option<u64>,
}

struct Maps {
    /// Per phone: the last message sent to it.
    last: BoundedMap<Last>,
    /// Per SID: the phone's key in `last`.
    by_sid: BoundedMap<u64>,
    /// Per phone and code: the SID it went out as.
    codes: BoundedMap<(String, Instant)>,
    streaks: BoundedMap<Streak>,
}

pub struct Sent {
    settings: Settings,
    hasher: RandomState,
    maps: Mutex<Maps>,
}

impl Sent {
    pub fn new(settings: Settings) -> Sent {
        let half = (settings.max_keys / 2).max(1);
        Sent {
            settings,
            hasher: RandomState::new(),
            maps: Mutex::new(Maps {
                last: BoundedMap::new(half),
                by_sid: BoundedMap::new(half),
                codes: BoundedMap::new(half),
                streaks: BoundedMap::new(half),
            }),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The keys of a send of `code` to `phone`.
    pub fn keys(&self, phone: &str, code: &str) -> Keys {
        Keys {
            phone: self.hasher.hash_one(phone),
            code: self
                .settings
                .dedup
                .then(|| self.hasher.hash_one((phone, code))),
        }
    }

    /// The SID the same code already went to the same phone as, within its lifetime (when
    /// dedup is on).
    pub fn duplicate(&self, keys: &Keys) -> Option<String> {
        let maps = self.maps.lock().ok()?;
        let (sid, until) = maps.codes.get(keys.code?)?;
        (*until > Instant::now()).then(|| sid.clone())
    }

    /// How long the phone must still wait under the cooldown, if at all.
    pub fn wait(&self, keys: &Keys) -> Option<Duration> {
        let steps = &self.settings.cooldown;
        let longest = *steps.last()?;
        let now = Instant::now();
        let maps = self.maps.lock().ok()?;
        let streak = maps.streaks.get(keys.phone)?;
        // A quiet spell twice the longest step starts a new streak.
        if streak.sends == 0 || now.duration_since(streak.last) >= longest * 2 {
            return None;
        }
        let step = steps[(streak.sends as usize - 1).min(steps.len() - 1)];
        let ready = streak.last + step;
        (ready > now).then(|| ready - now)
    }

    /// Keeps what a successful send went out as, and charges the number's cooldown streak.
    pub fn record(&self, keys: &Keys, sid: &str, subject: Option<Subject>) {
        let now = Instant::now();
        let until = now + self.settings.lifetime;
        let sid_key = self.hasher.hash_one(sid);
        let Ok(mut maps) = self.maps.lock() else {
            return;
        };
        let last = Last {
            sid: sid.to_owned(),
            until,
            subject,
            confirmed: false,
        };
        maps.last.set(keys.phone, last);
        maps.by_sid.set(sid_key, keys.phone);
        if let Some(key) = keys.code {
            maps.codes.set(key, (sid.to_owned(), until));
        }
        if let Some(longest) = self.settings.cooldown.last() {
            let sends = match maps.streaks.get(keys.phone) {
                Some(s) if now.duration_since(s.last) < *longest * 2 => s.sends,
                _ => 0,
            };
            let streak = Streak {
                last: now,
                sends: sends.saturating_add(1),
            };
            maps.streaks.set(keys.phone, streak);
        }
    }

    /// The last message to `phone` within its code's lifetime, marked confirmed.
    pub fn confirm_phone(&self, phone: &str) -> Option<Confirmation> {
        self.confirm(self.hasher.hash_one(phone))
    }

    /// The message `sid` names within its code's lifetime, marked confirmed.
    pub fn confirm_sid(&self, sid: &str) -> Option<Confirmation> {
        let key = self
            .maps
            .lock()
            .ok()?
            .by_sid
            .get(self.hasher.hash_one(sid))
            .copied()?;
        self.confirm(key).filter(|c| c.sid == sid)
    }

    fn confirm(&self, phone_key: u64) -> Option<Confirmation> {
        let mut maps = self.maps.lock().ok()?;
        let mut last = maps.last.get(phone_key)?.clone();
        if last.until <= Instant::now() {
            return None;
        }
        let first = !last.confirmed;
        last.confirmed = true;
        let confirmation = Confirmation {
            sid: last.sid.clone(),
            subject: last.subject,
            first,
        };
        maps.last.set(phone_key, last);
        Some(confirmation)
    }

    /// A confirmation ends the number's cooldown streak.
    pub fn end_streak(&self, phone: &str) {
        if self.settings.cooldown.is_empty() {
            return;
        }
        let key = self.hasher.hash_one(phone);
        if let Ok(mut maps) = self.maps.lock() {
            maps.streaks.set(
                key,
                Streak {
                    last: Instant::now(),
                    sends: 0,
                },
            );
        }
    }

    /// Drops expired records; returns how many remain.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let longest = self.settings.cooldown.last().copied().unwrap_or_default() * 2;
        let Ok(mut maps) = self.maps.lock() else {
            return 0;
        };
        maps.last.retain(|last| last.until > now)
            + maps.codes.retain(|(_, until)| *until > now)
            + maps
                .streaks
                .retain(|s| now.duration_since(s.last) < longest)
    }
}

/// `resend_cooldown`: `off`, or waits like `30s, 60s, 120s, 300s` (each 1 s to 24 h).
pub fn parse_cooldown(text: &str) -> anyhow::Result<Vec<Duration>> {
    if text.trim() == "off" || text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|step| {
            let step = step.trim();
            let (number, unit) = step.split_at(step.len().saturating_sub(1));
            let n: u64 = number.parse().map_err(|_| {
                anyhow::anyhow!("resend_cooldown: {step:?} is not like 30s, 5m or 1h")
            })?;
            let secs = match unit {
                "s" => n,
                "m" => n * 60,
                "h" => n * 3600,
                _ => anyhow::bail!("resend_cooldown: {step:?} must end in s, m or h"),
            };
            if !(1..=86_400).contains(&secs) {
                anyhow::bail!("resend_cooldown: each wait must be 1 s to 24 h, not {step:?}");
            }
            Ok(Duration::from_secs(secs))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(cooldown: &str) -> Sent {
        Sent::new(Settings {
            dedup: true,
            cooldown: parse_cooldown(cooldown).unwrap(),
            lifetime: Duration::from_secs(300),
            max_keys: 100,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_code_again_within_its_lifetime_is_a_duplicate() {
        let sent = sent("off");
        let duplicate = |phone, code| sent.duplicate(&sent.keys(phone, code));
        sent.record(&sent.keys("+31612345678", "123456"), "SM1", None);
        assert_eq!(duplicate("+31612345678", "123456").as_deref(), Some("SM1"));
        assert_eq!(duplicate("+31612345678", "654321"), None);
        assert_eq!(duplicate("+31612345679", "123456"), None);
        let first = sent.confirm_phone("+31612345678").unwrap();
        assert_eq!((first.sid.as_str(), first.first), ("SM1", true));
        assert!(!sent.confirm_sid("SM1").unwrap().first, "counted once");
        assert_eq!(sent.confirm_sid("SM2"), None);
        tokio::time::advance(Duration::from_secs(301)).await;
        assert_eq!(duplicate("+31612345678", "123456"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cooldown_grows_with_each_send_and_a_quiet_spell_resets_it() {
        let sent = sent("30s, 60s");
        let phone = "+31612345678";
        let keys = sent.keys(phone, "1");
        let send = || sent.record(&keys, "SM1", None);
        assert_eq!(sent.wait(&keys), None);
        send();
        assert_eq!(sent.wait(&keys), Some(Duration::from_secs(30)));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(sent.wait(&keys), None);
        send();
        assert_eq!(sent.wait(&keys), Some(Duration::from_secs(60)));
        tokio::time::advance(Duration::from_secs(60)).await;
        send();
        assert_eq!(
            sent.wait(&keys),
            Some(Duration::from_secs(60)),
            "the last step stays"
        );
        tokio::time::advance(Duration::from_secs(120)).await;
        assert_eq!(sent.wait(&keys), None);
        send();
        assert_eq!(
            sent.wait(&keys),
            Some(Duration::from_secs(30)),
            "a new streak"
        );
        sent.end_streak(phone);
        assert_eq!(sent.wait(&keys), None, "a confirmation ends the streak");
        assert!(parse_cooldown("30s, 2d").is_err());
        assert!(parse_cooldown("30").is_err());
    }
}
