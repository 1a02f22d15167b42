//! Shortcuts several test files share: a dry-run daemon, and reading what the daemon and the
//! mock Twilio saw (a command's output, a form field, the Lookup requests, the metrics).

use super::{form, log_field, scrape, Daemon, Options};

/// A daemon in dry-run mode (nothing reaches Twilio; its URL is a closed port).
pub fn dry_daemon() -> Daemon {
    Daemon::start("http://127.0.0.1:9", Options::default().arg("--dry-run"))
}

/// A command's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One field of the form the daemon sent Twilio.
pub fn field(request: &wiremock::Request, name: &str) -> Option<String> {
    form(request)
        .into_iter()
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// How many Lookup requests the mock Twilio received.
pub async fn lookups(server: &wiremock::MockServer) -> usize {
    let all = server.received_requests().await.unwrap();
    all.iter()
        .filter(|r| r.url.path().starts_with("/v2/PhoneNumbers/"))
        .count()
}

/// The daemon's metrics page: the HTTP status and the text.
pub async fn metrics_of(daemon: &Daemon) -> (u16, String) {
    let addr = log_field(&daemon.ready, "metrics").expect("a metrics address");
    scrape(&addr, "/metrics").await
}
