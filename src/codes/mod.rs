//! The daemon's own codes, for callers without a code generator (issueOTP / checkOTP): drawn
//! from the OS CSPRNG, kept only as an HMAC with its expiry and the phone's wrong guesses, in
//! this process's bounded memory or in the shared store. The code itself is never kept,
//! logged or answered: it leaves in the message and nowhere else.

mod book;
mod draw;
mod mac;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

pub use book::{Entry, Verdict, MAX_LIVE};
pub use draw::{draw, random_bytes, Code, NoRandomness};
pub use mac::{Keyed, Mac};

use crate::error::CallError;
use crate::guard::bounded::BoundedMap;
use crate::metrics::METRICS;
use crate::state::Store;
use crate::twilio::credentials::Secret;

/// The default lifetime when `otp_lifetime_secs` is unset.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// Phones the in-memory book holds per generation (two generations: at most twice this).
const BOOK_CAP: usize = 50_000;

/// The codes' settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Characters per code (4-10).
    pub length: usize,
    /// What codes are drawn from: distinct ASCII letters or digits.
    pub alphabet: Vec<u8>,
    pub lifetime: Duration,
    /// Wrong codes that lock a phone.
    pub max_attempts: u32,
    /// `codes_key`; `None`: one drawn at start (memory only: instances could not agree).
    pub key: Option<Secret>,
    /// Where the key came from, for `check` (never the key).
    pub key_from: &'static str,
}

/// Issued codes: their HMACs, in memory or in the store.
pub struct Codes {
    settings: Settings,
    keyed: Keyed,
    book: Mutex<BoundedMap<Entry>>,
    store: Option<Arc<Store>>,
    /// The in-memory book's clock starts here.
    epoch: Instant,
}

