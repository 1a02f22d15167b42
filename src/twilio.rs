//! The Twilio REST client: one pooled HTTP client, built once, the retry rules, and Messages.
//!
//! Creating a message is not idempotent, so a request is retried only when Twilio provably
//! did not accept it: the connection failed before the request went out, or Twilio said
//! 429 / 20429 ("always safe to retry"). A 5xx, a reset after sending, or a slow answer is
//! never retried — a second SMS is worse than an error.

use std::time::Duration;

use base64::Engine as _;
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::{Method, StatusCode, Uri};
use serde::Deserialize;
use tokio::time::Instant;
use url::Url;

use crate::config::Settings;
use crate::credentials::Credentials;
use crate::error::CallError;
use crate::health::HEALTH;
use crate::http::{Answer, Failure, HttpClient, HttpOptions};
use crate::lookup::LineInfo;
use crate::metrics::METRICS;
use crate::validate::Sender;

/// Attempts per call, the first included.
const MAX_ATTEMPTS: u32 = 4;
/// First wait after a refused connection or a 429 without Retry-After; doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Twilio's code for "too many requests", safe to retry.
const TOO_MANY_REQUESTS: u32 = 20429;

/// One SMS to send.
#[derive(Debug)]
pub struct Sms<'a> {
    pub to: &'a str,
    pub sender: &'a Sender,
    pub body: &'a str,
}

#[derive(Debug)]
pub struct TwilioClient {
    http: HttpClient,
    messages_uri: Uri,
    calls_uri: Uri,
    /// The account resource: a cheap authenticated GET that opens and keeps the connection.
    account_uri: Uri,
    /// Lookup v2's base, `https://lookups.twilio.com`.
    lookup_url: Url,
    authorization: HeaderValue,
    validity_period: Option<String>,
}

/// What one HTTP attempt came to.
enum Attempt {
    Accepted(Resource),
    /// Not accepted, safe to try again after the wait (Twilio's, if it named one).
    Retry {
        error: CallError,
        wait: Option<Duration>,
    },
    Failed(Refusal),
}

/// A request that did not create anything, and what that says.
#[derive(Debug)]
pub struct Refusal {
    pub error: CallError,
    /// Twilio provably did not accept it (never sent, 429, 401/403, 503): another provider
    /// may be asked without risking a second delivery.
    pub not_accepted: bool,
    /// The fault is the provider's (unreachable, overloaded, failing, refusing our
    /// credentials), not the request's: counts against its circuit breaker.
    pub provider_fault: bool,
}

impl Refusal {
    /// The request's own fault: another provider would refuse it too.
    fn final_answer(error: CallError) -> Self {
        Refusal {
            error,
            not_accepted: false,
            provider_fault: false,
        }
    }
}

impl From<Refusal> for CallError {
    fn from(refusal: Refusal) -> Self {
        refusal.error
    }
}

/// The resource Twilio created or updated: a message, a verification, a call.
#[derive(Debug)]
pub struct Resource {
    pub sid: String,
    /// Twilio's status for it (`queued`, `pending`, `approved`…), when it said one.
    pub status: Option<String>,
}

#[derive(Deserialize)]
struct Created {
    sid: Option<String>,
    status: Option<String>,
}

#[derive(Deserialize)]
struct TwilioError {
    code: Option<u32>,
    message: Option<String>,
}

impl TwilioClient {
    pub fn new(settings: &Settings, credentials: &Credentials) -> anyhow::Result<Self> {
        // With failover, a provider that cannot be reached must leave time for the next.
        let providers = 1 + settings.failover.len() as u32;
        let http = HttpClient::new(&HttpOptions {
            proxy: settings.proxy.as_ref().map(Url::as_str),
            extra_ca_pem: settings.twilio_ca_pem.as_deref(),
            connect_timeout: settings.deadline / providers,
        })?;
        Self::with_http(http, settings, &settings.twilio_api_url, credentials)
    }

