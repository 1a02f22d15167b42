//! The daemon as a service: drain on SIGTERM, reload on SIGHUP, systemd notifications and
//! socket activation, limits, the warm Twilio connection, metrics and log formats.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::common::tls::TlsTwilio;
use crate::common::*;
use otp_sidecar::client::{Client, Endpoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::method;
use wiremock::Mock;

/// A daemon whose Twilio answers after `delay`.
async fn slow_twilio(delay: Duration) -> wiremock::MockServer {
    twilio_answering(created(SID).set_delay(delay)).await
}

#[tokio::test]
async fn sigterm_answers_every_call_in_flight_then_exits_0() {
    let twilio = slow_twilio(Duration::from_millis(700)).await;
    let mut daemon = Daemon::start(&twilio.uri(), Options::default());
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..6 {
        let endpoint = if i % 2 == 0 {
            Endpoint::Unix(daemon.unix.clone())
        } else {
            Endpoint::Tcp(daemon.tcp)
        };
        calls.spawn(async move {
            let mut client = Client::connect(&endpoint).await.expect("connect");
            client.send_otp(OTP, PHONE, "ACME").await.expect("answered")
        });
    }
    until_sent(&twilio, 6).await;
    daemon.signal("TERM");
    // New connections are refused at once: the socket file is gone.
    daemon.wait_for_log("SIGTERM: stopping");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!daemon.unix.exists(), "socket file removed while draining");
    while let Some(reply) = calls.join_next().await {
        assert_eq!(reply.expect("task"), Ok(SID.to_owned()));
    }
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    assert_eq!(
        daemon.count_log("outcome=\"sent\"") + daemon.count_log("outcome=sent"),
        6
    );
}

/// Sends one OTP (it must succeed) and returns the SMS body Twilio received for it.
async fn send_for_body(client: &mut Client, twilio: &wiremock::MockServer) -> String {
    assert_eq!(
        client.send_otp(OTP, PHONE, "ACME").await.unwrap(),
        Ok(SID.into())
    );
    let last = sends(twilio).await.pop().expect("a send");
    form(&last)
        .into_iter()
        .find_map(|(k, v)| (k == "Body").then_some(v))
        .expect("a Body field")
}

#[tokio::test]
async fn sighup_reloads_the_template_and_keeps_connections_and_refuses_a_bad_config() {
    let twilio = twilio_answering(created(SID)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("otp-sidecar.toml");
    std::fs::write(&config, "body_template = 'First {otp}'\n").unwrap();
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().arg(format!("--config={}", config.display())),
    );
    let mut client = daemon.unix_client().await;
    assert_eq!(
        send_for_body(&mut client, &twilio).await,
        format!("First {OTP}")
    );

    std::fs::write(&config, "body_template = 'Second {otp}'\n").unwrap();
    daemon.signal("HUP");
    daemon.wait_for_log("configuration reloaded");
    // The same connection, the new template.
    assert_eq!(
        send_for_body(&mut client, &twilio).await,
        format!("Second {OTP}")
    );

    // A typo: refused, logged, and the running configuration stays.
    std::fs::write(&config, "body_templat = 'Third {otp}'\n").unwrap();
    daemon.signal("HUP");
    let refused = daemon.wait_for_log("reload refused");
    assert!(refused.contains("body_templat"), "{refused}");
    assert_eq!(
        send_for_body(&mut client, &twilio).await,
        format!("Second {OTP}")
    );
    // A listener setting is not changed by a reload, and the log says so.
    std::fs::write(&config, "body_template = 'Second {otp}'\nthreads = 2\n").unwrap();
    daemon.signal("HUP");
    daemon.wait_for_log("threads changed: it takes effect at the next restart");
}

