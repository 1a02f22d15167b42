//! issueOTP / checkOTP on one daemon (codes in its memory): the code read from the SMS the
//! mock Twilio received; single use; the lock after max_attempts; expiry; re-issue within the
//! lifetime; the same guards as sendOTP; Verify mode refused; the bundled client's commands;
//! and the code in no log line and no reply.

use std::time::Duration;

use otp_sidecar::client::Client;

use crate::common::*;

/// The code in the `n`th SMS the mock received (the default template: "Your OTP is: CODE").
pub(crate) async fn code_in_sms(twilio: &wiremock::MockServer, n: usize) -> String {
    until_sent(twilio, n + 1).await;
    // Messages only: an accepted code also sends its message's Feedback.
    let sent: Vec<_> = sends(twilio)
        .await
        .into_iter()
        .filter(|r| r.url.path().ends_with("/Messages.json"))
        .collect();
    let body = field(&sent[n], "Body").expect("a Body");
    body.rsplit(' ').next().unwrap_or_default().to_owned()
}

/// issueOTP to `phone` (optionally with a context): the SID or the ERR text.
pub(crate) async fn issue(client: &mut Client, phone: &str) -> Result<String, String> {
    client.issue_otp(phone, "ACME").await.expect("answered")
}

pub(crate) async fn check(client: &mut Client, phone: &str, code: &str) -> Result<String, String> {
    client.check_otp(phone, code).await.expect("answered")
}

/// A wrong code of the same shape as `code`.
pub(crate) fn wrong(code: &str) -> String {
    code.bytes()
        .map(|b| char::from(b'0' + (b - b'0' + 1) % 10))
        .collect()
}

fn is_err(reply: &Result<String, String>, reason: &str) -> bool {
    matches!(reply, Err(e) if e.starts_with(&format!("ERR {reason}: ")))
}

#[tokio::test]
async fn an_issued_code_is_good_once() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args(["--metrics=127.0.0.1:0"]),
    );
    let mut client = daemon.unix_client().await;
    assert_eq!(issue(&mut client, PHONE).await, Ok(SID.to_owned()));
    let code = code_in_sms(&twilio, 0).await;
    assert!(
        code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
        "{code}"
    );
    // Another number's code, and the right code for another number, are wrong.
    assert!(is_err(
        &check(&mut client, "+31612345679", &code).await,
        "invalid_code"
    ));
    assert_eq!(check(&mut client, PHONE, &code).await, Ok("OK".to_owned()));
    // Spent: the same code again is invalid, never OK.
    let again = check(&mut client, PHONE, &code).await;
    assert_eq!(
        again,
        Err("ERR invalid_code: the code is not valid for this number".to_owned())
    );
    let (_, metrics) = metrics_of(&daemon).await;
    for line in [
        "otp_sidecar_codes_total{result=\"issued\"} 1",
        "otp_sidecar_codes_total{result=\"ok\"} 1",
        "otp_sidecar_codes_total{result=\"invalid\"} 2",
        "otp_sidecar_calls_total{method=\"checkOTP\",outcome=\"ok\",reason=\"\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn wrong_codes_lock_the_number_until_its_code_expires() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default().arg("--max-attempts=3"));
    let mut client = daemon.unix_client().await;
    issue(&mut client, PHONE).await.unwrap();
    let code = code_in_sms(&twilio, 0).await;
    for _ in 0..2 {
        assert!(is_err(
            &check(&mut client, PHONE, &wrong(&code)).await,
            "invalid_code"
        ));
    }
    let third = check(&mut client, PHONE, &wrong(&code)).await;
    assert!(is_err(&third, "locked"), "{third:?}");
    // The right code is refused too while the lock holds: it was spent by the lock.
    let right = check(&mut client, PHONE, &code).await;
    assert!(is_err(&right, "locked"), "{right:?}");
    // Locked until the code would have expired: its 300 s lifetime counted from the issue,
    // less what the checks took (seconds on a loaded machine).
    assert_retry_in(&right.unwrap_err(), 280..=300);
    // Logged once, when it started; other numbers are not affected.
    assert_eq!(
        daemon.count_log_once("too many wrong codes", 1),
        1,
        "{}",
        daemon.log()
    );
    issue(&mut client, "+31612345679").await.unwrap();
    let other = code_in_sms(&twilio, 1).await;
    assert_eq!(
        check(&mut client, "+31612345679", &other).await,
        Ok("OK".into())
    );
}

