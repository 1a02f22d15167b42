//! A TCP listener whose address is not there yet. On BIG-IP the sideband's address belongs to
//! the `tmm` interface, which comes up with TMM, possibly after this daemon; the Unix socket
//! (the ILX path) must not wait for it, and the address missing must not end the process. So the
//! bind of an address that is not there yet is retried every second, beside the Unix socket
//! that already serves.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

/// How often a TCP bind that failed is tried again.
pub(super) const RETRY: Duration = Duration::from_secs(1);

/// Binds `addr` (which was not on the host: EADDRNOTAVAIL), retrying until it works; says so
/// once when it starts waiting and once when it is bound.
pub(super) async fn bind_when_there(addr: SocketAddr, first: std::io::Error) -> TcpListener {
    tracing::warn!(
        tcp = %addr,
        "cannot listen on TCP {addr} yet ({first}) — the address is not on this host (yet): \
         on BIG-IP the tmm interface's comes up with TMM; serving the Unix socket, trying \
         again every second"
    );
    let mut tries: u64 = 1;
    loop {
        tokio::time::sleep(RETRY).await;
        tries += 1;
        match TcpListener::bind(addr).await {
            Ok(listener) => {
                tracing::info!(tcp = %addr, tries, "now listening on TCP {addr}");
                return listener;
            }
            Err(e) => tracing::debug!(tcp = %addr, "cannot listen on TCP {addr} yet: {e}"),
        }
    }
}
