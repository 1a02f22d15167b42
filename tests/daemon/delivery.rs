//! Delivery status (issue 26): a mock whose message resource moves through its statuses on a
//! schedule; the daemon polls it, logs and counts the final status, answers deliveryStatus,
//! and follows a message that cannot arrive with exactly one voice call.

use std::time::{Duration, Instant};

use crate::common::*;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const CA: &str = "CA0123456789abcdef0123456789abcdef";
pub const FROM: &str = "+14155550100";

pub fn message_path(sid: &str) -> String {
    format!("/2010-04-01/Accounts/{AC}/Messages/{sid}.json")
}

pub fn calls_path() -> String {
    format!("/2010-04-01/Accounts/{AC}/Calls.json")
}

/// A message resource that moves through `steps` (from when it is mounted): each step's
/// status holds from its time until the next's.
pub struct Timeline {
    start: Instant,
    steps: Vec<(Duration, &'static str, Option<u32>)>,
}

impl Timeline {
    pub fn new(steps: &[(u64, &'static str, Option<u32>)]) -> Timeline {
        Timeline {
            start: Instant::now(),
            steps: steps
                .iter()
                .map(|(ms, s, c)| (Duration::from_millis(*ms), *s, *c))
                .collect(),
        }
    }
}

impl Respond for Timeline {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let now = self.start.elapsed();
        let (_, status, code) = self
            .steps
            .iter()
            .rev()
            .find(|(at, _, _)| *at <= now)
            .copied()
            .unwrap_or((Duration::ZERO, "queued", None));
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "sid": SID, "status": status, "error_code": code, "to": PHONE, "body": "Your OTP is: 918273",
        }))
    }
}

/// Twilio: Messages answer `SID`, its resource follows `timeline`, Calls answer `CA`.
pub async fn twilio(timeline: Timeline) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .respond_with(created(SID))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(message_path(SID)))
        .respond_with(timeline)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(calls_path()))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "sid": CA, "status": "queued",
        })))
        .mount(&server)
        .await;
    server
}

/// The requests to `path` the mock received.
pub async fn requests_to(server: &MockServer, wanted: &str) -> Vec<Request> {
    let all = server.received_requests().await.expect("recording is on");
    all.into_iter().filter(|r| r.url.path() == wanted).collect()
}

async fn delivery_status(daemon: &Daemon, sid: &str) -> Result<rmpv::Value, String> {
    let mut client = daemon.unix_client().await;
    client
        .call("deliveryStatus", vec![sid.into()])
        .await
        .expect("answered")
}

/// Waits (up to `secs`) for a log line with `needle`.
pub fn wait_log(daemon: &Daemon, needle: &str, secs: u64) -> String {
    poll_until(
        Duration::from_secs(secs),
        || {
            daemon
                .log()
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_owned)
        },
        || format!("no {needle:?} in:\n{}", daemon.log()),
    )
}

#[tokio::test]
async fn a_delivered_message_is_polled_logged_counted_and_answered() {
    let twilio = twilio(Timeline::new(&[
        (0, "queued", None),
        (3000, "sent", None),
        (4000, "delivered", None),
    ]))
    .await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().arg("--metrics=127.0.0.1:0"),
    );
    assert_eq!(daemon.send("ACME").await, Ok(SID.to_owned()));
    // Handed over: known at once, before any poll.
    assert_eq!(delivery_status(&daemon, SID).await, Ok("queued".into()));
    let line = wait_log(&daemon, "delivery=delivered", 10);
    assert!(
        line.contains(SID) && line.contains("+31*****5678"),
        "{line}"
    );
    assert!(!line.contains(PHONE) && !line.contains(OTP), "{line}");
    assert_eq!(log_field(&line, "after_s").as_deref(), Some("5"), "{line}");
    assert_eq!(delivery_status(&daemon, SID).await, Ok("delivered".into()));
    // Polled at 2 s (queued) and 5 s (delivered), then never again.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let polls = requests_to(&twilio, &message_path(SID)).await;
    assert_eq!(polls.len(), 2);
    let (_, metrics) = metrics_of(&daemon).await;
    assert!(
        metrics.contains(
            "otp_sidecar_delivery_total{status=\"delivered\",code=\"\",country=\"NL\"} 1"
        ),
        "{metrics}"
    );
    let mut client = daemon.unix_client().await;
    let health = client.call("health", vec![]).await.unwrap().unwrap();
    let text = format!("{health}");
    assert!(
        text.contains("delivery_1h") && text.contains("\"rate_pct\": 100"),
        "{text}"
    );
}