    /// A client for another account or region that shares this one's connection pool.
    pub fn sibling(
        &self,
        settings: &Settings,
        api_url: &Url,
        credentials: &Credentials,
    ) -> anyhow::Result<Self> {
        Self::with_http(self.http.clone(), settings, api_url, credentials)
    }

    fn with_http(
        http: HttpClient,
        settings: &Settings,
        api_url: &Url,
        credentials: &Credentials,
    ) -> anyhow::Result<Self> {
        let account = format!("{}.json", credentials.account_sid);
        let messages_uri = api_uri(api_url, &[&credentials.account_sid, "Messages.json"])?;
        let calls_uri = api_uri(api_url, &[&credentials.account_sid, "Calls.json"])?;
        let account_uri = api_uri(api_url, &[&account])?;

        let (user, password) = credentials.basic();
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut authorization = HeaderValue::from_str(&format!("Basic {encoded}"))?;
        authorization.set_sensitive(true);

        Ok(TwilioClient {
            http,
            messages_uri,
            calls_uri,
            account_uri,
            lookup_url: settings.lookup_api_url.clone(),
            authorization,
            validity_period: settings.validity_period.map(|v| v.to_string()),
        })
    }

    /// Sends one SMS and returns its SID. Retries stay inside `deadline`; the caller also
    /// bounds the whole call by it.
    pub async fn send(&self, sms: &Sms<'_>, deadline: Instant) -> Result<String, Refusal> {
        let (sender_field, sender) = match sms.sender {
            Sender::From(from) => ("From", from.as_str()),
            Sender::MessagingService(sid) => ("MessagingServiceSid", sid.as_str()),
        };
        // The serializer is not Send: finish it before the await.
        let form = {
            let mut form = form_urlencoded::Serializer::new(String::with_capacity(160));
            form.append_pair("To", sms.to)
                .append_pair(sender_field, sender)
                .append_pair("Body", sms.body);
            if let Some(v) = &self.validity_period {
                form.append_pair("ValidityPeriod", v);
            }
            form.finish()
        };
        Ok(self.post(&self.messages_uri, form, deadline).await?.sid)
    }

    /// The Calls resource, `…/Accounts/{AC}/Calls.json`.
    pub fn calls_uri(&self) -> &Uri {
        &self.calls_uri
    }

    /// POSTs `form` to `uri` and reads the resource Twilio answers with, retrying only what
    /// Twilio provably did not accept, within `deadline`.
    pub async fn post(
        &self,
        uri: &Uri,
        form: String,
        deadline: Instant,
    ) -> Result<Resource, Refusal> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let (error, wait) = match self.attempt(uri, &form).await {
                Attempt::Accepted(resource) => return Ok(resource),
                Attempt::Failed(refusal) => return Err(refusal),
                Attempt::Retry { error, wait } => (error, wait.unwrap_or(backoff)),
            };
            if attempt >= MAX_ATTEMPTS || Instant::now() + wait >= deadline {
                return Err(Refusal {
                    error,
                    not_accepted: true,
                    provider_fault: true,
                });
            }
            tracing::debug!(
                attempt,
                wait_ms = wait.as_millis() as u64,
                reason = error.reason(),
                "retrying Twilio"
            );
            tokio::time::sleep(wait).await;
            METRICS.twilio_retries.inc();
            backoff *= 2;
            attempt += 1;
        }
    }

    async fn attempt(&self, uri: &Uri, form: &str) -> Attempt {
        let started = Instant::now();
        let sent = self
            .http
            .send(
                Method::POST,
                uri,
                &self.authorization,
                Some(form.to_owned()),
            )
            .await;
        match sent {
            Ok(answer) => {
                METRICS.observe_twilio(started.elapsed());
                interpret(&answer)
            }
            Err(Failure {
                before_sending: true,
                detail,
            }) => Attempt::Retry {
                error: CallError::Unavailable(detail),
                wait: None,
            },
            // Lost after sending: Twilio may have accepted it.
            Err(Failure { detail, .. }) => Attempt::Failed(Refusal {
                error: CallError::Unavailable(detail),
                not_accepted: false,
                provider_fault: true,
            }),
        }
    }

    /// Opens (or reuses) the connection with an authenticated GET of the account, so the next
    /// send finds it ready. Says how Twilio answered; records it for health reports.
    pub async fn warm(&self, timeout: Duration) -> Result<StatusCode, String> {
        let outcome = self.touch(timeout).await;
        match &outcome {
            Ok(status) => HEALTH.record(
                "warm",
                !refuses_credentials(*status),
                format!("HTTP {}", status.as_u16()),
            ),
            Err(_) => HEALTH.record("warm", false, "unavailable"),
        }
        outcome
    }

    /// The authenticated GET of [`warm`](Self::warm), without a health record (failover
    /// providers: health reports speak of the primary).
    pub async fn touch(&self, timeout: Duration) -> Result<StatusCode, String> {
        let started = Instant::now();
        let sent = tokio::time::timeout(
            timeout,
            self.http
                .send(Method::GET, &self.account_uri, &self.authorization, None),
        )
        .await;
        let outcome = match sent {
            Ok(Ok(answer)) => Ok(answer.status),
            Ok(Err(failure)) => Err(failure.detail),
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        };
        METRICS.observe_twilio(started.elapsed());
        outcome
    }
}

