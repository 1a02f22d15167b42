//! The server's settings: its connection and in-flight limits, and where metrics are served.

use std::net::SocketAddr;

use anyhow::{bail, Result};

use super::{given, secs_or_off, Options};
use crate::server::Limits;

pub(super) fn limits(o: &Options) -> Result<Limits> {
    Ok(Limits {
        max_connections: given(o.max_connections, "max_connections")?,
        max_in_flight: given(o.max_in_flight, "max_in_flight")?,
        max_in_flight_per_connection: given(
            o.max_in_flight_per_connection,
            "max_in_flight_per_connection",
        )?,
        idle_timeout: secs_or_off(given(o.idle_timeout_secs, "idle_timeout_secs")?),
    })
}

/// `metrics`: on loopback only.
pub(super) fn metrics(o: &Options) -> Result<Option<SocketAddr>> {
    if let Some(addr) = o.metrics {
        if !addr.ip().is_loopback() {
            bail!("metrics {addr} is not a loopback address; metrics are served on loopback only");
        }
    }
    Ok(o.metrics)
}
