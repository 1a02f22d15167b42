//! Bytes from a client, served as the daemon serves a connection: the real connection loop
//! (`server::serve_stream`) over a real Unix socket pair, with the dry-run backend the
//! composition root builds, so nothing leaves. The bytes arrive in two writes split at a point
//! the input picks, then the client closes its side and reads every reply.
//!
//! Nothing may panic; every reply must frame cleanly and be a response; every error must be a
//! one-line `ERR` text; every string result `pong` or a Twilio-shaped SID.
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use otp_sidecar::config::{Options, Settings};
use otp_sidecar::rpc::{Incoming, MsgpackCodec};
use otp_sidecar::server::{serve_stream, Shared};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_util::codec::Decoder;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
});

static SHARED: LazyLock<Shared> = LazyLock::new(|| {
    // Per-phone and global limits off: with them on, sends would soon all be refused and
    // the rest of the path would go unexplored. The IP and user limits stay on. A small frame
    // cap reaches the same code as the default without large allocations.
    let options = Options {
        dry_run: Some(true),
        rate_limit_phone: Some("off".into()),
        rate_limit_global: Some("off".into()),
        max_frame_bytes: Some(4096),
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
    let replies = RUNTIME.block_on(exchange(&data[..split], &data[split..]));
    check_replies(replies);
});

/// Writes both parts, closes the write side, and reads until the daemon closes.
async fn exchange(first: &[u8], second: &[u8]) -> Vec<u8> {
    let (mut client, daemon) = UnixStream::pair().expect("socket pair");
    let serving = tokio::spawn(serve_stream(SHARED.clone(), daemon));
    let (mut reader, mut writer) = client.split();
    let write = async {
        // Either write may fail once the daemon has closed on a bad frame: that is allowed.
        if writer.write_all(first).await.is_ok() {
            tokio::task::yield_now().await;
            let _ = writer.write_all(second).await;
        }
        let _ = writer.shutdown().await;
    };
    let mut replies = Vec::new();
    let read = reader.read_to_end(&mut replies);
    let (_, read) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(write, read)
    })
    .await
    .expect("the daemon answers and closes within 10 s");
    // A reset after a bad frame is a closed connection too; what arrived before it counts.
    let _ = read;
    let end = serving.await.expect("the connection task never panics");
    assert!(end.is_some(), "the connection cap is never reached here");
    replies
}

fn check_replies(bytes: Vec<u8>) {
    let mut codec = MsgpackCodec::new(usize::MAX / 2);
    let mut buffer = BytesMut::from(&bytes[..]);
    while !buffer.is_empty() {
        let value = codec
            .decode(&mut buffer)
            .expect("a reply frames cleanly")
            .expect("no reply is cut short");
        let response = match Incoming::parse(value) {
            Ok(Incoming::Response(response)) => response,
            _ => panic!("every frame the daemon writes is a response"),
        };
        match response.outcome {
            Err(text) => assert!(text.starts_with("ERR ") && !text.contains('\n'), "{text:?}"),
            Ok(rmpv::Value::String(s)) => {
                let s = s.as_str().unwrap_or_default();
                assert!(s == "pong" || is_sid(s), "{s:?}");
            }
            Ok(_) => {} // health's map
        }
    }
}

/// `SM`, `CA` or `VE` and 32 hex digits: a (made-up) message, call or verification.
fn is_sid(s: &str) -> bool {
    s.len() == 34
        && ["SM", "CA", "VE"].iter().any(|p| s.starts_with(p))
        && s.bytes().skip(2).all(|b| b.is_ascii_hexdigit())
}
