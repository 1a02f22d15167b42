//! The requests the fraud signals change, checked against Twilio's published OpenAPI specs
//! by Prism (as in `conformance.rs`): Messages with `RiskCheck` both ways, Lookup asking for
//! `sms_pumping_risk` too, and a Verify start with `DeviceIp`, `Tags` and `RateLimits`.

use crate::common::*;
use crate::conformance::start_prism;

#[tokio::test]
async fn risk_check_both_ways_conforms_to_the_messages_spec() {
    let (_prism, api) = start_prism("twilio_api_v2010.json", true);
    // Prism really validates the field: a value outside its enum is refused.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let refused = http
        .post(format!("{api}{}", messages_path()))
        .basic_auth(AC, Some(TOKEN))
        .form(&[
            ("To", PHONE),
            ("Body", "x"),
            ("From", "+14155550100"),
            ("RiskCheck", "on"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 422);
    for risk_check in ["true", "false"] {
        let daemon = Daemon::start(
            &api,
            Options::default().arg(format!("--risk-check={risk_check}")),
        );
        assert_eq!(
            daemon.send("+14155550100").await,
            Ok("SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_owned()),
            "risk_check {risk_check}"
        );
    }
}

#[tokio::test]
async fn a_lookup_with_the_pumping_risk_conforms_to_the_lookup_spec() {
    let (_prism, lookups) = start_prism("twilio_lookups_v2.json", false);
    let twilio = twilio_answering(created(SID)).await;
    // Fail closed: an answer (a send, or a refusal by the score Prism's example holds) comes
    // only when Prism accepted the Lookup request.
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args([
            "--lookup".to_owned(),
            format!("--lookup-api-url={lookups}"),
            "--lookup-failure=closed".to_owned(),
            "--block-pumping-risk=100".to_owned(),
            // Prism answers slowly on a busy machine: Lookup gets half of the deadline.
            "--deadline-ms=8000".to_owned(),
        ]),
    );
    let reply = daemon.send("ACME").await;
    assert!(
        reply == Ok(SID.to_owned()) || reply == Err("ERR blocked: pumping_risk".to_owned()),
        "{reply:?}"
    );
}

#[tokio::test]
async fn a_verify_start_with_fraud_signals_conforms_to_the_verify_spec() {
    let (_prism, verify) = start_prism("twilio_verify_v2.json", true);
    let va = "VA0123456789abcdef0123456789abcdef";
    let daemon = Daemon::start(
        &verify,
        Options::default().args([
            "--verify-service-sid".to_owned(),
            va.to_owned(),
            format!("--verify-api-url={verify}"),
            "--verify-tags=app=vpn".to_owned(),
            "--verify-rate-limits=ip=end_user_ip,user=user_id".to_owned(),
        ]),
    );
    let mut client = daemon.unix_client().await;
    let ctx = context(&[("ip", "198.51.100.7"), ("user", "jdoe")]);
    // The spec's example SID: Prism accepted the request as conforming.
    assert_eq!(
        send_with(&mut client, PHONE, ctx).await,
        Ok("VEaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into())
    );
}
