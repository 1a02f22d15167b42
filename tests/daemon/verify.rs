//! Verify mode: sendOTP starts a Twilio Verify verification that carries APM's code, and
//! confirmOTP reports the approval, against a mock Verify API on loopback.

use crate::common::*;
use wiremock::matchers::{body_string_contains, header_exists, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const VA: &str = "VA0123456789abcdef0123456789abcdef";
const VE: &str = "VEfedcba9876543210fedcba9876543210";

fn verifications_path() -> String {
    format!("/v2/Services/{VA}/Verifications")
}

fn verification(status: &str) -> ResponseTemplate {
    let code = if status == "pending" { 201 } else { 200 };
    ResponseTemplate::new(code).set_body_json(serde_json::json!({
        "sid": VE, "service_sid": VA, "account_sid": AC, "to": PHONE,
        "channel": "sms", "status": status, "valid": status == "approved",
    }))
}

/// A daemon in Verify mode whose Verify (and Messages) API is `twilio`.
fn verify_daemon(twilio: &MockServer) -> Daemon {
    Daemon::start(
        &twilio.uri(),
        Options::default().args([
            "--verify-service-sid",
            VA,
            "--verify-api-url",
            &twilio.uri(),
        ]),
    )
}

/// confirmOTP(target) over the Unix socket: its reply (conversion.rs asks the same).
pub(crate) async fn confirm(daemon: &Daemon, target: &str) -> Result<rmpv::Value, String> {
    daemon
        .unix_client()
        .await
        .call("confirmOTP", vec![target.into()])
        .await
        .expect("answered")
}

#[tokio::test]
async fn send_otp_starts_a_verification_with_apms_code_and_replies_its_sid() {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(verifications_path()))
        .and(header_exists("authorization"))
        .respond_with(verification("pending"))
        .expect(3)
        .mount(&twilio)
        .await;
    let daemon = verify_daemon(&twilio);

    // The sender is checked but Verify sends from the service's own.
    assert_eq!(daemon.send("ACME").await, Ok(VE.to_owned()));
    let mut client = daemon.tcp_client().await;
    let reply = send_with(
        &mut client,
        PHONE,
        context(&[("locale", "pt_br"), ("channel", "voice")]),
    )
    .await;
    assert_eq!(reply, Ok(VE.into()));
    let reply = send_with(&mut client, PHONE, context(&[("locale", "nl-NL")])).await;
    assert_eq!(reply, Ok(VE.into()));

    let requests = sends(&twilio).await;
    let fields: Vec<_> = requests.iter().map(form).collect();
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        fields[0],
        pairs(&[("To", PHONE), ("Channel", "sms"), ("CustomCode", OTP)])
    );
    assert_eq!(
        fields[1],
        pairs(&[
            ("To", PHONE),
            ("Channel", "call"),
            ("CustomCode", OTP),
            ("Locale", "pt-BR")
        ])
    );
    assert_eq!(fields[2][3], ("Locale".to_owned(), "nl".to_owned()));
    // No SMS went through Messages, and the code is nowhere in the log.
    assert!(requests
        .iter()
        .all(|r| r.url.path() == verifications_path()));
    daemon.wait_for_log(VE); // log lines follow the reply
    let log = daemon.log();
    assert!(!log.contains(OTP), "{log}");
    assert!(log.contains(VE), "{log}");
}

#[tokio::test]
async fn a_locale_verify_does_not_know_is_dropped_and_the_verification_sent_once() {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(verifications_path()))
        .and(body_string_contains("Locale="))
        .respond_with(twilio_error(
            404,
            20404,
            "The requested resource was not found",
        ))
        .expect(1)
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .and(path(verifications_path()))
        .respond_with(verification("pending"))
        .expect(1)
        .mount(&twilio)
        .await;
    let daemon = verify_daemon(&twilio);
    let mut client = daemon.unix_client().await;
    let reply = send_with(&mut client, PHONE, context(&[("locale", "xx-YY")])).await;
    assert_eq!(reply, Ok(VE.into()));
}

