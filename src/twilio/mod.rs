//! The Twilio clients: one pooled HTTP client per daemon (built once, shared by every provider),
//! REST requests and the rules for their answers (`rest`), and one module per API: Messages,
//! Calls (voice), Verify, Lookup; failover between providers, the credentials, and
//! `check --online`.
//!
//! Creating a message is not idempotent, so a request is retried only when Twilio provably
//! did not accept it: the connection failed before the request went out, or Twilio answered
//! HTTP 429 (with code 20429 or none: "always safe to retry"). A 5xx (whatever its body
//! says), a reset after sending, or a slow answer is never retried — a second SMS is worse
//! than an error.
//!
//! Twilio's answers are checked, never trusted: a 2xx is a result only when it names the
//! resource the API called creates (`SM`, `CA` or `VE` + exactly 32 hex digits).
//!
//! Every API has one shape, `client.<api>(&what, deadline) -> Result<_, twilio::Error>`
//! (`create_message`, `create_call`, `start_verification`, `approve_verification`, `lookup`);
//! the [`Error`] says what came of a request and whether what it asked for may exist.

pub mod budget;
pub mod calls;
pub mod credentials;
pub mod error;
pub mod failover;
pub mod fraud;
pub mod http;
pub mod lookup;
pub mod messages;
pub mod online;
pub mod rest;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode, Uri};
use tokio::time::Instant;
use url::Url;

use crate::health::HEALTH;
use crate::metrics::METRICS;
use budget::Budget;
use credentials::Credentials;
pub use error::Error;
use http::{HttpClient, HttpOptions};
pub use messages::{Sender, Sms};
pub use rest::Kind;

/// The account's requests in flight as Twilio counts them, on some answers.
static TWILIO_CONCURRENT_REQUESTS: hyper::header::HeaderName =
    hyper::header::HeaderName::from_static("twilio-concurrent-requests");

/// What the Twilio clients are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The REST API's base (`https://api.twilio.com`, a regional edge, a mock).
    pub api_url: Url,
    /// Lookup v2's base, `https://lookups.twilio.com`.
    pub lookup_url: Url,
    pub proxy: Option<Url>,
    /// Extra trusted CA certificate, PEM.
    pub ca_pem: Option<Vec<u8>>,
    /// How long opening a connection may take (with failover, a share of the deadline).
    pub connect_timeout: Duration,
    /// Messages' `ValidityPeriod`, in seconds.
    pub validity_period: Option<u32>,
    /// Messages' `RiskCheck`: Twilio's SMS Pumping Protection checks each message (`enable`).
    pub risk_check: bool,
    /// Requests in flight per account, across every API (Twilio's concurrency limit).
    pub max_concurrency: usize,
    /// The longest a 429's Retry-After may pause sends (`twilio_max_retry_after_secs`).
    pub max_retry_after: Duration,
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
    /// `RiskCheck`'s value: `enable` or `disable`.
    risk_check: &'static str,
    /// The account's request budget, shared by the clients of the same account.
    budget: Arc<Budget>,
    account_sid: String,
}

impl TwilioClient {
    pub fn new(settings: &Settings, credentials: &Credentials) -> anyhow::Result<Self> {
        Self::replacing(settings, credentials, None)
    }

    /// A client for new settings that takes over `running`'s request budget (its requests in
    /// flight, and what it learned) when the account and the budget's size are the same: a
    /// reload in a storm must not double what Twilio sees.
    pub fn replacing(
        settings: &Settings,
        credentials: &Credentials,
        running: Option<&TwilioClient>,
    ) -> anyhow::Result<Self> {
        let budget = running
            .filter(|r| r.account_sid == credentials.account_sid)
            .map(|r| r.budget.clone())
            .filter(|b| b.max() == settings.max_concurrency)
            .unwrap_or_else(|| {
                let account = credentials::short_sid(&credentials.account_sid);
                Arc::new(Budget::new(settings.max_concurrency, account))
            });
        budget.set_max_retry_after(settings.max_retry_after);
        let http = HttpClient::new(&HttpOptions {
            proxy: settings.proxy.as_ref().map(Url::as_str),
            extra_ca_pem: settings.ca_pem.as_deref(),
            connect_timeout: settings.connect_timeout,
            max_connections: settings.max_concurrency,
        })?;
        let base = Base {
            http,
            lookup_url: settings.lookup_url.clone(),
            validity_period: settings.validity_period.map(|v| v.to_string()),
            risk_check: if settings.risk_check {
                "enable"
            } else {
                "disable"
            },
            budget,
        };
        Self::with(base, &settings.api_url, credentials)
    }

    /// A client for another account or region that shares this one's connection pool, and,
    /// for the same account, its request budget.
    pub fn sibling(&self, api_url: &Url, credentials: &Credentials) -> anyhow::Result<Self> {
        let budget = if credentials.account_sid == self.account_sid {
            self.budget.clone()
        } else {
            let account = credentials::short_sid(&credentials.account_sid);
            let budget = Budget::new(self.budget.max(), account);
            budget.set_max_retry_after(self.budget.max_retry_after());
            Arc::new(budget)
        };
        let base = Base {
            http: self.http.clone(),
            lookup_url: self.lookup_url.clone(),
            validity_period: self.validity_period.clone(),
            risk_check: self.risk_check,
            budget,
        };
        Self::with(base, api_url, credentials)
    }

