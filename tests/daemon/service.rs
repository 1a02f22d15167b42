//! The daemon as a service: drain on SIGTERM, reload on SIGHUP, systemd notifications and
//! socket activation. Its limits, warm connection, metrics and logs have files of their own.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::common::*;
use otp_sidecar::client::{Client, Endpoint};

/// A daemon whose Twilio answers after `delay`.
pub(crate) async fn slow_twilio(delay: Duration) -> wiremock::MockServer {
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
