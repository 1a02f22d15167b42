//! Failover: an ordered list of Twilio providers behind circuit breakers, each a mock Twilio on
//! loopback. A message moves on only when the provider asked provably did not take it.

use std::time::Duration;

use crate::common::*;
use base64::Engine as _;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The backup account, its token and its own Messaging Service.
const AC2: &str = "AC00000000000000000000000000000002";
const TOKEN2: &str = "backup-token-5e6f7a8b9c0d1e2f3a4b";
const MG2: &str = "MG00000000000000000000000000000002";
const SID2: &str = "SM00000000000000000000000000000002";

fn backup_messages() -> String {
    format!("/2010-04-01/Accounts/{AC2}/Messages.json")
}

/// A backup Twilio: 201 with its own SID, but only with the backup's credentials.
pub(crate) async fn backup() -> MockServer {
    let server = MockServer::start().await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{AC2}:{TOKEN2}"));
    Mock::given(method("POST"))
        .and(path(backup_messages()))
        .and(header("authorization", format!("Basic {basic}").as_str()))
        .respond_with(created(SID2))
        .mount(&server)
        .await;
    server
}

/// A daemon whose primary is `primary` and whose one failover provider is `backup`: another
/// account, region and Messaging Service. `extra` flags are added.
pub(crate) fn daemon(
    primary: &str,
    backup: &MockServer,
    extra: &[&str],
) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("backup_token");
    std::fs::write(&token, format!("{TOKEN2}\n")).unwrap();
    let config = dir.path().join("otp-sidecar.toml");
    std::fs::write(
        &config,
        format!(
            r#"deadline_ms = 800
keep_warm_secs = 0

[[failover]]
name = "backup"
sender = "{MG2}"
twilio_api_url = "{}"
credentials = {{ account_sid = "{AC2}", auth_token_file = "{}" }}
"#,
            backup.uri(),
            token.display()
        ),
    )
    .unwrap();
    let options = Options::default()
        .arg(format!("--config={}", config.display()))
        .args(extra.iter().copied());
    (Daemon::start(primary, options), dir)
}

async fn count(server: &MockServer) -> usize {
    sends(server).await.len()
}

/// A primary answering every send with `response`.
async fn primary(response: ResponseTemplate) -> MockServer {
    twilio_answering(response).await
}

#[tokio::test]
async fn a_primary_that_cannot_be_reached_hands_the_message_to_the_backup() {
    let backup = backup().await;
    let down = format!("http://{}", dead_address());
    let (daemon, _dir) = daemon(&down, &backup, &[]);
    assert_eq!(daemon.send("ACME").await, Ok(SID2.to_owned()));

    // The backup's own sender, account and credentials; the caller's text.
    let sent = sends(&backup).await;
    let mut fields = form(&sent[0]);
    fields.sort();
    assert_eq!(
        fields,
        vec![
            ("Body".to_owned(), format!("Your OTP is: {OTP}")),
            ("MessagingServiceSid".to_owned(), MG2.to_owned()),
            ("ProvideFeedback".to_owned(), "true".to_owned()),
            ("RiskCheck".to_owned(), "enable".to_owned()),
            ("To".to_owned(), PHONE.to_owned()),
        ]
    );
    // Log lines follow the reply: wait for them.
    daemon.wait_for_log("outcome=\"sent\"");
    let log = daemon.log();
    assert!(log.contains("trying the next"), "{log}");
    assert!(!log.contains(TOKEN2) && !log.contains(OTP), "{log}");
}

#[tokio::test]
async fn failover_providers_are_warmed_at_start_with_their_own_credentials() {
    let primary = primary(created(SID)).await;
    let backup = backup().await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{AC2}:{TOKEN2}"));
    Mock::given(method("GET"))
        .and(path(format!("/2010-04-01/Accounts/{AC2}.json")))
        .and(header("authorization", format!("Basic {basic}").as_str()))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&backup)
        .await;
    let (daemon, _dir) = daemon(&primary.uri(), &backup, &["--keep-warm-secs=300"]);
    let line = daemon.wait_for_log("failover provider warm");
    assert!(line.contains("backup") && line.contains("200"), "{line}");
    // Nothing was sent through it.
    assert_eq!(count(&backup).await, 0);
}

#[tokio::test]
async fn answers_that_prove_nothing_was_accepted_fail_over() {
    for (answer, what) in [
        (twilio_error(401, 20003, "Authenticate"), "401"),
        // Retry-After past the deadline: not waited for, not sent.
        (
            twilio_error(429, 20429, "Too Many Requests").insert_header("retry-after", "5"),
            "429",
        ),
    ] {
        let primary = primary(answer).await;
        let backup = backup().await;
        let (daemon, _dir) = daemon(&primary.uri(), &backup, &[]);
        assert_eq!(daemon.send("ACME").await, Ok(SID2.to_owned()), "{what}");
        assert_eq!(
            (count(&primary).await, count(&backup).await),
            (1, 1),
            "{what}"
        );
    }
}

