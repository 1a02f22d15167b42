//! The status page on the metrics listener: `/status.json` and the page at `/` after known
//! traffic, figures checked exactly; the budget's gauges by account.

use crate::common::*;
use wiremock::matchers::{body_string_contains, method};
use wiremock::Mock;

const DENIED: &str = "+4915112345678";
const REFUSED_BY_TWILIO: &str = "+15005550001";

/// A daemon (JSON logs, metrics on) after two sends, then refusals of four reasons: a rate
/// limit, a country rule, Twilio's 21211, a number that is not one. Its metrics address.
pub(crate) async fn after_known_traffic() -> (Daemon, String, wiremock::MockServer) {
    let twilio = twilio_except(
        Mock::given(method("POST"))
            .and(body_string_contains("To=%2B15005550001"))
            .respond_with(twilio_error(400, 21211, "Invalid 'To' Phone Number")),
    )
    .await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args([
            "--metrics=127.0.0.1:0",
            "--log-format=json",
            "--rate-limit-phone=2/60s",
            "--deny-countries=DE",
        ]),
    );
    let addr = log_field(&daemon.ready, "metrics").unwrap();
    let mut client = daemon.unix_client().await;
    for _ in 0..2 {
        assert_eq!(
            client.send_otp(OTP, PHONE, "ACME").await.unwrap(),
            Ok(SID.into())
        );
    }
    let refusals = [
        (PHONE, "ERR rate_limited"),
        (DENIED, "ERR blocked: country"),
        (REFUSED_BY_TWILIO, "ERR twilio 21211"),
        ("12345", "ERR invalid_phone"),
    ];
    for (phone, want) in refusals {
        let reply = client.send_otp(OTP, phone, "ACME").await.unwrap();
        assert!(
            reply.as_ref().is_err_and(|e| e.starts_with(want)),
            "{reply:?}"
        );
    }
    (daemon, addr, twilio)
}

/// The `phone` field of the refusals' log lines, oldest first.
fn logged_phones(daemon: &Daemon) -> Vec<String> {
    poll_until(
        std::time::Duration::from_secs(5),
        || {
            let phones: Vec<String> = daemon
                .log()
                .lines()
                .filter(|l| l.contains("\"outcome\":\"error\""))
                .filter_map(|l| log_field(l, "phone"))
                .collect();
            (phones.len() == 4).then_some(phones)
        },
        || format!("four refusal lines in:\n{}", daemon.log()),
    )
}

fn no_secret_in(text: &str) {
    for secret in [OTP, PHONE, DENIED, REFUSED_BY_TWILIO, TOKEN, AC] {
        assert!(!text.contains(secret), "{secret} in:\n{text}");
    }
}

#[tokio::test]
async fn status_json_counts_known_traffic_and_masks_as_the_logs_do() {
    let (daemon, addr, _twilio) = after_known_traffic().await;
    let phones = logged_phones(&daemon);
    let (code, body) = scrape(&addr, "/status.json").await;
    assert_eq!(code, 200);
    no_secret_in(&body);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["status"], "ok");
    assert_eq!(doc["mode"], "twilio");
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
    assert!(doc["uptime_s"].is_u64());
    assert_eq!(
        doc["health"]["status"], "ok",
        "the health map as ping shows it"
    );
    assert_eq!(doc["state_store"]["status"], "memory");
    assert_eq!(doc["sent"], 2);
    assert_eq!(
        doc["refused"],
        serde_json::json!({"rate_limited": 1, "blocked": 1, "twilio": 1, "invalid_phone": 1})
    );
    assert_eq!(doc["blocked"], serde_json::json!({"country": 1}));
    assert_eq!(doc["rate_limited"], serde_json::json!({"phone": 1}));
    assert_eq!(
        doc["twilio_budget"],
        serde_json::json!([{"account": "ACfe…ce", "in_use": 0, "size": 100}])
    );
    assert_eq!(
        doc["providers"],
        serde_json::json!([{"name": "primary", "account": "ACfe…ce", "breaker": "closed"}])
    );
    // Sends by country come from the pumping guard (monitor by default); what nothing
    // exported yet is said so, not zero.
    assert_eq!(doc["countries"]["enabled"], true);
    assert_eq!(doc["pumping"]["enabled"], false);

    // Newest first, each as its log line shows it.
    let recent = doc["recent_refusals"].as_array().unwrap();
    let shown: Vec<(&str, &str, &str)> = recent
        .iter()
        .map(|r| {
            (
                r["phone"].as_str().unwrap(),
                r["reason"].as_str().unwrap(),
                r["detail"].as_str().unwrap(),
            )
        })
        .collect();
    let logged: Vec<&str> = phones.iter().rev().map(String::as_str).collect();
    assert_eq!(
        shown,
        [
            (logged[0], "invalid_phone", ""),
            (logged[1], "twilio", "21211"),
            (logged[2], "blocked", "country"),
            (logged[3], "rate_limited", "phone"),
        ]
    );
    assert!(recent.iter().all(|r| r["at"].is_u64()));

    // The last hour: the running minute holds all of it.
    let minutes = doc["last_hour"].as_array().unwrap();
    let last = minutes.last().unwrap();
    assert_eq!(last["sent"], 2);
    assert_eq!(last["refused"], doc["refused"]);
    assert!(last["twilio_p50_ms"].is_u64() && last["twilio_p99_ms"].is_u64());
}

