//! One request to Twilio and what its answer means: the retry rule (only what Twilio provably
//! did not take in is asked again), the check of every SID, and the [`Error`] a failure is.

use std::time::Duration;

use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::{Method, StatusCode, Uri};
use serde::Deserialize;
use tokio::time::Instant;

use super::error::{is_too_many, Error, TOO_MANY_REQUESTS};
use super::http::Answer;
use super::{is_sid, TwilioClient};
use crate::metrics::METRICS;

/// Attempts per call, the first included.
const MAX_ATTEMPTS: u32 = 4;
/// First wait after a refused connection or a 429 without Retry-After; doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// What one HTTP attempt came to.
enum Attempt {
    Accepted(Resource),
    /// Not accepted, safe to try again after the wait (Twilio's, if it named one).
    Retry {
        error: Error,
        wait: Option<Duration>,
    },
    Failed(Error),
}

/// The resource Twilio created or updated: a message, a verification, a call.
#[derive(Debug)]
pub struct Resource {
    pub sid: String,
    /// Twilio's status for it (`queued`, `pending`, `approved`…), when it said one.
    pub status: Option<String>,
    /// Twilio's error code for it, when it failed as it was made (a message SMS Pumping
    /// Protection blocked at once).
    pub error_code: Option<u32>,
}

/// What a request creates (or updates), named by the prefix of its SID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Messages: `SM…`.
    Message,
    /// Calls: `CA…`.
    Call,
    /// Verify's verifications: `VE…`.
    Verification,
}

impl Kind {
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Message => "SM",
            Kind::Call => "CA",
            Kind::Verification => "VE",
        }
    }
}

/// The one check every SID Twilio answers with passes before it is a result: the prefix of
/// the API that was called, then exactly 32 hex digits.
pub fn valid_sid(sid: &str, kind: Kind) -> bool {
    is_sid(sid, kind.prefix())
}

#[derive(Deserialize)]
struct Created {
    /// Kept loose (any JSON) so that a SID of the wrong type is reported as such.
    sid: Option<serde_json::Value>,
    status: Option<serde_json::Value>,
    error_code: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<u32>,
    message: Option<String>,
}

impl TwilioClient {
    /// POSTs `form` to `uri` and reads the resource of `kind` Twilio answers with, retrying
    /// only what Twilio provably did not accept, within `deadline`.
    pub async fn post(
        &self,
        uri: &Uri,
        form: String,
        kind: Kind,
        deadline: Instant,
    ) -> Result<Resource, Error> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let (error, wait) = match self.attempt(uri, &form, kind, deadline).await {
                Attempt::Accepted(resource) => return Ok(resource),
                Attempt::Failed(error) => return Err(not_reached(error)),
                // A Retry-After is capped as the budget's pause is.
                Attempt::Retry { error, wait } => (
                    error,
                    wait.map_or(backoff, |w| w.min(self.budget.max_retry_after())),
                ),
            };
            if attempt >= MAX_ATTEMPTS || Instant::now() + wait >= deadline {
                return Err(not_reached(error));
            }
            tracing::debug!(
                attempt,
                wait_ms = wait.as_millis() as u64,
                error = %error,
                "retrying Twilio"
            );
            tokio::time::sleep(wait).await;
            METRICS.count_twilio_retry();
            backoff *= 2;
            attempt += 1;
        }
    }

    async fn attempt(&self, uri: &Uri, form: &str, kind: Kind, deadline: Instant) -> Attempt {
        let sent = self
            .request(Method::POST, uri, Some(form.to_owned()), deadline)
            .await;
        match sent {
            Ok(answer) => interpret(&answer, kind),
            // The connection never came up: nothing left, safe to ask again.
            Err(error @ Error::Unreachable(_)) => Attempt::Retry { error, wait: None },
            // Busy (nothing sent), or lost after sending (Twilio may have accepted it).
            Err(error) => Attempt::Failed(error),
        }
    }
}

/// Logs why Twilio could not be reached or failed (the call's own line carries only the
/// reason): the detail names a proxy that failed, by `host:port`, never with its credentials.
/// A busy answer is no news of Twilio's: the shed metric counts it.
fn not_reached(error: Error) -> Error {
    if matches!(
        error,
        Error::Unreachable(_) | Error::Lost(_) | Error::Rejected { code: None, .. }
    ) {
        tracing::warn!(error = %error, "Twilio unavailable");
    }
    error
}

