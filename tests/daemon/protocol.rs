//! The MessagePack-RPC wire, byte by byte, against a real daemon on real sockets.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use otp_sidecar::rpc::{Encode, Incoming, MsgpackCodec, Request, Response};
use rmpv::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_util::codec::Framed;

fn request(msgid: impl Into<rmpv::Integer>, method: &str, params: Vec<Value>) -> Request {
    Request {
        msgid: msgid.into(),
        method: method.into(),
        params,
    }
}

fn encoded(item: &impl Encode) -> Vec<u8> {
    let mut out = Vec::new();
    item.encode(&mut out).expect("encode");
    out
}

fn send_otp_params() -> Vec<Value> {
    vec![OTP.into(), PHONE.into(), "ACME".into()]
}

async fn next_response<S: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<S, MsgpackCodec>,
) -> Response {
    let value = tokio::time::timeout(Duration::from_secs(5), framed.next())
        .await
        .expect("a reply within 5 s")
        .expect("connection open")
        .expect("a valid frame");
    match Incoming::parse(value) {
        Ok(Incoming::Response(r)) => r,
        other => panic!("not a response: {other:?}"),
    }
}

/// Reads until the daemon closes the connection; panics if it does not within 5 s.
async fn assert_closed<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut sink = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the daemon kept the connection open");
}

#[tokio::test]
async fn a_request_split_at_every_byte_is_answered() {
    let daemon = dry_daemon();
    let bytes = encoded(&request(77u32, "sendOTP", send_otp_params()));
    let mut stream = TcpStream::connect(daemon.tcp).await.unwrap();
    stream.set_nodelay(true).unwrap();
    for byte in &bytes {
        stream.write_all(std::slice::from_ref(byte)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut framed = Framed::new(stream, MsgpackCodec::default());
    let reply = next_response(&mut framed).await;
    assert_eq!(reply.msgid, 77u32.into());
    assert!(reply.outcome.unwrap().as_str().unwrap().starts_with("SM"));
}

#[tokio::test]
async fn a_hundred_pipelined_requests_in_one_write_are_all_answered_by_msgid() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default());
    let mut burst = Vec::new();
    for id in 0..100u32 {
        burst.extend(encoded(&request(id, "sendOTP", send_otp_params())));
    }
    let mut stream = UnixStream::connect(&daemon.unix).await.unwrap();
    stream.write_all(&burst).await.unwrap();
    let mut framed = Framed::new(stream, MsgpackCodec::default());
    let mut seen = HashSet::new();
    for _ in 0..100 {
        let reply = next_response(&mut framed).await;
        assert_eq!(reply.outcome, Ok(Value::from(SID)));
        assert!(
            seen.insert(reply.msgid.as_u64().unwrap()),
            "msgid answered twice"
        );
    }
    assert_eq!(seen, (0..100).collect());
    assert_eq!(sends(&twilio).await.len(), 100);
}

#[tokio::test]
async fn replies_come_back_out_of_order_when_calls_finish_out_of_order() {
    // The first call waits on a slow Twilio; the ping behind it must not wait.
    let twilio = twilio_answering(created(SID).set_delay(Duration::from_millis(800))).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default());
    let mut framed = Framed::new(
        UnixStream::connect(&daemon.unix).await.unwrap(),
        MsgpackCodec::default(),
    );
    framed
        .send(request(1u32, "sendOTP", send_otp_params()))
        .await
        .unwrap();
    framed.send(request(2u32, "ping", vec![])).await.unwrap();
    assert_eq!(next_response(&mut framed).await.msgid, 2u32.into());
    let slow = next_response(&mut framed).await;
    assert_eq!(
        (slow.msgid, slow.outcome),
        (1u32.into(), Ok(Value::from(SID)))
    );
}

#[tokio::test]
async fn any_integer_msgid_is_echoed() {
    let daemon = dry_daemon();
    let mut framed = Framed::new(
        TcpStream::connect(daemon.tcp).await.unwrap(),
        MsgpackCodec::default(),
    );
    for id in [
        rmpv::Integer::from(0),
        u32::MAX.into(),
        u64::MAX.into(),
        (-5i64).into(),
        i64::MIN.into(),
    ] {
        framed.send(request(id, "ping", vec![])).await.unwrap();
        let reply = next_response(&mut framed).await;
        assert_eq!(reply.msgid, id);
        assert_eq!(reply.outcome, Ok(Value::from("pong")));
    }
}

