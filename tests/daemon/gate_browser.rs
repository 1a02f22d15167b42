//! The LTM gate's page in headless Chromium: served through a loopback HTTP server that hands
//! each request to the rule under tclsh (`gate.rs`'s driver) against the real daemon; the
//! form is submitted with a wrong code and the page shows the error; the screenshot in
//! docs/ltm-gate.md comes from here.

use std::process::Command;

use crate::common::*;
use crate::gate::Gate;

/// The gate served to a real browser: a loopback HTTP server hands each request to the rule
/// (adding the number's header, as the trusted hop in front would) and answers what the rule
/// answers. With `?autosubmit` the first page gets a script that types a wrong code and
/// clicks Continue (the test's only change to the page; its CSP, which forbids scripts, is
/// dropped for that one page).
async fn serve_to_browser(
    gate: Gate,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gate = std::sync::Arc::new(std::sync::Mutex::new(gate));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen_by_server = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let gate = gate.clone();
            let seen = seen_by_server.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let mut lines = head.lines();
                let first: Vec<String> = lines
                    .next()
                    .unwrap_or_default()
                    .split(' ')
                    .map(str::to_owned)
                    .collect();
                let mut headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .filter(|(k, _)| {
                        ["host", "cookie", "origin", "content-length"]
                            .contains(&k.to_ascii_lowercase().as_str())
                    })
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + 4 + length {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = String::from_utf8_lossy(&buf[head_end + 4..]).into_owned();
                headers.push(("X-User-Mobile".into(), PHONE.into()));
                let (method, uri) = (first[0].clone(), first.get(1).cloned().unwrap_or_default());
                seen.lock().unwrap().push(format!("{method} {uri}"));
                let refs: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let mut reply = tokio::task::block_in_place(|| {
                    gate.lock().unwrap().request(&method, &uri, &refs, &body)
                });
                if uri.ends_with("?autosubmit") {
                    reply
                        .headers
                        .retain(|(k, _)| k != "Content-Security-Policy");
                    reply.body = reply.body.replace(
                        "</body>",
                        "<script>document.getElementById('code').value='000000';document.getElementById('check').click();</script></body>",
                    );
                }
                let (status, body) = if reply.kind == "pass" {
                    (200, "the protected app".to_owned())
                } else {
                    (reply.status, reply.body)
                };
                let mut out = format!(
                    "HTTP/1.1 {status} X\r\nConnection: close\r\nContent-Length: {}\r\n",
                    body.len()
                );
                for (k, v) in &reply.headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                out.push_str(&body);
                let _ = stream.write_all(out.as_bytes()).await;
            });
        }
    });
    (addr, seen)
}

/// headless Chromium on `url`: `--dump-dom` (the DOM once the page settled) or a screenshot.
fn chromium(url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=5000", "--window-size=640,760"])
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium runs (apt-get install chromium; .ci/run does)");
    text(&out.stdout)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_works_in_a_real_browser() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default());
    let gate = Gate::start(&daemon.tcp.to_string(), &[]);
    let (addr, seen) = serve_to_browser(gate).await;
    let url = format!("http://{addr}/app?autosubmit");
    // The script types a wrong code and clicks Continue: the browser posts the form, and the
    // page it gets back shows the error.
    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || chromium(&url, &["--dump-dom"])
    })
    .await
    .unwrap();
    assert!(dom.contains("That code is not right"), "{dom}");
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().any(|r| r == "POST /.otp-gate"), "{seen:?}");
    // A screenshot of the page with that error; OTP_SIDECAR_UPDATE_SCREENSHOT=1 puts it in
    // the docs (docs/img/ltm-gate.png), which a plain run leaves alone.
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("ltm-gate.png");
    let taken = shot.clone();
    tokio::task::spawn_blocking(move || {
        chromium(&url, &[&format!("--screenshot={}", taken.display())]);
    })
    .await
    .unwrap();
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000),
        "no screenshot"
    );
    if std::env::var_os("OTP_SIDECAR_UPDATE_SCREENSHOT").is_some() {
        std::fs::copy(&shot, repo_file("docs/img/ltm-gate.png")).unwrap();
    }
}