#[tokio::test]
async fn a_code_past_its_lifetime_is_expired() {
    // The shortest lifetime the option takes is 1 s; 2 s, then real time passes: the daemon
    // has no test clock, and a code must expire by the clock it runs on.
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().arg("--otp-lifetime-secs=2"),
    );
    let mut client = daemon.unix_client().await;
    issue(&mut client, PHONE).await.unwrap();
    let code = code_in_sms(&twilio, 0).await;
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let late = check(&mut client, PHONE, &code).await;
    assert_eq!(
        late,
        Err("ERR expired: the code has expired; ask for a new one".to_owned())
    );
    // A wrong code then is invalid, and costs no attempt (nothing is live to guess at).
    assert!(is_err(
        &check(&mut client, PHONE, &wrong(&code)).await,
        "invalid_code"
    ));
}

#[tokio::test]
async fn asking_again_keeps_the_earlier_codes_good_up_to_three() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default());
    let mut client = daemon.unix_client().await;
    // Two codes: the first (a late SMS) still works.
    issue(&mut client, PHONE).await.unwrap();
    issue(&mut client, PHONE).await.unwrap();
    let (first, second) = (code_in_sms(&twilio, 0).await, code_in_sms(&twilio, 1).await);
    if first != second {
        assert_eq!(check(&mut client, PHONE, &first).await, Ok("OK".into()));
        // One success spends every code of the number.
        assert!(is_err(
            &check(&mut client, PHONE, &second).await,
            "invalid_code"
        ));
    }
    // Four codes: the oldest is dropped, the next-oldest is good.
    let phone = "+31612345670";
    for _ in 0..4 {
        issue(&mut client, phone).await.unwrap();
    }
    let codes: Vec<String> = futures_codes(&twilio, 2..6).await;
    if !codes[1..].contains(&codes[0]) {
        assert!(is_err(
            &check(&mut client, phone, &codes[0]).await,
            "invalid_code"
        ));
    }
    assert_eq!(check(&mut client, phone, &codes[1]).await, Ok("OK".into()));
}

async fn futures_codes(
    twilio: &wiremock::MockServer,
    range: std::ops::Range<usize>,
) -> Vec<String> {
    let mut out = Vec::new();
    for n in range {
        out.push(code_in_sms(twilio, n).await);
    }
    out
}

#[tokio::test]
async fn issue_goes_through_the_same_guards_and_template() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options {
            rate_limits_on: true,
            ..Options::default()
        }
        .args([
            "--rate-limit-phone=1/1h",
            "--body-template=Code {otp} for ACME",
            "--deny-countries=CU",
            "--code-length=8",
            "--code-alphabet=ABCDEFGHJKLMNPQRSTUVWXYZ23456789",
        ]),
    );
    let mut client = daemon.unix_client().await;
    issue(&mut client, PHONE).await.unwrap();
    until_sent(&twilio, 1).await;
    let body = field(&sends(&twilio).await[0], "Body").unwrap();
    let code = body
        .strip_prefix("Code ")
        .and_then(|rest| rest.strip_suffix(" for ACME"))
        .unwrap_or_else(|| panic!("the template: {body}"));
    assert_eq!(code.len(), 8);
    assert!(
        code.bytes()
            .all(|b| b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789".contains(&b)),
        "{code}"
    );
    // The phone limit refuses the next ones: nothing sent, no code kept for them (three
    // would push the first out), and the first stays good.
    for _ in 0..3 {
        assert!(is_err(&issue(&mut client, PHONE).await, "rate_limited"));
    }
    let blocked = issue(&mut client, "+5372345678").await;
    assert!(is_err(&blocked, "blocked"), "{blocked:?}");
    assert_eq!(sends(&twilio).await.len(), 1);
    assert_eq!(check(&mut client, PHONE, code).await, Ok("OK".into()));
    // Bad arguments: never a code in the reply.
    let bad = client
        .call("issueOTP", vec!["12".into(), "ACME".into()])
        .await
        .unwrap();
    assert!(
        matches!(&bad, Err(e) if e.starts_with("ERR invalid_phone")),
        "{bad:?}"
    );
    let typed = client
        .call("checkOTP", vec![PHONE.into(), 123456.into()])
        .await
        .unwrap();
    assert_eq!(typed, Err("ERR bad_request: code must be a string".into()));
}

