//! A TCP listener whose address is not there yet. On BIG-IP the sideband's address belongs to
//! the `tmm` interface, which comes up with TMM, possibly after this daemon; the Unix socket
//! (the ILX path) must not wait for it, and a failed bind must not end the process. So the
//! bind is retried every second, beside the Unix socket that already serves.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

/// How often a TCP bind that failed is tried again.
pub(super) const RETRY: Duration = Duration::from_secs(1);

/// Binds `addr`, retrying until it works; says so once when it starts waiting and once when
/// it is bound.
pub(super) async fn bind_when_there(addr: SocketAddr, first: std::io::Error) -> TcpListener {
    tracing::warn!(
        tcp = %addr,
        "cannot listen on TCP {addr} yet ({first}){}: serving the Unix socket, trying again \
         every second",
        hint(&first)
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

fn hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrNotAvailable => {
            " — the address is not on this host (yet): on BIG-IP the tmm interface's comes up \
             with TMM"
        }
        std::io::ErrorKind::AddrInUse => " — another process holds it",
        _ => "",
    }
}
