//! The errors a caller can receive, and their one classification. Each renders as
//! `ERR <reason>: <detail>`, the stable wire form the README documents; none can ever start
//! with `SM`. The reason token, the field a log line and a metric name besides it, and what
//! an error says of Twilio's health are all decided here.
//!
//! The guards and the call answer in these terms, so the type sits below them rather than
//! inside `call`. The Twilio clients answer in their own terms (`twilio::Error`), translated
//! once, in `call/twilio_error.rs`.

use std::fmt;

/// A failed call, as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Wrong method, arity or argument types, or an argument that fails validation.
    BadRequest(String),
    /// The phone number is not E.164.
    InvalidPhone(String),
    /// Twilio answered with an error: its numeric code, its message and the HTTP status.
    Twilio {
        code: u32,
        message: String,
        status: u16,
    },
    /// No answer within the deadline.
    Timeout { deadline_ms: u64 },
    /// A fraud rule refused the number: `country`, `line_type`, `carrier`, `number_type`,
    /// `pumping_risk`.
    Blocked(&'static str),
    /// Twilio's own fraud defence refused the number (SMS Pumping Protection's 30450 or
    /// 30453, Verify Fraud Guard's 60410): `ERR blocked: fraud_guard <code>`.
    FraudGuard(u32),
    /// A rate limit (`limit`: phone, ip, user, global or country) refused the send; it would
    /// pass after this many seconds. The wire form leaves out which limit, but for a country
    /// budget (`country budget`, no wait).
    RateLimited {
        retry_in_s: u64,
        limit: &'static str,
    },
    /// Twilio could not be reached, or failed.
    Unavailable(String),
    /// The Twilio request budget shed the request: nothing was sent, Twilio was never asked.
    /// On the wire it is `unavailable` (`ERR unavailable: busy: …`); it says nothing of
    /// Twilio's health.
    Busy(String),
    /// The shared state store failed and `state_failure = closed`: `ERR unavailable: state
    /// store`, nothing more (the store's own words go to the log only).
    StateStore,
    /// A caller tokens file is configured and the call carried no token (`context.token`)
    /// that matches one of its callers. Nothing was sent and no limit was charged.
    Unauthorized(String),
    /// What a call asks about is not known here (deliveryStatus of a SID never seen, or
    /// forgotten): `ERR not_found: …`.
    NotFound(String),
    /// A fault of our own.
    Internal(String),
    /// checkOTP: no live code for the number matches (or none was issued: never told apart).
    InvalidCode,
    /// checkOTP: the code was right but its lifetime has passed.
    Expired,
    /// checkOTP: too many wrong codes; refused for this long.
    Locked { retry_in_s: u64 },
}

impl CallError {
    /// The text after `ERR <reason>: ` (after `ERR twilio ` for Twilio's refusals: its code,
    /// then its message), as it is sent.
    pub fn text(&self) -> String {
        match self {
            CallError::BadRequest(d)
            | CallError::InvalidPhone(d)
            | CallError::Unavailable(d)
            | CallError::Busy(d)
            | CallError::Unauthorized(d)
            | CallError::NotFound(d)
            | CallError::Internal(d) => sanitize(d),
            CallError::Twilio { code, message, .. } => format!("{code}: {}", sanitize(message)),
            CallError::Timeout { deadline_ms } => format!("no answer within {deadline_ms} ms"),
            CallError::Blocked(rule) => (*rule).to_owned(),
            CallError::FraudGuard(code) => format!("fraud_guard {code}"),
            CallError::StateStore => "state store".to_owned(),
            // A budget refills over hours: a wait in seconds would only invite retries.
            CallError::RateLimited {
                limit: "country", ..
            } => "country budget".to_owned(),
            CallError::RateLimited { retry_in_s, .. } => format!("retry in {retry_in_s} s"),
            CallError::InvalidCode => "the code is not valid for this number".to_owned(),
            CallError::Expired => "the code has expired; ask for a new one".to_owned(),
            CallError::Locked { retry_in_s } => {
                format!("too many wrong codes; retry in {retry_in_s} s")
            }
        }
    }

    /// The stable reason token, for the wire, logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            CallError::BadRequest(_) => "bad_request",
            CallError::InvalidPhone(_) => "invalid_phone",
            CallError::Twilio { .. } => "twilio",
            CallError::Timeout { .. } => "timeout",
            CallError::RateLimited { .. } => "rate_limited",
            CallError::Blocked(_) | CallError::FraudGuard(_) => "blocked",
            CallError::Unavailable(_) | CallError::Busy(_) | CallError::StateStore => "unavailable",
            CallError::Unauthorized(_) => "unauthorized",
            CallError::NotFound(_) => "not_found",
            CallError::Internal(_) => "internal",
            CallError::InvalidCode => "invalid_code",
            CallError::Expired => "expired",
            CallError::Locked { .. } => "locked",
        }
    }
}

