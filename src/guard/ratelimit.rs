//! Rate limits per phone, per end-user IP, per user, and one global ceiling.
//!
//! Each limit is "N per window" as GCRA (the generic cell rate algorithm): one timestamp per
//! key, a burst of N allowed, then one more every window / N. Memory is bounded: each keyed
//! limit keeps two generations of at most `max_keys / 2` keys each; when the newer one fills
//! it becomes the older and the older is dropped. A flood of distinct keys therefore forgets
//! the oldest keys (which only makes the limit milder for them) while the global ceiling
//! still caps what is sent. A periodic sweep drops keys whose window has passed.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::CallError;
use crate::guard::bounded::BoundedMap;
use crate::guard::budgets::{Budget, CountryBudgets};
pub use crate::guard::rate::Rate;
use crate::state::{Limit, Store, Verdict, Watch};

/// Which limit refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Phone,
    Ip,
    User,
    Global,
    /// A country budget (`country_budgets`).
    Country,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Phone => "phone",
            Scope::Ip => "ip",
            Scope::User => "user",
            Scope::Global => "global",
            Scope::Country => "country",
        }
    }

    /// The kind of its keys in the shared store.
    fn store_kind(self) -> &'static str {
        match self {
            Scope::Phone => "rate:phone",
            Scope::Ip => "rate:ip",
            Scope::User => "rate:user",
            Scope::Global => "rate:global",
            Scope::Country => "rate:country",
        }
    }
}

/// The configured limits; `None` turns one off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    pub phone: Option<Rate>,
    pub ip: Option<Rate>,
    pub user: Option<Rate>,
    pub global: Option<Rate>,
    /// Per-country budgets; `None`: off.
    pub country: Option<CountryBudgets>,
    pub max_keys: usize,
}

impl RateLimits {
    /// `phone=3/10m ip=off user=off global=off`: what instances sharing a store compare.
    pub fn describe(&self) -> String {
        let shown = |rate: Option<Rate>| rate.map_or("off".to_owned(), |r| r.to_string());
        let described = format!(
            "phone={} ip={} user={} global={}",
            shown(self.phone),
            shown(self.ip),
            shown(self.user),
            shown(self.global)
        );
        // Only when set: instances without budgets describe themselves as before.
        match &self.country {
            Some(budgets) => format!("{described} country={}", budgets.describe()),
            None => described,
        }
    }
}

/// What a call is counted against: its recipient and, when the context names them, the end
/// user's address and name. (Not the BIG-IP that called: that is `call::callers`.)
pub struct LimitKeys<'a> {
    pub phone: &'a str,
    pub ip: Option<std::net::IpAddr>,
    pub user: Option<&'a str>,
    /// The country budget the number is charged to, when budgets are on.
    pub country: Option<&'a Budget>,
}

pub struct RateLimiter {
    limits: RateLimits,
    epoch: Instant,
    /// Keys are hashed with a per-process random key: no strings kept, none guessable.
    hasher: RandomState,
    state: Mutex<State>,
}

