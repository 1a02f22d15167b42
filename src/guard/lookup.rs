//! Twilio Lookup v2 before sending (`Fields=line_type_intelligence`): block configured line
//! types and carriers (MCC/MNC), cache the answers, and when Lookup fails, send anyway
//! (fail open) or refuse (fail closed), inside the call's deadline.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::BuildHasher;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::time::Instant;

use crate::error::CallError;
use crate::guard::bounded::BoundedMap;
use crate::metrics::METRICS;
use crate::state::Store;
use crate::twilio::lookup::{LineInfo, LineType};
use crate::twilio::{Error as TwilioError, TwilioClient};

/// Line types blocked unless configured otherwise: the ones SMS pumping uses.
pub const DEFAULT_BLOCKED_LINE_TYPES: &str = "premium,tollFree,sharedCost,uan,pager,voicemail";
/// Lookup answers cached at most (two generations of half each).
const CACHE_KEYS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupRules {
    /// Twilio's names of the line types refused (configured text: a type Twilio adds later
    /// can be named before this daemon knows it).
    pub block_line_types: HashSet<String>,
    /// (MCC, MNC) pairs.
    pub block_carriers: HashSet<(String, String)>,
    pub cache_ttl: Duration,
    /// Send when Lookup cannot answer (true), or refuse (false).
    pub fail_open: bool,
    /// Also ask for the SMS pumping risk, and refuse scores at or above this (0-100).
    pub block_pumping_risk: Option<u32>,
}

pub struct LookupGuard {
    rules: LookupRules,
    hasher: RandomState,
    cache: Mutex<BoundedMap<(Instant, LineInfo)>>,
    /// Where the answers are shared with the other instances; this process's cache is then
    /// what a failing store falls back to.
    store: Option<Arc<Store>>,
}

impl LookupGuard {
    pub fn new(rules: LookupRules, store: Option<Arc<Store>>) -> LookupGuard {
        LookupGuard {
            rules,
            hasher: RandomState::new(),
            cache: Mutex::new(BoundedMap::new(CACHE_KEYS / 2)),
            store,
        }
    }

    /// Looks the number up (or takes the cached answer) and applies the rules; says the line
    /// type when Lookup told it. Lookup gets at most half of the time left before `deadline`,
    /// so the send keeps the other half; the shared cache is read until `store_until` (what is
    /// left of the call's store budget).
    pub async fn check(
        &self,
        client: &TwilioClient,
        phone: &str,
        deadline: Instant,
        store_until: Instant,
    ) -> Result<Option<LineType>, CallError> {
        let key = self.hasher.hash_one(phone);
        let shared_key = self
            .store
            .as_ref()
            .map(|store| (store, store.key("lookup", phone.as_bytes())));
        let cached = match &shared_key {
            // A store that fails costs a lookup at most (never a refusal): the local cache.
            Some((store, name)) => match store.get(name, store_until).await {
                Ok(bytes) => bytes.and_then(|b| serde_json::from_slice::<LineInfo>(&b).ok()),
                Err(_) => self.cached(key),
            },
            None => self.cached(key),
        };
        let pumping_risk = self.rules.block_pumping_risk.is_some();
        // An answer cached before the risk was asked for (by this or another instance) lacks it.
        let cached = cached.filter(|info| !pumping_risk || info.sms_pumping_risk.is_some());
        let info = match cached {
            Some(info) => {
                METRICS.count_lookup("cached");
                info
            }
            None => {
                let budget = deadline.saturating_duration_since(Instant::now()) / 2;
                let answer = match tokio::time::timeout(
                    budget,
                    client.lookup(phone, pumping_risk, Instant::now() + budget),
                )
                .await
                {
                    Ok(answer) => answer,
                    Err(_) => Err(TwilioError::Timeout(budget)),
                };
                match answer {
                    Ok(info) => {
                        METRICS.count_lookup("answered");
                        self.remember(key, shared_key, &info);
                        info
                    }
                    Err(failed) => {
                        METRICS.count_lookup("failed");
                        return self.on_failure(&failed).map(|()| None);
                    }
                }
            }
        };
        self.verdict(&info)?;
        Ok(info.line_type)
    }

    /// This process's cached answer, while it lasts.
    fn cached(&self, key: u64) -> Option<LineInfo> {
        self.cache.lock().ok().and_then(|cache| {
            cache
                .get(key)
                .filter(|(expires, _)| *expires > Instant::now())
                .map(|(_, info)| info.clone())
        })
    }

