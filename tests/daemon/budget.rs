//! The Twilio request budget under a login storm, against a stand-in that enforces Twilio's
//! account concurrency limit (429 / 20429 past it) and answers after a fixed latency: no 429
//! at the default budget, busy answers at once instead of sends nobody waits for, a 429 burst
//! that shrinks the budget and answers that grow it back, and a call that waited for a call
//! slot still answered within its deadline.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::common::{created, log_field, scrape, twilio_error, Daemon, Options, OTP, PHONE, SID};

/// Twilio as an account sees it: each POST answered after `latency`; past `limit` in flight,
/// 429 / 20429 at once. With a fixed latency, the POSTs in flight at an arrival are those that
/// arrived within the last `latency`.
struct Limited {
    limit: usize,
    latency: Duration,
    recent: Mutex<VecDeque<Instant>>,
    created: AtomicUsize,
    refused: AtomicUsize,
    /// The most POSTs in flight at once.
    peak: AtomicUsize,
}

/// The responder wiremock holds: a handle on the shared account.
struct Account(Arc<Limited>);

impl Respond for Account {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let now = Instant::now();
        let account = &self.0;
        let mut recent = account.recent.lock().unwrap();
        while recent.front().is_some_and(|&t| now - t >= account.latency) {
            recent.pop_front();
        }
        if recent.len() >= account.limit {
            account.refused.fetch_add(1, Ordering::SeqCst);
            return twilio_error(429, 20429, "Too Many Requests");
        }
        recent.push_back(now);
        account.peak.fetch_max(recent.len(), Ordering::SeqCst);
        account.created.fetch_add(1, Ordering::SeqCst);
        created(SID).set_delay(account.latency)
    }
}

async fn limited_twilio(limit: usize, latency: Duration) -> (MockServer, Arc<Limited>) {
    let server = MockServer::start().await;
    let twilio = Arc::new(Limited {
        limit,
        latency,
        recent: Mutex::new(VecDeque::new()),
        created: AtomicUsize::new(0),
        refused: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
    });
    Mock::given(method("POST"))
        .respond_with(Account(twilio.clone()))
        .mount(&server)
        .await;
    (server, twilio)
}

/// A call in flight: its reply and how long it took, once it is answered.
type Call = tokio::task::JoinHandle<(Result<String, String>, Duration)>;

/// `n` sendOTP calls started at once, each on its own connection.
async fn start_storm(daemon: &Daemon, n: usize) -> Vec<Call> {
    let mut calls = Vec::new();
    for _ in 0..n {
        let mut client = daemon.unix_client().await;
        calls.push(tokio::spawn(async move {
            let started = Instant::now();
            let reply = client.send_otp(OTP, PHONE, "ACME").await.expect("answered");
            (reply, started.elapsed())
        }));
    }
    calls
}

async fn replies(calls: Vec<Call>) -> Vec<(Result<String, String>, Duration)> {
    let mut replies = Vec::new();
    for call in calls {
        replies.push(call.await.unwrap());
    }
    replies
}

/// `n` sendOTP calls at once: each reply and how long it took.
async fn storm(daemon: &Daemon, n: usize) -> Vec<(Result<String, String>, Duration)> {
    replies(start_storm(daemon, n).await).await
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in {text}"))
}

#[tokio::test]
async fn a_storm_at_the_default_budget_provokes_no_429() {
    let (twilio, account) = limited_twilio(100, Duration::from_millis(250)).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default());
    let replies = storm(&daemon, 300).await;
    let sids = replies.iter().filter(|(r, _)| r.is_ok()).count();
    assert_eq!(account.refused.load(Ordering::SeqCst), 0, "429s provoked");
    // 300 calls, 100 at a time, 250 ms each: all answered well inside 2.5 s.
    assert_eq!(sids, 300, "{:?}", replies.iter().find(|(r, _)| r.is_err()));
    let slowest = replies.iter().map(|(_, t)| *t).max().unwrap();
    assert!(slowest < Duration::from_millis(2550), "{slowest:?}");
}

