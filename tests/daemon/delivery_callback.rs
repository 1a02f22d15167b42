//! Status callbacks (`delivery_status = "callback"`): each message carries StatusCallback;
//! the listener accepts only what Twilio signed with the account's auth token.

use aws_lc_rs::hmac;
use base64::Engine as _;

use super::delivery::{calls_path, requests_to, twilio, wait_log, Timeline, CA, FROM};
use crate::common::store::free_port;
use crate::common::*;

/// Twilio's X-Twilio-Signature: HMAC-SHA1 (auth token) of the URL and the sorted params.
fn twilio_signature(url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_owned();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, TOKEN.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, data.as_bytes()).as_ref())
}

async fn post(url: &str, params: &[(&str, &str)], signature: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new().post(url).form(params);
    if let Some(signature) = signature {
        request = request.header("X-Twilio-Signature", signature);
    }
    request
        .send()
        .await
        .expect("the listener answers")
        .status()
        .as_u16()
}

async fn delivery_status(daemon: &Daemon) -> rmpv::Value {
    let mut client = daemon.unix_client().await;
    let reply = client.call("deliveryStatus", vec![SID.into()]).await;
    reply.expect("answered").expect("known")
}

#[tokio::test]
async fn a_forged_callback_changes_nothing_and_a_signed_one_is_acted_on() {
    // The resource never moves: only callbacks can tell the daemon anything.
    let twilio = twilio(Timeline::new(&[(0, "queued", None)])).await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/twilio/status");
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args([
            "--delivery-status=callback",
            &format!("--delivery-callback-url={url}"),
            &format!("--delivery-callback-listen=127.0.0.1:{port}"),
            "--voice-on-undelivered",
            &format!("--voice-from={FROM}"),
        ]),
    );
    assert_eq!(daemon.send("ACME").await, Ok(SID.to_owned()));
    let sent = sends(&twilio).await;
    assert_eq!(
        field(&sent[0], "StatusCallback").as_deref(),
        Some(url.as_str())
    );

    let lost = [
        ("MessageSid", SID),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
        ("AccountSid", AC),
    ];
    let signed = twilio_signature(&url, &lost);
    // Unsigned, signed by another token, signed for other params: refused, nothing changes.
    assert_eq!(post(&url, &lost, None).await, 403);
    assert_eq!(
        post(&url, &lost, Some("GvWf1cFY/Q7PnoempGyD5oXAezc=")).await,
        403
    );
    let mut tampered = lost;
    tampered[2] = ("ErrorCode", "30005");
    assert_eq!(post(&url, &tampered, Some(&signed)).await, 403);
    assert_eq!(delivery_status(&daemon).await, rmpv::Value::from("queued"));
    assert!(requests_to(&twilio, &calls_path()).await.is_empty());
    assert_eq!(daemon.count_log("delivery="), 0);
    // Refusals are logged once a minute at most: a stranger's flood must not flood the journal.
    for _ in 0..20 {
        assert_eq!(post(&url, &lost, None).await, 403);
    }
    assert_eq!(daemon.count_log_once("X-Twilio-Signature", 1), 1);

    assert_eq!(post(&url, &lost, Some(&signed)).await, 204);
    let line = wait_log(&daemon, "voice follow-up placed", 5);
    assert!(line.contains(CA) && line.contains(SID), "{line}");
    assert_eq!(daemon.count_log("delivery=undelivered code=30003"), 1);
    // Twilio may post the same status again: still one call.
    assert_eq!(post(&url, &lost, Some(&signed)).await, 204);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(requests_to(&twilio, &calls_path()).await.len(), 1);
    // Nothing was polled in callback mode.
    assert!(requests_to(&twilio, &super::delivery::message_path(SID))
        .await
        .is_empty());
}

#[test]
fn check_refuses_callbacks_without_the_auth_token() {
    let out = command()
        .args([
            "check",
            "--delivery-status=callback",
            "--delivery-callback-url=https://otp.example.com/twilio/status",
            "--delivery-callback-listen=127.0.0.1:8443",
        ])
        .env("TWILIO_ACCOUNT_SID", AC)
        .env("TWILIO_API_KEY", SK)
        .env("TWILIO_API_SECRET", API_SECRET)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("needs TWILIO_AUTH_TOKEN"),
        "{}",
        text(&out.stderr)
    );
    let (passed, _, stderr) = check(&[
        "--delivery-status=callback",
        "--delivery-callback-url=https://otp.example.com/twilio/status",
        "--delivery-callback-listen=127.0.0.1:8443",
    ]);
    assert!(passed, "{stderr}");
}
