//! Alerts: events an operator should hear about at once (a breaker opening, Twilio refusing
//! the credentials, the delivery rate collapsing, the state store lost, and the pumping
//! guard's and country budgets' episodes), raised from anywhere with [`raise`].
//!
//! `raise` never waits and never fails: it rate-limits per kind (one per kind per
//! [`EVERY`]), writes the `log_alerts` line, and hands the webhook's copy to a bounded
//! channel; a full channel drops it (counted). The webhook is posted by a task of its own
//! (`webhook`), retried with backoff: a slow or dead webhook costs no call anything.
//! An alert's detail is masked by the one rule for numbers, so no full number leaves.

mod webhook;

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::metrics::METRICS;

/// At most one alert of a kind this often.
pub const EVERY: Duration = Duration::from_secs(300);
/// Alerts waiting for the webhook; past it they are dropped (and counted).
const QUEUE: usize = 32;

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The pumping guard started throttling a scope (`pumping::episode_started`).
    PumpingThrottle,
    /// A country's send budget ran out (`budgets::budget_exhausted`).
    CountryBudget,
    /// A provider's circuit breaker opened.
    BreakerOpen,
    /// Twilio refused the account's credentials.
    CredentialsRefused,
    /// The share of messages delivered over the last hour collapsed.
    DeliveryCollapse,
    /// The shared state store stopped answering.
    StoreLost,
}

impl Kind {
    /// The name in the JSON body, the log line and the metric.
    pub fn name(self) -> &'static str {
        match self {
            Kind::PumpingThrottle => "pumping_throttle",
            Kind::CountryBudget => "country_budget_exhausted",
            Kind::BreakerOpen => "breaker_open",
            Kind::CredentialsRefused => "credentials_refused",
            Kind::DeliveryCollapse => "delivery_rate_collapse",
            Kind::StoreLost => "state_store_lost",
        }
    }
}

/// Where alerts go.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// The webhook and the secret its bodies are signed with.
    pub webhook: Option<(url::Url, Vec<u8>)>,
    /// Also one WARN line per alert.
    pub log: bool,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("webhook", &self.webhook.as_ref().map(|(u, _)| u.as_str()))
            .field("log", &self.log)
            .finish()
    }
}

/// One alert as the webhook gets it.
#[derive(Debug, Clone)]
pub struct Alert {
    pub kind: Kind,
    pub detail: String,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

#[derive(Default)]
struct Alerts {
    log: bool,
    queue: Option<mpsc::Sender<Alert>>,
    last: HashMap<Kind, Instant>,
}

static ALERTS: LazyLock<Mutex<Alerts>> = LazyLock::new(Mutex::default);

/// Starts (or, on reload, replaces) where alerts go. Needs a Tokio runtime when a webhook is
/// set (its task is spawned); the previous task ends once its queue is dropped.
pub fn configure(settings: &Settings) {
    let queue = settings.webhook.as_ref().and_then(|(url, secret)| {
        let (queue, alerts) = mpsc::channel(QUEUE);
        match webhook::Poster::new(url.clone(), secret.clone()) {
            Ok(poster) => {
                tokio::spawn(poster.run(alerts));
                Some(queue)
            }
            Err(e) => {
                tracing::error!("alert_webhook: {e:#}; alerts are not posted");
                None
            }
        }
    });
    if let Ok(mut alerts) = ALERTS.lock() {
        alerts.log = settings.log;
        alerts.queue = queue;
    }
}

/// Raises an alert of `kind`: at most one per kind per [`EVERY`]. Never blocks; `detail`
/// says what happened in plain words (numbers in it are masked here).
pub fn raise(kind: Kind, detail: &str) {
    let now = Instant::now();
    let (log, queue) = {
        let Ok(mut alerts) = ALERTS.lock() else {
            return;
        };
        if alerts
            .last
            .get(&kind)
            .is_some_and(|at| now.duration_since(*at) < EVERY)
        {
            METRICS.count_alert(kind.name(), "suppressed");
            return;
        }
        alerts.last.insert(kind, now);
        (alerts.log, alerts.queue.clone())
    };
    let detail = crate::mask::scrub::scrub_numbers(detail).into_owned();
    if log {
        tracing::warn!(alert = %kind.name(), "{detail}");
    }
    let Some(queue) = queue else {
        METRICS.count_alert(kind.name(), "raised");
        return;
    };
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match queue.try_send(Alert { kind, detail, at }) {
        Ok(()) => METRICS.count_alert(kind.name(), "raised"),
        Err(_) => METRICS.count_alert(kind.name(), "dropped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `otp_sidecar_alerts_total{kind,outcome}` as rendered.
    fn counted(kind: &str, outcome: &str) -> u64 {
        let label = format!("otp_sidecar_alerts_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} ");
        METRICS
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(&label)?.trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn one_alert_per_kind_per_five_minutes() {
        // No runtime, no webhook: only the rate limit and the counts are exercised.
        configure(&Settings::default());
        let (r0, s0) = (
            counted("breaker_open", "raised"),
            counted("breaker_open", "suppressed"),
        );
        raise(Kind::BreakerOpen, "provider backup failing");
        raise(Kind::BreakerOpen, "provider backup failing again");
        assert_eq!(counted("breaker_open", "raised") - r0, 1);
        assert_eq!(counted("breaker_open", "suppressed") - s0, 1);
        let other = counted("state_store_lost", "raised");
        raise(Kind::StoreLost, "redis gone");
        assert_eq!(counted("state_store_lost", "raised"), other + 1);
    }
}