#[tokio::test]
async fn a_binary_method_name_works() {
    let daemon = dry_daemon();
    let raw = Value::Array(vec![
        0.into(),
        5.into(),
        Value::Binary(b"sendOTP".to_vec()),
        Value::Array(send_otp_params()),
    ]);
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &raw).unwrap();
    let mut stream = UnixStream::connect(&daemon.unix).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let mut framed = Framed::new(stream, MsgpackCodec::default());
    let reply = next_response(&mut framed).await;
    assert!(reply.outcome.unwrap().as_str().unwrap().starts_with("SM"));
}

#[tokio::test]
async fn notifications_get_no_reply_and_unknown_methods_and_bad_arguments_keep_the_connection() {
    let daemon = dry_daemon();
    let mut framed = Framed::new(
        UnixStream::connect(&daemon.unix).await.unwrap(),
        MsgpackCodec::default(),
    );
    let notification = Value::Array(vec![
        2.into(),
        "sendOTP".into(),
        Value::Array(send_otp_params()),
    ]);
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &notification).unwrap();
    framed.get_mut().write_all(&bytes).await.unwrap();

    let calls: Vec<(Request, &str)> = vec![
        (
            request(1u32, "sendSMS", vec![]),
            "ERR bad_request: unknown method 'sendSMS' (known: sendOTP, confirmOTP, ping, health)",
        ),
        (
            request(2u32, "sendOTP", vec![OTP.into(), PHONE.into()]),
            "ERR bad_request: sendOTP takes 3 arguments and an optional context map, got 2",
        ),
        (
            request(
                3u32,
                "sendOTP",
                vec![OTP.into(), 31612345678u64.into(), "ACME".into()],
            ),
            "ERR bad_request: phone must be a string",
        ),
        (
            request(4u32, "ping", vec![1.into()]),
            "ERR bad_request: ping takes 0 arguments, got 1",
        ),
    ];
    for (call, want) in calls {
        let id = call.msgid;
        framed.send(call).await.unwrap();
        let reply = next_response(&mut framed).await;
        assert_eq!((reply.msgid, reply.outcome), (id, Err(want.to_owned())));
    }
    // The notification produced nothing: the next reply is for the next request.
    framed.send(request(9u32, "ping", vec![])).await.unwrap();
    assert_eq!(next_response(&mut framed).await.msgid, 9u32.into());
}

#[tokio::test]
async fn requests_with_a_msgid_but_bad_shape_get_err_bad_request() {
    let daemon = dry_daemon();
    for (raw, want) in [
        (
            Value::Array(vec![0.into(), 1.into(), 42.into(), Value::Array(vec![])]),
            "ERR bad_request: method name must be a string",
        ),
        (
            Value::Array(vec![0.into(), 1.into(), "ping".into(), Value::Nil]),
            "ERR bad_request: params must be an array",
        ),
    ] {
        let mut framed = Framed::new(
            TcpStream::connect(daemon.tcp).await.unwrap(),
            MsgpackCodec::default(),
        );
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &raw).unwrap();
        framed.get_mut().write_all(&bytes).await.unwrap();
        assert_eq!(
            next_response(&mut framed).await.outcome,
            Err(want.to_owned())
        );
        framed.send(request(2u32, "ping", vec![])).await.unwrap();
        assert_eq!(
            next_response(&mut framed).await.outcome,
            Ok(Value::from("pong"))
        );
    }
}

/// Opens a healthy connection, abuses another, and checks the healthy one still works.
async fn abuse_closes_only_its_own_connection(daemon: &Daemon, abuse: &[u8]) {
    let mut healthy = Framed::new(
        UnixStream::connect(&daemon.unix).await.unwrap(),
        MsgpackCodec::default(),
    );
    healthy.send(request(1u32, "ping", vec![])).await.unwrap();
    next_response(&mut healthy).await;

    let mut bad = TcpStream::connect(daemon.tcp).await.unwrap();
    // The daemon may close while we are still writing: that is the point.
    let _ = bad.write_all(abuse).await;
    assert_closed(&mut bad).await;

    healthy
        .send(request(2u32, "sendOTP", send_otp_params()))
        .await
        .unwrap();
    assert!(next_response(&mut healthy).await.outcome.is_ok());
}

#[tokio::test]
async fn garbage_closes_only_its_own_connection() {
    let daemon = dry_daemon();
    for abuse in [
        &b"\xc1"[..],                                  // never-used marker
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",          // not an array
        b"\x94\x00\xa2id\xa4ping\x90",                 // msgid is a string
        b"\x93\x07\x01\x02",                           // unknown message type
        b"\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91",
    ] {
        abuse_closes_only_its_own_connection(&daemon, abuse).await;
    }
}