/// What a failure's log line (and its metric) names besides the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    None,
    TwilioCode(u32),
    /// The fraud rule that refused (`blocked`).
    Rule(&'static str),
    /// The rate limit that refused (`rate_limited`).
    Limit(&'static str),
}

/// Twilio codes that fail every send, not just this one: bad credentials, suspended account.
const ACCOUNT_PROBLEMS: [u32; 3] = [20003, 20005, 30002];

impl CallError {
    pub fn detail(&self) -> Detail {
        match self {
            CallError::Twilio { code, .. } => Detail::TwilioCode(*code),
            CallError::Blocked(rule) => Detail::Rule(rule),
            CallError::FraudGuard(_) => Detail::Rule("fraud_guard"),
            CallError::RateLimited { limit, .. } => Detail::Limit(limit),
            _ => Detail::None,
        }
    }

    /// What a failed send says of Twilio's health, for `health`: healthy or not, and a
    /// detail; `None` when the failure says nothing of Twilio: the caller's doing, a guard's
    /// refusal, or the state store's (Twilio was never asked). Every variant is named, so a
    /// new one must decide.
    pub fn twilio_health(&self) -> Option<(bool, String)> {
        match self {
            CallError::BadRequest(_)
            | CallError::InvalidPhone(_)
            | CallError::RateLimited { .. }
            | CallError::Blocked(_)
            | CallError::FraudGuard(_)
            | CallError::StateStore
            | CallError::Busy(_)
            | CallError::NotFound(_)
            | CallError::Unauthorized(_)
            | CallError::InvalidCode
            | CallError::Expired
            | CallError::Locked { .. } => None,
            CallError::Twilio { code, .. } => {
                Some((!ACCOUNT_PROBLEMS.contains(code), format!("twilio {code}")))
            }
            CallError::Timeout { .. } | CallError::Unavailable(_) | CallError::Internal(_) => {
                Some((false, self.reason().to_owned()))
            }
        }
    }
}

/// The longest detail passed on from elsewhere (Twilio's message, a connection error).
const MAX_DETAIL: usize = 200;

/// Makes text from outside safe to embed in one reply line: no control characters, bounded.
pub fn sanitize(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_DETAIL)
        .collect();
    if text.chars().count() > MAX_DETAIL {
        out.push('…');
    }
    out
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = self.reason();
        match self {
            // `ERR twilio 21211: …`: Twilio's code belongs to the reason.
            CallError::Twilio { .. } => write!(f, "ERR {reason} {}", self.text()),
            _ => write!(f, "ERR {reason}: {}", self.text()),
        }
    }
}

impl std::error::Error for CallError {}

/// A configured file's path as an error may show it: only when it looks like one (a `/`, no
/// spaces or line breaks), for a secret pasted where its path belongs (a token as
/// `caller_tokens_file`, a key's PEM as `tls_key`) must not be printed back.
pub fn shown_path(path: &std::path::Path) -> String {
    match path.to_str() {
        Some(p) if p.contains('/') && !p.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            p.to_owned()
        }
        _ => "(the value is not shown, as it does not look like a path)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms() {
        assert_eq!(
            CallError::Twilio {
                code: 21211,
                message: "Invalid 'To' Phone Number".into(),
                status: 400,
            }
            .to_string(),
            "ERR twilio 21211: Invalid 'To' Phone Number"
        );
        assert_eq!(
            CallError::Timeout { deadline_ms: 2500 }.to_string(),
            "ERR timeout: no answer within 2500 ms"
        );
        assert_eq!(
            CallError::RateLimited {
                retry_in_s: 42,
                limit: "phone"
            }
            .to_string(),
            "ERR rate_limited: retry in 42 s"
        );
        assert_eq!(
            CallError::BadRequest("a\r\nb".into()).to_string(),
            "ERR bad_request: a  b"
        );
        assert_eq!(
            CallError::StateStore.to_string(),
            "ERR unavailable: state store"
        );
        assert!(CallError::StateStore.twilio_health().is_none());
        assert!(CallError::Blocked("country").twilio_health().is_none());
        let busy = CallError::Busy("busy: no room".into());
        assert_eq!(busy.to_string(), "ERR unavailable: busy: no room");
        assert!(busy.twilio_health().is_none());
        assert_eq!(
            CallError::Unauthorized("no caller token".into()).to_string(),
            "ERR unauthorized: no caller token"
        );
    }

    #[test]
    fn the_text_is_what_follows_the_reason() {
        let twilio = CallError::Twilio {
            code: 21211,
            message: "Invalid\n number".into(),
            status: 400,
        };
        assert_eq!(twilio.text(), "21211: Invalid  number");
        assert_eq!(CallError::StateStore.text(), "state store");
        assert_eq!(CallError::Blocked("carrier").text(), "carrier");
        assert_eq!(
            CallError::Timeout { deadline_ms: 9 }.text(),
            "no answer within 9 ms"
        );
    }

    #[test]
    fn long_details_are_cut() {
        let s = CallError::Unavailable("x".repeat(1000)).to_string();
        assert!(s.len() < 260, "{}", s.len());
        assert!(s.ends_with('…'));
    }
}
