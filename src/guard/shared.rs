//! The guards with a shared store: one send's dedup, cooldown, pumping guard and limits in
//! the one script round trip; what a send leaves behind (after the reply), and confirmations,
//! kept there too, so that every instance of a pool sees them. Without a store (or when it
//! fails and `state_failure = local`) the same runs in this process.

use std::collections::hash_map::RandomState;

use tokio::time::Instant;

use super::pumping::subject::{range_of, Country};
use super::pumping::{episode_started, Mode, Scope as PumpScope};
use super::ratelimit::LimitKeys;
use super::sent::Confirmation;
use super::{rate_limited, Admitted, Guards};
use crate::error::CallError;
use crate::metrics::METRICS;
use crate::state::{Pumped, Store, Verdict, Watch};

/// The store's answer when it admitted the send or found it a duplicate.
pub(super) enum Shared {
    Admitted,
    Duplicate(String),
}

/// What confirmOTP names.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    Phone(&'a str),
    Sid(&'a str),
}

impl Guards {
    pub(super) async fn check_shared(
        &self,
        store: &Store,
        phone: &str,
        code: &str,
        keys: &LimitKeys<'_>,
        until: Instant,
    ) -> Result<Option<Shared>, CallError> {
        let sent = self.sent.settings();
        let country = self.watched(phone);
        let watch = Watch {
            dedup: sent.dedup.then(|| {
                store.key(
                    "sent:code",
                    &[phone.as_bytes(), b"\0", code.as_bytes()].concat(),
                )
            }),
            cooldown: (!sent.cooldown.is_empty()).then(|| {
                (
                    store.key("sent:streak", phone.as_bytes()),
                    sent.cooldown.clone(),
                )
            }),
            pumping: country.map(|country| self.pumped(store, country, phone)),
        };
        let Some((verdict, scopes)) = self
            .limiter
            .check_shared(store, keys, &watch, until)
            .await?
        else {
            return Ok(None);
        };
        let episodes = match &verdict {
            Verdict::Admitted { episodes, .. }
            | Verdict::Limited(_, _, episodes)
            | Verdict::Throttled(_, episodes) => *episodes,
            _ => 0,
        };
        if let Some(country) = country {
            for (bit, scope) in [(1, PumpScope::Country), (2, PumpScope::Range)] {
                if episodes & bit != 0 {
                    let s = self.pumping.settings();
                    episode_started(s.mode, scope, country, phone, None, s);
                }
            }
        }
        let scope_of = |index: usize| match index {
            0 => PumpScope::Country,
            _ => PumpScope::Range,
        };
        match verdict {
            Verdict::Admitted { monitored, .. } => {
                if let Some(country) = country {
                    METRICS.pumping.count_sent(country.as_str());
                }
                if let Some(index) = monitored {
                    METRICS.pumping.count_monitored(scope_of(index).name());
                }
                Ok(Some(Shared::Admitted))
            }
            Verdict::Duplicate(sid) => Ok(Some(Shared::Duplicate(sid))),
            Verdict::Limited(index, wait, _) => {
                let scope = scopes.get(index).copied();
                Err(rate_limited(wait, scope.map_or("global", |s| s.name())))
            }
            Verdict::Throttled(..) => Err(CallError::Blocked("pumping")),
            Verdict::Cooldown(wait) => Err(rate_limited(wait, "cooldown")),
        }
    }

    /// The country a send to `phone` is watched under; `None` when the guard is off or the
    /// country exempt.
    fn watched(&self, phone: &str) -> Option<Country> {
        let subject = self.pumping.subject(phone)?;
        let country = subject.country();
        (!self.pumping.exempt(country, phone)).then_some(country)
    }

    fn pumped(&self, store: &Store, country: Country, phone: &str) -> Pumped {
        let s = self.pumping.settings();
        Pumped {
            enforce: s.mode == Mode::Enforce,
            bucket: s.window / 4,
            min_sends: s.min_sends,
            min_percent: s.min_conversion,
            block: s.block,
            trickle: s.trickle.map(|t| (t.window / t.count, t.window)),
            window: s.window,
            subjects: subjects(store, country, phone),
        }
    }

