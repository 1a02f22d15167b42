//! Listeners and connections: Unix and TCP sockets in, one task per connection, many calls
//! in flight on each, limits on all of it, and a drain that answers every call on shutdown.

mod connection;
mod later;
mod metrics_http;
mod open;
mod sockets;
mod tls;

pub use metrics_http::serve as serve_metrics;
pub use open::reserve_descriptors;
use sockets::{accept_failed, bind_unix, Acceptor, ACCEPT_FAILING};
pub use sockets::{check_unix_path, Stream, UnixGroup};
pub use tls::{Tls, TlsFiles, HANDSHAKE_TIMEOUT};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::call::Dispatcher;
use crate::metrics::METRICS;
use open::{connection_cap, unix_reserve, Admitted, Listener, Refused, Stage, OPEN};

/// What serving needs and a reload may replace: calls pick up the newest at once,
/// connections take their own limits when they open.
pub struct Live {
    pub dispatcher: Arc<Dispatcher>,
    pub limits: Limits,
    pub max_frame: usize,
    /// TLS on the TCP listener (`None`: plain); new connections take the newest.
    pub tls: Option<Tls>,
}

/// The [`Live`] settings every connection reads and a reload swaps in whole.
pub type LiveSwap = Arc<ArcSwap<Live>>;

/// Bounds on what callers can make the daemon hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_in_flight: usize,
    pub max_in_flight_per_connection: usize,
    /// `None`: idle connections stay open.
    pub idle_timeout: Option<Duration>,
}

/// A listening socket passed in by systemd's socket activation.
pub enum Inherited {
    Unix(std::os::unix::net::UnixListener),
    Tcp(std::net::TcpListener),
}

/// Bound listeners, ready to serve.
pub struct Listeners {
    unix: Vec<UnixListener>,
    tcp: Vec<TcpListener>,
    /// A TCP address that could not be bound at start: bound once it can be, while the Unix
    /// socket serves (its first error, for the log).
    tcp_later: Option<(SocketAddr, std::io::Error)>,
    /// The socket file this process made, removed on exit (not one systemd made).
    owned_path: Option<PathBuf>,
}

impl Listeners {
    /// Binds the Unix socket (errors name the path and the fix) and TCP, if asked. A TCP
    /// address that is not on the host yet is bound later, while the Unix socket serves; any
    /// other TCP error (a port in use, no permission) stops the start, as a misconfiguration.
    pub async fn bind(
        unix_path: &Path,
        unix_group: Option<&UnixGroup>,
        tcp: Option<SocketAddr>,
    ) -> Result<Listeners> {
        let unix = bind_unix(unix_path, unix_group)?;
        let (tcp, tcp_later) = match tcp {
            Some(addr) => match TcpListener::bind(addr).await {
                Ok(listener) => (vec![listener], None),
                Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                    (vec![], Some((addr, e)))
                }
                Err(e) => {
                    // Nobody will serve the socket file just made: leave no trace of it.
                    drop(unix);
                    let _ = std::fs::remove_file(unix_path);
                    return Err(e).with_context(|| format!("cannot listen on TCP {addr}"));
                }
            },
            None => (vec![], None),
        };
        Ok(Listeners {
            unix: vec![unix],
            tcp,
            tcp_later,
            owned_path: Some(unix_path.to_owned()),
        })
    }

    /// The sockets systemd passed in (socket activation).
    pub fn inherited(sockets: Vec<Inherited>) -> Result<Listeners> {
        let mut listeners = Listeners {
            unix: vec![],
            tcp: vec![],
            tcp_later: None,
            owned_path: None,
        };
        for socket in sockets {
            match socket {
                Inherited::Unix(l) => listeners.unix.push(UnixListener::from_std(l)?),
                Inherited::Tcp(l) => listeners.tcp.push(TcpListener::from_std(l)?),
            }
        }
        Ok(listeners)
    }

    /// Closes the listeners without serving, removing the socket file this process made (a
    /// later step of the start failed).
    pub fn abandon(self) {
        let path = self.owned_path.clone();
        drop(self);
        if let Some(path) = path {
            let _ = std::fs::remove_file(path);
        }
    }

    /// The Unix socket paths, for the log.
    pub fn unix_paths(&self) -> String {
        listed(
            self.unix
                .iter()
                .filter_map(|l| l.local_addr().ok())
                .map(|a| {
                    a.as_pathname()
                        .map_or_else(|| "(unnamed)".to_owned(), |p| p.display().to_string())
                }),
        )
    }

    /// The TCP addresses, for the log (one still to be bound says so).
    pub fn tcp_addrs(&self) -> String {
        listed(
            self.tcp
                .iter()
                .filter_map(|l| l.local_addr().ok())
                .map(|a| a.to_string())
                .chain(
                    self.tcp_later
                        .iter()
                        .map(|(a, _)| format!("{a} (not yet: retrying)")),
                ),
        )
    }

    /// Accepts until `shutdown` is cancelled; then stops accepting, lets every connection
    /// answer what it has in flight (for at most `drain`), and removes the socket file.
    pub async fn serve(self, shared: LiveSwap, shutdown: CancellationToken, drain: Duration) {
        let connections = TaskTracker::new();
        let ids = Arc::new(AtomicU64::new(0));
        let mut accepting = tokio::task::JoinSet::new();
        let server = Server {
            shared,
            shutdown: shutdown.clone(),
            connections: connections.clone(),
            ids,
        };
        for listener in self.unix {
            accepting.spawn(server.clone().accept_loop(listener));
        }
        for listener in self.tcp {
            accepting.spawn(server.clone().accept_loop(listener));
        }
        if let Some((addr, first)) = self.tcp_later {
            let server = server.clone();
            accepting.spawn(async move {
                let listener = later::bind_when_there(addr, first).await;
                server.accept_loop(listener).await;
            });
        }
        shutdown.cancelled().await;
        accepting.shutdown().await;
        if let Some(path) = &self.owned_path {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(path = %path.display(), "cannot remove socket file: {e}");
            }
        }
        connections.close();
        if tokio::time::timeout(drain, connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                connections = connections.len(),
                "drain time is up; closing the connections still open"
            );
        }
    }
}

