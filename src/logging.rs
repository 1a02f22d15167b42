//! Log setup. Third-party crates (hyper, reqwest, rustls, h2) are held at INFO and above
//! whatever RUST_LOG says: their debug and trace output can show request bodies and headers,
//! which carry the OTP and the credentials.

use std::io::IsTerminal;

use tracing::{Level, Metadata};
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
use tracing_subscriber::prelude::*;

/// Our own targets, which are written never to carry secrets.
fn is_ours(meta: &Metadata<'_>) -> bool {
    meta.target().starts_with("otp_sidecar")
}

/// Logs to stderr (journald adds timestamps there). `RUST_LOG` picks the level, default info.
pub fn init() {
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let safe = filter_fn(|meta| is_ours(meta) || *meta.level() <= Level::INFO);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(env.and(safe));
    // A second init (tests calling into the library) is harmless: keep the first.
    let _ = tracing_subscriber::registry().with(layer).try_init();
}
