//! The status page in a real browser: Debian's Chromium, headless, renders it from a running
//! daemon after known traffic with every host name but loopback unresolvable. No console
//! message (a Content-Security-Policy violation, a failed load, a script error all log one),
//! the figures in the DOM, and a screenshot for the README.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// Where the README's screenshot lives; rewritten when `OTP_SIDECAR_UPDATE_SCREENSHOT=1`
/// (otherwise the test's own copy goes to the target directory, so a test run leaves the
/// tree clean).
const SCREENSHOT: &str = "docs/img/status-page.png";

/// Runs headless Chromium on `url` with `mode` (`--dump-dom`, `--screenshot=…`): its stdout,
/// and its stderr's console lines. Fails, saying so, when Chromium is not installed.
fn chromium(url: &str, mode: &str, profile: &Path) -> (String, Vec<String>) {
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            // CI runs as root, where Chromium's sandbox will not start.
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--enable-logging=stderr",
            "--v=0",
            // Nothing but loopback resolves: a request for anything else fails (and logs).
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--window-size=1000,1700",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(mode)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run chromium ({e}): the browser test needs Debian's chromium package \
                 (`apt-get install chromium`; .ci/run installs it)"
            )
        });
    // A hang guard only, no timing assertion: a wedged browser must not wedge the suite.
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("chromium did not finish rendering {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "chromium failed: {stderr}");
    let console = stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

#[tokio::test]
async fn chromium_renders_the_page_with_no_console_message_and_nothing_off_loopback() {
    let (_daemon, addr, _twilio) = crate::status_page::after_known_traffic().await;
    let url = format!("http://{addr}/");
    let dir = tempfile::tempdir().unwrap();

    let (dom, console) = chromium(&url, "--dump-dom", &dir.path().join("profile"));
    assert!(console.is_empty(), "console messages: {console:#?}");
    for shown in [
        "<td>sent</td><td>2</td>",
        "<td>rate_limited</td><td>1</td>",
        "<td>twilio</td><td>21211</td>",
        "<svg",
    ] {
        assert!(dom.contains(shown), "{shown} not rendered in:\n{dom}");
    }
    assert!(!dom.contains(OTP) && !dom.contains(PHONE));

    let shot = dir.path().join("status-page.png");
    let (_, console) = chromium(
        &url,
        &format!("--screenshot={}", shot.display()),
        &dir.path().join("profile"),
    );
    assert!(console.is_empty(), "console messages: {console:#?}");
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    std::fs::write(&kept, &png).unwrap();
    if std::env::var_os("OTP_SIDECAR_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        std::fs::write(repo_file(SCREENSHOT), &png).unwrap();
    }
    // The README shows the committed one.
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    assert!(
        readme.contains(SCREENSHOT),
        "README does not show {SCREENSHOT}"
    );
    assert!(std::fs::read(repo_file(SCREENSHOT)).is_ok_and(|p| p.starts_with(b"\x89PNG")));
}
