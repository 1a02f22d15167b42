//! What can come of asking Twilio, besides a result: every `TwilioClient` API fails with this
//! one type. Each variant says whether Twilio took the request in (so whether what it asked for
//! may exist), and whose fault it is; retries, failover and circuit breakers read those, never
//! the text. The wire's `ERR …` form is the caller's business (`call/`), not this module's.

use std::time::Duration;

use super::fraud::is_fraud_block;

/// Twilio's code for "too many requests", safe to retry.
pub const TOO_MANY_REQUESTS: u32 = 20429;

/// Why the account's request budget shed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The learned answer time leaves no room before the deadline.
    NoTime,
    /// The requests ahead in line leave no room.
    Queue,
    /// It waited in line past its last moment.
    Late,
}

impl Shed {
    /// The metric's label.
    pub fn label(self) -> &'static str {
        match self {
            Shed::NoTime => "no_time",
            Shed::Queue => "queue",
            Shed::Late => "late",
        }
    }

    fn text(self) -> &'static str {
        match self {
            Shed::NoTime => "too little time left for Twilio to answer before the deadline",
            Shed::Queue => "Twilio requests in flight leave no time to answer before the deadline",
            Shed::Late => "no Twilio request slot came free in time to answer before the deadline",
        }
    }
}

/// A request to Twilio that came to nothing the caller can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The account's request budget shed it: nothing was sent, Twilio was not asked.
    #[error("busy: {}", .0.text())]
    Busy(Shed),
    /// The request could not be made (a URL that cannot carry it): nothing was sent.
    #[error("{0}")]
    Unmade(String),
    /// Twilio could not be reached, and the request never left (after the retries).
    #[error("{0}")]
    Unreachable(String),
    /// Twilio (or an edge or proxy in its place) answered with an error status: Twilio's
    /// code when the body named one, and its message, numbers already masked.
    #[error("{}", rejected_text(*.code, *.status, .message))]
    Rejected {
        code: Option<u32>,
        status: u16,
        message: String,
    },
    /// A 2xx that names no valid resource of the API called: it may have been carried out.
    #[error("Twilio answered without a valid SID")]
    NoValidSid,
    /// A 2xx that is not what was asked for (another resource, an unexpected status, an
    /// unreadable body): it was carried out, just not as asked.
    #[error("{0}")]
    Unexpected(String),
    /// The request went out and its answer was lost: Twilio may have taken it in.
    #[error("{0}")]
    Lost(String),
    /// No answer within the time given, after sending: Twilio may have taken it in.
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
}

fn rejected_text(code: Option<u32>, status: u16, message: &str) -> String {
    match code {
        Some(code) => format!("twilio {code}: {message}"),
        None => format!("Twilio answered HTTP {status}"),
    }
}

impl Error {
    /// Whatever was asked for may exist: Twilio may have taken the request in. Never asked
    /// again, here or at another provider (a second SMS is worse than an error). No 5xx is
    /// proof of the contrary: a proxy or edge may answer one after the request reached Twilio.
    pub fn may_exist(&self) -> bool {
        match self {
            Error::Busy(_) | Error::Unmade(_) | Error::Unreachable(_) => false,
            Error::Rejected { status, .. } => *status >= 500,
            Error::NoValidSid | Error::Unexpected(_) | Error::Lost(_) | Error::Timeout(_) => true,
        }
    }

    /// Twilio provably did not take it in, and another provider may be asked: never sent
    /// (busy, unreachable), too many requests (429, 20429), or our credentials refused there
    /// (401, 403). A refusal of the request itself (a 400) would be the same elsewhere.
    pub fn not_accepted(&self) -> bool {
        match self {
            Error::Busy(_) | Error::Unreachable(_) => true,
            // A fraud refusal (Verify's 60410 is a 403) is about the number: another provider
            // must not be asked to send to it.
            Error::Rejected { code, .. } if is_fraud_block(*code) => false,
            Error::Rejected { code, status, .. } => {
                credentials_refused(*status) || is_too_many(*status, *code)
            }
            _ => false,
        }
    }

    /// The fault is the provider's (unreachable, overloaded, failing, refusing our
    /// credentials), not the request's, nor the budget's: counts against its breaker.
    pub fn provider_fault(&self) -> bool {
        match self {
            Error::Busy(_) | Error::Unmade(_) => false,
            Error::Rejected { code, .. } if is_fraud_block(*code) => false,
            Error::Rejected { code, status, .. } => {
                credentials_refused(*status) || *status >= 500 || is_too_many(*status, *code)
            }
            Error::Unreachable(_)
            | Error::NoValidSid
            | Error::Unexpected(_)
            | Error::Lost(_)
            | Error::Timeout(_) => true,
        }
    }

    /// Twilio itself answered (or failed to): what this says of Twilio's health. `None` when
    /// Twilio was never asked (busy, a request that could not be made).
    pub fn answered_by_twilio(&self) -> bool {
        !matches!(self, Error::Busy(_) | Error::Unmade(_))
    }
}

/// HTTP 429 with Twilio's "too many requests" code (or none): always safe to ask again. A 429
/// with a code of its own (Verify's 60203, "max send attempts") would say the same again.
pub fn is_too_many(status: u16, code: Option<u32>) -> bool {
    status == 429 && matches!(code, None | Some(TOO_MANY_REQUESTS))
}

/// An answer that says the credentials are wrong (or the account may not do this): every
/// send will fail too.
pub(super) fn credentials_refused(status: u16) -> bool {
    matches!(status, 401 | 403)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(code: Option<u32>, status: u16) -> Error {
        Error::Rejected {
            code,
            status,
            message: "m".into(),
        }
    }

    #[test]
    fn what_each_outcome_says() {
        let busy = Error::Busy(Shed::Queue);
        assert!(busy.not_accepted() && !busy.may_exist() && !busy.provider_fault());
        assert!(!busy.answered_by_twilio());
        assert!(rejected(Some(20003), 401).not_accepted());
        assert!(rejected(Some(20429), 429).not_accepted());
        assert!(!rejected(Some(60203), 429).not_accepted());
        assert!(!rejected(Some(60203), 429).provider_fault());
        assert!(!rejected(Some(21211), 400).not_accepted());
        // Twilio's fraud refusals: the number's doing, not the provider's; never elsewhere.
        for (code, status) in [(60410, 403), (30450, 400), (30453, 400)] {
            let e = rejected(Some(code), status);
            assert!(
                !e.not_accepted() && !e.provider_fault() && !e.may_exist(),
                "{code}"
            );
        }
        for status in [500, 502, 503, 504] {
            let e = rejected(Some(20429), status);
            assert!(e.may_exist() && !e.not_accepted() && e.provider_fault());
        }
        assert!(Error::Lost("reset".into()).may_exist());
        assert!(Error::NoValidSid.may_exist());
        assert_eq!(rejected(Some(21211), 400).to_string(), "twilio 21211: m");
        assert_eq!(rejected(None, 500).to_string(), "Twilio answered HTTP 500");
    }
}