#[tokio::test]
async fn verify_mode_serves_neither() {
    let daemon = Daemon::start(
        "http://127.0.0.1:9",
        Options::default().args([
            "--dry-run",
            "--verify-service-sid",
            "VA0123456789abcdef0123456789abcdef",
        ]),
    );
    let mut client = daemon.unix_client().await;
    for reply in [
        issue(&mut client, PHONE).await,
        check(&mut client, PHONE, "123456").await,
    ] {
        let e = reply.expect_err("refused");
        assert!(
            e.starts_with("ERR bad_request: ") && e.contains("Verify"),
            "{e}"
        );
    }
}

#[tokio::test]
async fn caller_tokens_gate_issue_and_check() {
    const TOKEN_C: &str = "tok-codes-0123456789abcdef0123";
    let twilio = twilio_answering(created(SID)).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("callers");
    std::fs::write(&tokens, format!("app {TOKEN_C}\n")).unwrap();
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().arg(format!("--caller-tokens-file={}", tokens.display())),
    );
    let mut client = daemon.unix_client().await;
    assert!(is_err(&issue(&mut client, PHONE).await, "unauthorized"));
    assert!(is_err(
        &check(&mut client, PHONE, "123456").await,
        "unauthorized"
    ));
    assert!(sends(&twilio).await.is_empty());
    let token = context(&[("token", TOKEN_C)]);
    let sid = client
        .call("issueOTP", vec![PHONE.into(), "ACME".into(), token.clone()])
        .await
        .unwrap();
    assert_eq!(sid, Ok(SID.into()));
    let code = code_in_sms(&twilio, 0).await;
    let ok = client
        .call("checkOTP", vec![PHONE.into(), code.into(), token])
        .await
        .unwrap();
    assert_eq!(ok, Ok("OK".into()));
}

#[tokio::test]
async fn the_code_is_in_no_log_line_and_no_reply() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default()
            // Ten digits: no run of the log's own digits (a SID, a timestamp) matches by chance.
            .args(["--max-attempts=2", "--code-length=10"])
            .env("RUST_LOG", "trace"),
    );
    let mut client = daemon.unix_client().await;
    let mut replies = vec![issue(&mut client, PHONE).await];
    let code = code_in_sms(&twilio, 0).await;
    replies.push(check(&mut client, PHONE, &wrong(&code)).await);
    replies.push(issue(&mut client, PHONE).await);
    let second = code_in_sms(&twilio, 1).await;
    replies.push(check(&mut client, PHONE, &second).await);
    replies.push(check(&mut client, PHONE, &code).await);
    for reply in &replies {
        let text = format!("{reply:?}");
        assert!(!text.contains(&code) && !text.contains(&second), "{text}");
    }
    daemon.wait_for_log("method=\"checkOTP\"");
    let log = daemon.log();
    assert!(log.contains("issueOTP"), "{log}");
    for secret in [&code, &second, &wrong(&code)] {
        assert!(
            !log.contains(secret.as_str()),
            "{secret} in the log:\n{log}"
        );
    }
    assert!(!log.contains("612345678"), "the number in clear:\n{log}");
}

#[test]
fn the_bundled_client_issues_and_verifies() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let twilio = rt.block_on(twilio_answering(created(SID)));
    let daemon = Daemon::start(&twilio.uri(), Options::default());
    let unix = daemon.unix.to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        let out = command()
            .args(args)
            .args(["--unix", &unix])
            .output()
            .unwrap();
        (out.status.code(), text(&out.stdout).trim().to_owned())
    };
    assert_eq!(run(&["issue", PHONE, "ACME"]), (Some(0), SID.to_owned()));
    let code = rt.block_on(code_in_sms(&twilio, 0));
    let (status, wrong_reply) = run(&["verify", PHONE, &wrong(&code)]);
    assert_eq!(status, Some(1));
    assert!(
        wrong_reply.starts_with("ERR invalid_code: "),
        "{wrong_reply}"
    );
    assert_eq!(run(&["verify", PHONE, &code]), (Some(0), "OK".to_owned()));
    drop(daemon);
    let gone = command()
        .args(["verify", PHONE, &code, "--unix", &unix])
        .output()
        .unwrap();
    assert_eq!(gone.status.code(), Some(2));
}