impl TwilioClient {
    /// Lookup v2 with line type intelligence for one number.
    pub async fn lookup(&self, phone: &str) -> Result<LineInfo, String> {
        #[derive(Deserialize)]
        struct Found {
            line_type_intelligence: Option<LineInfo>,
        }
        let mut url = self.lookup_url.clone();
        url.path_segments_mut()
            .map_err(|()| "lookup_api_url cannot be a base URL".to_owned())?
            .pop_if_empty()
            .extend(["v2", "PhoneNumbers", phone]);
        url.query_pairs_mut()
            .append_pair("Fields", "line_type_intelligence");
        let uri = Uri::try_from(url.as_str()).map_err(|e| e.to_string())?;
        let started = Instant::now();
        let answer = self
            .http
            .send(Method::GET, &uri, &self.authorization, None)
            .await
            .map_err(|f| f.detail)?;
        METRICS.observe_twilio(started.elapsed());
        if !answer.status.is_success() {
            return Err(format!("HTTP {}", answer.status.as_u16()));
        }
        let found: Found =
            serde_json::from_slice(&answer.body).map_err(|e| format!("unreadable answer: {e}"))?;
        Ok(found.line_type_intelligence.unwrap_or_default())
    }
}

/// An answer that says the credentials are wrong (or the account may not do this): every
/// send will fail too.
pub fn refuses_credentials(status: StatusCode) -> bool {
    matches!(status.as_u16(), 401 | 403)
}

/// `{api}/2010-04-01/Accounts/{rest…}`.
fn api_uri(api_url: &Url, rest: &[&str]) -> anyhow::Result<Uri> {
    let mut url = api_url.clone();
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("twilio_api_url cannot be a base URL"))?
        .pop_if_empty()
        .extend(["2010-04-01", "Accounts"])
        .extend(rest);
    Ok(Uri::try_from(url.as_str())?)
}