#[tokio::test]
async fn answers_that_may_mean_a_sent_message_never_reach_the_backup() {
    for (answer, want) in [
        (
            ResponseTemplate::new(500),
            "ERR unavailable: Twilio answered HTTP 500",
        ),
        // No 5xx proves the message was not taken in (a proxy in the path may answer one
        // after forwarding it), whatever its body says: never failed over.
        (
            ResponseTemplate::new(503),
            "ERR unavailable: Twilio answered HTTP 503",
        ),
        (
            twilio_error(500, 20429, "Too Many Requests"),
            "ERR twilio 20429: Too Many Requests",
        ),
        (
            twilio_error(503, 20429, "Too Many Requests"),
            "ERR twilio 20429: Too Many Requests",
        ),
        // Created, but without a message SID: it may have been sent.
        (
            created("SMabc"),
            "ERR internal: Twilio answered without a valid SID",
        ),
        (
            twilio_error(400, 21211, "Invalid 'To' Phone Number"),
            "ERR twilio 21211: Invalid 'To' Phone Number",
        ),
        // Accepted, but slower than the deadline: a second send would be a second SMS.
        (
            created(SID).set_delay(Duration::from_millis(1500)),
            "ERR timeout: no answer within 800 ms",
        ),
    ] {
        let primary = primary(answer).await;
        let backup = backup().await;
        let (daemon, _dir) = daemon(&primary.uri(), &backup, &[]);
        assert_eq!(daemon.send("ACME").await, Err(want.to_owned()));
        // One request in all: not retried, not handed on.
        assert_eq!(
            (count(&primary).await, count(&backup).await),
            (1, 0),
            "{want}"
        );
    }
}

#[tokio::test]
async fn a_primary_cut_off_at_the_deadline_counts_against_its_breaker() {
    let primary = primary(created(SID).set_delay(Duration::from_millis(1500))).await;
    let backup = backup().await;
    let (daemon, _dir) = daemon(&primary.uri(), &backup, &["--breaker-failures=1"]);
    assert_eq!(
        daemon.send("ACME").await,
        Err("ERR timeout: no answer within 800 ms".to_owned())
    );
    daemon.wait_for_log("breaker open");
    // Skipped now: the next message goes straight to the backup.
    assert_eq!(daemon.send("ACME").await, Ok(SID2.to_owned()));
    assert_eq!((count(&primary).await, count(&backup).await), (1, 1));
}

#[tokio::test]
async fn without_a_failover_list_the_primary_keeps_no_breaker() {
    let primary = primary(ResponseTemplate::new(503)).await;
    let daemon = Daemon::start(&primary.uri(), Options::default());
    for _ in 0..4 {
        assert_eq!(
            daemon.send("ACME").await,
            Err("ERR unavailable: Twilio answered HTTP 503".to_owned())
        );
    }
    // Each send still reached it; nothing claims it is being skipped.
    assert_eq!(count(&primary).await, 4);
    assert!(!daemon.log().contains("breaker open"), "{}", daemon.log());
}

#[tokio::test]
async fn a_slow_primary_within_the_deadline_is_the_only_sender() {
    let primary = primary(created(SID).set_delay(Duration::from_millis(300))).await;
    let backup = backup().await;
    let (daemon, _dir) = daemon(&primary.uri(), &backup, &[]);
    assert_eq!(daemon.send("ACME").await, Ok(SID.to_owned()));
    assert_eq!(count(&backup).await, 0);
}

#[tokio::test]
async fn the_breaker_skips_a_failing_primary_and_returns_to_it_when_it_recovers() {
    let primary = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&primary)
        .await;
    Mock::given(method("POST"))
        .respond_with(created(SID))
        .mount(&primary)
        .await;
    let backup = backup().await;
    let metrics = dead_address().to_string();
    let (daemon, _dir) = daemon(
        &primary.uri(),
        &backup,
        &[
            "--breaker-failures=2",
            "--breaker-cooldown-secs=1",
            &format!("--metrics={metrics}"),
        ],
    );
    let metric =
        |text: &str, line: &str| assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    let send = || async { daemon.send("ACME").await };
    // Two 503s: each call ends with its ERR (a 5xx may have sent the message, so it is not
    // handed on), and the breaker opens.
    let failed = Err("ERR unavailable: Twilio answered HTTP 503".to_owned());
    assert_eq!(send().await, failed);
    assert_eq!(send().await, failed);
    daemon.wait_for_log("breaker open");
    // Open: the primary is not even asked.
    assert_eq!(send().await, Ok(SID2.to_owned()));
    assert_eq!((count(&primary).await, count(&backup).await), (2, 1));
    let (_, text) = scrape(&metrics, "/metrics").await;
    metric(&text, "otp_sidecar_failovers_total 0");
    metric(&text, "otp_sidecar_breaker_open{provider=\"primary\"} 1");

    // After the cooldown one call tries the primary, which has recovered.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(send().await, Ok(SID.to_owned()));
    assert_eq!(send().await, Ok(SID.to_owned()));
    assert_eq!((count(&primary).await, count(&backup).await), (4, 1));
    daemon.wait_for_log("breaker closed");
    let (_, text) = scrape(&metrics, "/metrics").await;
    metric(&text, "otp_sidecar_breaker_open{provider=\"primary\"} 0");
}

