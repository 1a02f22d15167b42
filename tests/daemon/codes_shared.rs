//! issueOTP / checkOTP on a pair sharing a real `redis-server`: a code issued through one
//! instance is checked (once) through the other, wrong codes on both count toward one lock,
//! expiry by the store's clock, the keys hold only HMACs under keyed-hash names and expire,
//! and instances with different codes keys do not accept each other's codes.

use std::time::Duration;

use crate::codes::{check, code_in_sms, issue, wrong};
use crate::common::store::RedisServer;
use crate::common::*;
use crate::state::{on_store, PASSWORD};

fn is_err(reply: &Result<String, String>, reason: &str) -> bool {
    matches!(reply, Err(e) if e.starts_with(&format!("ERR {reason}: ")))
}

/// Every key in the store, with its TTL in ms and its whole content as text.
fn dump(redis: &RedisServer) -> Vec<(String, i64, String)> {
    let mut conn = redis.connection().expect("a connection");
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    keys.into_iter()
        .map(|key| {
            let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
            let kind: String = redis::cmd("TYPE").arg(&key).query(&mut conn).unwrap();
            let content = if kind == "hash" {
                let all: Vec<String> = redis::cmd("HGETALL").arg(&key).query(&mut conn).unwrap();
                all.join(" ")
            } else {
                let value: Option<String> = redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
                value.unwrap_or_default()
            };
            (key, ttl, content)
        })
        .collect()
}

#[tokio::test]
async fn a_code_issued_on_one_instance_is_checked_once_on_the_other() {
    let redis = RedisServer::start(Some(PASSWORD));
    let twilio = twilio_answering(created(SID)).await;
    // No codes key: both derive it from the state key they share.
    let first = on_store(&twilio.uri(), &redis.url(), &["--max-attempts=3"]);
    let second = on_store(&twilio.uri(), &redis.url(), &["--max-attempts=3"]);
    let (mut a, mut b) = (first.unix_client().await, second.unix_client().await);
    issue(&mut a, PHONE).await.unwrap();
    let code = code_in_sms(&twilio, 0).await;
    // Only HMACs, under a keyed-hash name, expiring within two lifetimes (600 s).
    let keys = dump(&redis);
    let codes: Vec<_> = keys
        .iter()
        .filter(|(k, ..)| k.contains(":codes:"))
        .collect();
    assert_eq!(codes.len(), 1, "{keys:?}");
    for (key, _, content) in &keys {
        assert!(
            !key.contains("612345678") && !content.contains("612345678"),
            "{key}"
        );
        assert!(
            !key.contains(&code) && !content.contains(&code),
            "{key} {content}"
        );
    }
    let (_, ttl, content) = codes[0];
    assert!(*ttl > 0 && *ttl <= 600_000, "ttl {ttl}");
    assert!(content.starts_with("c:") && content.len() > 64, "{content}");
    assert_eq!(check(&mut b, PHONE, &code).await, Ok("OK".into()));
    assert!(is_err(&check(&mut a, PHONE, &code).await, "invalid_code"));
    assert!(is_err(&check(&mut b, PHONE, &code).await, "invalid_code"));
    // Wrong codes through both instances count toward one lock.
    issue(&mut b, PHONE).await.unwrap();
    let next = code_in_sms(&twilio, 1).await;
    assert!(is_err(
        &check(&mut a, PHONE, &wrong(&next)).await,
        "invalid_code"
    ));
    assert!(is_err(
        &check(&mut b, PHONE, &wrong(&next)).await,
        "invalid_code"
    ));
    assert!(is_err(&check(&mut a, PHONE, &wrong(&next)).await, "locked"));
    assert!(is_err(&check(&mut b, PHONE, &next).await, "locked"));
    assert_eq!(first.count_log_once("too many wrong codes", 1), 1);
    assert_eq!(second.count_log("too many wrong codes"), 0);
}

#[tokio::test]
async fn codes_expire_by_the_stores_clock() {
    let redis = RedisServer::start(Some(PASSWORD));
    let twilio = twilio_answering(created(SID)).await;
    let first = on_store(&twilio.uri(), &redis.url(), &["--otp-lifetime-secs=2"]);
    let second = on_store(&twilio.uri(), &redis.url(), &["--otp-lifetime-secs=2"]);
    let (mut a, mut b) = (first.unix_client().await, second.unix_client().await);
    issue(&mut a, PHONE).await.unwrap();
    issue(&mut a, PHONE).await.unwrap();
    let (one, two) = (code_in_sms(&twilio, 0).await, code_in_sms(&twilio, 1).await);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert!(is_err(&check(&mut b, PHONE, &one).await, "expired"));
    assert!(is_err(&check(&mut a, PHONE, &two).await, "expired"));
    // Kept one lifetime more (to say `expired`), then gone from the store.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(dump(&redis).iter().all(|(k, ..)| !k.contains(":codes:")));
    assert!(is_err(&check(&mut b, PHONE, &one).await, "invalid_code"));
}

#[tokio::test]
async fn instances_with_other_codes_keys_refuse_each_others_codes() {
    let redis = RedisServer::start(Some(PASSWORD));
    let twilio = twilio_answering(created(SID)).await;
    let keyed = |key: &str| {
        Options::default()
            .args(["--state", &redis.url()])
            .env("OTP_SIDECAR_STATE_KEY", crate::state::KEY)
            .env("OTP_SIDECAR_STATE_PASSWORD", PASSWORD)
            .env("OTP_SIDECAR_CODES_KEY", key)
    };
    let first = Daemon::start(&twilio.uri(), keyed("codes-key-one-0123456789abcdef"));
    let second = Daemon::start(&twilio.uri(), keyed("codes-key-two-0123456789abcdef"));
    let third = Daemon::start(&twilio.uri(), keyed("codes-key-one-0123456789abcdef"));
    let (mut a, mut b) = (first.unix_client().await, second.unix_client().await);
    issue(&mut a, PHONE).await.unwrap();
    let code = code_in_sms(&twilio, 0).await;
    assert!(is_err(&check(&mut b, PHONE, &code).await, "invalid_code"));
    let mut c = third.unix_client().await;
    assert_eq!(check(&mut c, PHONE, &code).await, Ok("OK".into()));
    // `check` names where the key comes from, never the key; a short key is refused by
    // where it came from.
    let (ok, out, _) = check_with_store(&redis, None);
    assert!(
        ok && out.contains("key derived from OTP_SIDECAR_STATE_KEY"),
        "{out}"
    );
    let given = "codes-key-one-0123456789abcdef";
    let (ok, out, err) = check_with_store(&redis, Some(given));
    assert!(ok && out.contains("; key OTP_SIDECAR_CODES_KEY"), "{out}");
    assert!(!out.contains(given) && !err.contains(given));
    let (ok, out, err) = check_with_store(&redis, Some("short-key-123"));
    assert!(
        !ok && err.contains("OTP_SIDECAR_CODES_KEY (env) is shorter than 16"),
        "{out}{err}"
    );
    assert!(!out.contains("short-key-123") && !err.contains("short-key-123"));
}

/// `otp-sidecar check` on the store, with `codes_key` as OTP_SIDECAR_CODES_KEY.
fn check_with_store(redis: &RedisServer, codes_key: Option<&str>) -> (bool, String, String) {
    let mut check = command();
    check
        .args(["check", "--dry-run", "--state", &redis.url()])
        .env("OTP_SIDECAR_STATE_KEY", crate::state::KEY);
    if let Some(key) = codes_key {
        check.env("OTP_SIDECAR_CODES_KEY", key);
    }
    let out = check.output().unwrap();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}
