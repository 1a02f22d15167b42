//! Alerts (issue 26): the webhook gets each alert as signed JSON, one per kind per 5 minutes,
//! retried when it fails; a dead or silent webhook costs the calls nothing.

use std::time::Duration;

use aws_lc_rs::hmac;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::*;

const SECRET: &str = "alert-secret-5d1c0e9f8a7b6c5d";

/// Twilio refusing the credentials on the account GET (the warm-up), and taking messages.
async fn twilio_refusing_the_warm_up() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/2010-04-01/Accounts/{AC}.json")))
        .respond_with(twilio_error(401, 20003, "Authenticate"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .respond_with(created(SID))
        .mount(&server)
        .await;
    server
}

fn alerting(webhook: &str) -> Options {
    Options::default()
        .arg(format!("--alert-webhook={webhook}"))
        .env("OTP_SIDECAR_ALERT_SECRET", SECRET)
}

fn hex_hmac(body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
    let tag = hmac::sign(&key, body);
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

async fn posts(webhook: &MockServer) -> Vec<wiremock::Request> {
    webhook.received_requests().await.unwrap()
}

#[tokio::test]
async fn the_webhook_gets_one_signed_alert_per_kind_and_a_failed_post_is_retried() {
    let twilio = twilio_refusing_the_warm_up().await;
    let webhook = MockServer::start().await;
    // The first post fails: it is posted again.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&webhook)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&webhook)
        .await;
    let daemon = Daemon::start(
        &twilio.uri(),
        alerting(&format!("{}/hooks/otp", webhook.uri())).arg("--metrics=127.0.0.1:0"),
    );
    // Twilio refuses the credentials at the warm-up, then on a send: the same kind again.
    let mut client = daemon.unix_client().await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .respond_with(twilio_error(401, 20003, "Authenticate"))
        .with_priority(1)
        .mount(&twilio)
        .await;
    let reply = send_with(&mut client, PHONE, rmpv::Value::Nil).await;
    assert!(reply.is_err_and(|e| e.contains("20003")));
    // The failure, then the retry after a second.
    for _ in 0..100 {
        if posts(&webhook).await.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let posted = posts(&webhook).await;
    assert_eq!(
        posted.len(),
        2,
        "one alert, posted twice: no second alert of the kind"
    );
    assert_eq!(posted[0].body, posted[1].body);
    let alert = &posted[1];
    assert_eq!(alert.url.path(), "/hooks/otp");
    let signature = alert.headers.get("x-otp-sidecar-signature").unwrap();
    assert_eq!(
        signature.to_str().unwrap(),
        format!("sha256={}", hex_hmac(&alert.body))
    );
    let body: serde_json::Value = serde_json::from_slice(&alert.body).unwrap();
    assert_eq!(body["kind"], "credentials_refused");
    let raw = text(&alert.body);
    for secret in [TOKEN, SECRET, PHONE, OTP, "31612345678"] {
        assert!(!raw.contains(secret), "{raw}");
    }
    let (_, metrics) = metrics_of(&daemon).await;
    for counted in [
        "otp_sidecar_alerts_total{kind=\"credentials_refused\",outcome=\"raised\"} 1",
        "otp_sidecar_alerts_total{kind=\"credentials_refused\",outcome=\"suppressed\"} 1",
        "otp_sidecar_alerts_total{kind=\"credentials_refused\",outcome=\"sent\"} 1",
    ] {
        assert!(metrics.contains(counted), "{counted} in {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_silent_webhook_costs_the_calls_nothing() {
    // Silent: accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}/hook", silent.local_addr().unwrap());
    let dead_url = format!("http://{}/hook", dead_address());
    for url in [dead_url, silent_url] {
        let twilio = twilio_refusing_the_warm_up().await;
        let daemon = Daemon::start(&twilio.uri(), alerting(&url));
        let mut client = daemon.unix_client().await;
        for _ in 0..20 {
            let reply = send_with(&mut client, PHONE, rmpv::Value::Nil).await;
            assert_eq!(reply, Ok(SID.into()), "{url}");
        }
        assert_eq!(sends(&twilio).await.len(), 20);
    }
    drop(silent);
}

#[test]
fn check_refuses_a_webhook_without_its_secret_or_in_clear_off_loopback() {
    check_refuses(
        &["--alert-webhook=https://alerts.example.com/otp"],
        "OTP_SIDECAR_ALERT_SECRET",
    );
    check_refuses(
        &["--alert-webhook=http://alerts.example.com/otp"],
        "must be an https:// URL",
    );
}