/// The resource of `kind` a 2xx answer names, or what is wrong with it (for the log: never
/// the answer itself, which may echo the message's text).
fn created(body: &[u8], kind: Kind) -> Result<Resource, String> {
    let created = serde_json::from_slice::<Created>(body)
        .map_err(|_| "the answer is not a JSON object".to_owned())?;
    let sid = match created.sid {
        None | Some(serde_json::Value::Null) => return Err("the answer has no sid".into()),
        Some(serde_json::Value::String(sid)) => sid,
        Some(_) => return Err("its sid is not a string".into()),
    };
    if !valid_sid(&sid, kind) {
        return Err(format!(
            "its sid ({} characters) is not {} followed by 32 hex digits",
            sid.chars().count(),
            kind.prefix()
        ));
    }
    let status = match created.status {
        Some(serde_json::Value::String(status)) => Some(status),
        _ => None,
    };
    let error_code = created
        .error_code
        .and_then(|code| code.as_u64())
        .and_then(|code| u32::try_from(code).ok());
    Ok(Resource {
        sid,
        status,
        error_code,
    })
}

/// Turns Twilio's answer into a resource of `kind` or an error.
fn interpret(answer: &Answer, kind: Kind) -> Attempt {
    let (status, body) = (answer.status, answer.body.as_slice());
    if status.is_success() {
        return match created(body, kind) {
            Ok(resource) => Attempt::Accepted(resource),
            Err(why) => {
                tracing::warn!(
                    status = status.as_u16(),
                    expected = kind.prefix(),
                    "{}: {why}; not retried (it may have been carried out)",
                    Error::NoValidSid
                );
                // It may have been carried out: never asked again, here or elsewhere. A
                // provider answering like this is failing.
                Attempt::Failed(Error::NoValidSid)
            }
        };
    }
    let error = rejected(status, body);
    // Only an HTTP 429 says "not taken in, ask again": a 5xx whose body says 20429 is still
    // a 5xx, which may have created the message. A 429 with a code of its own (Verify's
    // 60203, "max send attempts") would say the same thing again. Whom a refusal may be
    // handed on to, and whose fault it is, the error says (401/403: our credentials refused
    // there, nothing taken in; any 5xx, a 503 too, may have created the message).
    match error {
        Error::Rejected { code, .. } if is_too_many(status.as_u16(), code) => Attempt::Retry {
            error,
            wait: retry_after(answer.headers.get(RETRY_AFTER)),
        },
        error => Attempt::Failed(error),
    }
}

/// The error an answer with an error `status` is: Twilio's code and message when its body
/// names them (a 429 without one is Twilio's 20429).
pub(super) fn rejected(status: StatusCode, body: &[u8]) -> Error {
    let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
    let code = parsed.as_ref().and_then(|e| e.code);
    let status = status.as_u16();
    match code {
        Some(code) => Error::Rejected {
            code: Some(code),
            // Twilio's text names the number it refuses: masked before anyone reads it.
            message: parsed
                .and_then(|e| e.message)
                .map(|m| crate::mask::scrub::scrub_numbers(&m).into_owned())
                .unwrap_or_else(|| format!("HTTP {status}")),
            status,
        },
        None if status == 429 => Error::Rejected {
            code: Some(TOO_MANY_REQUESTS),
            message: "Too Many Requests".into(),
            status,
        },
        None => Error::Rejected {
            code: None,
            message: String::new(),
            status,
        },
    }
}