#[tokio::test]
async fn calls_that_cannot_be_answered_in_time_are_busy_at_once_and_nothing_is_sent_for_them() {
    let (twilio, account) = limited_twilio(100, Duration::from_millis(400)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args(["--twilio-max-concurrency=1", "--deadline-ms=1000"]),
    );
    // Teach the budget how long an answer takes.
    for _ in 0..4 {
        assert!(daemon.send("ACME").await.is_ok());
    }
    let before = account.created.load(Ordering::SeqCst);
    let replies = storm(&daemon, 8).await;
    let busy: Vec<_> = replies
        .iter()
        .filter(|(r, _)| {
            r.as_ref()
                .is_err_and(|e| e.starts_with("ERR unavailable: busy"))
        })
        .collect();
    let sent = account.created.load(Ordering::SeqCst) - before;
    // One slot, 400 ms an answer, 1 s to answer: at most two can be served in time.
    assert!(!busy.is_empty(), "{replies:?}");
    assert!(sent <= 2, "{sent} sent for 8 calls: {replies:?}");
    assert_eq!(sent, replies.iter().filter(|(r, _)| r.is_ok()).count());
    let fastest_busy = busy.iter().map(|(_, t)| *t).min().unwrap();
    assert!(fastest_busy < Duration::from_millis(10), "{fastest_busy:?}");
    for (reply, took) in &replies {
        assert!(
            *took < Duration::from_millis(1050),
            "{reply:?} after {took:?}"
        );
        assert!(
            !reply.as_ref().is_err_and(|e| e.starts_with("ERR timeout")),
            "{reply:?}"
        );
    }
}

#[tokio::test]
async fn a_429_burst_shrinks_the_budget_for_everyone_and_answers_grow_it_back() {
    let (twilio, account) = limited_twilio(4, Duration::from_millis(200)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args(["--twilio-max-concurrency=16", "--metrics=127.0.0.1:0"]),
    );
    let metrics = log_field(&daemon.ready, "metrics").unwrap();
    let replies = storm(&daemon, 32).await;
    assert!(
        account.refused.load(Ordering::SeqCst) > 0,
        "the burst met the limit"
    );
    let (_, text) = scrape(&metrics, "/metrics").await;
    let size = metric(
        &text,
        r#"otp_sidecar_twilio_budget_size{account="ACfe…ce"}"#,
    );
    assert!(size < 16.0, "budget {size} after 429s");
    assert!(metric(&text, "otp_sidecar_twilio_429_total") > 0.0);
    assert!(replies.iter().any(|(r, _)| r.is_ok()));
    // Calls one after another, all answered: the budget grows back.
    for _ in 0..(2 * size as usize + 2) {
        assert!(daemon.send("ACME").await.is_ok());
    }
    let (_, text) = scrape(&metrics, "/metrics").await;
    let grown = metric(
        &text,
        r#"otp_sidecar_twilio_budget_size{account="ACfe…ce"}"#,
    );
    assert!(grown > size, "{size} → {grown}");
}

#[tokio::test]
async fn a_call_that_waited_for_a_call_slot_is_still_answered_within_its_deadline() {
    let (twilio, _account) = limited_twilio(100, Duration::from_millis(600)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args(["--max-in-flight=1", "--deadline-ms=1000"]),
    );
    let replies = storm(&daemon, 3).await;
    assert!(replies.iter().any(|(r, _)| r.is_ok()), "{replies:?}");
    for (reply, took) in &replies {
        assert!(
            *took < Duration::from_millis(1050),
            "{reply:?} after {took:?}"
        );
    }
}

#[tokio::test]
async fn a_reload_in_a_storm_keeps_the_budget_and_its_requests_in_flight() {
    let (twilio, account) = limited_twilio(100, Duration::from_millis(600)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args(["--twilio-max-concurrency=2"]),
    );
    let first = start_storm(&daemon, 2).await;
    // Both are at Twilio now; the reload must not open the budget anew.
    tokio::time::sleep(Duration::from_millis(150)).await;
    daemon.signal("HUP");
    daemon.wait_for_log("configuration reloaded");
    let second = storm(&daemon, 2).await;
    let first = replies(first).await;
    assert!(
        first.iter().chain(&second).all(|(r, _)| r.is_ok()),
        "{first:?} {second:?}"
    );
    let peak = account.peak.load(Ordering::SeqCst);
    assert!(
        peak <= 2,
        "{peak} POSTs in flight at once with a budget of 2"
    );
}