#[tokio::test]
async fn the_page_shows_the_same_figures_in_tables_under_a_strict_policy() {
    let (_daemon, addr, _twilio) = after_known_traffic().await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = client.get(format!("http://{addr}/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.starts_with("default-src 'none'; style-src 'sha256-"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe") && !csp.contains("http"), "{csp}");
    let page = response.text().await.unwrap();
    no_secret_in(&page);
    for cell in [
        "<td>sent</td><td>2</td>",
        "<td>rate_limited</td><td>1</td>",
        "<td>blocked</td><td>1</td>",
        "<td>twilio</td><td>1</td>",
        "<td>invalid_phone</td><td>1</td>",
        "<td>country</td><td>1</td>",
        "<td>phone</td><td>1</td>",
        "<td>Twilio budget in use (ACfe…ce)</td><td>0 of 100</td>",
        "<td>primary</td><td>ACfe…ce</td><td>closed</td>",
        "<td>+31*****5678</td><td>rate_limited</td><td>phone</td>",
        "<td>twilio</td><td>21211</td>",
        "<td>NL</td><td>2</td>",
        "Pumping guard: not enabled",
        "Codes issued by the daemon: not enabled",
    ] {
        assert!(page.contains(cell), "{cell} missing from:\n{page}");
    }
    assert!(page.contains("<svg") && page.contains("http-equiv=\"refresh\""));
    // Nothing to fetch: no script, no reference off the page but its own links.
    assert!(!page.contains("<script"));
    for attr in page.split(" href=\"").skip(1) {
        assert!(attr.starts_with('/'), "a link off the listener: {attr:.40}");
    }
    assert!(!page.contains(" src="));
    assert_eq!(scrape(&addr, "/nothing").await.0, 404);
}

/// The failover provider's account.
const AC2: &str = "AC00000000000000000000000000000002";

/// A configuration file naming one failover provider, `backup` at `api` on account [`AC2`].
pub(crate) fn failover_config(api: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("backup_token");
    std::fs::write(&token, "backup-token-5e6f7a8b9c0d1e2f3a4b\n").unwrap();
    let config = dir.path().join("otp-sidecar.toml");
    std::fs::write(
        &config,
        format!(
            "[[failover]]\nname = \"backup\"\ntwilio_api_url = \"{api}\"\n\
             credentials = {{ account_sid = \"{AC2}\", auth_token_file = \"{}\" }}\n",
            token.display()
        ),
    )
    .unwrap();
    (dir, config)
}

/// A failover provider on another account: its budget is its own series, not mixed in.
#[tokio::test]
async fn budget_gauges_name_their_account() {
    let backup = twilio_answering(created(SID)).await;
    let primary = twilio_answering(created(SID)).await;
    let (_dir, config) = failover_config(&backup.uri());
    let daemon = Daemon::start(
        &primary.uri(),
        Options::default().args([
            format!("--config={}", config.display()),
            "--metrics=127.0.0.1:0".into(),
            "--twilio-max-concurrency=7".into(),
        ]),
    );
    let addr = log_field(&daemon.ready, "metrics").unwrap();
    let (_, text) = scrape(&addr, "/metrics").await;
    for line in [
        r#"otp_sidecar_twilio_budget_size{account="ACfe…ce"} 7"#,
        r#"otp_sidecar_twilio_budget_size{account="AC00…02"} 7"#,
        r#"otp_sidecar_twilio_budget_in_use{account="ACfe…ce"} 0"#,
        r#"otp_sidecar_twilio_budget_in_use{account="AC00…02"} 0"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from:\n{text}"
        );
    }
    assert!(!text.contains(AC2) && !text.contains(AC));
    let (_, body) = scrape(&addr, "/status.json").await;
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["twilio_budget"].as_array().map(Vec::len), Some(2));
    assert_eq!(doc["providers"][1]["name"], "backup");
    assert_eq!(doc["providers"][1]["account"], "AC00…02");
}
