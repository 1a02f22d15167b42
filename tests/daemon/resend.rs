//! Resends (issue 25 §5): the same phone and code again within the code's lifetime answers the
//! first SID and sends nothing; a cooldown that grows with each send to one number. In one
//! daemon, and across two sharing a store.

use std::time::Duration;

use crate::common::store::RedisServer;
use crate::common::*;
use crate::state::{on_store, PASSWORD};

async fn send_code(daemon: &Daemon, code: &str, phone: &str) -> Result<String, String> {
    let mut client = daemon.unix_client().await;
    client
        .call("sendOTP", vec![code.into(), phone.into(), "ACME".into()])
        .await
        .expect("answered")
        .map(|v| v.as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn the_same_code_again_answers_the_first_sid_and_sends_nothing() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args(["--resend-dedup", "--metrics=127.0.0.1:0"]),
    );
    assert_eq!(send_code(&daemon, "480519", PHONE).await, Ok(SID.into()));
    assert_eq!(send_code(&daemon, "480519", PHONE).await, Ok(SID.into()));
    assert_eq!(sends(&twilio).await.len(), 1, "the second was not sent");
    // Another code, or another number: sent.
    assert!(send_code(&daemon, "654321", PHONE).await.is_ok());
    assert!(send_code(&daemon, "480519", "+31687654321").await.is_ok());
    assert_eq!(sends(&twilio).await.len(), 3);
    let (_, metrics) = metrics_of(&daemon).await;
    assert!(
        metrics.contains("otp_sidecar_deduplicated_total 1"),
        "{metrics}"
    );
    assert!(!daemon.log().contains("480519"), "no code in the log");

    // Turned off (the harness's default): every call sends.
    let off = Daemon::start(&twilio.uri(), Options::default());
    assert!(send_code(&off, "480519", PHONE).await.is_ok());
    assert!(send_code(&off, "480519", PHONE).await.is_ok());
    assert_eq!(sends(&twilio).await.len(), 5);
}

#[tokio::test]
async fn the_cooldown_grows_with_each_send_to_a_number() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().arg("--resend-cooldown=30s, 60s"),
    );
    assert!(send_code(&daemon, "111111", PHONE).await.is_ok());
    let refused = send_code(&daemon, "222222", PHONE).await.unwrap_err();
    assert!(refused.starts_with("ERR rate_limited: "), "{refused}");
    assert_retry_in(&refused, 25..=30);
    daemon.wait_for_log("limit=\"cooldown\"");
    // Another number is not held back.
    assert!(send_code(&daemon, "222222", "+31687654321").await.is_ok());
    assert_eq!(sends(&twilio).await.len(), 2);
}

#[tokio::test]
async fn resends_are_recognised_across_instances_sharing_a_store() {
    let redis = RedisServer::start(Some(PASSWORD));
    let twilio = twilio_answering(created(SID)).await;
    let args = ["--resend-dedup", "--resend-cooldown=5m"];
    let a = on_store(&twilio.uri(), &redis.url(), &args);
    let b = on_store(&twilio.uri(), &redis.url(), &args);
    assert_eq!(send_code(&a, "480519", PHONE).await, Ok(SID.into()));
    // The record is written after the reply: wait until the store holds it.
    for _ in 0..500 {
        let dump = redis.dump();
        if dump.iter().any(|(key, _)| key.contains(":sent:code:")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(send_code(&b, "480519", PHONE).await, Ok(SID.into()));
    let refused = send_code(&b, "654321", PHONE).await.unwrap_err();
    assert!(refused.starts_with("ERR rate_limited: "), "{refused}");
    assert_retry_in(&refused, 280..=300);
    assert_eq!(sends(&twilio).await.len(), 1);
    for (key, _) in redis.dump() {
        assert!(
            !key.contains("612345678") && !key.contains("480519"),
            "{key}"
        );
    }
}