#[test]
fn failover_lists_are_checked_at_start_and_shown_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[[failover]]\nname = \"dublin\"\ntwilio_api_url = \"https://api.dublin.ie1.twilio.com\"\n",
    )
    .unwrap();
    let good = good.to_str().unwrap();
    let (passed, stdout, stderr) = check(&["--breaker-failures=5", "--config", good]);
    assert!(passed, "{stderr}");
    assert!(
        stdout.contains(
            "failover:     dublin (the primary's account at https://api.dublin.ie1.twilio.com/); \
             a provider is skipped after 5 faults in a row, for 30 s"
        ),
        "{stdout}"
    );

    for (text, needle) in [
        (
            "[[failover]]\nname = \"b\"\nsender = \"ACME\"\n[[failover]]\nname = \"b\"\nsender = \"ACME\"\n",
            "used twice",
        ),
        ("[[failover]]\nname = \"b\"\n", "is the primary again"),
        (
            "[[failover]]\nname = \"b\"\nsender = \"not a sender!\"\n",
            "sender must be",
        ),
        (
            "[[failover]]\nname = \"b\"\ncredentials = { account_sid = \"AC123\", auth_token_file = \"/nonexistent\" }\n",
            "failover \"b\"",
        ),
        (
            "verify_service_sid = \"VA0123456789abcdef0123456789abcdef\"\n[[failover]]\nname = \"b\"\nsender = \"ACME\"\n",
            "not to Verify mode",
        ),
        ("[[failover]]\nname = \"b\"\ncolour = \"red\"\n", "unknown field"),
    ] {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, text).unwrap();
        check_refuses(&["--config", config.to_str().unwrap()], needle);
    }
}

/// A Twilio whose account `ac` answers active to `ac:token` and 401 (code 20003) otherwise.
async fn account_api(ac: &str, token: &str) -> MockServer {
    let server = MockServer::start().await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{ac}:{token}"));
    Mock::given(method("GET"))
        .and(path(format!("/2010-04-01/Accounts/{ac}.json")))
        .and(header("authorization", format!("Basic {basic}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "sid": ac, "status": "active",
        })))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(serde_json::json!({
            "code": 20003, "message": "Authenticate", "status": 401,
        })))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn check_online_asks_each_failover_provider_for_its_account() {
    let primary = account_api(AC, TOKEN).await;
    let good = account_api(AC2, TOKEN2).await;
    // Another account whose token this configuration has wrong.
    let bad = account_api(
        "AC00000000000000000000000000000003",
        "the-right-token-0a1b2c3d",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token2 = dir.path().join("token2");
    std::fs::write(&token2, TOKEN2).unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "a-wrong-token-9f8e7d6c5b4a").unwrap();
    let entry = |name: &str, api: &MockServer, ac: &str, file: &std::path::Path| {
        format!(
            "[[failover]]\nname = \"{name}\"\ntwilio_api_url = \"{}\"\n\
             credentials = {{ account_sid = \"{ac}\", auth_token_file = \"{}\" }}\n",
            api.uri(),
            file.display()
        )
    };
    let good_entry = entry("dublin", &good, AC2, &token2);
    let bad_entry = entry("sydney", &bad, "AC00000000000000000000000000000003", &wrong);
    let config = dir.path().join("otp.toml");
    let run = |text: &str| {
        std::fs::write(&config, text).unwrap();
        let api = primary.uri();
        let conf = format!("--config={}", config.display());
        check(&["--online", "--twilio-api-url", &api, &conf])
    };

    let (passed, stdout, stderr) = run(&format!("{good_entry}{bad_entry}"));
    assert!(!passed, "{stdout}\n{stderr}");
    let asked = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.starts_with("twilio: ") || l.starts_with("failover "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        asked(&stdout),
        [
            "twilio: credentials accepted (account ACfe…ce status active)",
            "failover dublin: credentials accepted (account AC00…02 status active)",
            "failover sydney: credentials refused (HTTP 401, code 20003)",
        ],
        "{stderr}"
    );
    for secret in [TOKEN, TOKEN2, "a-wrong-token-9f8e7d6c5b4a"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret}"
        );
    }
    // Each provider was asked with its own account.
    assert_eq!(good.received_requests().await.unwrap().len(), 1);
    assert_eq!(bad.received_requests().await.unwrap().len(), 1);

    let (passed, stdout, stderr) = run(&good_entry);
    assert!(passed, "{stdout}\n{stderr}");
    assert_eq!(asked(&stdout).len(), 2, "{stdout}");
}