#[tokio::test]
async fn verify_errors_reach_the_policy_as_err_replies() {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(verifications_path()))
        .respond_with(twilio_error(429, 60203, "Max send attempts reached"))
        .mount(&twilio)
        .await;
    let daemon = verify_daemon(&twilio);
    let reply = daemon.send("ACME").await;
    assert_eq!(
        reply,
        Err("ERR twilio 60203: Max send attempts reached".to_owned())
    );
}

#[tokio::test]
async fn confirm_otp_approves_by_phone_or_sid() {
    let twilio = MockServer::start().await;
    for target in [PHONE, VE] {
        Mock::given(method("POST"))
            .and(path(format!("{}/{target}", verifications_path())))
            .respond_with(verification("approved"))
            .expect(1)
            .mount(&twilio)
            .await;
    }
    let daemon = verify_daemon(&twilio);

    assert_eq!(confirm(&daemon, PHONE).await, Ok(VE.into()));
    // The bundled client's confirm command, by SID.
    let out = command()
        .args(["confirm", VE, "--unix"])
        .arg(&daemon.unix)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), VE);

    for request in sends(&twilio).await {
        assert_eq!(
            form(&request),
            vec![("Status".to_owned(), "approved".to_owned())]
        );
    }
    // Both confirmations logged (lines follow the reply), the number masked.
    poll_until(
        std::time::Duration::from_secs(5),
        || (daemon.count_log("outcome=\"approved\"") == 2).then_some(()),
        || daemon.log(),
    );
    let log = daemon.log();
    assert!(
        !log.contains(PHONE),
        "the full number is never logged: {log}"
    );
}

#[tokio::test]
async fn confirm_otp_refuses_bad_targets_and_reports_what_twilio_says() {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{}/{PHONE}", verifications_path())))
        .respond_with(twilio_error(
            404,
            20404,
            "The requested resource was not found",
        ))
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{}/{VE}", verifications_path())))
        .respond_with(verification("canceled"))
        .mount(&twilio)
        .await;
    let daemon = verify_daemon(&twilio);

    assert_eq!(
        confirm(&daemon, PHONE).await,
        Err("ERR twilio 20404: The requested resource was not found".into())
    );
    let canceled = confirm(&daemon, VE).await.unwrap_err();
    assert!(
        canceled.starts_with("ERR internal: ") && canceled.contains("canceled"),
        "{canceled}"
    );
    for bad in [
        vec!["0612345678".into()],
        vec![rmpv::Value::from(7)],
        vec![OTP.into()],
        vec![],
    ] {
        let reply = daemon
            .unix_client()
            .await
            .call("confirmOTP", bad.clone())
            .await
            .expect("answered");
        let error = reply.unwrap_err();
        assert!(error.starts_with("ERR bad_request: "), "{bad:?}: {error}");
    }
    // Nothing went to Twilio for the refused ones.
    assert_eq!(sends(&twilio).await.len(), 2);
}

#[tokio::test]
async fn confirm_otp_of_a_ve_sid_needs_verify_mode_and_a_dry_run_answers_in_ve_sids() {
    let twilio = twilio_answering(created(SID)).await;
    let messages = Daemon::start(&twilio.uri(), Options::default());
    let reply = confirm(&messages, "VE0123456789abcdef0123456789abcdef")
        .await
        .unwrap_err();
    assert_eq!(
        reply,
        "ERR bad_request: a VE… SID needs Verify mode (verify_service_sid)"
    );

    let dry = Daemon::start(
        &twilio.uri(),
        Options::default().args(["--dry-run", "--verify-service-sid", VA]),
    );
    let sid = dry.send("ACME").await.unwrap();
    assert!(is_sid(&sid, "VE"), "{sid}");
    assert_eq!(confirm(&dry, &sid).await, Ok(sid.as_str().into()));
    assert!(sends(&twilio).await.is_empty());
}

