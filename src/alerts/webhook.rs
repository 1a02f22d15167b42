//! The alert webhook: one task posts each alert as JSON, signed with HMAC-SHA256 over the
//! body (`X-OTP-Sidecar-Signature: sha256=<hex>`), retried with backoff. Its own small HTTP
//! client (rustls, system roots, no proxy): the Twilio client's pool stays Twilio's.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

use super::Alert;
use crate::metrics::METRICS;

/// The header the signature travels in.
pub const SIGNATURE_HEADER: &str = "x-otp-sidecar-signature";
/// Tries per alert, the first included; waits between them double from [`FIRST_WAIT`].
const TRIES: u32 = 4;
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// One attempt's limit, connection included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Poster {
    uri: Uri,
    key: hmac::Key,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Poster {
    pub fn new(url: url::Url, secret: Vec<u8>) -> anyhow::Result<Poster> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls_platform_verifier::Verifier::new(provider.clone())?;
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(ATTEMPT_TIMEOUT));
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        Ok(Poster {
            uri: Uri::try_from(url.as_str())?,
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    /// Posts each alert until the queue is dropped (a reload made another).
    pub async fn run(self, mut alerts: mpsc::Receiver<Alert>) {
        while let Some(alert) = alerts.recv().await {
            let body = body(&alert);
            let signature = sign(&self.key, body.as_bytes());
            let mut wait = FIRST_WAIT;
            for attempt in 1..=TRIES {
                match self.post(&body, &signature).await {
                    Ok(()) => {
                        METRICS.count_alert(alert.kind.name(), "sent");
                        break;
                    }
                    Err(why) if attempt == TRIES => {
                        METRICS.count_alert(alert.kind.name(), "failed");
                        tracing::warn!(alert = alert.kind.name(), "alert_webhook: {why}; given up");
                    }
                    Err(why) => {
                        tracing::debug!(attempt, "alert_webhook: {why}; trying again");
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                }
            }
        }
    }

    async fn post(&self, body: &str, signature: &str) -> Result<(), String> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(
                USER_AGENT,
                concat!("otp-sidecar/", env!("CARGO_PKG_VERSION")),
            )
            .header(SIGNATURE_HEADER, signature)
            .body(Full::new(Bytes::from(body.to_owned())))
            .map_err(|e| e.to_string())?;
        let answer = tokio::time::timeout(ATTEMPT_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()))?
            .map_err(|e| format!("cannot post: {e}"))?;
        match answer.status() {
            status if status.is_success() => Ok(()),
            status => Err(format!("answered HTTP {}", status.as_u16())),
        }
    }
}

/// `{"kind":…,"detail":…,"at":…,"instance":…}`.
fn body(alert: &Alert) -> String {
    serde_json::json!({
        "kind": alert.kind.name(),
        "detail": alert.detail,
        "at": alert.at,
        "host": hostname(),
    })
    .to_string()
}

/// `sha256=` and the HMAC-SHA256 of `body`, in lowercase hex.
pub fn sign(key: &hmac::Key, body: &[u8]) -> String {
    let tag = hmac::sign(key, body);
    let mut out = String::from("sha256=");
    for byte in tag.as_ref() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body_in_hex() {
        // RFC 4231 test case 2.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        assert_eq!(
            sign(&key, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