/// Serves one connected stream as an accepted connection is served — the same loop, limits
/// and call tasks — until it ends; says why it ended. No listener, no drain: for driving the
/// connection handling directly (the fuzz target). `None` when the connection cap is reached
/// and no connection can make room.
pub async fn serve_stream<S: Stream>(shared: LiveSwap, stream: S) -> Option<String> {
    let live = shared.load_full();
    let cap = connection_cap(live.limits.max_connections);
    let server = Server {
        shared,
        shutdown: CancellationToken::new(),
        connections: TaskTracker::new(),
        ids: Arc::new(AtomicU64::new(0)),
    };
    let id = server.ids.fetch_add(1, Ordering::Relaxed);
    let registered = OPEN
        .admit(id, Listener::Unix, Stage::Stranger, cap)
        .ok()?
        .registered;
    let end = server
        .serve_connection(stream, &live.limits, live.max_frame, &registered.conn)
        .await;
    Some(end)
}

/// What every accept loop and connection shares.
#[derive(Clone)]
struct Server {
    shared: LiveSwap,
    shutdown: CancellationToken,
    connections: TaskTracker,
    ids: Arc<AtomicU64>,
}

/// Set while connections are being refused, so the log says so once, not per connection.
static AT_CAPACITY: AtomicBool = AtomicBool::new(false);
/// Set while idle connections are being closed for newcomers, likewise.
static EVICTING: AtomicBool = AtomicBool::new(false);

impl Server {
    async fn accept_loop<A: Acceptor>(self, listener: A) {
        loop {
            let stream = match listener.accept_stream().await {
                Ok(stream) => {
                    ACCEPT_FAILING.store(false, Ordering::Relaxed);
                    stream
                }
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            };
            let live = self.shared.load_full();
            let cap = connection_cap(live.limits.max_connections);
            let id = self.ids.fetch_add(1, Ordering::Relaxed);
            let stage = match (A::LISTENER, &live.tls) {
                (Listener::Tcp, Some(_)) => Stage::Handshake,
                _ => Stage::Stranger,
            };
            let registered = match OPEN.admit(id, A::LISTENER, stage, cap) {
                Ok(Admitted {
                    registered,
                    evicted: false,
                }) => {
                    AT_CAPACITY.store(false, Ordering::Relaxed);
                    EVICTING.store(false, Ordering::Relaxed);
                    registered
                }
                // At the cap: a connection that was never served made room.
                Ok(Admitted { registered, .. }) => {
                    if !EVICTING.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            max_connections = cap,
                            "connection limit reached: closing connections that have not \
                             completed a call (TLS handshakes first, then the oldest) for new ones"
                        );
                    }
                    // The victim frees its descriptor when its task next runs; let it run
                    // before accepting more, or a burst of newcomers outruns the closes
                    // and the process runs out of descriptors.
                    let until = tokio::time::Instant::now() + Duration::from_millis(50);
                    while OPEN.count() > cap && tokio::time::Instant::now() < until {
                        tokio::task::yield_now().await;
                    }
                    registered
                }
                Err(Refused::Full) => {
                    METRICS.count_connection_refused();
                    if !AT_CAPACITY.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            max_connections = cap,
                            unix_reserve = unix_reserve(cap),
                            kind = A::KIND,
                            "connection limit reached and every connection has a call in \
                             flight or was served: closing new connections until one ends"
                        );
                    }
                    continue; // dropping the stream closes it
                }
            };
            let server = self.clone();
            self.connections.spawn(async move {
                tracing::debug!(conn = id, kind = A::KIND, "connection opened");
                let end = A::serve(&server, stream, &live, &registered.conn).await;
                drop(registered);
                tracing::debug!(conn = id, kind = A::KIND, "connection closed: {end}");
            });
        }
    }
}

/// Comma-separated, or `off` when there is nothing.
fn listed(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        "off".to_owned()
    } else {
        items.join(",")
    }
}
