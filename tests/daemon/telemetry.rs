//! What operators see of the service: the metrics it counts and where it serves them, and its
//! log lines (JSON, buffered, journald, and calls whose caller hung up).

use std::time::Duration;

use crate::common::*;
use tokio::io::AsyncWriteExt;
use wiremock::matchers::method;
use wiremock::Mock;

#[tokio::test]
async fn metrics_count_known_traffic() {
    let twilio = twilio_except(
        Mock::given(method("POST"))
            .and(wiremock::matchers::body_string_contains(
                "To=%2B15005550001",
            ))
            .respond_with(twilio_error(400, 21211, "Invalid 'To' Phone Number")),
    )
    .await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().arg("--metrics=127.0.0.1:0"),
    );
    let addr = log_field(&daemon.ready, "metrics").unwrap();
    let mut client = daemon.unix_client().await;
    for _ in 0..2 {
        assert!(client.send_otp(OTP, PHONE, "ACME").await.unwrap().is_ok());
    }
    let _ = client.send_otp(OTP, "12345", "ACME").await.unwrap();
    let _ = client.send_otp(OTP, "+15005550001", "ACME").await.unwrap();
    let _ = client.call("ping", vec![]).await.unwrap();
    let _ = client.call("no-such-method", vec![]).await.unwrap();

    let (status, text) = scrape(&addr, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        r#"otp_sidecar_calls_total{method="sendOTP",outcome="ok",reason=""} 2"#,
        r#"otp_sidecar_calls_total{method="sendOTP",outcome="error",reason="invalid_phone"} 1"#,
        r#"otp_sidecar_calls_total{method="sendOTP",outcome="error",reason="twilio"} 1"#,
        r#"otp_sidecar_calls_total{method="ping",outcome="ok",reason=""} 1"#,
        r#"otp_sidecar_calls_total{method="unknown",outcome="error",reason="bad_request"} 1"#,
        // The warm-up GET and three POSTs.
        "otp_sidecar_twilio_request_duration_seconds_count 4",
        "otp_sidecar_twilio_retries_total 0",
        "otp_sidecar_connections 1",
        "otp_sidecar_in_flight 0",
        "otp_sidecar_connections_refused_total 0",
        &format!(
            r#"otp_sidecar_build_info{{version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from:\n{text}"
        );
    }
    assert!(!text.contains(OTP), "no OTP in metrics");
    assert_eq!(scrape(&addr, "/nothing").await.0, 404);
}

/// A scraper that pipelines requests and never reads their answers blocks the daemon's
/// writes to it; without a bound it would keep its slot (one of 32) for ever. The daemon ends
/// such a connection after 30 s (and 5 s of grace): read at last, it holds fewer answers than
/// it asked for, then its end.
#[tokio::test]
async fn a_scraper_that_never_reads_is_let_go() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().arg("--metrics=127.0.0.1:0"),
    );
    let addr: std::net::SocketAddr = log_field(&daemon.ready, "metrics")
        .unwrap()
        .parse()
        .unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    // A small window: the daemon's writes block once the kernel's buffers are full.
    socket.set_recv_buffer_size(2048).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    const ASKED: usize = 3000;
    let requests = "GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(ASKED);
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(requests.as_bytes()).await;
        writer
    });
    tokio::time::sleep(Duration::from_secs(37)).await;
    let mut answers = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut answers),
    )
    .await;
    writing.abort();
    let answered = String::from_utf8_lossy(&answers)
        .matches("HTTP/1.1 200")
        .count();
    assert!(
        read.is_ok(),
        "the connection was still open ({answered} answers read)"
    );
    assert!(answered < ASKED, "all {answered} requests were answered");
    // And the listener serves the next scraper.
    assert_eq!(scrape(&addr.to_string(), "/status.json").await.0, 200);
}