/// Turns Twilio's answer into a SID or an error.
fn interpret(answer: &Answer) -> Attempt {
    let (status, body) = (answer.status, answer.body.as_slice());
    if status.is_success() {
        let created = serde_json::from_slice::<Created>(body).ok();
        return match created {
            Some(Created {
                sid: Some(sid),
                status,
            }) if !sid.is_empty() && sid.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                Attempt::Accepted(Resource { sid, status })
            }
            _ => Attempt::Failed(Refusal::final_answer(CallError::Internal(format!(
                "Twilio answered HTTP {} without a SID",
                status.as_u16()
            )))),
        };
    }
    let parsed = serde_json::from_slice::<TwilioError>(body).ok();
    let code = parsed.as_ref().and_then(|e| e.code);
    let error = match code {
        Some(code) => CallError::Twilio {
            code,
            message: parsed
                .and_then(|e| e.message)
                .unwrap_or_else(|| format!("HTTP {}", status.as_u16())),
            status: status.as_u16(),
        },
        None if status == StatusCode::TOO_MANY_REQUESTS => CallError::Twilio {
            code: TOO_MANY_REQUESTS,
            message: "Too Many Requests".into(),
            status: status.as_u16(),
        },
        None => CallError::Unavailable(format!("Twilio answered HTTP {}", status.as_u16())),
    };
    // A 429 with a code of its own (Verify's 60203, "max send attempts") would say the
    // same thing again: only the plain "too many requests" is worth waiting for.
    let plain_429 = status == StatusCode::TOO_MANY_REQUESTS && code.is_none();
    if plain_429 || code == Some(TOO_MANY_REQUESTS) {
        Attempt::Retry {
            error,
            wait: retry_after(answer.headers.get(RETRY_AFTER)),
        }
    } else {
        // 401/403: our credentials are refused there; 503: Twilio did not take it in. Any
        // other 5xx may have created the message.
        let refused_whole =
            refuses_credentials(status) || status == StatusCode::SERVICE_UNAVAILABLE;
        Attempt::Failed(Refusal {
            error,
            not_accepted: refused_whole,
            provider_fault: refused_whole || status.is_server_error(),
        })
    }
}

/// `Retry-After` in seconds (the HTTP-date form is treated as absent).
fn retry_after(value: Option<&HeaderValue>) -> Option<Duration> {
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

    fn error_of(a: Attempt) -> (CallError, bool) {
        match a {
            Attempt::Accepted(r) => panic!("unexpected success {}", r.sid),
            Attempt::Retry { error, .. } => (error, true),
            Attempt::Failed(refusal) => (refusal.error, false),
        }
    }

    #[test]
    fn success_needs_a_sid() {
        let ok = interpret(&answer(
            StatusCode::CREATED,
            br#"{"sid":"SMabc","status":"queued"}"#,
            None,
        ));
        assert!(
            matches!(ok, Attempt::Accepted(r) if r.sid == "SMabc" && r.status.as_deref() == Some("queued"))
        );
        let (e, retry) = error_of(interpret(&answer(StatusCode::CREATED, b"{}", None)));
        assert_eq!((e.reason(), retry), ("internal", false));
    }

    #[test]
    fn twilio_errors_keep_code_and_message_and_never_start_with_sm() {
        let body = br#"{"code":21408,"message":"SMS is not enabled for this region","status":400}"#;
        let (e, retry) = error_of(interpret(&answer(StatusCode::BAD_REQUEST, body, None)));
        assert!(!retry);
        assert_eq!(
            e.to_string(),
            "ERR twilio 21408: SMS is not enabled for this region"
        );
    }

    #[test]
    fn only_plain_429_and_20429_are_retried() {
        let (_, retry) = error_of(interpret(&answer(
            StatusCode::TOO_MANY_REQUESTS,
            b"",
            Some("1"),
        )));
        assert!(retry);
        let (_, retry) = error_of(interpret(&answer(
            StatusCode::BAD_REQUEST,
            br#"{"code":20429}"#,
            None,
        )));
        assert!(retry);
        let (e, retry) = error_of(interpret(&answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            b"oops",
            None,
        )));
        assert!(!retry);
        assert_eq!(e.reason(), "unavailable");
        let (_, retry) = error_of(interpret(&answer(
            StatusCode::TOO_MANY_REQUESTS,
            br#"{"code":60203,"message":"Max send attempts reached"}"#,
            None,
        )));
        assert!(!retry);
        let (_, retry) = error_of(interpret(&answer(
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"code":20500}"#,
            None,
        )));
        assert!(!retry);
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
