//! Listeners and connections: Unix and TCP sockets in, one task per connection, many calls
//! in flight on each.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;

use crate::error::CallError;
use crate::methods::Dispatcher;
use crate::rpc::{Incoming, MsgpackCodec, Request, Response};

/// Calls one connection may have in flight; past it the connection is not read
/// (backpressure) until a reply goes out.
const MAX_IN_FLIGHT_PER_CONNECTION: usize = 128;

/// Bound listeners, ready to serve.
pub struct Listeners {
    unix: UnixListener,
    unix_path: PathBuf,
    tcp: Option<TcpListener>,
}

impl Listeners {
    /// Binds the Unix socket (and TCP, if asked); errors name the path and the fix.
    pub async fn bind(unix_path: &Path, tcp: Option<SocketAddr>) -> Result<Listeners> {
        let unix = bind_unix(unix_path)?;
        let tcp = match tcp {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on TCP {addr}"))?,
            ),
            None => None,
        };
        Ok(Listeners {
            unix,
            unix_path: unix_path.to_owned(),
            tcp,
        })
    }

    pub fn unix_path(&self) -> &Path {
        &self.unix_path
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Accepts until `shutdown` completes, then removes the socket file.
    pub async fn serve(
        self,
        dispatcher: Arc<Dispatcher>,
        max_frame: usize,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let ids = Arc::new(AtomicU64::new(0));
        let unix_loop = {
            let (dispatcher, ids) = (dispatcher.clone(), ids.clone());
            async move {
                loop {
                    match self.unix.accept().await {
                        Ok((stream, _)) => {
                            spawn_connection(stream, "unix", &dispatcher, &ids, max_frame)
                        }
                        Err(e) => accept_failed(e).await,
                    }
                }
            }
        };
        let tcp_loop = async move {
            let Some(tcp) = self.tcp else {
                return std::future::pending().await;
            };
            loop {
                match tcp.accept().await {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        spawn_connection(stream, "tcp", &dispatcher, &ids, max_frame)
                    }
                    Err(e) => accept_failed(e).await,
                }
            }
        };
        tokio::select! {
            () = unix_loop => {}
            () = tcp_loop => {}
            () = shutdown => {}
        }
        if let Err(e) = std::fs::remove_file(&self.unix_path) {
            tracing::warn!(path = %self.unix_path.display(), "cannot remove socket file: {e}");
        }
    }
}

/// Out of file descriptors and the like: wait a little instead of spinning.
async fn accept_failed(e: io::Error) {
    tracing::warn!("accept failed: {e}");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}

fn bind_unix(path: &Path) -> Result<UnixListener> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        bail!(
            "cannot listen on {}: directory {} does not exist (create it, or let systemd's \
             RuntimeDirectory= make it)",
            path.display(),
            parent.display()
        );
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "{} is in use by a running process (another otp-sidecar?)",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
        }
        Ok(_) => bail!(
            "refusing to replace {}: it exists and is not a socket",
            path.display()
        ),
        Err(_) => {}
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot set mode 0660 on {}", path.display()))?;
    Ok(listener)
}

fn spawn_connection<S>(
    stream: S,
    kind: &'static str,
    dispatcher: &Arc<Dispatcher>,
    ids: &AtomicU64,
    max_frame: usize,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let id = ids.fetch_add(1, Ordering::Relaxed);
    let dispatcher = dispatcher.clone();
    tokio::spawn(async move {
        tracing::debug!(conn = id, kind, "connection opened");
        let end = serve_connection(stream, dispatcher, max_frame).await;
        tracing::debug!(conn = id, kind, "connection closed: {end}");
    });
}

/// Reads requests, runs each as its own task, writes replies as they finish (in any order).
/// Returns why the connection ended.
async fn serve_connection<S>(stream: S, dispatcher: Arc<Dispatcher>, max_frame: usize) -> String
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut framed = Framed::new(stream, MsgpackCodec::new(max_frame));
    let mut in_flight: FuturesUnordered<CallTask> = FuturesUnordered::new();
    let mut reading = true;
    loop {
        tokio::select! {
            frame = framed.next(), if reading && in_flight.len() < MAX_IN_FLIGHT_PER_CONNECTION => {
                let value = match frame {
                    Some(Ok(value)) => value,
                    Some(Err(e)) => return format!("bad frame: {e}"),
                    // The client closed its side: answer what is in flight, then close.
                    None => { reading = false; continue; }
                };
                match Incoming::parse(value) {
                    Ok(Incoming::Request(request)) => in_flight.push(CallTask::spawn(&dispatcher, request)),
                    Ok(Incoming::Malformed { msgid, detail }) => {
                        let reply = Response { msgid, outcome: Err(CallError::BadRequest(detail).to_string()) };
                        if let Err(e) = framed.send(reply).await {
                            return format!("write failed: {e}");
                        }
                    }
                    Ok(Incoming::Notification { .. } | Incoming::Response(_)) => {}
                    Err(e) => return e.to_string(),
                }
            }
            Some(reply) = in_flight.next(), if !in_flight.is_empty() => {
                // Replies that are ready together leave in one write.
                let mut written = framed.feed(reply).await;
                while written.is_ok() {
                    match in_flight.next().now_or_never() {
                        Some(Some(more)) => written = framed.feed(more).await,
                        _ => break,
                    }
                }
                if written.is_ok() {
                    written = SinkExt::<Response>::flush(&mut framed).await;
                }
                if let Err(e) = written {
                    return format!("write failed: {e}");
                }
            }
            else => return "client closed".into(),
        }
    }
}

/// One call running on its own task, so that it finishes (and logs) even if its connection
/// goes away, and so that a fault in it cannot touch the connection.
struct CallTask {
    msgid: rmpv::Integer,
    handle: JoinHandle<Result<rmpv::Value, CallError>>,
}

impl CallTask {
    fn spawn(dispatcher: &Arc<Dispatcher>, request: Request) -> CallTask {
        let dispatcher = dispatcher.clone();
        let Request {
            msgid,
            method,
            params,
        } = request;
        let handle = tokio::spawn(async move { dispatcher.call(&method, &params).await });
        CallTask { msgid, handle }
    }
}

impl std::future::Future for CallTask {
    type Output = Response;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Response> {
        let joined = std::task::ready!(std::pin::Pin::new(&mut self.handle).poll(cx));
        let outcome = match joined {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(e) => {
                tracing::error!("call task failed: {e}");
                Err(CallError::Internal("the call failed unexpectedly".into()).to_string())
            }
        };
        std::task::Poll::Ready(Response {
            msgid: self.msgid,
            outcome,
        })
    }
}
