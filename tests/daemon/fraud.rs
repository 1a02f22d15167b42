//! Twilio's own fraud signals: `RiskCheck` on every message, SMS Pumping Protection's and
//! Verify Fraud Guard's refusals (30450, 30453, 60410) answered `ERR blocked: fraud_guard`,
//! never retried and never handed to a failover provider; and in Verify mode, the caller's
//! address as `DeviceIp`, the configured `Tags` and Service Rate Limit keys.

use crate::common::*;
use crate::failover::{backup, daemon as with_backup};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const VA: &str = "VA0123456789abcdef0123456789abcdef";
const VE: &str = "VEfedcba9876543210fedcba9876543210";

fn field(request: &wiremock::Request, name: &str) -> Option<String> {
    form(request)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

#[tokio::test]
async fn every_message_asks_for_twilios_risk_check_unless_turned_off() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default());
    assert_eq!(daemon.send("ACME").await, Ok(SID.to_owned()));
    let off = Daemon::start(
        &twilio.uri(),
        Options::default().env("OTP_SIDECAR_RISK_CHECK", "off"),
    );
    assert_eq!(off.send("ACME").await, Ok(SID.to_owned()));
    let sent = sends(&twilio).await;
    assert_eq!(field(&sent[0], "RiskCheck").as_deref(), Some("enable"));
    assert_eq!(field(&sent[1], "RiskCheck").as_deref(), Some("disable"));
}

#[tokio::test]
async fn pumping_protection_refusals_are_fraud_guard_blocks_never_retried_nor_failed_over() {
    for (code, status) in [(30450, 400), (30453, 403)] {
        let primary =
            twilio_answering(twilio_error(status, code, "Message delivery blocked")).await;
        let backup = backup().await;
        let (daemon, _dir) = with_backup(&primary.uri(), &backup, &["--metrics=127.0.0.1:0"]);
        assert_eq!(
            daemon.send("ACME").await,
            Err(format!("ERR blocked: fraud_guard {code}"))
        );
        assert_eq!(sends(&primary).await.len(), 1, "{code}: asked once");
        assert_eq!(sends(&backup).await.len(), 0, "{code}: never failed over");
        let line = daemon.wait_for_log("reason=\"blocked\"");
        assert!(line.contains("rule=\"fraud_guard\""), "{line}");
        let metrics = log_field(&daemon.ready, "metrics").unwrap();
        let (_, text) = scrape(&metrics, "/metrics").await;
        let want = r#"otp_sidecar_blocked_total{rule="fraud_guard"} 1"#;
        assert!(text.lines().any(|l| l == want), "{want} in:\n{text}");
        // Twilio answered, and healthily: the next message goes out as ever.
        assert!(!daemon.log().contains("breaker"), "{}", daemon.log());
    }
}

#[tokio::test]
async fn a_message_made_but_blocked_at_once_is_no_success() {
    let blocked = ResponseTemplate::new(201).set_body_json(serde_json::json!({
        "sid": SID, "status": "failed", "error_code": 30453, "account_sid": AC, "to": PHONE,
    }));
    let twilio = twilio_answering(blocked).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default());
    assert_eq!(
        daemon.send("ACME").await,
        Err("ERR blocked: fraud_guard 30453".to_owned())
    );
    assert_eq!(sends(&twilio).await.len(), 1);
}

/// A Verify stand-in answering verifications with `response`.
async fn verify(response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/v2/Services/{VA}/Verifications")))
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

fn verify_daemon(twilio: &MockServer, extra: &[&str]) -> Daemon {
    Daemon::start(
        &twilio.uri(),
        Options::default()
            .args([
                "--verify-service-sid",
                VA,
                "--verify-api-url",
                &twilio.uri(),
            ])
            .args(extra.iter().copied()),
    )
}

#[tokio::test]
async fn verify_carries_the_device_ip_tags_and_rate_limit_keys() {
    let pending = ResponseTemplate::new(201).set_body_json(serde_json::json!({
        "sid": VE, "service_sid": VA, "account_sid": AC, "to": PHONE,
        "channel": "sms", "status": "pending",
    }));
    let twilio = verify(pending).await;
    let daemon = verify_daemon(
        &twilio,
        &[
            "--verify-tags=app=vpn,site=ams",
            "--verify-rate-limits=ip=end_user_ip,user=user_id",
        ],
    );
    let mut client = daemon.unix_client().await;
    let ctx = context(&[("ip", "198.51.100.7"), ("user", "jdoe")]);
    let reply = send_with(&mut client, PHONE, ctx).await;
    assert_eq!(reply, Ok(VE.into()));
    // Without a context: no address, no rate limit keys; the tags still.
    let reply = send_with(&mut client, PHONE, rmpv::Value::Nil).await;
    assert_eq!(reply, Ok(VE.into()));
    let sent = sends(&twilio).await;
    let first = &sent[0];
    assert_eq!(field(first, "DeviceIp").as_deref(), Some("198.51.100.7"));
    assert_eq!(
        field(first, "Tags").as_deref(),
        Some(r#"{"app":"vpn","site":"ams"}"#)
    );
    assert_eq!(
        field(first, "RateLimits").as_deref(),
        Some(r#"{"end_user_ip":"198.51.100.7","user_id":"jdoe"}"#)
    );
    let second = &sent[1];
    assert_eq!(field(second, "DeviceIp"), None);
    assert_eq!(field(second, "RateLimits"), None);
    assert!(field(second, "Tags").is_some());

    // Configured nothing: nothing of it sent (the address still, as DeviceIp).
    let plain = verify_daemon(&twilio, &[]);
    let mut client = plain.unix_client().await;
    let ctx = context(&[("ip", "198.51.100.7"), ("user", "jdoe")]);
    assert_eq!(send_with(&mut client, PHONE, ctx).await, Ok(VE.into()));
    let sent = sends(&twilio).await;
    let last = sent.last().unwrap();
    assert_eq!(field(last, "DeviceIp").as_deref(), Some("198.51.100.7"));
    assert_eq!(
        (field(last, "Tags"), field(last, "RateLimits")),
        (None, None)
    );
    for bad in ["--verify-rate-limits=phone=x", "--verify-tags=novalue"] {
        let refused = Daemon::try_start(
            &twilio.uri(),
            Options::default().args(["--verify-service-sid", VA, bad]),
        );
        assert!(refused.is_err(), "{bad}");
    }
}

#[tokio::test]
async fn verify_fraud_guards_refusal_is_a_fraud_guard_block_asked_once() {
    let twilio = verify(twilio_error(
        403,
        60410,
        "Verification delivery attempt blocked",
    ))
    .await;
    let daemon = verify_daemon(&twilio, &[]);
    assert_eq!(
        daemon.send("ACME").await,
        Err("ERR blocked: fraud_guard 60410".to_owned())
    );
    assert_eq!(sends(&twilio).await.len(), 1);
}
