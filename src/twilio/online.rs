//! `check --online`: asks Twilio whether the configuration works, sending nothing.

use std::time::Duration;

use hyper::{Method, Uri};
use url::Url;

use super::credentials::{short_sid, Credentials};
use super::verify::VerifyService;
use super::{is_sid, Settings, TwilioClient};

/// One line of `check --online`, and whether it passes.
#[derive(Debug)]
pub struct Verdict {
    pub line: String,
    pub ok: bool,
}

/// How long `check --online` waits for each answer.
const ONLINE_TIMEOUT: Duration = Duration::from_secs(10);

/// A failover provider as `check --online` asks it: its name, its API and its own account
/// (`None`: the primary's).
pub struct Backup<'a> {
    pub name: &'a str,
    pub api_url: &'a Url,
    pub credentials: Option<&'a Credentials>,
}

/// `check --online`: asks Twilio for the account with the configured credentials (and, in
/// Verify mode, for the service), then each failover provider for its account, like keep-warm
/// does; sends nothing.
pub async fn check_online(
    settings: &Settings,
    credentials: Option<&Credentials>,
    verify: Option<&VerifyService>,
    backups: &[Backup<'_>],
) -> Vec<Verdict> {
    let Some(credentials) = credentials else {
        return vec![Verdict {
            line: "twilio: not asked (no credentials: dry run)".into(),
            ok: true,
        }];
    };
    let client = match TwilioClient::new(settings, credentials) {
        Ok(client) => client,
        Err(e) => {
            return vec![Verdict {
                line: format!(
                    "twilio: cannot ask: {}",
                    crate::error::sanitize(&e.to_string())
                ),
                ok: false,
            }]
        }
    };
    let mut verdicts = vec![
        client
            .probe("twilio", &client.account_uri, &settings.api_url, "AC")
            .await,
    ];
    if let Some(service) = verify {
        let url = service.service_url();
        let verdict = match Uri::try_from(url.as_str()) {
            Ok(uri) => client.probe("verify", &uri, &url, "VA").await,
            Err(e) => Verdict {
                line: format!("verify: cannot ask: {e}"),
                ok: false,
            },
        };
        verdicts.push(verdict);
    }
    for backup in backups {
        let name = format!("failover {}", backup.name);
        let account = backup.credentials.unwrap_or(credentials);
        let verdict = match client.sibling(backup.api_url, account) {
            Ok(sibling) => {
                sibling
                    .probe(&name, &sibling.account_uri, backup.api_url, "AC")
                    .await
            }
            Err(e) => Verdict {
                line: format!(
                    "{name}: cannot ask: {}",
                    crate::error::sanitize(&e.to_string())
                ),
                ok: false,
            },
        };
        verdicts.push(verdict);
    }
    verdicts
}

impl TwilioClient {
    /// GETs a resource that must name itself with a `prefix` SID, and says what that shows.
    async fn probe(&self, name: &str, uri: &Uri, url: &Url, prefix: &str) -> Verdict {
        let sent = tokio::time::timeout(
            ONLINE_TIMEOUT,
            self.http.send(Method::GET, uri, &self.authorization, None),
        )
        .await;
        let answer = match sent {
            Ok(Ok(answer)) => answer,
            failed => {
                let why = match failed {
                    Ok(Err(failure)) => failure.detail,
                    _ => format!("no answer within {} s", ONLINE_TIMEOUT.as_secs()),
                };
                let host = url.host_str().unwrap_or("?");
                let port = url.port_or_known_default().unwrap_or(443);
                return Verdict {
                    line: format!(
                        "{name}: unreachable at {host}:{port}: {}",
                        crate::error::sanitize(&why)
                    ),
                    ok: false,
                };
            }
        };
        let status = answer.status.as_u16();
        let json = serde_json::from_slice::<serde_json::Value>(&answer.body).ok();
        let field = |key: &str| {
            json.as_ref()
                .and_then(|j| j.get(key))
                .and_then(serde_json::Value::as_str)
                .map(crate::error::sanitize)
        };
        if answer.status.is_success() {
            let sid = field("sid").filter(|sid| is_sid(sid, prefix));
            let Some(sid) = sid else {
                return Verdict {
                    line: format!(
                        "{name}: unexpected answer (HTTP {status} without a valid {} SID)",
                        if prefix == "AC" { "account" } else { "service" }
                    ),
                    ok: false,
                };
            };
            return if prefix == "AC" {
                let state = field("status").unwrap_or_else(|| "unknown".into());
                Verdict {
                    line: format!(
                        "{name}: credentials accepted (account {} status {state})",
                        short_sid(&sid)
                    ),
                    ok: state == "active",
                }
            } else {
                let friendly = field("friendly_name").unwrap_or_default();
                Verdict {
                    line: format!("{name}: service {} found ({friendly})", short_sid(&sid)),
                    ok: true,
                }
            };
        }
        let code = json
            .as_ref()
            .and_then(|j| j.get("code"))
            .and_then(serde_json::Value::as_u64)
            .map_or_else(String::new, |c| format!(", code {c}"));
        let line = match (prefix, status) {
            ("AC", 401 | 403 | 404) => format!("{name}: credentials refused (HTTP {status}{code})"),
            ("AC", _) => format!("{name}: unexpected answer (HTTP {status}{code})"),
            _ => {
                let sid = uri.path().rsplit('/').next().unwrap_or_default();
                format!(
                    "{name}: service {} refused (HTTP {status}{code})",
                    short_sid(sid)
                )
            }
        };
        Verdict { line, ok: false }
    }
}
