//! The warm Twilio connection: the first send pays no TLS handshake, an untrusted certificate
//! fails the warm-up and every send, keep-warm touches it on schedule.

use std::time::Duration;

use crate::common::tls::TlsTwilio;
use crate::common::*;

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
