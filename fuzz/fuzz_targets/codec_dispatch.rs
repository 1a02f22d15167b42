//! Bytes from a client, as the daemon takes them: split into reads at a point the input picks,
//! framed by the codec, parsed into messages, dispatched (dry run, so nothing leaves), and
//! the reply encoded and decoded back. Nothing may panic; every failure must be an `ERR`
//! reply or a closed connection; every reply must frame cleanly.
#![no_main]

use std::sync::LazyLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use otp_sidecar::config::{ServeArgs, Settings};
use otp_sidecar::error::CallError;
use otp_sidecar::call::Dispatcher;
use otp_sidecar::rpc::{Incoming, MsgpackCodec, Response};
use tokio_util::codec::{Decoder, Encoder};

/// The cap the daemon uses by default would make the fuzzer spend its time on large
/// allocations; a small one reaches the same code.
const MAX_FRAME: usize = 4096;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
});

static DISPATCHER: LazyLock<Dispatcher> = LazyLock::new(|| {
    // Per-phone and global limits off: with them on, sends would soon all be refused and
    // the rest of the path would go unexplored. The IP and user limits stay on.
    let args = ServeArgs {
        dry_run: Some(true),
        rate_limit_phone: Some("off".into()),
        rate_limit_global: Some("off".into()),
        ..Default::default()
    };
    let settings = Settings::resolve(&args, &|_| None).expect("dry-run settings");
    Dispatcher::dry_run(&settings)
});

fuzz_target!(|data: &[u8]| {
    let split = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let mut codec = MsgpackCodec::new(MAX_FRAME);
    let mut buffer = BytesMut::new();
    for read in [&data[..split], &data[split..]] {
        buffer.extend_from_slice(read);
        loop {
            match codec.decode(&mut buffer) {
                Ok(Some(value)) => {
                    if !answer(value) {
                        return; // the connection would close here
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});

/// Handles one message as the server does; false where the server closes the connection.
fn answer(value: rmpv::Value) -> bool {
    let request = match Incoming::parse(value) {
        Ok(Incoming::Request(request)) => request,
        Ok(Incoming::Malformed { msgid, detail }) => {
            round_trip(Response {
                msgid,
                outcome: Err(CallError::BadRequest(detail).to_string()),
            });
            return true;
        }
        Ok(Incoming::Notification { .. } | Incoming::Response(_)) => return true,
        Err(_) => return false,
    };
    let (result, _log) = RUNTIME.block_on(DISPATCHER.call(&request.method, &request.params));
    match &result {
        Ok(value) if request.method == "sendOTP" => {
            // A text's SID, or a call's when the context asked for voice.
            let sid = value.as_str().unwrap_or_default();
            assert!(
                otp_sidecar::guard::validate::is_sid(sid, "SM")
                    || otp_sidecar::guard::validate::is_sid(sid, "CA"),
                "{sid}"
            );
        }
        Ok(_) => {}
        Err(e) => {
            let text = e.to_string();
            assert!(text.starts_with("ERR ") && !text.contains('\n'), "{text:?}");
        }
    }
    round_trip(Response {
        msgid: request.msgid,
        outcome: result.map_err(|e| e.to_string()),
    });
    true
}

/// A reply encodes, and the codec reads back the same msgid.
fn round_trip(response: Response) {
    let msgid = response.msgid;
    let mut codec = MsgpackCodec::new(usize::MAX / 2);
    let mut bytes = BytesMut::new();
    codec.encode(response, &mut bytes).expect("a reply encodes");
    let back = codec
        .decode(&mut bytes)
        .expect("a reply decodes")
        .expect("whole");
    assert_eq!(back[1].as_u64(), msgid.as_u64());
    assert!(bytes.is_empty());
}
