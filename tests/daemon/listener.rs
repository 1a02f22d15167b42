//! The listener under a flood of strangers: at the connection cap, connections that never
//! completed a call make room (TLS handshakes first), served callers stay, and the Unix socket
//! keeps its reserve whatever happens on TCP.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;
use crate::offbox::{send_token, tls_client, Ca, Files};

const PING: &[u8] = b"\x94\x00\x01\xa4ping\x90";
const PONG: &[u8] = b"\x94\x01\x01\xc0\xa4pong";

/// Opens `n` TCP connections that send nothing, and keeps them.
async fn strangers(addr: std::net::SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // Let the daemon accept them all (and close the ones that make room).
    tokio::time::sleep(Duration::from_millis(300)).await;
    held
}

#[tokio::test(flavor = "multi_thread")]
async fn served_callers_outlast_a_flood_of_strangers() {
    let twilio = twilio_answering(created(SID)).await;
    let dir = tempfile::tempdir().unwrap();
    let (files, server_ca, client_ca) = Files::mutual(dir.path());
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default()
            .args(files.tls_args())
            .arg(files.client_ca_arg())
            .args(["--max-connections", "12", "--keep-warm-secs", "0"]),
    );
    // A mutual-TLS caller and an idle Unix caller (the forwarder's one connection), served.
    let mut tls = tls_client(daemon.tcp, &server_ca.pem(), Some(&client_ca.client()))
        .await
        .expect("handshake");
    assert_eq!(send_token(&mut tls, None).await, Ok(SID.to_owned()));
    let mut unix = daemon.unix_client().await;
    assert_eq!(
        unix.send_otp(OTP, PHONE, "ACME").await.unwrap(),
        Ok(SID.to_owned())
    );

    // A TLS client that finished its handshake but has not called yet: it goes after the
    // connections still in their handshake.
    let mut quiet = tls_client(daemon.tcp, &server_ca.pem(), Some(&client_ca.client()))
        .await
        .expect("handshake");

    // More strangers than the cap, saying nothing: they push out only one another.
    let held = strangers(daemon.tcp, 30).await;
    assert_eq!(send_token(&mut tls, None).await, Ok(SID.to_owned()));
    assert_eq!(
        unix.send_otp(OTP, PHONE, "ACME").await.unwrap(),
        Ok(SID.to_owned())
    );
    assert_eq!(send_token(&mut quiet, None).await, Ok(SID.to_owned()));
    assert_eq!(sends(&twilio).await.len(), 5);
    daemon.wait_for_log("closing connections that have not completed a call");
    drop(held);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_on_tcp_never_costs_the_unix_socket_its_callers() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args(["--max-connections", "12", "--keep-warm-secs", "0"]),
    );
    // A Unix caller that connected but has not called yet.
    let mut early = tokio::net::UnixStream::connect(&daemon.unix).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A flood on TCP, going on while the Unix socket is used.
    let addr = daemon.tcp;
    let flood = tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..200 {
            if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
                held.push(s);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        held
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The early caller is still open and answered; new Unix callers get in and are answered.
    early.write_all(PING).await.unwrap();
    let mut reply = [0u8; PONG.len()];
    let read = tokio::time::timeout(Duration::from_secs(5), early.read_exact(&mut reply)).await;
    assert!(
        matches!(read, Ok(Ok(_))),
        "the Unix caller was closed: {read:?}"
    );
    assert_eq!(&reply, PONG);
    for _ in 0..5 {
        let mut client = daemon.unix_client().await;
        let pong = tokio::time::timeout(Duration::from_secs(5), client.call("ping", vec![])).await;
        assert_eq!(pong.expect("a pong").unwrap(), Ok("pong".into()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held = flood.await.unwrap();
    assert!(held.len() > 12, "the flood got {} connections", held.len());
}

/// `openssl s_client -tls1_2` to `addr`, its stdin kept open (EOF would end it).
fn s_client(addr: std::net::SocketAddr) -> std::process::Child {
    std::process::Command::new("openssl")
        .args(["s_client", "-tls1_2", "-connect"])
        .arg(addr.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl (Debian's openssl package; .ci/run installs it)")
}

/// Waits up to `within` for `child` to exit; kills it if it has not.
fn exited_within(child: &mut std::process::Child, within: Duration) -> bool {
    let until = std::time::Instant::now() + within;
    while std::time::Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_tls_renegotiation_closes_the_connection_at_once() {
    use std::io::{BufRead, BufReader, Write};
    let twilio = twilio_answering(created(SID)).await;
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path());
    let server_ca = Ca::new("server CA");
    files.write_server(&server_ca.server());
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default()
            .args(files.tls_args())
            .args(["--idle-timeout-secs", "60", "--keep-warm-secs", "0"])
            .env("RUST_LOG", "otp_sidecar=debug"),
    );
    let mut client = s_client(daemon.tcp);
    // The handshake is done once s_client prints its session summary.
    let stdout = client.stdout.take().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !sent && line.contains("Verify return code") {
                sent = true;
                let _ = done_tx.send(());
            }
        }
    });
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the TLS 1.2 handshake");
    // `R` asks s_client to renegotiate.
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"R\n").unwrap();
    stdin.flush().unwrap();
    // Closed at once, not after the 60 s idle timeout.
    assert!(
        exited_within(&mut client, Duration::from_secs(10)),
        "the renegotiating client was left waiting"
    );
    drop(stdin);
    daemon.wait_for_log("connection closed: read failed: TLS renegotiation refused");

    // A normal exchange, then the client drops the connection without close_notify: a clean
    // end, not an error.
    let mut good = tls_client(daemon.tcp, &server_ca.pem(), None)
        .await
        .expect("handshake");
    assert_eq!(send_token(&mut good, None).await, Ok(SID.to_owned()));
    drop(good);
    daemon.wait_for_log("connection closed: done");
    assert!(!daemon.log().contains("close_notify"), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_caller_tokens_only_an_authenticated_call_makes_a_caller_served() {
    let twilio = twilio_answering(created(SID)).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "bigip-a tok-a-5e1f0c9d8b7a6f5e4d3c2b1a\n").unwrap();
    // 4 slots, one kept for the Unix socket: TCP holds 3.
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default()
            .arg(format!("--caller-tokens-file={}", tokens.display()))
            .args(["--max-connections", "4", "--keep-warm-secs", "0"]),
    );
    let token = |t: &str| Some(rmpv::Value::from(t));
    let mut good = daemon.tcp_client().await;
    assert_eq!(
        send_token(&mut good, token("tok-a-5e1f0c9d8b7a6f5e4d3c2b1a")).await,
        Ok(SID.to_owned())
    );
    // Answered, but refused: still a stranger.
    let mut wrong = daemon.tcp_client().await;
    let refused = send_token(&mut wrong, token("tok-x-0000000000000000000000")).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.starts_with("ERR unauthorized")),
        "{refused:?}"
    );
    let held = strangers(daemon.tcp, 3).await;
    let pong = tokio::time::timeout(Duration::from_secs(2), wrong.call("ping", vec![])).await;
    assert!(
        !matches!(pong, Ok(Ok(Ok(_)))),
        "the unauthenticated caller kept its slot"
    );
    assert_eq!(
        send_token(&mut good, token("tok-a-5e1f0c9d8b7a6f5e4d3c2b1a")).await,
        Ok(SID.to_owned())
    );
    drop(held);
}
