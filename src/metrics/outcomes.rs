//! What is counted after a call: the fate of its message (delivery status), the alerts it
//! led to, and issueOTP's codes.

use prometheus_client::encoding::EncodeLabelSet;

use super::{Metrics, ResultLabel};

/// A message's final status (issue 26): `code` is Twilio's error code from a fixed list
/// (`other` past it, empty when none), `country` ISO 3166 alpha-2 (`ZZ` unknown).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub status: &'static str,
    pub code: &'static str,
    pub country: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub kind: &'static str,
    /// `raised`, `suppressed` (one per kind per 5 min), `dropped` (queue full), `sent`, `failed`.
    pub outcome: &'static str,
}

impl Metrics {
    /// A message's final status.
    pub fn count_delivery(&self, status: &'static str, code: &'static str, country: String) {
        let labels = DeliveryLabels {
            status,
            code,
            country,
        };
        self.delivery.get_or_create(&labels).inc();
    }

    pub fn count_delivery_event(&self, result: &'static str) {
        let labels = ResultLabel { result };
        self.delivery_events.get_or_create(&labels).inc();
    }

    pub fn count_alert(&self, kind: &'static str, outcome: &'static str) {
        self.alerts
            .get_or_create(&AlertLabels { kind, outcome })
            .inc();
    }

    /// issueOTP / checkOTP: `issued`, or a check's `ok`, `invalid`, `expired`, `locked`.
    pub fn count_code(&self, result: &'static str) {
        self.codes.get_or_create(&ResultLabel { result }).inc();
    }
}
