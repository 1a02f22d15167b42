//! The shared-store row: a real `redis-server` on loopback, and a second otp-sidecar keeping
//! its limits there. Its limits are on (so every call checks and charges the store in one
//! round trip, a phone key and the global key) but too high to refuse any of the bench's calls.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use super::support::{free_port, Proc};
use super::wait_until;

/// What the daemon is told besides its usual settings.
pub fn daemon_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTP_SIDECAR_STATE", url.to_owned()),
        (
            "OTP_SIDECAR_STATE_KEY",
            "bench-state-key-0123456789".to_owned(),
        ),
        ("OTP_SIDECAR_RATE_LIMIT_PHONE", "100000000/1h".to_owned()),
        ("OTP_SIDECAR_RATE_LIMIT_GLOBAL", "100000000/1h".to_owned()),
    ]
}

/// redis-server without persistence on a free port; its `redis://` URL.
pub fn start_redis(dir: &Path) -> Result<(Proc, String)> {
    let port = free_port()?;
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start redis-server (apt-get install redis-server)")?;
    let proc = Proc(child);
    wait_until("redis-server", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    })?;
    Ok((proc, format!("redis://127.0.0.1:{port}/0")))
}