#[test]
fn systemd_hears_ready_watchdog_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => {
                    if tx
                        .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return,
            }
        }
    });
    let next = |want: &str| -> String {
        loop {
            let message = rx
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("no {want:?} from the daemon"));
            if message.contains(want) {
                return message;
            }
        }
    };
    let mut daemon = Daemon::start(
        "http://127.0.0.1:9",
        Options::default()
            .arg("--dry-run")
            .env("NOTIFY_SOCKET", path.to_str().unwrap())
            .env("WATCHDOG_USEC", "200000"),
    );
    let ready = next("READY=1");
    assert!(ready.contains("STATUS=serving on unix="), "{ready:?}");
    // At half the 200 ms interval: a few within a second.
    for _ in 0..3 {
        next("WATCHDOG=1");
    }
    daemon.signal("HUP");
    let reloading = next("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    next("READY=1");
    daemon.signal("TERM");
    next("STOPPING=1");
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[tokio::test]
async fn takes_the_sockets_systemd_passes() {
    let daemon = Daemon::start(
        "http://127.0.0.1:9",
        Options {
            socket_activated: true,
            ..Default::default()
        }
        .arg("--dry-run"),
    );
    daemon.wait_for_log("using the sockets systemd passed");
    assert_eq!(
        log_field(&daemon.ready, "unix").as_deref(),
        daemon.unix.to_str()
    );
    // The caller that connected before the daemon ran was answered: [1, 1, nil, "pong"].
    let mut first = daemon.first_caller.as_ref().unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reply = [0u8; 9];
    first.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"\x94\x01\x01\xc0\xa4pong");
    // Both passed sockets serve.
    assert!(daemon.send("ACME").await.unwrap().starts_with("SM"));
    let mut tcp = daemon.tcp_client().await;
    assert!(tcp
        .send_otp(OTP, PHONE, "ACME")
        .await
        .unwrap()
        .unwrap()
        .starts_with("SM"));
}

/// Reads until the daemon closes the connection; true if it did within `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

const PING: &[u8] = b"\x94\x00\x01\xa4ping\x90";
const PONG: &[u8] = b"\x94\x01\x01\xc0\xa4pong";

/// A TCP connection that has been answered one ping (its last activity is now).
async fn pinged(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    ping_on(&mut stream).await;
    stream
}

/// Sends a ping on `stream` and reads the pong.
async fn ping_on<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: &mut S) {
    stream.write_all(PING).await.unwrap();
    let mut reply = [0u8; PONG.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut reply))
        .await
        .expect("a pong within 5 s")
        .expect("a pong");
    assert_eq!(&reply, PONG);
}

/// Sends a sendOTP (msgid 7) on `stream` without waiting for its reply.
async fn start_send<S: tokio::io::AsyncWrite + Unpin>(stream: &mut S) {
    let call = rmpv::Value::Array(vec![
        0.into(),
        7.into(),
        "sendOTP".into(),
        rmpv::Value::Array(vec![OTP.into(), PHONE.into(), "ACME".into()]),
    ]);
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &call).unwrap();
    stream.write_all(&bytes).await.unwrap();
}

/// Reads the reply to [`start_send`]'s call: its result.
async fn sent_reply<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> rmpv::Value {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("a reply within 5 s")
            .expect("read");
        assert!(n > 0, "closed before the reply");
        got.extend_from_slice(&buf[..n]);
        if let Ok(reply) = rmpv::decode::read_value(&mut &got[..]) {
            assert_eq!(
                (&reply[0], &reply[1], &reply[2]),
                (&1.into(), &7.into(), &rmpv::Value::Nil)
            );
            return reply[3].clone();
        }
    }
}

