//! What `health` (and `otp-sidecar ping`) reports: up since when, in which mode, and how the
//! last exchange with Twilio went.

use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use rmpv::Value;

use crate::metrics::METRICS;

/// The last exchange with Twilio: a send, or a keep-warm request.
#[derive(Debug, Clone)]
struct Exchange {
    at: Instant,
    kind: &'static str,
    /// Twilio answered as a working service would (a SID, or an error about the request).
    healthy: bool,
    detail: String,
}

pub struct Health {
    started: Instant,
    last: Mutex<Option<Exchange>>,
}

pub static HEALTH: LazyLock<Health> = LazyLock::new(|| Health {
    started: Instant::now(),
    last: Mutex::new(None),
});

impl Health {
    /// Records an exchange; `detail` is a reason token or a status, never a secret.
    pub fn record(&self, kind: &'static str, healthy: bool, detail: impl Into<String>) {
        let exchange = Exchange {
            at: Instant::now(),
            kind,
            healthy,
            detail: detail.into(),
        };
        if let Ok(mut last) = self.last.lock() {
            *last = Some(exchange);
        }
    }

    /// The `health` reply: a map of plain values, from one look at the last exchange.
    /// `status` is `ok` until an exchange with Twilio fails for a reason of Twilio's or the
    /// network's, or the shared state store stops answering (`state` says how it stands).
    /// `agreement`: with a shared store, whether the instances on its prefix agree (their
    /// state key and rate limits); a disagreement is shown, not counted as degraded.
    pub fn report(
        &self,
        mode: &'static str,
        state: &'static str,
        agreement: Option<String>,
    ) -> Value {
        let snapshot = self.last.lock().ok().and_then(|l| l.clone());
        let status = match &snapshot {
            Some(Exchange { healthy: false, .. }) => "degraded",
            _ if state.starts_with("degraded") => "degraded",
            _ => "ok",
        };
        let last = match snapshot {
            Some(e) => Value::Map(vec![
                ("kind".into(), e.kind.into()),
                ("healthy".into(), e.healthy.into()),
                ("detail".into(), e.detail.into()),
                ("age_s".into(), e.at.elapsed().as_secs().into()),
            ]),
            None => Value::Nil,
        };
        let mut report = vec![
            ("status".into(), status.into()),
            ("version".into(), env!("CARGO_PKG_VERSION").into()),
            ("mode".into(), mode.into()),
            ("state".into(), state.into()),
        ];
        if let Some(agreement) = agreement {
            report.push(("state_agreement".into(), agreement.into()));
        }
        report.extend([
            ("uptime_s".into(), self.started.elapsed().as_secs().into()),
            ("connections".into(), METRICS.open_connections().into()),
            ("in_flight".into(), METRICS.calls_in_flight().into()),
            ("last_twilio".into(), last),
        ]);
        Value::Map(report)
    }
}

/// Starts the uptime clock (at daemon start; otherwise the first `health` call would).
pub fn started() {
    LazyLock::force(&HEALTH);
}
