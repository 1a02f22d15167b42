//! Bytes from a client, served as the daemon serves a connection: the real connection loop
//! (`server::serve_stream`) with the dry-run parts the composition root builds, so nothing
//! leaves. The bytes go through an in-memory pipe that holds only the first part of the input
//! (split where the input's first byte says), so the daemon reads them in separate reads; then
//! the client closes its side and reads every reply.
//!
//! Nothing may panic. Every reply must frame cleanly, be a response, and answer a request the
//! client sent (by msgid), each request at most once; every error must be a one-line `ERR`
//! text; `ping` answers `pong`, a `sendOTP` an `SM` SID (or `CA` for a voice context).
#![no_main]

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use otp_sidecar::config::{Options, Settings};
use otp_sidecar::rpc::{Incoming, MsgpackCodec};
use otp_sidecar::server::{serve_stream, LiveSwap};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Decoder;

/// The daemon's frame cap here: the default would make the fuzzer spend its time on large
/// allocations; a small one reaches the same code.
const MAX_FRAME: usize = 4096;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
});

static SHARED: LazyLock<LiveSwap> = LazyLock::new(|| {
    // Per-phone and global limits off: with them on, sends would soon all be refused and
    // the rest of the path would go unexplored. The IP and user limits stay on.
    let options = Options {
        dry_run: Some(true),
        rate_limit_phone: Some("off".into()),
        rate_limit_global: Some("off".into()),
        max_frame_bytes: Some(MAX_FRAME),
        ..Default::default()
    };
    let settings = Settings::resolve(&options, &|_| None).expect("dry-run settings");
    let live = otp_sidecar::app::live(&settings).expect("dry-run parts");
    std::sync::Arc::new(ArcSwap::from_pointee(live))
});

fuzz_target!(|data: &[u8]| {
    let split = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let replies = RUNTIME.block_on(exchange(data, split.max(1)));
    check(&requests(data), &replies);
});

/// Writes `data` through a pipe of `capacity` bytes (a write waits until the daemon has read
/// what is buffered), closes the write side, and reads until the daemon closes.
async fn exchange(data: &[u8], capacity: usize) -> Vec<u8> {
    let (client, daemon) = tokio::io::duplex(capacity);
    let serving = tokio::spawn(serve_stream(SHARED.clone(), daemon));
    let (mut reader, mut writer) = tokio::io::split(client);
    let write = async {
        // A write fails once the daemon has closed on a bad frame: that is allowed.
        let _ = writer.write_all(data).await;
        let _ = writer.shutdown().await;
    };
    let mut replies = Vec::new();
    let read = reader.read_to_end(&mut replies);
    let both = tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(write, read) });
    let _ = both.await.expect("the daemon answers and closes within 10 s");
    let end = serving.await.expect("the connection task never panics");
    assert!(end.is_some(), "the connection cap is never reached here");
    replies
}

/// The requests in `data` as the daemon reads them, msgid → method, up to the first frame it
/// would refuse; `None` for a message that earns a reply without naming its method (malformed).
fn requests(data: &[u8]) -> HashMap<u64, Vec<Option<String>>> {
    let mut codec = MsgpackCodec::new(MAX_FRAME);
    let mut buffer = BytesMut::from(data);
    let mut sent: HashMap<u64, Vec<Option<String>>> = HashMap::new();
    while let Ok(Some(value)) = codec.decode(&mut buffer) {
        match Incoming::parse(value) {
            Ok(Incoming::Request(r)) => {
                let key = msgid_key(&r.msgid);
                sent.entry(key).or_default().push(Some(r.method.name().to_owned()));
            }
            Ok(Incoming::Malformed { msgid, .. }) => {
                sent.entry(msgid_key(&msgid)).or_default().push(None)
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    sent
}

fn msgid_key(msgid: &rmpv::Integer) -> u64 {
    msgid
        .as_u64()
        .unwrap_or_else(|| msgid.as_i64().unwrap_or_default() as u64)
}

fn check(sent: &HashMap<u64, Vec<Option<String>>>, bytes: &[u8]) {
    let mut codec = MsgpackCodec::new(usize::MAX / 2);
    let mut buffer = BytesMut::from(bytes);
    let mut answered: HashMap<u64, usize> = HashMap::new();
    while !buffer.is_empty() {
        let value = codec
            .decode(&mut buffer)
            .expect("a reply frames cleanly")
            .expect("no reply is cut short");
        let Ok(Incoming::Response(response)) = Incoming::parse(value) else {
            panic!("every frame the daemon writes is a response");
        };
        let key = msgid_key(&response.msgid);
        let methods = sent.get(&key).expect("a reply answers a request the client sent");
        let n = answered.entry(key).or_default();
        *n += 1;
        assert!(*n <= methods.len(), "msgid {key} answered more often than asked");
        match response.outcome {
            Err(text) => assert!(text.starts_with("ERR ") && !text.contains('\n'), "{text:?}"),
            Ok(value) => {
                let text = value.as_str().unwrap_or_default();
                let fits = methods.iter().flatten().any(|m| match m.as_str() {
                    "ping" => text == "pong",
                    "sendOTP" => is_sid(text, "SM") || is_sid(text, "CA"),
                    "health" => value.is_map(),
                    _ => false,
                });
                assert!(fits, "{value} answers none of {methods:?}");
            }
        }
    }
}

/// `prefix` and 32 hex digits.
fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s.bytes().skip(2).all(|b| b.is_ascii_hexdigit())
}
