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
    delivery: Mutex<Delivered>,
}

pub static HEALTH: LazyLock<Health> = LazyLock::new(|| Health {
    started: Instant::now(),
    last: Mutex::new(None),
    delivery: Mutex::new(Delivered::default()),
});

/// The delivery rate counts as collapsed with at least this many final statuses in the last
/// hour, under half of them delivered: few enough to notice a carrier outage within minutes
/// at a login-per-minute site, many enough that a handful of dead numbers does not page.
pub const COLLAPSE_MIN_FINALS: u64 = 20;

/// Messages' final statuses over the last hour, by minute: (minute, finals, delivered).
#[derive(Default)]
struct Delivered {
    minutes: Vec<(u64, u64, u64)>,
}

impl Delivered {
    /// (finals, delivered) over the 60 minutes up to `now_minute`.
    fn hour(&self, now_minute: u64) -> (u64, u64) {
        self.minutes
            .iter()
            .filter(|(m, _, _)| m + 60 > now_minute)
            .fold((0, 0), |(f, d), (_, mf, md)| (f + mf, d + md))
    }
}

/// Whether (finals, delivered) is a collapse.
pub fn collapsed((finals, delivered): (u64, u64)) -> bool {
    finals >= COLLAPSE_MIN_FINALS && delivered * 2 < finals
}

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

    /// Counts a message's final status; says whether the last hour's rate is collapsed now.
    pub fn delivery_final(&self, delivered: bool) -> bool {
        let minute = self.started.elapsed().as_secs() / 60;
        let Ok(mut window) = self.delivery.lock() else {
            return false;
        };
        window.minutes.retain(|(m, _, _)| m + 60 > minute);
        match window.minutes.last_mut() {
            Some((m, finals, ok)) if *m == minute => {
                *finals += 1;
                *ok += u64::from(delivered);
            }
            _ => window.minutes.push((minute, 1, u64::from(delivered))),
        }
        collapsed(window.hour(minute))
    }

    /// (finals, delivered) over the last hour.
    pub fn delivery_hour(&self) -> (u64, u64) {
        let minute = self.started.elapsed().as_secs() / 60;
        self.delivery
            .lock()
            .map(|w| w.hour(minute))
            .unwrap_or_default()
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
        let delivery = self.delivery_hour();
        let status = match &snapshot {
            Some(Exchange { healthy: false, .. }) => "degraded",
            _ if state.starts_with("degraded") => "degraded",
            _ if collapsed(delivery) => "degraded",
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
        // Delivery status (issue 26): only once a message's fate is known.
        if delivery.0 > 0 {
            report.push((
                "delivery_1h".into(),
                Value::Map(vec![
                    ("finals".into(), delivery.0.into()),
                    ("delivered".into(), delivery.1.into()),
                    ("rate_pct".into(), (delivery.1 * 100 / delivery.0).into()),
                ]),
            ));
        }
        Value::Map(report)
    }
}

/// Starts the uptime clock (at daemon start; otherwise the first `health` call would).
pub fn started() {
    LazyLock::force(&HEALTH);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collapse_needs_enough_finals_and_fewer_than_half_delivered() {
        assert!(!collapsed((19, 0)), "too few to judge");
        assert!(collapsed((20, 9)));
        assert!(!collapsed((20, 10)), "half delivered is no collapse");
        let window = Delivered {
            minutes: vec![(0, 30, 0), (61, 2, 2)],
        };
        assert_eq!(window.hour(61), (2, 2), "older than an hour is forgotten");
    }
}