#[test]
fn check_reports_verify_mode_and_a_bad_service_sid_stops_the_start() {
    let (passed, stdout, stderr) = check(&["--verify-service-sid", VA]);
    assert!(passed, "{stderr}");
    assert!(stdout.contains(&format!("verify:       {VA}")), "{stdout}");
    assert!(!stdout.contains("template default"), "{stdout}");
    check_refuses(&["--verify-service-sid", "VA123"], "verify_service_sid");
}

#[tokio::test]
async fn verify_answers_without_a_valid_ve_sid_are_errors_sent_once() {
    let no_valid_sid = Err("ERR internal: Twilio answered without a valid SID".to_owned());
    let body = |sid: serde_json::Value, status: &str| serde_json::json!({"sid": sid, "service_sid": VA, "to": PHONE, "status": status});
    let bad: [serde_json::Value; 4] = [
        "VEabc".into(),
        // A message's SID is not a verification's.
        SID.into(),
        format!("{VE}0").into(),
        serde_json::Value::Null,
    ];
    let twilio = MockServer::start().await;
    let daemon = verify_daemon(&twilio);
    for sid in &bad {
        // Starting a verification.
        twilio.reset().await;
        Mock::given(method("POST"))
            .and(path(verifications_path()))
            .respond_with(ResponseTemplate::new(201).set_body_json(body(sid.clone(), "pending")))
            .mount(&twilio)
            .await;
        assert_eq!(daemon.send("ACME").await, no_valid_sid, "start: {sid}");
        assert_eq!(sends(&twilio).await.len(), 1, "start: {sid}");

        // Approving one: an "approved" status without the verification's SID proves nothing.
        twilio.reset().await;
        Mock::given(method("POST"))
            .and(path(format!("{}/{VE}", verifications_path())))
            .respond_with(ResponseTemplate::new(200).set_body_json(body(sid.clone(), "approved")))
            .mount(&twilio)
            .await;
        assert_eq!(
            confirm(&daemon, VE).await,
            no_valid_sid.clone().map(Into::into),
            "approve: {sid}"
        );
        assert_eq!(sends(&twilio).await.len(), 1, "approve: {sid}");
    }

    // Approved by SID, the answer must be about that verification, not another one.
    twilio.reset().await;
    let other = "VE00000000000000000000000000000001";
    Mock::given(method("POST"))
        .and(path(format!("{}/{VE}", verifications_path())))
        .respond_with(ResponseTemplate::new(200).set_body_json(body(other.into(), "approved")))
        .mount(&twilio)
        .await;
    assert_eq!(
        confirm(&daemon, VE).await,
        Err(format!(
            "ERR internal: Twilio answered about verification {other}, not {VE}"
        ))
    );
}

#[tokio::test]
async fn check_online_in_verify_mode_also_asks_for_the_service() {
    let twilio = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/2010-04-01/Accounts/{AC}.json")))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "sid": AC, "status": "active",
        })))
        .mount(&twilio)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v2/Services/{VA}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "sid": VA, "account_sid": AC, "friendly_name": "ACME login",
        })))
        .up_to_n_times(1)
        .mount(&twilio)
        .await;
    let api = twilio.uri();
    let args = [
        "--online",
        "--twilio-api-url",
        &api,
        "--verify-api-url",
        &api,
        "--verify-service-sid",
        VA,
    ];
    let (passed, stdout, stderr) = check(&args);
    assert!(passed, "{stdout}\n{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l == "verify: service VA01…ef found (ACME login)"),
        "{stdout}"
    );

    // Gone (the mock now answers 404): the check fails and says so.
    Mock::given(method("GET"))
        .and(path(format!("/v2/Services/{VA}")))
        .respond_with(twilio_error(
            404,
            20404,
            "The requested resource was not found",
        ))
        .mount(&twilio)
        .await;
    let (passed, stdout, _) = check(&args);
    assert!(!passed, "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l == "verify: service VA01…ef refused (HTTP 404, code 20404)"),
        "{stdout}"
    );
    assert!(sends(&twilio).await.is_empty(), "nothing sent");
}
