//! A call's log line, formatted only once the reply has left.
//!
//! Formatting the line (fields, masking, the timestamp) is about a tenth of a call's CPU; done
//! before the reply, the caller waited for it. A [`CallLog`] holds what the line needs and
//! writes it when dropped: by the connection right after it wrote the reply, or by the call's
//! own task when nobody waits for the reply any more — so no call goes unlogged.

use tokio::time::Instant;

use super::request::Target;
use crate::error::{CallError, Detail};
use crate::mask::mask_phone;
use crate::rpc::Method;
use crate::status;

/// The line of one sendOTP, issueOTP, checkOTP or confirmOTP call; empty for the others.
#[derive(Default)]
pub struct CallLog(Option<Line>);

struct Line {
    method: Method,
    /// The phone number (masked when written) or, for confirmOTP, the VE… SID.
    target: Target,
    outcome: Outcome,
    latency_ms: f64,
    /// The caller's name from the tokens file (`none` when refused), when one is configured.
    caller: Option<std::sync::Arc<str>>,
}

enum Outcome {
    Done {
        sid: String,
    },
    Failed {
        reason: &'static str,
        detail: Detail,
    },
}

impl CallLog {
    /// The line of a call that began at `started` and ended now with `result`.
    pub fn new(
        method: &Method,
        target: Target,
        result: &Result<String, CallError>,
        started: Instant,
    ) -> CallLog {
        // Whole microseconds (3 decimals of ms): a raw float reads 5.002549999999999.
        let latency_ms = started.elapsed().as_micros() as f64 / 1000.0;
        let outcome = match result {
            Ok(sid) => Outcome::Done { sid: sid.clone() },
            Err(e) => Outcome::Failed {
                reason: e.reason(),
                detail: e.detail(),
            },
        };
        CallLog(Some(Line {
            method: method.clone(),
            target,
            outcome,
            latency_ms,
            caller: None,
        }))
    }

    /// Names the caller (never its token) in the line.
    pub fn by(mut self, caller: std::sync::Arc<str>) -> CallLog {
        if let Some(line) = &mut self.0 {
            line.caller = Some(caller);
        }
        self
    }
}

impl Drop for CallLog {
    fn drop(&mut self) {
        if let Some(line) = self.0.take() {
            line.write();
        }
    }
}

impl Line {
    fn write(self) {
        let masked;
        let target: &str = match &self.target {
            Target::Phone(phone) => {
                masked = mask_phone(phone);
                &masked
            }
            Target::Shown(text) => text,
        };
        let latency_ms = self.latency_ms;
        // Left out of the line when no tokens file is configured.
        let caller = self.caller.as_deref();
        let method = self.method.label();
        match (&self.method, &self.outcome) {
            (Method::SendOtp | Method::IssueOtp, Outcome::Done { sid }) => {
                tracing::info!(method, phone = %target, outcome = "sent", sid = %sid, caller, latency_ms)
            }
            (Method::SendOtp | Method::IssueOtp, Outcome::Failed { reason, detail }) => {
                status::recent::record(target, reason, shown_detail(*detail));
                match detail {
                    Detail::TwilioCode(code) => {
                        tracing::warn!(method, phone = %target, outcome = "error", reason, twilio_code = code, caller, latency_ms)
                    }
                    Detail::Rule(rule) => {
                        tracing::warn!(method, phone = %target, outcome = "error", reason, rule, caller, latency_ms)
                    }
                    Detail::Limit(limit) => {
                        tracing::warn!(method, phone = %target, outcome = "error", reason, limit, caller, latency_ms)
                    }
                    Detail::None => {
                        tracing::warn!(method, phone = %target, outcome = "error", reason, caller, latency_ms)
                    }
                }
            }
            (Method::ConfirmOtp, Outcome::Done { sid }) => {
                tracing::info!(method = "confirmOTP", target = %target, outcome = "approved", sid = %sid, caller, latency_ms)
            }
            (Method::ConfirmOtp, Outcome::Failed { reason, .. }) => {
                tracing::warn!(method = "confirmOTP", target = %target, outcome = "error", reason, caller, latency_ms)
            }
            (Method::CheckOtp, Outcome::Done { .. }) => {
                tracing::info!(method, phone = %target, outcome = "accepted", caller, latency_ms)
            }
            (Method::CheckOtp, Outcome::Failed { reason, .. }) => {
                tracing::warn!(method, phone = %target, outcome = "error", reason, caller, latency_ms)
            }
            // The other methods get no line.
            (Method::DeliveryStatus | Method::Ping | Method::Health | Method::Unknown(_), _) => {}
        }
    }
}

/// What the status page's last refusals show besides the reason: the rule, the limit or
/// Twilio's code (the fields of the log line).
fn shown_detail(detail: Detail) -> String {
    match detail {
        Detail::TwilioCode(code) => code.to_string(),
        Detail::Rule(name) | Detail::Limit(name) => name.to_owned(),
        Detail::None => String::new(),
    }
}