    /// Keeps what a send to `phone` of `code` went out as (its SID): in this process, and in
    /// the store after the reply (a task of its own, bounded by the store's timeout).
    pub fn record(&self, admitted: &Admitted, phone: &str, code: &str, sid: &str) {
        let subject = admitted.subject.or_else(|| self.pumping.subject(phone));
        self.sent.record(&admitted.sent_keys, sid, subject);
        let Some(store) = self.store.clone() else {
            return;
        };
        let settings = self.sent.settings();
        let country = self.watched(phone).unwrap_or(Country::UNKNOWN);
        // A mark of this send, so that its confirmation counts once (mock SIDs repeat).
        let nonce = std::hash::BuildHasher::hash_one(&RandomState::new(), sid);
        let record = format!(
            "{sid}\t{nonce:016x}\t{}\t{}",
            country.as_str(),
            subjects(&store, country, phone).join("\t")
        );
        let keys = [
            store.key("sent:phone", phone.as_bytes()),
            store.key("sent:sid", sid.as_bytes()),
            if settings.dedup {
                store.key(
                    "sent:code",
                    &[phone.as_bytes(), b"\0", code.as_bytes()].concat(),
                )
            } else {
                String::new()
            },
            if settings.cooldown.is_empty() {
                String::new()
            } else {
                store.key("sent:streak", phone.as_bytes())
            },
        ];
        let lifetime = settings.lifetime;
        let streak = settings.cooldown.last().copied().unwrap_or_default() * 2;
        let sid = sid.to_owned();
        tokio::spawn(async move {
            let keys = [&*keys[0], &*keys[1], &*keys[2], &*keys[3]];
            if let Err(failed) = store
                .record_sent(keys, &record, &sid, lifetime, streak)
                .await
            {
                tracing::debug!("state store: the send's record was not kept ({failed})");
            }
        });
    }

    /// confirmOTP's message: the SID it names and whether this is its first confirmation,
    /// which is counted here (once per message, across the pool with a store).
    pub async fn confirm(&self, target: Target<'_>, until: Instant) -> Option<Confirmation> {
        if let Some(store) = &self.store {
            match self.confirm_shared(store, target, until).await {
                Ok(found) => return found,
                Err(()) if store.settings().failure == crate::state::Failure::Closed => {
                    return None
                }
                Err(()) => {}
            }
        }
        let found = match target {
            Target::Phone(phone) => self.sent.confirm_phone(phone),
            Target::Sid(sid) => self.sent.confirm_sid(sid),
        }?;
        if found.first {
            match (target, found.subject) {
                (Target::Phone(phone), _) => {
                    self.sent.end_streak(phone);
                    self.pumping.confirmed(phone);
                }
                (_, Some(subject)) => self.pumping.confirmed_subject(subject),
                _ => {}
            }
        }
        Some(found)
    }

    async fn confirm_shared(
        &self,
        store: &Store,
        target: Target<'_>,
        until: Instant,
    ) -> Result<Option<Confirmation>, ()> {
        let key = match target {
            Target::Phone(phone) => store.key("sent:phone", phone.as_bytes()),
            Target::Sid(sid) => store.key("sent:sid", sid.as_bytes()),
        };
        let Some(record) = store.get(&key, until).await.map_err(|_| ())? else {
            return Ok(None);
        };
        let record = String::from_utf8_lossy(&record);
        let mut fields = record.split('\t');
        let sid = fields.next().unwrap_or_default().to_owned();
        let nonce = fields.next().unwrap_or_default();
        let country = fields.next().unwrap_or("ZZ").to_owned();
        let subjects: Vec<String> = fields.map(str::to_owned).collect();
        let once = store.key("sent:done", nonce.as_bytes());
        let s = self.pumping.settings();
        let first = store
            .tally(
                Some((&once, self.sent.settings().lifetime)),
                &subjects,
                "c",
                s.window / 4,
                s.window,
                until,
            )
            .await
            .map_err(|_| ())?;
        if first && !self.pumping.is_off() {
            METRICS.pumping.count_confirmed(&country);
        }
        Ok(Some(Confirmation {
            sid,
            subject: None,
            first,
        }))
    }

    /// A code sent to `phone` was confirmed: counted for its country and range. (confirmOTP
    /// counts through [`confirm`](Self::confirm), once per message; the lead connects
    /// checkOTP's success here.)
    pub async fn confirmed(&self, phone: &str) {
        self.sent.end_streak(phone);
        self.tally(phone, "c").await;
    }

    /// A message to `phone` will never arrive: counted against its country and range as one
    /// more unconfirmed send (the lead connects the delivery status here).
    pub async fn undelivered(&self, phone: &str) {
        self.tally(phone, "s").await;
    }

    async fn tally(&self, phone: &str, field: &str) {
        let confirmed = field == "c";
        let Some(store) = &self.store else {
            match confirmed {
                true => self.pumping.confirmed(phone),
                false => self.pumping.undelivered(phone),
            }
            return;
        };
        let Some(country) = self.watched(phone) else {
            return;
        };
        let s = self.pumping.settings();
        let until = Instant::now() + store.timeout();
        let subjects = subjects(store, country, phone);
        let counted = store
            .tally(None, &subjects, field, s.window / 4, s.window, until)
            .await;
        match counted {
            Ok(_) if confirmed => METRICS.pumping.count_confirmed(country.as_str()),
            Ok(_) => {}
            // Counted here instead: this instance's own guard still learns from it.
            Err(_) if confirmed => self.pumping.confirmed(phone),
            Err(_) => self.pumping.undelivered(phone),
        }
    }
}

/// The store keys of `phone`'s country and range.
fn subjects(store: &Store, country: Country, phone: &str) -> Vec<String> {
    vec![
        store.plain_key(&format!("pump:country:{}", country.as_str())),
        store.key("pump:range", range_of(phone).as_bytes()),
    ]
}