#[tokio::test]
async fn undelivered_30003_is_followed_by_exactly_one_call_reading_the_code() {
    let twilio = twilio(Timeline::new(&[(0, "undelivered", Some(30003))])).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args(["--voice-on-undelivered", "--voice-from", FROM]),
    );
    assert_eq!(daemon.send("ACME").await, Ok(SID.to_owned()));
    let line = wait_log(&daemon, "voice follow-up placed", 10);
    assert!(line.contains(SID) && line.contains(CA), "both SIDs: {line}");
    assert!(!line.contains(OTP), "{line}");
    let lost = wait_log(&daemon, "delivery=undelivered", 1);
    assert_eq!(log_field(&lost, "code").as_deref(), Some("30003"), "{lost}");
    // The next poll time passes: still one call, and no more polls (the status was final).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let calls = requests_to(&twilio, &calls_path()).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(field(&calls[0], "To").as_deref(), Some(PHONE));
    assert_eq!(field(&calls[0], "From").as_deref(), Some(FROM));
    assert!(field(&calls[0], "Twiml")
        .unwrap()
        .contains("9, 1, 8, 2, 7, 3"));
    assert_eq!(requests_to(&twilio, &message_path(SID)).await.len(), 1);
    assert_eq!(
        delivery_status(&daemon, SID).await,
        Ok(format!("calling {CA}").into())
    );
    // The bundled client says the same.
    let out = command()
        .args(["status", SID, "--unix"])
        .arg(&daemon.unix)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), format!("calling {CA}"));
    assert!(!daemon.log().contains(OTP));
}

#[tokio::test]
async fn no_call_for_30007_nor_for_a_caller_that_asked_for_sms_only() {
    let spam = twilio(Timeline::new(&[(0, "undelivered", Some(30007))])).await;
    let sms_only = twilio(Timeline::new(&[(0, "failed", Some(30005))])).await;
    let options = Options::default().args(["--voice-on-undelivered", "--voice-from", FROM]);
    let a = Daemon::start(&spam.uri(), options.clone());
    let b = Daemon::start(&sms_only.uri(), options);
    assert_eq!(a.send("ACME").await, Ok(SID.to_owned()));
    let mut client = b.unix_client().await;
    let reply = send_with(&mut client, PHONE, context(&[("channel", "sms")])).await;
    assert_eq!(reply, Ok(SID.into()));
    wait_log(&a, "delivery=undelivered", 10);
    wait_log(&b, "delivery=failed", 10);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(requests_to(&spam, &calls_path()).await.is_empty());
    assert!(requests_to(&sms_only, &calls_path()).await.is_empty());
    assert_eq!(
        delivery_status(&a, SID).await,
        Ok("undelivered 30007".into())
    );
}

