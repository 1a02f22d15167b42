//! The last refusals and Twilio errors, as the call's log line shows them (the masked number,
//! the reason, its detail): a ring of [`KEPT`], fed where that line is written, after the
//! reply has left. Never an OTP, never a whole number: it only ever gets the line's fields.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::unix_now;

pub const KEPT: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Seconds since the epoch.
    pub at: u64,
    /// The number as the log line shows it (masked), or its placeholder.
    pub phone: String,
    /// The wire reason (`blocked`, `rate_limited`, `twilio`, …).
    pub reason: &'static str,
    /// The rule, the limit or Twilio's code; empty when the reason says it all.
    pub detail: String,
}

static RECENT: Mutex<VecDeque<Refusal>> = Mutex::new(VecDeque::new());

/// Remembers a refused send; the oldest of [`KEPT`] makes room.
pub fn record(phone: &str, reason: &'static str, detail: String) {
    let refusal = Refusal {
        at: unix_now(),
        phone: phone.to_owned(),
        reason,
        detail,
    };
    if let Ok(mut recent) = RECENT.lock() {
        if recent.len() == KEPT {
            recent.pop_front();
        }
        recent.push_back(refusal);
    }
}

/// The refusals kept, newest first.
pub fn latest() -> Vec<Refusal> {
    RECENT
        .lock()
        .map(|r| r.iter().rev().cloned().collect())
        .unwrap_or_default()
}