#[tokio::test]
async fn oversized_frames_close_only_their_own_connection() {
    let daemon = Daemon::start(
        "http://127.0.0.1:9",
        Options::default()
            .arg("--dry-run")
            .arg("--max-frame-bytes=1024"),
    );
    // Declared sizes past the cap: refused from the header alone.
    abuse_closes_only_its_own_connection(&daemon, b"\xdb\xff\xff\xff\xff").await;
    abuse_closes_only_its_own_connection(&daemon, b"\xdd\x00\x10\x00\x00").await;
    // A real request just over the cap, sent whole.
    let big = encoded(&request(
        1u32,
        "sendOTP",
        vec!["x".repeat(1100).into(), PHONE.into(), "ACME".into()],
    ));
    abuse_closes_only_its_own_connection(&daemon, &big).await;
    // An endless stream of small values inside one array never completes a frame.
    let mut endless = vec![0xdc, 0xff, 0xff];
    endless.extend(std::iter::repeat_n(0xc0, 4096));
    abuse_closes_only_its_own_connection(&daemon, &endless).await;
    // And a request under the cap still works on a new connection.
    let mut framed = Framed::new(
        UnixStream::connect(&daemon.unix).await.unwrap(),
        MsgpackCodec::new(1024),
    );
    framed
        .send(request(3u32, "sendOTP", send_otp_params()))
        .await
        .unwrap();
    assert!(next_response(&mut framed).await.outcome.is_ok());
}

#[tokio::test]
async fn a_client_that_closes_its_write_side_still_gets_its_replies() {
    let daemon = dry_daemon();
    let mut stream = TcpStream::connect(daemon.tcp).await.unwrap();
    let mut bytes = encoded(&request(1u32, "sendOTP", send_otp_params()));
    bytes.extend(encoded(&request(2u32, "ping", vec![])));
    stream.write_all(&bytes).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut framed = Framed::new(stream, MsgpackCodec::default());
    let mut ids: Vec<u64> = Vec::new();
    for _ in 0..2 {
        ids.push(next_response(&mut framed).await.msgid.as_u64().unwrap());
    }
    ids.sort();
    assert_eq!(ids, [1, 2]);
    assert!(framed.next().await.is_none(), "closed after the last reply");
}

#[tokio::test]
async fn a_multi_threaded_daemon_serves_pipelined_calls_too() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default().arg("--threads=2"));
    let mut framed = Framed::new(
        TcpStream::connect(daemon.tcp).await.unwrap(),
        MsgpackCodec::default(),
    );
    for id in 0..20u32 {
        framed
            .send(request(id, "sendOTP", send_otp_params()))
            .await
            .unwrap();
    }
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let reply = next_response(&mut framed).await;
        assert_eq!(reply.outcome, Ok(Value::from(SID)));
        seen.insert(reply.msgid.as_u64().unwrap());
    }
    assert_eq!(seen.len(), 20);
}

/// The seed corpus of the fuzz target doubles as golden files: each frame in tests/frames
/// gets exactly the bytes of its `.reply` file, or (`bad-…`) a connection the daemon closes
/// by itself: the client keeps its side open, so a daemon that waited for more bytes fails.
#[tokio::test]
async fn golden_frames_get_their_golden_replies() {
    let daemon = Daemon::start("http://127.0.0.1:9", Options::default().arg("--dry-run"));
    let dir = repo_file("tests/frames");
    let mut frames: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "msgpack"))
        .collect();
    frames.sort();
    assert!(frames.len() >= 10, "{frames:?}");
    for path in frames {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let mut stream = UnixStream::connect(&daemon.unix).await.unwrap();
        stream
            .write_all(&std::fs::read(&path).unwrap())
            .await
            .unwrap();
        let bad = name.starts_with("bad-");
        if !bad {
            stream.shutdown().await.unwrap();
        }
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got));
        // A reset is a close too.
        let _ = read.await.expect("the daemon answers or closes");
        if bad {
            assert!(got.is_empty(), "{name}: {got:x?}");
        } else if let Ok(want) = std::fs::read(path.with_extension("reply")) {
            assert_eq!(got, want, "{name}");
        } else if name == "send-otp" {
            let reply = rmpv::decode::read_value(&mut &got[..]).unwrap();
            let sid = reply[3].as_str().unwrap_or_default().to_owned();
            assert_eq!(
                (&reply[0], &reply[1], &reply[2]),
                (&1.into(), &3.into(), &Value::Nil)
            );
            assert!(is_sid(&sid, "SM"), "{name}: {reply}");
        } else {
            panic!("{name}: no .reply file and no rule for it");
        }
    }
}

