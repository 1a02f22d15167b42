//! The pumping guard's and the resend rules' metrics (issue 25), one block of the registry.
//! Country labels are ISO codes from the numbering plan (or `ZZ`): a fixed list.

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{registered, ResultLabel};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CountryLabel {
    pub country: CountryCode,
}

/// Two letters held inline: a send is counted without allocating its label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct CountryCode([u8; 2]);

impl EncodeLabelValue for CountryCode {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(std::str::from_utf8(&self.0).unwrap_or("ZZ"))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabel {
    /// `country` or `range`.
    pub scope: &'static str,
}

pub struct PumpingMetrics {
    sent: Family<CountryLabel, Counter>,
    confirmed: Family<CountryLabel, Counter>,
    throttled: Family<ScopeLabel, Gauge>,
    episodes: Family<ScopeLabel, Counter>,
    monitored: Family<ScopeLabel, Counter>,
    deduplicated: Counter,
    feedback: Family<ResultLabel, Counter>,
}

impl PumpingMetrics {
    pub(super) fn register(r: &mut Registry) -> PumpingMetrics {
        PumpingMetrics {
            sent: registered(r, "sent", "Sends the pumping guard counted, by country"),
            confirmed: registered(
                r,
                "confirmed",
                "Codes confirmed (confirmOTP), by country of the number",
            ),
            throttled: registered(
                r,
                "pumping_throttled",
                "Countries and ranges throttled now for pumping (in monitor mode: would be), \
                 by scope, as this instance started their episodes",
            ),
            episodes: registered(
                r,
                "pumping_episodes",
                "Throttling episodes started for pumping, by scope (country, range)",
            ),
            monitored: registered(
                r,
                "pumping_monitored",
                "Sends pumping_mode = enforce would have refused (sent: monitor), by scope",
            ),
            deduplicated: registered(
                r,
                "deduplicated",
                "sendOTP calls answered with the first SID of the same phone and code, nothing sent",
            ),
            feedback: registered(
                r,
                "message_feedback",
                "Twilio Message Feedback requests (confirmOTP in Messages mode), by result (ok, failed)",
            ),
        }
    }

    pub fn count_sent(&self, country: &str) {
        self.sent.get_or_create(&label(country)).inc();
    }

    pub fn count_confirmed(&self, country: &str) {
        self.confirmed.get_or_create(&label(country)).inc();
    }

    /// An episode starts: counted, and the gauge held up for `block` (then let down).
    pub fn episode(&self, scope: &'static str, block: std::time::Duration) {
        self.episodes.get_or_create(&ScopeLabel { scope }).inc();
        let gauge = self.throttled.get_or_create(&ScopeLabel { scope }).clone();
        gauge.inc();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::time::sleep(block).await;
                gauge.dec();
            });
        }
    }

    pub fn count_monitored(&self, scope: &'static str) {
        self.monitored.get_or_create(&ScopeLabel { scope }).inc();
    }

    pub fn count_deduplicated(&self) {
        self.deduplicated.inc();
    }

    pub fn count_feedback(&self, result: &'static str) {
        self.feedback.get_or_create(&ResultLabel { result }).inc();
    }
}

/// `country` as the guard names it (two ASCII letters); anything else is `ZZ`.
fn label(country: &str) -> CountryLabel {
    let code = match country.as_bytes() {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => [*a, *b],
        _ => *b"ZZ",
    };
    CountryLabel {
        country: CountryCode(code),
    }
}