    fn with(base: Base, api_url: &Url, credentials: &Credentials) -> anyhow::Result<Self> {
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
            http: base.http,
            messages_uri,
            calls_uri,
            account_uri,
            lookup_url: base.lookup_url,
            authorization,
            validity_period: base.validity_period,
            risk_check: base.risk_check,
            budget: base.budget,
            account_sid: credentials.account_sid.clone(),
        })
    }

    /// The account SID as reports show it (`ACfe…ce`).
    pub fn account_shown(&self) -> String {
        credentials::short_sid(&self.account_sid)
    }

    /// One request inside the account's budget: admitted in time to be answered by
    /// `deadline` (else busy, and nothing is sent), sent, and its answer taught to the budget.
    pub(crate) async fn request(
        &self,
        method: Method,
        uri: &Uri,
        form: Option<String>,
        deadline: Instant,
    ) -> Result<http::Answer, Error> {
        let ticket = self.budget.admit(deadline).await?;
        self.exchange(ticket, method, uri, form).await
    }

    /// A background request (a delivery poll): made only when the budget has room to spare
    /// ([`Budget::spare`]), so it never takes a slot a send needs. `Ok(None)`: no room now.
    pub(crate) async fn request_spare(
        &self,
        method: Method,
        uri: &Uri,
    ) -> Result<Option<http::Answer>, Error> {
        match self.budget.spare() {
            Some(ticket) => self.exchange(ticket, method, uri, None).await.map(Some),
            None => Ok(None),
        }
    }

    /// Sends one admitted request and teaches its answer to the budget.
    async fn exchange(
        &self,
        ticket: budget::Ticket<'_>,
        method: Method,
        uri: &Uri,
        form: Option<String>,
    ) -> Result<http::Answer, Error> {
        let timed = form.is_some();
        let sent = self.http.send(method, uri, &self.authorization, form).await;
        match &sent {
            Ok(answer) => {
                let took = ticket.started().elapsed();
                METRICS.observe_twilio(took);
                let too_many = answer.status == StatusCode::TOO_MANY_REQUESTS;
                let concurrent = answer
                    .headers
                    .get(&TWILIO_CONCURRENT_REQUESTS)
                    .and_then(|v| v.to_str().ok()?.trim().parse().ok());
                let answered = budget::Answered {
                    timed,
                    too_many,
                    retry_after: too_many
                        .then(|| rest::retry_after(answer.headers.get(hyper::header::RETRY_AFTER)))
                        .flatten(),
                    concurrent,
                };
                self.budget.answered(ticket, took, answered);
            }
            Err(_) => drop(ticket),
        }
        sent.map_err(|failure| match failure.before_sending {
            true => Error::Unreachable(failure.detail),
            false => Error::Lost(failure.detail),
        })
    }

    /// Opens (or reuses) the connection with an authenticated GET of the account, so the next
    /// send finds it ready. Says how Twilio answered; records it for health reports (a
    /// request the budget shed was never put to Twilio, and says nothing of it).
    pub async fn warm(&self, timeout: Duration) -> Result<StatusCode, Error> {
        let outcome = self.touch(timeout).await;
        match &outcome {
            Ok(status) => {
                let refused = refuses_credentials(*status);
                HEALTH.record("warm", !refused, format!("HTTP {}", status.as_u16()));
                if refused {
                    crate::alerts::raise(
                        crate::alerts::Kind::CredentialsRefused,
                        &format!("Twilio refused the credentials (HTTP {})", status.as_u16()),
                    );
                }
            }
            Err(e) if e.answered_by_twilio() => HEALTH.record("warm", false, "unavailable"),
            Err(_) => {}
        }
        outcome
    }

    /// The authenticated GET of [`warm`](Self::warm), without a health record (failover
    /// providers: health reports speak of the primary).
    pub async fn touch(&self, timeout: Duration) -> Result<StatusCode, Error> {
        let deadline = Instant::now() + timeout;
        let sent = tokio::time::timeout_at(
            deadline,
            self.request(Method::GET, &self.account_uri, None, deadline),
        )
        .await;
        match sent {
            Ok(answered) => answered.map(|answer| answer.status),
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }
}

/// What a client is built on: the daemon's one connection pool and API settings, and its
/// account's request budget.
struct Base {
    http: HttpClient,
    lookup_url: Url,
    validity_period: Option<String>,
    risk_check: &'static str,
    budget: Arc<Budget>,
}

/// An answer that says the credentials are wrong (or the account may not do this): every
/// send will fail too.
pub fn refuses_credentials(status: StatusCode) -> bool {
    error::credentials_refused(status.as_u16())
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

/// A Twilio SID: a two-letter `prefix` (`AC`, `SK`, `MG`, `SM`…) and 32 hex digits.
pub fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34
        && prefix.len() == 2
        && s.starts_with(prefix)
        && s.bytes().skip(2).all(|b| b.is_ascii_hexdigit())
}

/// E.164: `+`, then 1 to 15 digits, the first not 0.
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (1..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// How the code reaches the user.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    #[default]
    Sms,
    /// A phone call that reads the code out.
    Voice,
}

impl Channel {
    pub fn name(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Voice => "voice",
        }
    }

    /// Verify's name for it.
    pub fn verify_name(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Voice => "call",
        }
    }
}
