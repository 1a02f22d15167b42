//! Clients we did not write — pynvim (PyPI) and msgpack-rpc-lite (npm) — talk to the real
//! daemon over both sockets. If the wire format were off, they would say so.

use std::process::Command;

use crate::common::*;
use serde_json::{json, Value};

fn endpoints(daemon: &Daemon) -> [Vec<String>; 2] {
    [
        vec!["unix".into(), daemon.unix.display().to_string()],
        vec![
            "tcp".into(),
            daemon.tcp.ip().to_string(),
            daemon.tcp.port().to_string(),
        ],
    ]
}

fn expected() -> Value {
    json!({
        "ping": {"ok": "pong"},
        "send": {"ok": SID},
        "bad_phone": {"err": "ERR invalid_phone: phone must be E.164, like +14155550100 (set default_region to accept national numbers)"},
        "unknown": {"err": "ERR bad_request: unknown method 'nope' (known: sendOTP, confirmOTP, ping, health)"},
    })
}

fn run_witness(mut cmd: Command) -> Value {
    let out = cmd.output().expect("run the witness client");
    assert!(
        out.status.success(),
        "witness failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "witness printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[tokio::test]
async fn pynvim_session_over_unix_and_tcp() {
    let witness = witness_dir();
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default());
    for endpoint in endpoints(&daemon) {
        let mut cmd = Command::new(witness.join("venv/bin/python"));
        cmd.arg(repo_file("tests/witness/pynvim_client.py"))
            .args(&endpoint);
        assert_eq!(run_witness(cmd), expected(), "over {}", endpoint[0]);
    }
    assert_eq!(sends(&twilio).await.len(), 2);
}

#[tokio::test]
async fn msgpack_rpc_lite_over_unix_and_tcp() {
    let witness = witness_dir();
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default());
    for endpoint in endpoints(&daemon) {
        let mut cmd = Command::new("node");
        cmd.arg(repo_file("tests/witness/msgpack_rpc_lite_client.js"))
            .args(&endpoint)
            .env("NODE_PATH", witness.join("node_modules"));
        assert_eq!(run_witness(cmd), expected(), "over {}", endpoint[0]);
    }
    assert_eq!(sends(&twilio).await.len(), 2);
}
