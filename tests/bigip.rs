//! The BIG-IP side against the real daemon: the ILX forwarder under Node with a stand-in
//! f5-nodejs, and the APM iRules under tclsh with stand-ins for the iRule commands.

mod common;

use common::*;
use wiremock::matchers::{body_string_contains, method};
use wiremock::{Mock, MockServer};

/// Twilio: 201 for every number but +31600000000, which Twilio calls invalid (21211).
async fn twilio() -> MockServer {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_string_contains("To=%2B31600000000"))
        .respond_with(twilio_error(400, 21211, "Invalid 'To' Phone Number"))
        .with_priority(1)
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .respond_with(created(SID))
        .mount(&twilio)
        .await;
    twilio
}

fn assert_ran(out: std::process::Output, what: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{stderr}");
}

#[tokio::test]
async fn ilx_forwarder_against_the_real_daemon() {
    let twilio = twilio().await;
    let out = tokio::process::Command::new("node")
        .arg("--test")
        .arg(repo_file("tests/ilx/forwarder.test.js"))
        .env("OTP_SIDECAR_BIN", env!("CARGO_BIN_EXE_otp-sidecar"))
        .env("TWILIO_MOCK_URL", twilio.uri())
        .env("NODE_PATH", repo_file("tests/ilx/stubs"))
        .output()
        .await
        .expect("run node");
    assert_ran(out, "node --test tests/ilx/forwarder.test.js");
}