#[test]
fn metrics_listen_on_loopback_only() {
    let out = command()
        .args(["check", "--dry-run", "--metrics=0.0.0.0:9464"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback only"));
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_without_secrets() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default().arg("--log-format=json"));
    assert_eq!(daemon.send("ACME").await, Ok(SID.to_owned()));
    let line = daemon.wait_for_log("\"outcome\":\"sent\"");
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json["level"], "INFO");
    assert_eq!(json["sid"], SID);
    assert_eq!(json["phone"], "+31*****5678");
    let log = daemon.log();
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    for secret in [OTP, TOKEN, PHONE] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

/// Lines wait while the runtime is busy and leave together (past 16 KiB, or when it idles):
/// none may be torn, lost, or held back at exit.
#[tokio::test]
async fn buffered_log_lines_leave_whole_and_none_is_held_back_at_exit() {
    let twilio = twilio_answering(created(SID)).await;
    let mut daemon = Daemon::start(&twilio.uri(), Options::default().arg("--log-format=json"));
    let mut calls = Vec::new();
    for _ in 0..12 {
        let mut client = daemon.unix_client().await;
        calls.push(async move {
            for _ in 0..25 {
                assert_eq!(
                    client.send_otp(OTP, PHONE, "ACME").await.unwrap(),
                    Ok(SID.to_owned())
                );
            }
        });
    }
    futures_util::future::join_all(calls).await;
    daemon.signal("TERM");
    assert!(daemon.wait_exit().success());
    daemon.wait_for_log("\"stopped\"");
    let log = daemon.log();
    let mut sent = 0;
    for line in log.lines() {
        let json: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a torn or merged line ({e}): {line}"));
        sent += usize::from(json["outcome"] == "sent");
    }
    assert_eq!(sent, 300);
    assert!(log.lines().last().unwrap().contains("\"stopped\""), "{log}");
}

#[tokio::test]
async fn calls_whose_caller_hung_up_are_still_logged_once() {
    // A connection writes each call's log line after its reply. Here the caller sends two
    // calls and hangs up: the first reply's write fails, the connection ends, and the second
    // call, still at Twilio, has nobody to reply to — its own task must write its line.
    use wiremock::matchers::body_string_contains;
    let twilio = wiremock::MockServer::start().await;
    for (phone, delay) in [("31612345678", 200), ("31687654321", 800)] {
        Mock::given(method("POST"))
            .and(body_string_contains(phone))
            .respond_with(created(SID).set_delay(Duration::from_millis(delay)))
            .mount(&twilio)
            .await;
    }
    let options = Options::default().env("RUST_LOG", "debug");
    let daemon = Daemon::start(&twilio.uri(), options);
    let mut socket = tokio::net::UnixStream::connect(&daemon.unix).await.unwrap();
    let mut bytes = Vec::new();
    for (id, phone) in [(1, PHONE), (2, "+31687654321")] {
        let call = rmpv::Value::Array(vec![
            0.into(),
            id.into(),
            "sendOTP".into(),
            rmpv::Value::Array(vec![OTP.into(), phone.into(), "ACME".into()]),
        ]);
        rmpv::encode::write_value(&mut bytes, &call).unwrap();
    }
    socket.write_all(&bytes).await.unwrap();
    until_sent(&twilio, 2).await;
    drop(socket);
    let sent = |daemon: &Daemon| daemon.count_log("outcome=\"sent\"");
    poll_until(
        Duration::from_secs(5),
        || (sent(&daemon) == 2).then_some(()),
        || format!("not both calls logged:\n{}", daemon.log()),
    );
    let log = daemon.log();
    assert!(
        log.contains("phone=+31*****5678") && log.contains("phone=+31*****4321"),
        "{log}"
    );
    assert!(!log.contains(PHONE), "{log}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sent(&daemon), 2, "{}", daemon.log());
    // (debug) The connection had ended before the second call came back.
    let closed = log
        .find("connection closed")
        .expect("connection closed line");
    assert!(closed < log.find("+31*****4321").unwrap(), "{log}");
}

#[test]
fn under_journald_lines_carry_a_priority_and_no_timestamp() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let file = std::fs::File::create(&path).unwrap();
    let meta = file.metadata().unwrap();
    let mut child = command()
        .args(["serve", "--dry-run", "--unix"])
        .arg(dir.path().join("otp.sock"))
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stderr(file)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let text = loop {
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains(" ready") || started.elapsed() > Duration::from_secs(10) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    let has = |prefix: &str, level: &str, needle: &str| {
        text.lines().any(|l| {
            l.starts_with(prefix)
                && l[prefix.len()..].trim_start().starts_with(level)
                && l.contains(needle)
        })
    };
    assert!(has("<4>", "WARN", "DRY RUN"), "{text}");
    assert!(has("<6>", "INFO", " ready"), "{text}");
    // journald stamps the time itself.
    assert!(
        !text.contains(&format!("{}-", 2026)) && !text.contains("Z "),
        "{text}"
    );
}