struct State {
    /// Per phone, per IP, per user, per country budget, in that order.
    keyed: [BoundedMap<u64>; 4],
    /// The global limit's theoretical arrival time.
    global: u64,
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> RateLimiter {
        let half = (limits.max_keys / 2).max(1);
        RateLimiter {
            limits,
            epoch: Instant::now(),
            hasher: RandomState::new(),
            state: Mutex::new(State {
                keyed: std::array::from_fn(|_| BoundedMap::new(half)),
                global: 0,
            }),
        }
    }

    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// Counts one send, or says which limit refuses it and how long until it would not.
    /// A refused call is counted against nothing.
    pub fn check(&self, keys: &LimitKeys<'_>) -> Result<(), (Scope, Duration)> {
        let now = self.now();
        let keys = [
            (Scope::Phone, self.limits.phone, Some(self.key(keys.phone))),
            (Scope::Ip, self.limits.ip, keys.ip.map(|ip| self.key(ip))),
            (
                Scope::User,
                self.limits.user,
                keys.user.map(|u| self.key(u)),
            ),
            (
                Scope::Country,
                keys.country.map(|b| b.rate),
                keys.country.map(|b| self.key(&b.name)),
            ),
        ];
        let Ok(mut state) = self.state.lock() else {
            return Ok(()); // a poisoned lock must not stop OTPs; the global cap is gone too
        };
        // Check everything first, then commit: a refusal charges no limit.
        let mut commits: Vec<(usize, u64, u64)> = Vec::with_capacity(4);
        for (index, (scope, rate, key)) in keys.into_iter().enumerate() {
            let (Some(rate), Some(key)) = (rate, key) else {
                continue;
            };
            let tat = state.keyed[index].get(key).copied().unwrap_or(0);
            commits.push((
                index,
                key,
                gcra(rate, tat, now).map_err(|wait| (scope, wait))?,
            ));
        }
        let global = match self.limits.global {
            Some(rate) => Some(gcra(rate, state.global, now).map_err(|w| (Scope::Global, w))?),
            None => None,
        };
        for (index, key, tat) in commits {
            state.keyed[index].set(key, tat);
        }
        if let Some(tat) = global {
            state.global = tat;
        }
        Ok(())
    }

    /// The same limits, checked and charged in the shared store (atomically across the
    /// instances that share it), in one round trip with what `watch` adds (resends, the
    /// pumping guard). `None` when the store failed and the state policy says to go on with
    /// this instance's own state (`local`); the refusal when it says `closed`.
    pub async fn check_shared(
        &self,
        store: &Store,
        keys: &LimitKeys<'_>,
        watch: &Watch,
        deadline: Instant,
    ) -> Result<Option<(Verdict, Vec<Scope>)>, CallError> {
        let ip = keys.ip.map(|ip| ip.to_string());
        let subjects = [
            (Scope::Phone, self.limits.phone, Some(keys.phone)),
            (Scope::Ip, self.limits.ip, ip.as_deref()),
            (Scope::User, self.limits.user, keys.user),
            (
                Scope::Country,
                keys.country.map(|b| b.rate),
                keys.country.map(|b| b.name.as_str()),
            ),
        ];
        let mut limits = Vec::with_capacity(5);
        for (scope, rate, subject) in subjects {
            if let (Some(rate), Some(subject)) = (rate, subject) {
                let key = store.key(scope.store_kind(), subject.as_bytes());
                limits.push((scope, shared(rate, key)));
            }
        }
        if let Some(rate) = self.limits.global {
            let key = store.plain_key(Scope::Global.store_kind());
            limits.push((Scope::Global, shared(rate, key)));
        }
        let nothing = watch.dedup.is_none() && watch.cooldown.is_none() && watch.pumping.is_none();
        if limits.is_empty() && nothing {
            let admitted = Verdict::Admitted {
                monitored: None,
                episodes: 0,
            };
            return Ok(Some((admitted, Vec::new())));
        }
        let (scopes, limits): (Vec<Scope>, Vec<Limit>) = limits.into_iter().unzip();
        match store.gcra(&limits, watch, deadline).await {
            // The scopes in the order of the limits: a refusal names its limit's index.
            Ok(verdict) => Ok(Some((verdict, scopes))),
            Err(failed) => {
                store.fall_back(failed)?;
                Ok(None)
            }
        }
    }

