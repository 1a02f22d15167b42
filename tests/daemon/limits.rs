//! Limits on the daemon as a service: the connection cap (strangers make room, served callers
//! stay), the in-flight cap, idle timeouts, the descriptors and memory under load.

use std::time::Duration;

use crate::common::*;
use crate::service::slow_twilio;
use otp_sidecar::client::{Client, Endpoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