/// A Twilio stand-in answering its first `n` POSTs 429 with `Retry-After: 3600`, then 201.
async fn hour_long_429s_then_created(n: u64) -> MockServer {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            twilio_error(429, 20429, "Too Many Requests").insert_header("retry-after", "3600"),
        )
        .up_to_n_times(n)
        .with_priority(1)
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .respond_with(created(SID))
        .mount(&twilio)
        .await;
    twilio
}

/// Sends every 250 ms until one is sent or `limit` has passed; the last reply.
async fn send_until_sent(daemon: &Daemon, limit: Duration) -> Result<String, String> {
    let started = Instant::now();
    loop {
        let reply = daemon.send("ACME").await;
        if reply.is_ok() || started.elapsed() > limit {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_retry_after_of_an_hour_pauses_sends_for_the_cap_only() {
    // Two 429s asking for an hour (one episode), then 201s.
    let twilio = hour_long_429s_then_created(2).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args(["--twilio-max-retry-after-secs=2", "--keep-warm-secs=0"]),
    );
    // The capped Retry-After (2 s) fits the deadline once: retried, 429 again, and a second
    // wait would not fit.
    let first = daemon.send("ACME").await;
    assert!(
        first
            .as_ref()
            .is_err_and(|e| e.starts_with("ERR twilio 20429")),
        "{first:?}"
    );
    // Hour-long pause or not, sends go through again after about the cap.
    let resumed = send_until_sent(&daemon, Duration::from_secs(10)).await;
    assert_eq!(resumed, Ok(SID.to_owned()));
    // The header's value, logged once for the episode's two 429s.
    let log = daemon.wait_for_log("Twilio answered 429");
    assert!(log.contains("retry_after_secs=3600"), "{log}");
    assert_eq!(daemon.count_log("Twilio answered 429"), 1);
}

#[tokio::test]
async fn while_a_429_pauses_calls_are_busy_at_once_and_sends_resume_after_the_cap() {
    let twilio = hour_long_429s_then_created(1).await;
    // The default cap, 5 s: longer than the deadline, so the 429's call is not retried.
    let daemon = Daemon::start(&twilio.uri(), Options::default().arg("--keep-warm-secs=0"));
    let first = daemon.send("ACME").await;
    assert!(
        first
            .as_ref()
            .is_err_and(|e| e.starts_with("ERR twilio 20429")),
        "{first:?}"
    );
    let paused = daemon.send("ACME").await;
    assert!(
        paused
            .as_ref()
            .is_err_and(|e| e.starts_with("ERR unavailable: busy")),
        "{paused:?}"
    );
    // After about the cap (not the hour asked for), a send goes through.
    let resumed = send_until_sent(&daemon, Duration::from_secs(12)).await;
    assert_eq!(resumed, Ok(SID.to_owned()));
    // Nothing was sent for the busy answers: the 429 and the one that went through.
    assert_eq!(twilio.received_requests().await.unwrap().len(), 2);
}

/// A daemon whose 200 ms deadline is under the 250 ms assumed before any answer was timed:
/// its first send is the probe (nothing learned yet), answered with the SID; the next is busy,
/// with nothing sent for it.
async fn a_probe_then_a_busy_answer() -> (MockServer, Daemon) {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(created(SID))
        .mount(&twilio)
        .await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args(["--deadline-ms=200", "--keep-warm-secs=0"]),
    );
    daemon.wait_for_log("leaves no room for the 250 ms");
    assert_eq!(daemon.send("ACME").await, Ok(SID.to_owned()));
    let busy = daemon.send("ACME").await;
    assert!(
        busy.as_ref()
            .is_err_and(|e| e.starts_with("ERR unavailable: busy")),
        "{busy:?}"
    );
    (twilio, daemon)
}

#[tokio::test]
async fn a_deadline_under_the_first_guess_still_lets_a_probe_through() {
    // One probe per interval: the send after it is busy.
    let (twilio, daemon) = a_probe_then_a_busy_answer().await;
    assert_eq!(twilio.received_requests().await.unwrap().len(), 1);
    daemon.wait_for_log("sending one request to learn it again");
}

#[tokio::test]
async fn a_busy_answer_leaves_twilio_healthy() {
    let (_twilio, daemon) = a_probe_then_a_busy_answer().await;
    // Twilio never answered the busy one: its health is still that of the last answer.
    let out = crate::common::command()
        .args(["ping", "--unix", daemon.unix.to_str().unwrap()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(report.contains("last_twilio.healthy: true"), "{report}");
}