    /// Caches an answer here and, off the call's path, in the shared store.
    fn remember(&self, key: u64, shared: Option<(&Arc<Store>, String)>, info: &LineInfo) {
        let ttl = self.rules.cache_ttl;
        if ttl.is_zero() {
            return;
        }
        if let Ok(mut cache) = self.cache.lock() {
            cache.set(key, (Instant::now() + ttl, info.clone()));
        }
        if let (Some((store, name)), Ok(value)) = (shared, serde_json::to_vec(info)) {
            let store = store.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + store.timeout();
                // A failure is counted and logged by the store; the local copy serves here.
                let _ = store.set(&name, &value, ttl, deadline).await;
            });
        }
    }

    fn on_failure(&self, failed: &TwilioError) -> Result<(), CallError> {
        // Lookup's refusals are told by their status alone.
        let why = match failed {
            TwilioError::Rejected { status, .. } => format!("HTTP {status}"),
            other => other.to_string(),
        };
        if self.rules.fail_open {
            tracing::warn!(
                "Twilio Lookup failed ({why}); sending unchecked (lookup_failure = open)"
            );
            return Ok(());
        }
        let detail = format!("Twilio Lookup failed: {why}");
        // A lookup the budget shed was never put to Twilio: no news of its health.
        Err(match failed {
            TwilioError::Busy(_) => CallError::Busy(detail),
            _ => CallError::Unavailable(detail),
        })
    }

    fn verdict(&self, info: &LineInfo) -> Result<(), CallError> {
        let score = info
            .sms_pumping_risk
            .as_ref()
            .and_then(|risk| risk.sms_pumping_risk_score);
        if let (Some(limit), Some(score)) = (self.rules.block_pumping_risk, score) {
            if score >= limit {
                return Err(CallError::Blocked("pumping_risk"));
            }
        }
        if info
            .line_type
            .as_ref()
            .is_some_and(|t| self.rules.block_line_types.contains(t.name()))
        {
            return Err(CallError::Blocked("line_type"));
        }
        if let (Some(mcc), Some(mnc)) = (&info.mobile_country_code, &info.mobile_network_code) {
            if self
                .rules
                .block_carriers
                .contains(&(mcc.clone(), mnc.clone()))
            {
                return Err(CallError::Blocked("carrier"));
            }
        }
        Ok(())
    }

    /// Drops expired answers; returns how many remain.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        self.cache
            .lock()
            .map(|mut cache| cache.retain(|(expires, _)| *expires > now))
            .unwrap_or(0)
    }
}

/// Reads a carrier block list: one `MCC-MNC` (or `MCC MNC`) per line, `#` comments.
pub fn read_carriers(path: &Path) -> anyhow::Result<HashSet<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read block_carriers_file {}", path.display()))?;
    let mut carriers = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line
            .split(|c: char| c == '-' || c.is_whitespace())
            .filter(|p| !p.is_empty());
        let (Some(mcc), Some(mnc), None) = (parts.next(), parts.next(), parts.next()) else {
            bail!(
                "{}:{}: expected MCC-MNC, like 310-260",
                path.display(),
                n + 1
            );
        };
        let digits = |s: &str, len: std::ops::RangeInclusive<usize>| {
            len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
        };
        if !digits(mcc, 3..=3) || !digits(mnc, 2..=3) {
            bail!(
                "{}:{}: expected MCC-MNC, like 310-260",
                path.display(),
                n + 1
            );
        }
        carriers.insert((mcc.to_owned(), mnc.to_owned()));
    }
    Ok(carriers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> LookupGuard {
        LookupGuard::new(
            LookupRules {
                block_line_types: DEFAULT_BLOCKED_LINE_TYPES
                    .split(',')
                    .map(str::to_owned)
                    .collect(),
                block_carriers: [("204".to_owned(), "04".to_owned())].into(),
                cache_ttl: Duration::from_secs(60),
                fail_open: true,
                block_pumping_risk: Some(60),
            },
            None,
        )
    }

    fn info(line_type: &str, mcc: &str, mnc: &str) -> LineInfo {
        LineInfo {
            line_type: Some(LineType::from(line_type.to_owned())),
            mobile_country_code: Some(mcc.into()),
            mobile_network_code: Some(mnc.into()),
            sms_pumping_risk: None,
        }
    }

    #[test]
    fn line_types_and_carriers() {
        let g = guard();
        assert_eq!(g.verdict(&info("mobile", "204", "08")), Ok(()));
        assert_eq!(
            g.verdict(&info("premium", "204", "08")),
            Err(CallError::Blocked("line_type"))
        );
        assert_eq!(
            g.verdict(&info("mobile", "204", "04")),
            Err(CallError::Blocked("carrier"))
        );
        assert_eq!(g.verdict(&LineInfo::default()), Ok(()));
        let risk = |score| LineInfo {
            sms_pumping_risk: Some(crate::twilio::lookup::PumpingRisk {
                sms_pumping_risk_score: score,
            }),
            ..info("mobile", "204", "08")
        };
        assert_eq!(g.verdict(&risk(Some(59))), Ok(()));
        assert_eq!(g.verdict(&risk(None)), Ok(()));
        assert_eq!(
            g.verdict(&risk(Some(60))),
            Err(CallError::Blocked("pumping_risk"))
        );
    }

    #[test]
    fn carrier_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("carriers");
        std::fs::write(&path, "# pumped\n310-260\n204 04  # NL\n\n").unwrap();
        let carriers = read_carriers(&path).unwrap();
        assert!(carriers.contains(&("310".into(), "260".into())));
        assert!(carriers.contains(&("204".into(), "04".into())));
        std::fs::write(&path, "310260\n").unwrap();
        let e = read_carriers(&path).unwrap_err().to_string();
        assert!(e.contains(":1: expected MCC-MNC"), "{e}");
    }
}