impl Codes {
    /// Fails only when the OS has no random bytes for a key that must be drawn.
    pub fn new(settings: Settings, store: Option<Arc<Store>>) -> Result<Codes, NoRandomness> {
        let keyed = match &settings.key {
            Some(secret) => Keyed::new(secret.expose().as_bytes()),
            None => {
                let mut key = [0u8; 32];
                random_bytes(&mut key)?;
                Keyed::new(&key)
            }
        };
        Ok(Codes {
            settings,
            keyed,
            book: Mutex::new(BoundedMap::new(BOOK_CAP)),
            store,
            epoch: Instant::now(),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether these codes live in `store` (a reload keeps them when they still would).
    pub fn kept_in(&self, store: Option<&Arc<Store>>) -> bool {
        match (&self.store, store) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// A new code, not yet kept.
    pub fn draw(&self) -> Result<Code, CallError> {
        draw(&self.settings.alphabet, self.settings.length)
            .map_err(|_| CallError::Internal("no random bytes from the OS".into()))
    }

    /// Keeps `code`'s HMAC for `phone` (E.164), before it is sent: a code that goes out
    /// can always be checked. `until`: the call's store budget.
    pub async fn keep(&self, phone: &str, code: &str, until: Instant) -> Result<(), CallError> {
        let mac = self.keyed.code(phone, code);
        if let Some(store) = &self.store {
            let key = store.key("codes", phone.as_bytes());
            let lifetime = self.settings.lifetime;
            match store
                .keep_code(&key, &mac.hex(), lifetime, MAX_LIVE, until)
                .await
            {
                Ok(()) => return Ok(()),
                Err(failed) => store.fall_back(failed)?,
            }
        }
        let (now, lifetime) = (self.now(), micros(self.settings.lifetime));
        let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        let slot = self.keyed.slot(phone);
        let mut entry = book.get(slot).cloned().unwrap_or_default();
        entry.keep(mac, now, lifetime);
        book.set(slot, entry);
        Ok(())
    }

    /// Checks `code` for `phone`: `Ok` once for a live code, or why not (never whether a
    /// code was sent). A lock is logged here, once, when it starts.
    pub async fn check(&self, phone: &str, code: &str, until: Instant) -> Result<(), CallError> {
        let mac = self.keyed.code(phone, code);
        let verdict = match self.check_shared(phone, &mac, until).await? {
            Some(verdict) => verdict,
            None => self.check_local(phone, &mac),
        };
        let result = match verdict {
            Verdict::Accepted => ("ok", Ok(())),
            Verdict::Invalid => ("invalid", Err(CallError::InvalidCode)),
            Verdict::Expired => ("expired", Err(CallError::Expired)),
            Verdict::Locked { for_us } => ("locked", Err(locked(for_us))),
            Verdict::LockedNow { for_us } => {
                tracing::warn!(
                    max_attempts = self.settings.max_attempts,
                    "checkOTP: too many wrong codes; the number is locked for {} s",
                    secs(for_us)
                );
                ("locked", Err(locked(for_us)))
            }
        };
        METRICS.count_code(result.0);
        result.1
    }

    /// The store's verdict; `None` when there is no store, or it failed and `local` says
    /// to use this instance's book.
    async fn check_shared(
        &self,
        phone: &str,
        mac: &Mac,
        until: Instant,
    ) -> Result<Option<Verdict>, CallError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let key = store.key("codes", phone.as_bytes());
        let settings = &self.settings;
        let answer = store
            .check_code(
                &key,
                &mac.hex(),
                settings.lifetime,
                settings.max_attempts,
                until,
            )
            .await;
        let (verdict, for_us) = match answer {
            Ok(answer) => answer,
            Err(failed) => {
                store.fall_back(failed)?;
                return Ok(None);
            }
        };
        Ok(Some(match verdict {
            1 => Verdict::Accepted,
            3 => Verdict::Expired,
            4 => Verdict::Locked { for_us },
            5 => Verdict::LockedNow { for_us },
            _ => Verdict::Invalid,
        }))
    }

    fn check_local(&self, phone: &str, mac: &Mac) -> Verdict {
        let now = self.now();
        let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        let slot = self.keyed.slot(phone);
        let Some(mut entry) = book.get(slot).cloned() else {
            return Verdict::Invalid;
        };
        let verdict = entry.check(mac, now, self.settings.max_attempts);
        book.set(slot, entry);
        verdict
    }

    /// Drops what no longer matters from the in-memory book; how many phones remain.
    pub fn sweep(&self) -> usize {
        let (now, lifetime) = (self.now(), micros(self.settings.lifetime));
        let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        book.retain(|entry| entry.matters(now, lifetime))
    }

    fn now(&self) -> u64 {
        micros(self.epoch.elapsed())
    }
}

fn locked(for_us: u64) -> CallError {
    CallError::Locked {
        retry_in_s: secs(for_us),
    }
}

/// Whole seconds, rounded up.
fn secs(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(lifetime_secs: u64) -> Codes {
        let settings = Settings {
            length: 6,
            alphabet: b"0123456789".to_vec(),
            lifetime: Duration::from_secs(lifetime_secs),
            max_attempts: 5,
            key: None,
            key_from: "drawn at start (this instance's codes only)",
        };
        Codes::new(settings, None).expect("random bytes")
    }

    #[tokio::test(start_paused = true)]
    async fn in_memory_a_code_expires_by_the_clock_it_runs_on() {
        // tokio's paused clock: time moves only when told, so the lifetime's edge is exact.
        let codes = codes(300);
        let until = Instant::now() + Duration::from_secs(1);
        let code = codes.draw().unwrap();
        codes.keep(PHONE, code.as_str(), until).await.unwrap();
        tokio::time::advance(Duration::from_secs(299)).await;
        let late = Instant::now() + Duration::from_secs(1);
        let spare = codes.draw().unwrap();
        codes.keep(PHONE, spare.as_str(), late).await.unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        let until = Instant::now() + Duration::from_secs(1);
        assert_eq!(
            codes.check(PHONE, code.as_str(), until).await,
            Err(CallError::Expired)
        );
        // The second, issued later, lives on; once spent, the first is invalid, not expired.
        assert_eq!(codes.check(PHONE, spare.as_str(), until).await, Ok(()));
        assert_eq!(
            codes.check(PHONE, code.as_str(), until).await,
            Err(CallError::InvalidCode)
        );
        // Swept once nothing matters: a lifetime past the last expiry.
        codes.keep(PHONE, code.as_str(), until).await.unwrap();
        assert_eq!(codes.sweep(), 1);
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(codes.sweep(), 0);
    }

    #[tokio::test]
    async fn another_instance_without_the_key_accepts_nothing() {
        // Two memory instances draw two keys: an HMAC from one means nothing to the other.
        let (one, two) = (codes(300), codes(300));
        let until = Instant::now() + Duration::from_secs(1);
        assert_ne!(
            one.keyed.code(PHONE, "123456"),
            two.keyed.code(PHONE, "123456")
        );
        one.keep(PHONE, "123456", until).await.unwrap();
        assert_eq!(
            two.check(PHONE, "123456", until).await,
            Err(CallError::InvalidCode)
        );
        assert_eq!(one.check(PHONE, "123456", until).await, Ok(()));
    }

    const PHONE: &str = "+31612345678";
}