#[tokio::test]
async fn at_the_connection_cap_strangers_make_room_and_served_callers_stay() {
    let twilio = slow_twilio(Duration::from_millis(500)).await;
    // 4 slots, one kept for the Unix socket: TCP holds at most 3.
    let daemon = Daemon::start(&twilio.uri(), Options::default().arg("--max-connections=4"));
    // The oldest connection has a call in flight: it is never the one closed.
    let mut busy = tokio::net::UnixStream::connect(&daemon.unix).await.unwrap();
    start_send(&mut busy).await;
    until_sent(&twilio, 1).await;
    // b was served; c and d never completed a call (a ping does not count).
    let mut b = tokio::net::TcpStream::connect(daemon.tcp).await.unwrap();
    start_send(&mut b).await;
    assert_eq!(sent_reply(&mut b).await, rmpv::Value::from(SID));
    let mut c = pinged(daemon.tcp).await;
    let mut d = tokio::net::TcpStream::connect(daemon.tcp).await.unwrap();
    // A newcomer: the oldest stranger, c, is closed for it, not b (idle longer).
    let mut e = tokio::net::TcpStream::connect(daemon.tcp).await.unwrap();
    assert!(closed_within(&mut c, Duration::from_secs(3)).await);
    daemon.wait_for_log("closing connections that have not completed a call");
    start_send(&mut e).await;
    assert_eq!(sent_reply(&mut e).await, rmpv::Value::from(SID));
    let mut f = tokio::net::TcpStream::connect(daemon.tcp).await.unwrap();
    assert!(closed_within(&mut d, Duration::from_secs(3)).await);
    start_send(&mut f).await;
    assert_eq!(sent_reply(&mut f).await, rmpv::Value::from(SID));
    // Only served callers left on TCP: a newcomer is refused, none of them closed.
    let mut g = tokio::net::TcpStream::connect(daemon.tcp).await.unwrap();
    assert!(closed_within(&mut g, Duration::from_secs(3)).await);
    daemon.wait_for_log("every connection has a call in flight or was served");
    for stream in [&mut b, &mut e, &mut f] {
        ping_on(stream).await;
    }
    assert_eq!(sent_reply(&mut busy).await, rmpv::Value::from(SID));
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_when_all_are_busy_and_idle_ones_time_out() {
    let twilio = slow_twilio(Duration::from_millis(1000)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args(["--max-connections=2", "--idle-timeout-secs=1"]),
    );
    let mut a = tokio::net::TcpStream::connect(daemon.tcp).await.unwrap();
    let mut b = tokio::net::UnixStream::connect(&daemon.unix).await.unwrap();
    start_send(&mut a).await;
    start_send(&mut b).await;
    until_sent(&twilio, 2).await;
    // Both have a call in flight: nothing to close for the newcomer, which is refused.
    let mut third = tokio::net::TcpStream::connect(daemon.tcp).await.unwrap();
    assert!(closed_within(&mut third, Duration::from_millis(500)).await);
    daemon.wait_for_log("connection limit reached and every connection has a call in flight");
    assert_eq!(sent_reply(&mut a).await, rmpv::Value::from(SID));
    assert_eq!(sent_reply(&mut b).await, rmpv::Value::from(SID));

    // Idle for a second: closed, and the slots are free again.
    let mut silent = {
        drop((a, b));
        tokio::time::sleep(Duration::from_millis(100)).await;
        tokio::net::TcpStream::connect(daemon.tcp).await.unwrap()
    };
    let mut slow = tokio::net::TcpStream::connect(daemon.tcp).await.unwrap();
    // Half a request, then nothing: a slow client gets no more time than a silent one.
    slow.write_all(b"\x94\x00\x01\xa4pi").await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await);
    assert!(closed_within(&mut slow, Duration::from_secs(3)).await);
    let mut again = daemon.tcp_client().await;
    assert_eq!(again.call("ping", vec![]).await.unwrap(), Ok("pong".into()));
}

#[tokio::test]
async fn idle_connections_never_take_the_descriptors_the_rpc_socket_needs() {
    // A low open-file limit makes running out cheap: 256, of which 128 stay in reserve.
    let daemon = Daemon::start(
        "http://127.0.0.1:9",
        Options {
            max_open_files: Some(256),
            ..Default::default()
        }
        .args(["--dry-run", "--metrics=127.0.0.1:0"]),
    );
    daemon.wait_for_log("the open-file limit leaves room for 128 connections");
    let metrics: std::net::SocketAddr = log_field(&daemon.ready, "metrics")
        .unwrap()
        .parse()
        .unwrap();
    // 1,100 idle connections to the metrics port: past 32 they are closed at once.
    let mut held = Vec::new();
    for _ in 0..1100 {
        if let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(metrics),
        )
        .await
        {
            held.push(stream);
        }
    }
    let mut client = daemon.unix_client().await;
    let pong = tokio::time::timeout(Duration::from_secs(5), client.call("ping", vec![])).await;
    assert_eq!(
        pong.expect("answered within 5 s").unwrap(),
        Ok("pong".into())
    );
    daemon.wait_for_log("metrics connection limit reached");

    // 300 idle RPC connections under the default max_connections (512), more than the
    // descriptors leave room for: the cap in force is 128, the longest-idle make room.
    let mut idle = Vec::new();
    for _ in 0..300 {
        if let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(daemon.tcp),
        )
        .await
        {
            idle.push(stream);
        }
    }
    let mut fresh = tokio::net::UnixStream::connect(&daemon.unix).await.unwrap();
    ping_on(&mut fresh).await;
    assert_eq!(daemon.count_log("accept failed"), 0, "{}", daemon.log());
    drop((held, idle));
}

#[tokio::test]
async fn calls_past_the_in_flight_cap_wait_for_a_free_slot() {
    let twilio = slow_twilio(Duration::from_millis(300)).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default().arg("--max-in-flight=2"));
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let endpoint = Endpoint::Unix(daemon.unix.clone());
        calls.spawn(async move {
            let mut client = Client::connect(&endpoint).await.expect("connect");
            client.send_otp(OTP, PHONE, "ACME").await.expect("answered")
        });
    }
    // Only two reach Twilio at a time.
    until_sent(&twilio, 2).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(sends(&twilio).await.len(), 2);
    while let Some(reply) = calls.join_next().await {
        assert_eq!(reply.unwrap(), Ok(SID.to_owned()));
    }
    assert_eq!(sends(&twilio).await.len(), 5);
}

