//! The status page in a real browser: Debian's Chromium, headless, renders it from a running
//! daemon after known traffic. No console message (a Content-Security-Policy violation, a
//! script error log one), no request off loopback (every one goes to a recording proxy, and
//! no host name but loopback resolves), the figures in the DOM, a screenshot for the README.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

/// Where the README's screenshot lives; rewritten when `OTP_SIDECAR_UPDATE_SCREENSHOT=1`
/// (otherwise the test's own copy goes to the target directory, so a test run leaves the
/// tree clean).
const SCREENSHOT: &str = "docs/img/status-page.png";

/// Chromium's own background requests (time, component updates, sign-in), not the page's: the
/// proxy sees them whatever the page does.
const CHROMIUM_OWN: &[&str] = &[".google.com", ".googleapis.com", ".gvt1.com"];

/// A proxy that answers nothing and records the first line of every request sent to it: with
/// it as Chromium's proxy, every request for anything but loopback lands here (an address
/// given as digits too, which no resolver rule catches).
fn recording_proxy() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut line = String::new();
            let _ = BufReader::new(stream).read_line(&mut line);
            record.lock().unwrap().push(line.trim_end().to_owned());
        }
    });
    (addr, seen)
}

/// The host a proxied request line names (`GET http://host/…`, `CONNECT host:443`).
fn requested_host(line: &str) -> String {
    let target = line.split(' ').nth(1).unwrap_or_default();
    let rest = target.split("://").nth(1).unwrap_or(target);
    let authority = rest.split('/').next().unwrap_or_default();
    authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .to_owned()
}

/// Runs headless Chromium on `url` with `mode` (`--dump-dom`, `--screenshot=…`): its stdout,
/// and its stderr's console lines; every request off loopback goes to `proxy`. Fails, saying
/// so, when Chromium is not installed.
fn chromium(url: &str, mode: &str, profile: &Path, proxy: &str) -> (String, Vec<String>) {
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
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--proxy-server=http://{proxy}"))
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

#[test]
fn a_request_line_names_its_host() {
    assert_eq!(
        requested_host("GET http://a.example/x.png HTTP/1.1"),
        "a.example"
    );
    assert_eq!(
        requested_host("CONNECT update.googleapis.com:443 HTTP/1.1"),
        "update.googleapis.com"
    );
    assert_eq!(
        requested_host("GET http://93.184.216.34:8080/y HTTP/1.1"),
        "93.184.216.34"
    );
}

#[tokio::test]
async fn chromium_renders_the_page_with_no_console_message_and_nothing_off_loopback() {
    let (_daemon, addr, _twilio) = crate::status_page::after_known_traffic().await;
    let url = format!("http://{addr}/");
    let dir = tempfile::tempdir().unwrap();
    let (proxy, off_loopback) = recording_proxy();

    let (dom, console) = chromium(&url, "--dump-dom", &dir.path().join("profile"), &proxy);
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
        &proxy,
    );
    assert!(console.is_empty(), "console messages: {console:#?}");
    // The proxy takes connections one at a time: once a last one of ours is recorded, every
    // one Chromium made before it is too.
    {
        use std::io::Write;
        let mut last = std::net::TcpStream::connect(&proxy).unwrap();
        last.write_all(b"END\r\n").unwrap();
    }
    let recorded = poll_until(
        Duration::from_secs(10),
        || {
            let seen = off_loopback.lock().unwrap().clone();
            seen.iter().any(|l| l == "END").then_some(seen)
        },
        || "the recording proxy never saw its last connection".to_owned(),
    );
    let page_asked: Vec<String> = recorded
        .iter()
        .filter(|line| *line != "END")
        .filter(|line| {
            let host = requested_host(line);
            !CHROMIUM_OWN.iter().any(|own| host.ends_with(own))
        })
        .cloned()
        .collect();
    assert!(
        page_asked.is_empty(),
        "requests off loopback: {page_asked:?}"
    );
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