#[tokio::test]
async fn delivery_status_answers_not_found_and_refuses_what_is_no_message_sid() {
    let daemon = dry_daemon();
    let unknown = "SM99999999999999999999999999999999";
    let reply = delivery_status(&daemon, unknown).await;
    assert!(
        reply
            .as_ref()
            .is_err_and(|e| e.starts_with("ERR not_found")),
        "{reply:?}"
    );
    for bad in [CA, "SMabc", "+31612345678"] {
        let reply = delivery_status(&daemon, bad).await;
        assert!(
            reply
                .as_ref()
                .is_err_and(|e| e.starts_with("ERR bad_request")),
            "{reply:?}"
        );
    }
    let out = command()
        .args(["status", unknown, "--unix"])
        .arg(&daemon.unix)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn off_polls_nothing_and_polls_never_take_the_last_budget_slot() {
    let off = twilio(Timeline::new(&[(0, "delivered", None)])).await;
    let tight = twilio(Timeline::new(&[(0, "delivered", None)])).await;
    let a = Daemon::start(&off.uri(), Options::default().arg("--delivery-status=off"));
    // One request slot: a poll would take the slot a send needs, so none is made.
    let b = Daemon::start(
        &tight.uri(),
        Options::default().arg("--twilio-max-concurrency=1"),
    );
    assert_eq!(a.send("ACME").await, Ok(SID.to_owned()));
    assert_eq!(b.send("ACME").await, Ok(SID.to_owned()));
    tokio::time::sleep(Duration::from_millis(5500)).await;
    assert!(requests_to(&off, &message_path(SID)).await.is_empty());
    assert!(requests_to(&tight, &message_path(SID)).await.is_empty());
    assert_eq!(b.count_log("delivery="), 0);
}

#[tokio::test]
async fn a_collapsed_delivery_rate_makes_ping_degraded_and_raises_one_alert() {
    let twilio = twilio(Timeline::new(&[(0, "undelivered", Some(30008))])).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default().arg("--log-alerts"));
    let mut client = daemon.unix_client().await;
    for _ in 0..20 {
        assert_eq!(
            send_with(&mut client, PHONE, rmpv::Value::Nil).await,
            Ok(SID.into())
        );
    }
    poll_until(
        Duration::from_secs(15),
        || (daemon.count_log("delivery=undelivered") >= 20).then_some(()),
        || daemon.log(),
    );
    let line = wait_log(&daemon, "alert=delivery_rate_collapse", 2);
    assert!(line.contains("0 of the last hour's 20"), "{line}");
    let out = command()
        .args(["ping", "--unix"])
        .arg(&daemon.unix)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("delivery_1h.rate_pct: 0"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        daemon.count_log("alert=delivery_rate_collapse"),
        1,
        "once per 5 minutes"
    );
}

#[tokio::test]
async fn with_a_shared_store_any_instance_answers_and_no_number_is_stored() {
    use crate::common::store::RedisServer;
    use crate::state::{on_store, PASSWORD};
    let redis = RedisServer::start(Some(PASSWORD));
    let twilio = twilio(Timeline::new(&[(0, "undelivered", Some(30003))])).await;
    let sender = on_store(&twilio.uri(), &redis.url(), &[]);
    let other = on_store(&twilio.uri(), &redis.url(), &[]);
    assert_eq!(sender.send("ACME").await, Ok(SID.to_owned()));
    wait_log(&sender, "delivery=undelivered", 10);
    // The other instance never saw the message: it answers from the store.
    let mut answer = Err(String::new());
    for _ in 0..50 {
        answer = delivery_status(&other, SID).await;
        if answer == Ok("undelivered 30003".into()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer, Ok("undelivered 30003".into()));
    let stored = redis.dump();
    let delivery: Vec<_> = stored
        .iter()
        .filter(|(k, _)| k.starts_with("otp-sidecar:delivery:"))
        .collect();
    assert!(!delivery.is_empty(), "{stored:?}");
    for (key, value) in &stored {
        let text = format!("{key} {}", String::from_utf8_lossy(value));
        for secret in ["31612345678", OTP] {
            assert!(!text.contains(secret), "{text}");
        }
        // Delivery's own keys hold no SID either (the send's record keeps the SID sent to a
        // number, under its keyed hash: confirmOTP answers it from any instance).
        if key.starts_with("otp-sidecar:delivery:") {
            assert!(!text.contains(SID), "{text}");
        }
    }
    // Its keys expire with the code's lifetime (300 s unset).
    let ttl = redis.command(&["PTTL", &delivery[0].0]);
    let digits: String = ttl.chars().filter(char::is_ascii_digit).collect();
    let ttl: i64 = digits.parse().unwrap_or_else(|_| panic!("PTTL said {ttl}"));
    assert!((1..=300_000).contains(&ttl), "{ttl}");
}