/// The soft limit on open files, from /proc (the test opens thousands of sockets).
fn open_file_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1024)
}

#[tokio::test]
async fn memory_stays_bounded_under_ten_thousand_idle_connections_and_garbage() {
    let idle = 10_000.min(open_file_limit().saturating_sub(200));
    let daemon = Daemon::start(
        "http://127.0.0.1:9",
        Options::default().args(["--dry-run", &format!("--max-connections={}", idle + 10)]),
    );
    let before = daemon.rss_kib();
    let mut held = Vec::with_capacity(idle);
    for _ in 0..idle {
        held.push(tokio::net::TcpStream::connect(daemon.tcp).await.unwrap());
    }
    // All accepted (a call still gets through), none costs buffers until it speaks.
    let mut client = daemon.unix_client().await;
    assert_eq!(
        client.call("ping", vec![]).await.unwrap(),
        Ok("pong".into())
    );
    let with_idle = daemon.rss_kib();

    // Garbage: random bytes, and frames that declare 4 GiB. Each closes its connection.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for i in 0..300 {
        let mut stream = tokio::net::TcpStream::connect(daemon.tcp).await.unwrap();
        let junk: Vec<u8> = if i % 3 == 0 {
            b"\x94\x00\x01\xdb\xff\xff\xff\xff".to_vec()
        } else {
            (0..65_536)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect()
        };
        let _ = stream.write_all(&junk).await;
        assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
    }
    let after_garbage = daemon.rss_kib();
    assert_eq!(
        client.call("ping", vec![]).await.unwrap(),
        Ok("pong".into())
    );
    eprintln!(
        "RSS: {before} KiB at start, {with_idle} KiB with {idle} idle connections, \
         {after_garbage} KiB after 300 garbage connections"
    );
    assert!(
        with_idle < before + 48 * 1024,
        "{with_idle} KiB with {idle} idle connections"
    );
    assert!(
        after_garbage < with_idle + 16 * 1024,
        "{after_garbage} KiB after garbage"
    );
    drop(held);
}

#[tokio::test]
async fn the_first_send_after_start_pays_no_tls_handshake() {
    let twilio = TlsTwilio::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &twilio.ca_pem).unwrap();
    let daemon = Daemon::start(
        &twilio.url,
        Options::default().arg(format!("--twilio-ca-file={}", ca.display())),
    );
    daemon.wait_for_log("Twilio connection warm");
    // Warm before ready: one connection, one GET of the account.
    assert_eq!((twilio.connections(), twilio.gets()), (1, 1));
    for _ in 0..10 {
        assert_eq!(daemon.send("ACME").await, Ok(SID.to_owned()));
    }
    assert_eq!(twilio.posts(), 10);
    assert_eq!(
        twilio.connections(),
        1,
        "every send used the warm connection"
    );

    // Without warming, the first send opens the connection itself.
    let cold = TlsTwilio::start();
    std::fs::write(&ca, &cold.ca_pem).unwrap();
    let daemon = Daemon::start(
        &cold.url,
        Options::default().args([
            format!("--twilio-ca-file={}", ca.display()),
            "--keep-warm-secs=0".into(),
        ]),
    );
    assert_eq!(cold.connections(), 0);
    assert_eq!(daemon.send("ACME").await, Ok(SID.to_owned()));
    assert_eq!(cold.connections(), 1);
}

#[tokio::test]
async fn an_untrusted_certificate_fails_the_warm_up_and_every_send() {
    let twilio = TlsTwilio::start();
    // No --twilio-ca-file: the test CA is unknown.
    let daemon = Daemon::start(&twilio.url, Options::default());
    let warning = daemon.wait_for_log("cannot reach Twilio yet");
    assert!(warning.contains("certificate"), "{warning}");
    let reply = daemon.send("ACME").await.unwrap_err();
    assert!(reply.starts_with("ERR unavailable: "), "{reply}");
    assert_eq!(twilio.posts(), 0);
}

#[tokio::test]
async fn keep_warm_touches_the_connection_on_schedule() {
    let twilio = TlsTwilio::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &twilio.ca_pem).unwrap();
    let _daemon = Daemon::start(
        &twilio.url,
        Options::default().args([
            format!("--twilio-ca-file={}", ca.display()),
            "--keep-warm-secs=1".into(),
        ]),
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(twilio.gets() >= 3, "{} GETs", twilio.gets());
    assert_eq!(twilio.connections(), 1);
}

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
    assert_eq!(scrape(&addr, "/").await.0, 404);
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