/// Reads until the daemon closes; panics if it sends anything more or keeps it open past 5 s.
async fn assert_closed_without_more<S: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<S, MsgpackCodec>,
) {
    match tokio::time::timeout(Duration::from_secs(5), framed.next()).await {
        Ok(None | Some(Err(_))) => {}
        Ok(Some(Ok(more))) => panic!("more after the last reply: {more}"),
        Err(_) => panic!("the daemon kept the connection open"),
    }
}

#[tokio::test]
async fn a_bad_frame_behind_calls_in_flight_closes_only_after_they_are_answered() {
    // Slow enough that every call is still at Twilio when the bad bytes arrive.
    let twilio = twilio_answering(created(SID).set_delay(Duration::from_millis(600))).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default());
    let mut expected_sends = 0;
    // The bad bytes in the same write as the calls, or a little later (the call in flight):
    // an unused marker, a frame over the cap, a value that is no MessagePack-RPC message.
    for (bad, later) in [
        (&b"\xc1"[..], false),
        (b"\xc1", true),
        (b"\xdb\xff\xff\xff\xff", true),
        (b"\x93\x07\x01\x02", true),
    ] {
        for unix in [true, false] {
            let stream: Box<dyn AsyncReadWrite> = if unix {
                Box::new(UnixStream::connect(&daemon.unix).await.unwrap())
            } else {
                Box::new(TcpStream::connect(daemon.tcp).await.unwrap())
            };
            let mut framed = Framed::new(stream, MsgpackCodec::default());
            // Three callers sharing one connection, as through the ILX forwarder.
            let mut bytes = Vec::new();
            for id in 1..=3u32 {
                bytes.extend(encoded(&request(id, "sendOTP", send_otp_params())));
            }
            if !later {
                bytes.extend_from_slice(bad);
            }
            framed.get_mut().write_all(&bytes).await.unwrap();
            expected_sends += 3;
            if later {
                until_sent(&twilio, expected_sends).await;
                framed.get_mut().write_all(bad).await.unwrap();
            }
            let mut ids = Vec::new();
            for _ in 0..3 {
                let reply = next_response(&mut framed).await;
                assert_eq!(
                    reply.outcome,
                    Ok(Value::from(SID)),
                    "{bad:x?} later={later}"
                );
                ids.push(reply.msgid.as_u64().unwrap());
            }
            ids.sort();
            assert_eq!(ids, [1, 2, 3], "{bad:x?} later={later}");
            assert_closed_without_more(&mut framed).await;
        }
    }
    assert_eq!(sends(&twilio).await.len(), expected_sends);
}

trait AsyncReadWrite: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncReadWrite for T {}

#[tokio::test]
async fn ping_never_waits_for_a_call_slot_and_calls_are_admitted_in_turn_across_connections() {
    const PER_CONNECTION: u32 = 8;
    let twilio = twilio_answering(created(SID).set_delay(Duration::from_millis(300))).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default().arg("--max-in-flight=3"));
    // Every reply, in the order the test reads them: (connection, msgid).
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(char, u64)>::new()));
    let mut busy = tokio::task::JoinSet::new();
    for name in ['a', 'b', 'c'] {
        let mut framed = Framed::new(
            UnixStream::connect(&daemon.unix).await.unwrap(),
            MsgpackCodec::default(),
        );
        let mut bytes = Vec::new();
        for id in 0..PER_CONNECTION {
            bytes.extend(encoded(&request(id, "sendOTP", send_otp_params())));
        }
        framed.get_mut().write_all(&bytes).await.unwrap();
        let order = order.clone();
        busy.spawn(async move {
            for _ in 0..PER_CONNECTION {
                let reply = tokio::time::timeout(Duration::from_secs(20), framed.next())
                    .await
                    .expect("a reply")
                    .expect("open")
                    .expect("a frame");
                let Ok(Incoming::Response(reply)) = Incoming::parse(reply) else {
                    panic!("not a response");
                };
                assert_eq!(reply.outcome, Ok(Value::from(SID)));
                order
                    .lock()
                    .unwrap()
                    .push((name, reply.msgid.as_u64().unwrap()));
            }
        });
        // Each connection's calls are queued before the next connection's.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    until_sent(&twilio, 3).await;
    let mut fresh = Framed::new(
        UnixStream::connect(&daemon.unix).await.unwrap(),
        MsgpackCodec::default(),
    );
    fresh.send(request(100u32, "ping", vec![])).await.unwrap();
    let pong = next_response(&mut fresh).await;
    assert_eq!(pong.outcome, Ok(Value::from("pong")));
    let busy_before_pong = order.lock().unwrap().len();
    fresh.send(request(101u32, "health", vec![])).await.unwrap();
    assert!(next_response(&mut fresh).await.outcome.is_ok());
    let busy_before_health = order.lock().unwrap().len();

    fresh
        .send(request(102u32, "sendOTP", send_otp_params()))
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(20), fresh.next())
        .await
        .expect("a reply")
        .expect("open")
        .expect("a frame");
    let busy_before_send = order.lock().unwrap().len();
    let Ok(Incoming::Response(reply)) = Incoming::parse(reply) else {
        panic!("not a response");
    };
    assert_eq!(reply.outcome, Ok(Value::from(SID)));
    while let Some(done) = busy.join_next().await {
        done.unwrap();
    }
    let order = order.lock().unwrap().clone();
    eprintln!(
        "busy replies before the ping: {busy_before_pong}, before health: \
         {busy_before_health}, before the fresh send: {busy_before_send}; order: {order:?}"
    );
    // The ping and health came back before any slow call.
    assert_eq!((busy_before_pong, busy_before_health), (0, 0), "{order:?}");
    // In line with one call from each busy connection at most twice over, not behind all
    // their queued calls (24 in all, three at a time).
    assert!(
        busy_before_send <= 9,
        "{busy_before_send} before it: {order:?}"
    );
    // And the busy connections took turns: none had more than three slots ahead of the
    // others' first replies.
    let firsts: Vec<usize> = ['a', 'b', 'c']
        .iter()
        .map(|n| order.iter().position(|(c, _)| c == n).unwrap())
        .collect();
    assert!(firsts.iter().all(|&p| p < 6), "{order:?}");
}

