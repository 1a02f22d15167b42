//! The example Grafana dashboard and Prometheus alert rules name only metrics a running
//! daemon exports: every `otp_sidecar_…` name in either file is checked against a scrape.

use std::collections::BTreeSet;

use crate::common::*;

const DASHBOARD: &str = "examples/grafana/otp-sidecar.json";
const ALERTS: &str = "examples/prometheus/otp-sidecar-alerts.yml";

/// Metrics the other round-3 branches add (pumping guard, delivery status). The lead ticks
/// each off (removes it) when the branch that exports it is merged: the test fails for one
/// still listed that the daemon exports, and for any name neither exported nor listed.
const PENDING: &[&str] = &[
    "otp_sidecar_confirmed_total",
    "otp_sidecar_pumping_throttled",
    "otp_sidecar_delivery_total",
];

/// The sample names an exposition can carry: every sample line's name, and those its
/// `# TYPE` lines declare (a family with no label set yet has no sample line).
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let mut parts = declared.split(' ');
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_count", "_sum"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') {
            if let Some(name) = line.split(['{', ' ']).next() {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// Every `otp_sidecar_…` name in `text`.
fn named(text: &str) -> BTreeSet<String> {
    regex_lite::Regex::new(r"otp_sidecar_[a-z0-9_]+")
        .unwrap()
        .find_iter(text)
        .map(|m| m.as_str().to_owned())
        .collect()
}

/// Names used but not exported (less those pending), and pending names now exported.
fn unknown_and_ticked(
    used: &BTreeSet<String>,
    exported: &BTreeSet<String>,
) -> (Vec<String>, Vec<String>) {
    let unknown = used
        .iter()
        .filter(|n| !exported.contains(*n) && !PENDING.contains(&n.as_str()))
        .cloned()
        .collect();
    let ticked = PENDING
        .iter()
        .filter(|n| exported.contains(**n))
        .map(|n| (*n).to_owned())
        .collect();
    (unknown, ticked)
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alert_rules_name_is_exported() {
    let dashboard = std::fs::read_to_string(repo_file(DASHBOARD)).unwrap();
    let alerts = std::fs::read_to_string(repo_file(ALERTS)).unwrap();
    // The dashboard is Grafana JSON whose panels query Prometheus.
    let json: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let exprs = json["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter(|t| t["expr"].is_string())
        .count();
    assert!(exprs >= 15, "{exprs} queries");
    assert!(alerts.matches("- alert: ").count() >= 10);

    // Traffic that makes the families appear: sends, refusals, a Twilio error; then a
    // breaker that opens, a state store that is down, a busy answer.
    let (_daemon, addr, _twilio) = crate::status_page::after_known_traffic().await;
    let (_, mut text) = scrape(&addr, "/metrics").await;
    text.push_str(&unusual_traffic().await);
    let exported = exported(&text);
    let mut used = named(&dashboard);
    used.extend(named(&alerts));
    assert!(used.len() > 20, "{used:?}");
    let (unknown, ticked) = unknown_and_ticked(&used, &exported);
    assert!(
        unknown.is_empty(),
        "named in {DASHBOARD} or {ALERTS} but not exported: {unknown:?}\n{text}"
    );
    assert!(
        ticked.is_empty(),
        "exported now, tick off PENDING in tests/daemon/status_dashboards.rs: {ticked:?}"
    );
}

/// The exposition after what a quiet day never shows: the primary unreachable (the backup
/// takes over, the breaker opens), the state store down (calls fall back), a deadline below
/// the first guess of Twilio's answer time (busy).
async fn unusual_traffic() -> String {
    // The backup's account is another: any POST is a send.
    let backup = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(created(SID))
        .mount(&backup)
        .await;
    let (_dir, config) = crate::status_page::failover_config(&backup.uri());
    let down = format!("http://{}", dead_address());
    let daemon = Daemon::start(
        &down,
        Options::default()
            .args([
                format!("--config={}", config.display()),
                "--metrics=127.0.0.1:0".into(),
                "--breaker-failures=1".into(),
                format!("--state=redis://{}", dead_address()),
                "--rate-limit-phone=100/60s".into(),
            ])
            .env(
                "OTP_SIDECAR_STATE_KEY",
                "status-dashboards-key-0123456789abcdef",
            ),
    );
    assert_eq!(daemon.send("ACME").await, Ok(SID.to_owned()));
    let metrics = log_field(&daemon.ready, "metrics").unwrap();
    let (_, mut text) = scrape(&metrics, "/metrics").await;
    // The status page tells the same: the primary's breaker open, the backup's closed.
    let (_, body) = scrape(&metrics, "/status.json").await;
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let breakers: Vec<(&str, &str)> = doc["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["breaker"].as_str().unwrap()))
        .collect();
    assert_eq!(breakers, [("primary", "open"), ("backup", "closed")]);
    assert_eq!(doc["state_store"]["fallbacks"]["local"], 1, "{body}");

    let twilio = twilio_answering(created(SID)).await;
    let short = Daemon::start(
        &twilio.uri(),
        Options::default().args([
            "--metrics=127.0.0.1:0",
            "--deadline-ms=200",
            "--keep-warm-secs=0",
        ]),
    );
    short.wait_for_log("leaves no room for the 250 ms");
    let _probe = short.send("ACME").await;
    let busy = short.send("ACME").await;
    assert!(busy.is_err_and(|e| e.starts_with("ERR unavailable: busy")));
    let (_, more) = scrape(&log_field(&short.ready, "metrics").unwrap(), "/metrics").await;
    text.push_str(&more);
    text
}

#[test]
fn a_misspelt_name_is_caught() {
    let text = "# TYPE otp_sidecar_calls counter\n\
                otp_sidecar_calls_total{method=\"ping\"} 1\n\
                # TYPE otp_sidecar_twilio_request_duration_seconds histogram\n";
    let exported = exported(text);
    let used = named(
        "rate(otp_sidecar_calls_total[5m]) otp_sidecar_twilio_request_duration_seconds_bucket \
         otp_sidecar_delivery_total otp_sidecar_cals_total",
    );
    let (unknown, ticked) = unknown_and_ticked(&used, &exported);
    assert_eq!(unknown, ["otp_sidecar_cals_total"]);
    assert!(ticked.is_empty());
}
