//! The BIG-IP pool monitor for off-box daemons (examples/bigip/otp_sidecar_monitor.sh), run as
//! bigd runs an external monitor: the member's address in IPv6-mapped form as $1, its port as
//! $2, settings in the environment; up when it prints anything, down when it prints nothing.
//! Against a TLS and a mutual-TLS daemon, and members that are down or only look up to a
//! plain `tcp` monitor.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use crate::offbox::{Ca, Files};

/// Runs the monitor for `addr` and `port` with `env`: its stdout (bigd's verdict) and stderr.
fn monitor(addr: &str, port: u16, env: &[(&str, &Path)]) -> (String, String) {
    let mut cmd = Command::new(repo_file("examples/bigip/otp_sidecar_monitor.sh"));
    cmd.arg(addr)
        .arg(port.to_string())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("OTP_SIDECAR_BIN", env!("CARGO_BIN_EXE_otp-sidecar"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Its exit status means nothing to bigd.
    let out = cmd.output().expect("run the monitor");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (text(&out.stdout), text(&out.stderr))
}

fn up(verdict: (String, String)) {
    assert!(!verdict.0.trim().is_empty(), "down: {verdict:?}");
}

fn down(verdict: (String, String)) {
    assert_eq!(verdict.0, "", "up: {verdict:?}");
}

#[tokio::test]
async fn the_monitor_marks_a_tls_member_up_only_when_it_answers() {
    let twilio = twilio_answering(created(SID)).await;
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path());
    let ca = Ca::new("server CA");
    files.write_server(&ca.server());
    let ca_pem = dir.path().join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    let daemon = Daemon::start(&twilio.uri(), Options::default().args(files.tls_args()));
    let port = daemon.tcp.port();
    let tls = [("TLS_CA", ca_pem.as_path())];

    // As bigd passes an IPv4 member, and as written by hand.
    up(monitor("::ffff:127.0.0.1", port, &tls));
    up(monitor("127.0.0.1", port, &tls));

    // Another CA's certificate: the handshake fails, the member is down.
    let other = dir.path().join("other.pem");
    std::fs::write(&other, Ca::new("another CA").pem()).unwrap();
    down(monitor(
        "::ffff:127.0.0.1",
        port,
        &[("TLS_CA", other.as_path())],
    ));
    // Nothing listening.
    let dead = dead_address();
    down(monitor(&format!("::ffff:{}", dead.ip()), dead.port(), &tls));
    // A member that accepts and closes (what a plain `tcp` monitor calls up).
    let closer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closer_port = closer.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in closer.incoming() {
            drop(stream);
        }
    });
    down(monitor("::ffff:127.0.0.1", closer_port, &tls));
    // A daemon that stopped.
    daemon.terminate();
    down(monitor("::ffff:127.0.0.1", port, &tls));
}

#[tokio::test]
async fn the_monitor_presents_the_client_certificate_of_a_mutual_tls_pool() {
    let twilio = twilio_answering(created(SID)).await;
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path());
    let ca = Ca::new("server CA");
    files.write_server(&ca.server());
    let clients = Ca::new("client CA");
    std::fs::write(&files.client_ca, clients.pem()).unwrap();
    let ca_pem = dir.path().join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    let leaf = clients.client();
    let (cert, key) = (dir.path().join("bigip.pem"), dir.path().join("bigip.key"));
    std::fs::write(&cert, &leaf.cert).unwrap();
    std::fs::write(&key, &leaf.key).unwrap();
    let mut args = files.tls_args();
    args.push(files.client_ca_arg());
    let daemon = Daemon::start(&twilio.uri(), Options::default().args(args));
    let port = daemon.tcp.port();

    let mutual = [
        ("TLS_CA", ca_pem.as_path()),
        ("TLS_CLIENT_CERT", cert.as_path()),
        ("TLS_CLIENT_KEY", key.as_path()),
    ];
    up(monitor("::ffff:127.0.0.1", port, &mutual));
    // Without the certificate the daemon refuses the handshake: down.
    down(monitor("::ffff:127.0.0.1", port, &mutual[..1]));
    // A certificate from a CA the daemon does not trust: down.
    let stranger = Ca::new("client CA").client();
    std::fs::write(&cert, &stranger.cert).unwrap();
    std::fs::write(&key, &stranger.key).unwrap();
    down(monitor("::ffff:127.0.0.1", port, &mutual));
}

#[test]
fn the_monitor_says_what_it_needs_and_marks_nothing_up_without_it() {
    let (stdout, stderr) = monitor("::ffff:127.0.0.1", 1, &[]);
    assert_eq!(stdout, "");
    assert!(stderr.contains("TLS_CA"), "{stderr}");
}

#[tokio::test]
async fn a_degraded_member_stays_up_unless_the_monitor_is_told_otherwise() {
    // Twilio answers 500: the daemon answers ping, degraded (exit 1).
    let twilio =
        twilio_answering(wiremock::ResponseTemplate::new(500).set_body_string("down")).await;
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path());
    let ca = Ca::new("server CA");
    files.write_server(&ca.server());
    let ca_pem = dir.path().join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    let daemon = Daemon::start(&twilio.uri(), Options::default().args(files.tls_args()));
    assert!(daemon.send("ACME").await.is_err());
    let port = daemon.tcp.port();

    up(monitor(
        "::ffff:127.0.0.1",
        port,
        &[("TLS_CA", ca_pem.as_path())],
    ));
    // The variable's value is a string; Path carries it here.
    down(monitor(
        "::ffff:127.0.0.1",
        port,
        &[
            ("TLS_CA", ca_pem.as_path()),
            ("DOWN_WHEN_DEGRADED", Path::new("1")),
        ],
    ));
}