#[tokio::test]
async fn a_frame_of_sixteen_million_nils_is_refused_without_decoding_it() {
    let daemon = Daemon::start(
        "http://127.0.0.1:9",
        Options::default().args(["--dry-run", "--max-frame-bytes=16777216"]),
    );
    let mut healthy = Framed::new(
        UnixStream::connect(&daemon.unix).await.unwrap(),
        MsgpackCodec::default(),
    );
    healthy.send(request(1u32, "ping", vec![])).await.unwrap();
    next_response(&mut healthy).await;
    let before = daemon.peak_rss_kib();

    // [0, 1, "ping", [nil × 16,000,000]]: 16 MB, under the 16 MiB cap.
    const NILS: usize = 16_000_000;
    let mut frame = b"\x94\x00\x01\xa4ping\xdd".to_vec();
    frame.extend_from_slice(&(NILS as u32).to_be_bytes());
    frame.resize(frame.len() + NILS, 0xc0);
    let frame_kib = frame.len() as u64 / 1024;
    let mut bad = Framed::new(
        TcpStream::connect(daemon.tcp).await.unwrap(),
        MsgpackCodec::new(16 << 20),
    );
    let (mut reader, mut writer) = tokio::io::split(bad.get_mut());
    let writing = async move {
        // The daemon may close while we are still writing: that is the point.
        let _ = writer.write_all(&frame).await;
    };
    let reading = async move {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), reader.read_to_end(&mut got))
            .await
            .expect("the daemon closes the connection")
            .ok();
        got
    };
    // Another caller is answered meanwhile.
    let pinging = async {
        healthy.send(request(2u32, "ping", vec![])).await.unwrap();
        next_response(&mut healthy).await
    };
    let ((), got, pong) = tokio::join!(writing, reading, pinging);
    assert!(got.is_empty(), "a reply to the frame of nils: {got:x?}");
    assert_eq!(pong.outcome, Ok(Value::from("pong")));

    // A frame as large but of few values (one long string) is allowed and answered.
    let long = request(3u32, "ping", vec!["x".repeat(15_000_000).into()]);
    let mut fine = Framed::new(
        TcpStream::connect(daemon.tcp).await.unwrap(),
        MsgpackCodec::new(16 << 20),
    );
    fine.send(long).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(20), fine.next())
        .await
        .expect("an answer")
        .expect("open")
        .expect("a frame");
    assert_eq!(
        Incoming::parse(reply).unwrap(),
        Incoming::Response(Response {
            msgid: 3u32.into(),
            outcome: Err("ERR bad_request: ping takes 0 arguments, got 1".into()),
        })
    );
    healthy.send(request(4u32, "ping", vec![])).await.unwrap();
    assert_eq!(
        next_response(&mut healthy).await.outcome,
        Ok(Value::from("pong"))
    );
    let peak = daemon.peak_rss_kib();
    eprintln!("peak RSS {before} KiB before, {peak} KiB after two {frame_kib} KiB frames");
    assert!(
        peak < before + 3 * frame_kib,
        "peak RSS {peak} KiB, {before} KiB before two {frame_kib} KiB frames"
    );
}
