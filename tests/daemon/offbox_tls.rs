//! Off-box over TLS: mutual TLS serves the client CA's certificates only, and a handshake that
//! never finishes stops no one.

use crate::common::*;
use crate::offbox::*;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_serves_the_client_cas_certificates_only() {
    let twilio = twilio_answering(created(SID)).await;
    let dir = tempfile::tempdir().unwrap();
    let (files, server_ca, client_ca) = Files::mutual(dir.path());
    let other_ca = Ca::new("other CA");
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default()
            .args(files.tls_args())
            .arg(files.client_ca_arg())
            .args(["--metrics", "127.0.0.1:0", "--keep-warm-secs", "0"])
            .env("RUST_LOG", "otp_sidecar=debug"),
    );
    let addr = daemon.tcp;

    // A certificate from the client CA: served.
    let mut good = tls_client(addr, &server_ca.pem(), Some(&client_ca.client()))
        .await
        .expect("handshake");
    assert_eq!(
        send_token(&mut good, None).await,
        Ok(SID.to_owned()),
        "{}",
        daemon.log()
    );
    assert_eq!(sends(&twilio).await.len(), 1);

    // No certificate, and another CA's: refused, nothing sent.
    assert_refused(addr, &server_ca.pem(), None).await;
    assert_refused(addr, &server_ca.pem(), Some(&other_ca.client())).await;
    // A self-signed client certificate naming the client CA's subject is no better.
    assert_refused(addr, &server_ca.pem(), Some(&Ca::new("client CA").client())).await;

    // A plain client: the connection is closed, with no MessagePack reply.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"\x94\x00\x01\xa4ping\x90").await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut got)).await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "a plain client was kept open"
    );
    assert_ne!(
        got.first(),
        Some(&0x94),
        "a plain client got a reply: {got:?}"
    );

    // The good connection still works; the Unix socket stays plain.
    assert_eq!(send_token(&mut good, None).await, Ok(SID.to_owned()));
    assert_eq!(daemon.send("ACME").await, Ok(SID.to_owned()));
    assert_eq!(
        sends(&twilio).await.len(),
        3,
        "only the served clients' sends"
    );

    let metrics = metrics_of(&daemon).await.1;
    let count = |result: &str| {
        counter(
            &metrics,
            &format!("otp_sidecar_tls_handshakes_total{{result=\"{result}\"}}"),
        )
    };
    assert_eq!(count("ok"), 1, "{metrics}");
    assert!(count("bad_client_certificate") >= 2, "{metrics}");
    assert!(count("no_client_certificate") >= 1, "{metrics}");
    assert!(count("not_tls") >= 1, "{metrics}");
    daemon.wait_for_log("TLS handshake failed");
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handshake_that_never_finishes_stops_no_one() {
    let twilio = twilio_answering(created(SID)).await;
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path());
    let server_ca = Ca::new("server CA");
    files.write_server(&server_ca.server());
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args(files.tls_args()).args([
            "--idle-timeout-secs",
            "2",
            "--threads",
            "1",
            "--keep-warm-secs",
            "0",
        ]),
    );
    // Hostile clients: some open TCP and say nothing, one sends half a ClientHello.
    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(tokio::net::TcpStream::connect(daemon.tcp).await.unwrap());
    }
    let mut half = tokio::net::TcpStream::connect(daemon.tcp).await.unwrap();
    half.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        .await
        .unwrap();
    stalled.push(half);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Another client is served at once.
    let started = Instant::now();
    let mut good = tls_client(daemon.tcp, &server_ca.pem(), None)
        .await
        .expect("handshake");
    assert_eq!(send_token(&mut good, None).await, Ok(SID.to_owned()));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );

    // The stalled handshakes are given up on after the (idle-bounded) handshake timeout.
    for mut s in stalled {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(6), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a stalled handshake was kept open");
    }
    daemon.wait_for_log("TLS handshake failed: not finished within 2000 ms");
}