    /// Drops keys whose window has passed; returns how many keys remain.
    pub fn sweep(&self) -> usize {
        let now = self.now();
        let Ok(mut state) = self.state.lock() else {
            return 0;
        };
        state
            .keyed
            .iter_mut()
            .map(|keys| keys.retain(|tat| *tat > now))
            .sum()
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn key(&self, value: impl std::hash::Hash) -> u64 {
        self.hasher.hash_one(value)
    }
}

/// A limit as the store's script reads it (the same GCRA as [`gcra`]).
fn shared(rate: Rate, key: String) -> Limit {
    Limit {
        key,
        interval: rate.window / rate.count,
        window: rate.window,
    }
}

/// GCRA: the new theoretical arrival time, or how long to wait.
fn gcra(rate: Rate, tat: u64, now: u64) -> Result<u64, Duration> {
    let window = rate.window.as_nanos() as u64;
    let interval = window / u64::from(rate.count);
    let new_tat = tat.max(now) + interval;
    if new_tat - now > window {
        Err(Duration::from_nanos(new_tat - now - window))
    } else {
        Ok(new_tat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(phone: &str) -> RateLimits {
        RateLimits {
            phone: Some(phone.parse().unwrap()),
            ip: None,
            user: None,
            global: None,
            country: None,
            max_keys: 1000,
        }
    }

    fn keys(phone: &str) -> LimitKeys<'_> {
        LimitKeys {
            phone,
            ip: None,
            user: None,
            country: None,
        }
    }

    #[test]
    fn rates_parse() {
        assert_eq!(
            "3/10m".parse::<Rate>().unwrap(),
            Rate {
                count: 3,
                window: Duration::from_secs(600)
            }
        );
        assert_eq!("100/1h".parse::<Rate>().unwrap().window.as_secs(), 3600);
        assert_eq!("200/1d".parse::<Rate>().unwrap().window.as_secs(), 86_400);
        for text in ["3/10m", "100/1h", "7/90s"] {
            assert_eq!(text.parse::<Rate>().unwrap().to_string(), text);
        }
        for bad in ["3", "0/1m", "3/0s", "3/10d", "x/1m", "3/m", "3/25h", "3/2d"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_n_then_one_per_interval() {
        let limiter = RateLimiter::new(limits("3/30s"));
        for _ in 0..3 {
            assert!(limiter.check(&keys("+31612345678")).is_ok());
        }
        let (scope, wait) = limiter.check(&keys("+31612345678")).unwrap_err();
        assert_eq!(scope, Scope::Phone);
        assert!(
            wait <= Duration::from_secs(10) && wait > Duration::from_secs(9),
            "{wait:?}"
        );
        // Another phone is not affected; a refusal charged nothing.
        assert!(limiter.check(&keys("+31687654321")).is_ok());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(limiter.check(&keys("+31612345678")).is_ok());
        assert!(limiter.check(&keys("+31612345678")).is_err());
        tokio::time::advance(Duration::from_secs(30)).await;
        for _ in 0..3 {
            assert!(limiter.check(&keys("+31612345678")).is_ok());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_by_one_limit_charges_no_other() {
        let limiter = RateLimiter::new(RateLimits {
            phone: Some("1/1m".parse().unwrap()),
            ip: None,
            user: None,
            global: Some("2/1m".parse().unwrap()),
            country: None,
            max_keys: 1000,
        });
        assert!(limiter.check(&keys("+31600000001")).is_ok());
        for _ in 0..5 {
            let (scope, _) = limiter.check(&keys("+31600000001")).unwrap_err();
            assert_eq!(scope, Scope::Phone);
        }
        assert!(limiter.check(&keys("+31600000002")).is_ok());
        let (scope, _) = limiter.check(&keys("+31600000003")).unwrap_err();
        assert_eq!(scope, Scope::Global);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_stay_bounded_under_a_flood_of_distinct_phones() {
        let limiter = RateLimiter::new(limits("3/10m"));
        for n in 0..100_000u32 {
            let phone = format!("+1555{n:07}");
            assert!(limiter.check(&keys(&phone)).is_ok());
        }
        assert!(limiter.state.lock().unwrap().keyed[0].len() <= 1000);
        tokio::time::advance(Duration::from_secs(601)).await;
        assert_eq!(limiter.sweep(), 0);
    }
}