/// `Retry-After` in seconds (the HTTP-date form is treated as absent).
pub(super) fn retry_after(value: Option<&HeaderValue>) -> Option<Duration> {
    let secs: u64 = value?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: StatusCode, body: &[u8], retry_after: Option<&'static str>) -> Answer {
        let mut headers = hyper::HeaderMap::new();
        if let Some(v) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from_static(v));
        }
        Answer {
            status,
            headers,
            body: body.to_vec(),
        }
    }

    fn error_of(a: Attempt) -> (Error, bool) {
        match a {
            Attempt::Accepted(r) => panic!("unexpected success {}", r.sid),
            Attempt::Retry { error, .. } => (error, true),
            Attempt::Failed(error) => (error, false),
        }
    }

    const SM: &str = "SM0123456789abcdef0123456789ABCDEF";

    #[test]
    fn success_needs_a_valid_sid_of_the_api_called() {
        let body = format!(r#"{{"sid":"{SM}","status":"queued"}}"#);
        let ok = interpret(
            &answer(StatusCode::CREATED, body.as_bytes(), None),
            Kind::Message,
        );
        assert!(
            matches!(ok, Attempt::Accepted(r) if r.sid == SM && r.status.as_deref() == Some("queued"))
        );
        let wrong_api = interpret(
            &answer(StatusCode::CREATED, body.as_bytes(), None),
            Kind::Call,
        );
        for bad in [
            br#"{"sid":"SMabc","status":"queued"}"#.as_slice(),
            br#"{"sid":"SMSisfine"}"#,
            br#"{"sid":"ERR"}"#,
            br#"{"sid":42}"#,
            br#"{"sid":null}"#,
            b"{}",
            b"SM0123456789abcdef0123456789abcdef",
        ]
        .map(|body| interpret(&answer(StatusCode::CREATED, body, None), Kind::Message))
        .into_iter()
        .chain([wrong_api])
        {
            let Attempt::Failed(error) = bad else {
                panic!("accepted or retried");
            };
            assert_eq!(error, Error::NoValidSid);
            assert!(
                !error.not_accepted() && error.may_exist(),
                "it may have been sent"
            );
        }
    }

    #[test]
    fn one_sid_check_for_every_api() {
        let hex = "0123456789abcdef0123456789abcdef";
        for (kind, prefix) in [
            (Kind::Message, "SM"),
            (Kind::Call, "CA"),
            (Kind::Verification, "VE"),
        ] {
            assert!(valid_sid(&format!("{prefix}{hex}"), kind));
            assert!(!valid_sid(&format!("{prefix}{}", &hex[1..]), kind));
            assert!(!valid_sid(&format!("{prefix}{hex}0"), kind));
            assert!(!valid_sid(&format!("{prefix}{}g", &hex[1..]), kind));
            assert!(!valid_sid(&format!("{}{hex}", prefix.to_lowercase()), kind));
        }
        assert!(!valid_sid(&format!("CA{hex}"), Kind::Message));
    }

    #[test]
    fn twilio_errors_keep_code_and_message_and_never_start_with_sm() {
        let body = br#"{"code":21408,"message":"SMS is not enabled for this region","status":400}"#;
        let (e, retry) = error_of(interpret(
            &answer(StatusCode::BAD_REQUEST, body, None),
            Kind::Message,
        ));
        assert!(!retry);
        assert_eq!(
            e.to_string(),
            "twilio 21408: SMS is not enabled for this region"
        );
    }

    #[test]
    fn only_http_429_with_20429_or_no_code_is_retried() {
        let retried = |status, body: &[u8]| {
            error_of(interpret(&answer(status, body, Some("1")), Kind::Message)).1
        };
        assert!(retried(StatusCode::TOO_MANY_REQUESTS, b""));
        assert!(retried(StatusCode::TOO_MANY_REQUESTS, br#"{"code":20429}"#));
        // Verify's "max send attempts" would say the same again.
        assert!(!retried(
            StatusCode::TOO_MANY_REQUESTS,
            br#"{"code":60203,"message":"Max send attempts reached"}"#
        ));
        // 20429 in the body of anything but a 429 is not a 429.
        assert!(!retried(StatusCode::BAD_REQUEST, br#"{"code":20429}"#));
        for status in [500, 502, 503, 504] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(!retried(status, br#"{"code":20429}"#), "{status}");
            assert!(!retried(status, b"oops"), "{status}");
        }
        let (e, _) = error_of(interpret(
            &answer(StatusCode::INTERNAL_SERVER_ERROR, b"oops", None),
            Kind::Message,
        ));
        assert!(matches!(
            e,
            Error::Rejected {
                code: None,
                status: 500,
                ..
            }
        ));
    }

    #[test]
    fn no_5xx_is_handed_to_another_provider_but_each_counts_against_it() {
        for status in [500, 502, 503, 504] {
            for body in [br#"{"code":20429}"#.as_slice(), b"", br#"{"code":20500}"#] {
                let status = StatusCode::from_u16(status).unwrap();
                let Attempt::Failed(error) = interpret(&answer(status, body, None), Kind::Message)
                else {
                    panic!("{status} retried");
                };
                assert!(!error.not_accepted(), "{status}");
                assert!(error.provider_fault(), "{status}");
            }
        }
        let Attempt::Failed(error) = interpret(
            &answer(StatusCode::UNAUTHORIZED, br#"{"code":20003}"#, None),
            Kind::Message,
        ) else {
            panic!("401 retried");
        };
        assert!(error.not_accepted() && error.provider_fault());
    }

    #[test]
    fn retry_after_in_seconds() {
        assert_eq!(
            retry_after(Some(&HeaderValue::from_static("2"))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(Some(&HeaderValue::from_static(
                "Wed, 21 Oct 2015 07:28:00 GMT"
            ))),
            None
        );
        assert_eq!(retry_after(None), None);
    }
}
