//! What is known of each message: its last status by SID (what `deliveryStatus` answers),
//! and the confirmations that rule out a follow-up call. In this process's memory, bounded
//! (two generations), keyed by hashes; and, with a shared store, also there under keyed-hash
//! names that expire with the code's lifetime, so any instance can answer for any SID. No
//! number and no code is ever kept in either.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::guard::bounded::BoundedMap;
use crate::state::Store;

/// Messages remembered in memory (twice this at most: two generations).
const REMEMBERED: usize = 20_000;

struct Record {
    status: String,
    confirmed: bool,
}

pub struct Records {
    hasher: RandomState,
    sids: Mutex<BoundedMap<Record>>,
    /// When each number (by hash) was last confirmed.
    confirmed: Mutex<BoundedMap<Instant>>,
    store: Option<Arc<Store>>,
    lifetime: Duration,
}

impl Records {
    pub fn new(store: Option<Arc<Store>>, lifetime: Duration) -> Records {
        Records {
            hasher: RandomState::new(),
            sids: Mutex::new(BoundedMap::new(REMEMBERED)),
            confirmed: Mutex::new(BoundedMap::new(REMEMBERED)),
            store,
            lifetime,
        }
    }

    fn key(&self, text: &str) -> u64 {
        self.hasher.hash_one(text)
    }

    /// Records `sid`'s status now (`queued`, `undelivered 30003`, `calling CA…`), here and
    /// in the store (in the background: never on a call's path).
    pub fn set(&self, sid: &str, status: String) {
        if let Ok(mut sids) = self.sids.lock() {
            let confirmed = sids.get(self.key(sid)).is_some_and(|r| r.confirmed);
            let record = Record {
                status: status.clone(),
                confirmed,
            };
            sids.set(self.key(sid), record);
        }
        if let Some(store) = &self.store {
            let (store, key) = (store.clone(), store.key("delivery", sid.as_bytes()));
            let ttl = self.lifetime;
            tokio::spawn(async move {
                let until = Instant::now() + store.timeout();
                let _ = store.set(&key, status.as_bytes(), ttl, until).await;
            });
        }
    }

    /// The last status known of `sid`, here or in the store.
    pub async fn get(&self, sid: &str) -> Option<String> {
        let here = self
            .sids
            .lock()
            .ok()
            .and_then(|sids| sids.get(self.key(sid)).map(|r| r.status.clone()));
        if here.is_some() {
            return here;
        }
        let store = self.store.as_ref()?;
        let until = Instant::now() + store.timeout();
        let key = store.key("delivery", sid.as_bytes());
        let stored = store.get(&key, until).await.ok()??;
        String::from_utf8(stored).ok()
    }

    /// A confirmation of the code sent as `sid`.
    pub fn confirm_sid(&self, sid: &str) {
        if let Ok(mut sids) = self.sids.lock() {
            let key = self.key(sid);
            let status = sids.get(key).map(|r| r.status.clone());
            if let Some(status) = status {
                sids.set(
                    key,
                    Record {
                        status,
                        confirmed: true,
                    },
                );
            }
        }
        self.store_confirmation("delivery:confirmed", sid);
    }

    /// A confirmation of the code sent to `phone` (E.164).
    pub fn confirm_phone(&self, phone: &str) {
        if let Ok(mut confirmed) = self.confirmed.lock() {
            confirmed.set(self.key(phone), Instant::now());
        }
        self.store_confirmation("delivery:confirmed", phone);
    }

    fn store_confirmation(&self, kind: &'static str, subject: &str) {
        let Some(store) = &self.store else {
            return;
        };
        let (store, key) = (store.clone(), store.key(kind, subject.as_bytes()));
        let now_ms = unix_ms(SystemTime::now());
        let ttl = self.lifetime;
        tokio::spawn(async move {
            let until = Instant::now() + store.timeout();
            let _ = store
                .set(&key, now_ms.to_string().as_bytes(), ttl, until)
                .await;
        });
    }

    /// Whether the code sent as `sid` to `phone` at `sent` has been confirmed since: here, or
    /// (with a store) by any instance.
    pub async fn confirmed(&self, sid: &str, phone: &str, sent: Instant) -> bool {
        let by_sid = self
            .sids
            .lock()
            .ok()
            .is_some_and(|sids| sids.get(self.key(sid)).is_some_and(|r| r.confirmed));
        let by_phone = self
            .confirmed
            .lock()
            .ok()
            .is_some_and(|c| c.get(self.key(phone)).is_some_and(|at| *at >= sent));
        if by_sid || by_phone {
            return true;
        }
        let Some(store) = &self.store else {
            return false;
        };
        let sent_ms = unix_ms(SystemTime::now()).saturating_sub(sent.elapsed().as_millis() as u64);
        for subject in [sid, phone] {
            let key = store.key("delivery:confirmed", subject.as_bytes());
            let until = Instant::now() + store.timeout();
            match store.get(&key, until).await {
                Ok(Some(at)) => {
                    let at: u64 = std::str::from_utf8(&at)
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(u64::MAX);
                    if at >= sent_ms {
                        return true;
                    }
                }
                // A store that cannot say: no call (a second code by voice after a login
                // succeeded is worse than no follow-up).
                Err(_) => return true,
                Ok(None) => {}
            }
        }
        false
    }
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_confirmation_after_the_send_counts_and_one_before_does_not() {
        let records = Records::new(None, Duration::from_secs(300));
        let sid = "SM0123456789abcdef0123456789abcdef";
        records.set(sid, "queued".into());
        records.confirm_phone("+31612345678");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let sent = Instant::now();
        assert!(
            !records.confirmed(sid, "+31612345678", sent).await,
            "an older login"
        );
        records.confirm_phone("+31612345678");
        assert!(records.confirmed(sid, "+31612345678", sent).await);
        let other = "SM1123456789abcdef0123456789abcdef";
        records.set(other, "sent".into());
        assert!(!records.confirmed(other, "+31600000000", sent).await);
        records.confirm_sid(other);
        assert!(records.confirmed(other, "+31600000000", sent).await);
        assert_eq!(records.get(other).await.as_deref(), Some("sent"));
        assert_eq!(records.get("SM9999").await, None);
    }
}
