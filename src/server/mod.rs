//! Listeners and connections: Unix and TCP sockets in, one task per connection, many calls
//! in flight on each, limits on all of it, and a drain that answers every call on shutdown.

pub mod slots;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use arc_swap::ArcSwap;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::call::log::CallLog;
use crate::call::Dispatcher;
use crate::error::CallError;
use crate::metrics::METRICS;
use crate::rpc::{Incoming, MsgpackCodec, Request, Response};
use crate::server::slots::{connection_cap, Conn, Slot, CALLS, CONNECTIONS, OPEN};

/// Read and write buffer each connection starts with; requests are about 60 bytes.
const CONNECTION_BUFFER: usize = 1024;

/// What serving needs and a reload may replace: calls pick up the newest at once,
/// connections take their own limits when they open.
pub struct Live {
    pub dispatcher: Arc<Dispatcher>,
    pub limits: Limits,
    pub max_frame: usize,
}

pub type Shared = Arc<ArcSwap<Live>>;

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
    /// The socket file this process made, removed on exit (not one systemd made).
    owned_path: Option<PathBuf>,
}

impl Listeners {
    /// Binds the Unix socket (and TCP, if asked); errors name the path and the fix.
    pub async fn bind(unix_path: &Path, tcp: Option<SocketAddr>) -> Result<Listeners> {
        let unix = bind_unix(unix_path)?;
        let tcp = match tcp {
            Some(addr) => match TcpListener::bind(addr).await {
                Ok(listener) => vec![listener],
                Err(e) => {
                    // Nobody will serve the socket file just made: leave no trace of it.
                    drop(unix);
                    let _ = std::fs::remove_file(unix_path);
                    return Err(e).with_context(|| format!("cannot listen on TCP {addr}"));
                }
            },
            None => vec![],
        };
        Ok(Listeners {
            unix: vec![unix],
            tcp,
            owned_path: Some(unix_path.to_owned()),
        })
    }

    /// The sockets systemd passed in (socket activation).
    pub fn inherited(sockets: Vec<Inherited>) -> Result<Listeners> {
        let mut listeners = Listeners {
            unix: vec![],
            tcp: vec![],
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

    /// The TCP addresses, for the log.
    pub fn tcp_addrs(&self) -> String {
        listed(
            self.tcp
                .iter()
                .filter_map(|l| l.local_addr().ok())
                .map(|a| a.to_string()),
        )
    }

    /// Accepts until `shutdown` is cancelled; then stops accepting, lets every connection
    /// answer what it has in flight (for at most `drain`), and removes the socket file.
    pub async fn serve(self, shared: Shared, shutdown: CancellationToken, drain: Duration) {
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

/// A listener of either kind.
trait Acceptor: Send + 'static {
    type Stream: Stream;
    const KIND: &'static str;
    fn accept_stream(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// A connected socket of either kind.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
}

impl Acceptor for UnixListener {
    type Stream = UnixStream;
    const KIND: &'static str = "unix";
    async fn accept_stream(&self) -> io::Result<UnixStream> {
        self.accept().await.map(|(s, _)| s)
    }
}

impl Acceptor for TcpListener {
    type Stream = TcpStream;
    const KIND: &'static str = "tcp";
    async fn accept_stream(&self) -> io::Result<TcpStream> {
        let (stream, _) = self.accept().await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

impl Stream for UnixStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        UnixStream::readable(self)
    }
}

impl Stream for TcpStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        TcpStream::readable(self)
    }
}

/// What every accept loop and connection shares.
#[derive(Clone)]
struct Server {
    shared: Shared,
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
            let slot = match CONNECTIONS.try_take(cap) {
                Some(slot) => {
                    AT_CAPACITY.store(false, Ordering::Relaxed);
                    EVICTING.store(false, Ordering::Relaxed);
                    slot
                }
                // At the cap: the longest-idle connection with nothing in flight makes room.
                None => match OPEN.evict_idlest() {
                    Some(slot) => {
                        if !EVICTING.swap(true, Ordering::Relaxed) {
                            tracing::warn!(
                                max_connections = cap,
                                "connection limit reached: closing the longest-idle connection \
                                 for each new one"
                            );
                        }
                        // The victim frees its descriptor when its task next runs; let it run
                        // before accepting more, or a burst of newcomers outruns the closes
                        // and the process runs out of descriptors.
                        let until = tokio::time::Instant::now() + Duration::from_millis(50);
                        while OPEN.count() >= cap && tokio::time::Instant::now() < until {
                            tokio::task::yield_now().await;
                        }
                        slot
                    }
                    None => {
                        METRICS.connections_refused.inc();
                        if !AT_CAPACITY.swap(true, Ordering::Relaxed) {
                            tracing::warn!(
                                max_connections = cap,
                                "connection limit reached and every connection has a call in \
                                 flight: closing new connections until one ends"
                            );
                        }
                        continue; // dropping the stream closes it
                    }
                },
            };
            let id = self.ids.fetch_add(1, Ordering::Relaxed);
            let registered = OPEN.register(id, slot);
            let server = self.clone();
            self.connections.spawn(async move {
                tracing::debug!(conn = id, kind = A::KIND, "connection opened");
                let end = server
                    .serve_connection(stream, &live.limits, live.max_frame, &registered.conn)
                    .await;
                drop(registered);
                tracing::debug!(conn = id, kind = A::KIND, "connection closed: {end}");
            });
        }
    }

    /// Waits for the client's first bytes, then serves it. Returns why the connection ended.
    async fn serve_connection<S: Stream>(
        &self,
        stream: S,
        limits: &Limits,
        max_frame: usize,
        conn: &Conn,
    ) -> String {
        // An idle client costs only this small future: no buffers, no request state.
        tokio::select! {
            ready = stream.readable() => if let Err(e) = ready { return format!("read failed: {e}") },
            () = sleep_until(limits.idle_timeout.map(|t| Instant::now() + t)) => return "idle".into(),
            () = conn.evicted() => return EVICTED.into(),
            () = self.shutdown.cancelled() => return "shutting down".into(),
        }
        Box::pin(self.serve_requests(stream, limits, max_frame, conn)).await
    }

    /// Reads requests, runs each as its own task, writes replies as they finish (in any
    /// order). Returns why the connection ended.
    ///
    /// Whatever ends the reading — the client closing its side, a bad frame, shutdown, the
    /// connection cap choosing this connection — every call already read is answered first.
    async fn serve_requests<S: Stream>(
        &self,
        stream: S,
        limits: &Limits,
        max_frame: usize,
        conn: &Conn,
    ) -> String {
        let idle_after = |from: Instant| limits.idle_timeout.map(|t| from + t);
        let mut framed =
            Framed::with_capacity(stream, MsgpackCodec::new(max_frame), CONNECTION_BUFFER);
        let mut in_flight: FuturesUnordered<CallTask> = FuturesUnordered::new();
        // A call read while every call slot was taken waits here, in the one line all
        // connections share; this connection reads nothing more until it runs.
        let mut waiting: Option<Waiting> = None;
        let mut reading = true;
        // Why reading stopped, when it was not the client closing its side.
        let mut end: Option<String> = None;
        let mut idle_at = idle_after(Instant::now());
        loop {
            tokio::select! {
                frame = framed.next(), if reading && waiting.is_none() && in_flight.len() < limits.max_in_flight_per_connection => {
                    let value = match frame {
                        Some(Ok(value)) => value,
                        // Read nothing more, answer what is in flight, then close.
                        Some(Err(e)) => {
                            reading = false;
                            end = Some(format!("bad frame: {e}"));
                            continue;
                        }
                        // The client closed its side: answer what is in flight, then close.
                        None => { reading = false; continue; }
                    };
                    idle_at = idle_after(Instant::now());
                    match Incoming::parse(value) {
                        Ok(Incoming::Request(request)) => {
                            // Takes the newest settings (a reload applies to the next call).
                            let live = self.shared.load_full();
                            match CallTask::inline(&live.dispatcher, request) {
                                Ok(answered) => in_flight.push(answered),
                                Err(request) => match CALLS.try_take(live.limits.max_in_flight) {
                                    Some(slot) => in_flight.push(CallTask::spawn(&live.dispatcher, request, slot)),
                                    None => waiting = Some(Waiting::new(request, live.limits.max_in_flight)),
                                },
                            }
                            conn.active(in_flight.len() + usize::from(waiting.is_some()));
                        }
                        Ok(Incoming::Malformed { msgid, detail }) => {
                            let reply = Response { msgid, outcome: Err(CallError::BadRequest(detail).to_string()) };
                            if let Err(e) = framed.send(reply).await {
                                return format!("write failed: {e}");
                            }
                        }
                        Ok(Incoming::Notification { .. } | Incoming::Response(_)) => {}
                        Err(e) => {
                            reading = false;
                            end = Some(e.to_string());
                        }
                    }
                }
                (request, slot) = admitted(&mut waiting), if waiting.is_some() => {
                    // The newest settings, as for a call that found a slot at once.
                    let live = self.shared.load_full();
                    in_flight.push(CallTask::spawn(&live.dispatcher, request, slot));
                }
                Some((reply, log)) = in_flight.next(), if !in_flight.is_empty() => {
                    // Replies that are ready together leave in one write; their log lines
                    // are formatted after it (dropping a CallLog writes it). The Vec
                    // allocates only when a second reply joins the write.
                    let mut more_logs = Vec::new();
                    let mut written = framed.feed(reply).await;
                    while written.is_ok() {
                        match in_flight.next().now_or_never() {
                            Some(Some((more, more_log))) => {
                                more_logs.push(more_log);
                                written = framed.feed(more).await;
                            }
                            _ => break,
                        }
                    }
                    if written.is_ok() {
                        written = SinkExt::<Response>::flush(&mut framed).await;
                    }
                    drop((log, more_logs));
                    if let Err(e) = written {
                        return format!("write failed: {e}");
                    }
                    idle_at = idle_after(Instant::now());
                    conn.active(in_flight.len() + usize::from(waiting.is_some()));
                }
                // Shutting down: read nothing more, answer what is in flight.
                () = self.shutdown.cancelled(), if reading => reading = false,
                // Chosen to make room for a newcomer (it had nothing in flight then).
                () = conn.evicted(), if reading => {
                    reading = false;
                    end = Some(EVICTED.into());
                }
                () = sleep_until(idle_at), if reading && in_flight.is_empty() && waiting.is_none() => return "idle".into(),
                else => return end.unwrap_or_else(|| "done".into()),
            }
        }
    }
}

/// Why a connection chosen to make room ended.
const EVICTED: &str = "closed for a new connection at the connection limit (it was idle longest)";

/// A call waiting in line for a call slot.
struct Waiting {
    request: Request,
    slot: std::pin::Pin<Box<dyn Future<Output = Slot<'static>> + Send>>,
}

impl Waiting {
    fn new(request: Request, max_in_flight: usize) -> Waiting {
        Waiting {
            request,
            slot: Box::pin(CALLS.take(max_in_flight)),
        }
    }
}

/// The waiting call and its slot, once it has one; pending while nothing waits.
fn admitted(waiting: &mut Option<Waiting>) -> impl Future<Output = (Request, Slot<'static>)> + '_ {
    std::future::poll_fn(move |cx| {
        let Some(w) = waiting.as_mut() else {
            return std::task::Poll::Pending;
        };
        let slot = std::task::ready!(w.slot.as_mut().poll(cx));
        match waiting.take() {
            Some(w) => std::task::Poll::Ready((w.request, slot)),
            None => std::task::Poll::Pending,
        }
    })
}

/// Sleeps until `at`, or forever when there is no such time.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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

/// Set while accepts fail, so the log says so once, not 20 times a second.
static ACCEPT_FAILING: AtomicBool = AtomicBool::new(false);

/// Out of file descriptors and the like: wait a little instead of spinning, and keep
/// listening (the connection stays in the backlog until a descriptor is free).
async fn accept_failed(e: io::Error) {
    if ACCEPT_FAILING.swap(true, Ordering::Relaxed) {
        tracing::debug!("accept failed: {e}");
    } else {
        tracing::warn!("accept failed: {e} (retrying every 50 ms; logged once until one succeeds)");
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}

/// What `bind` would refuse about the Unix socket path, checked without binding (for `check`,
/// which may run beside the daemon that holds the socket): its directory must exist and the
/// path must not be a file other than a socket.
pub fn check_unix_path(path: &Path) -> Result<()> {
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
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!(
                "refusing to replace {}: it exists and is not a socket",
                path.display()
            );
        }
    }
    Ok(())
}

fn bind_unix(path: &Path) -> Result<UnixListener> {
    check_unix_path(path)?;
    if matches!(std::fs::symlink_metadata(path), Ok(meta) if meta.file_type().is_socket()) {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "{} is in use by a running process (another otp-sidecar?)",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot set mode 0660 on {}", path.display()))?;
    Ok(listener)
}

/// One call running on its own task, so that it finishes (and logs) even if its connection
/// goes away, and so that a fault in it cannot touch the connection; or a call answered at
/// once, without a task or a call slot (`ping`, `health`).
enum CallTask {
    Running {
        msgid: rmpv::Integer,
        handle: JoinHandle<(Result<rmpv::Value, CallError>, CallLog)>,
    },
    Answered(Option<(Response, CallLog)>),
}

impl CallTask {
    /// Answers `ping` and `health` here and now: they never wait for a call slot, so a
    /// health check gets through however busy the daemon is. Any other call comes back.
    fn inline(dispatcher: &Dispatcher, request: Request) -> Result<CallTask, Request> {
        if !matches!(request.method.as_str(), "ping" | "health") {
            return Err(request);
        }
        // Neither awaits anything: the first poll finishes them.
        let (result, log) = dispatcher.call(&request).now_or_never().unwrap_or_else(|| {
            let failed = CallError::Internal("the call did not finish at once".into());
            (Err(failed), CallLog::default())
        });
        let reply = Response {
            msgid: request.msgid,
            outcome: result.map_err(|e| e.to_string()),
        };
        Ok(CallTask::Answered(Some((reply, log))))
    }

    /// Runs the call holding `slot`, which the call gives back when it ends.
    fn spawn(dispatcher: &Arc<Dispatcher>, request: Request, slot: Slot<'static>) -> CallTask {
        let dispatcher = dispatcher.clone();
        let msgid = request.msgid;
        let handle = tokio::spawn(async move {
            let called = dispatcher.call(&request).await;
            drop(slot);
            called
        });
        CallTask::Running { msgid, handle }
    }
}

impl std::future::Future for CallTask {
    /// The reply, and the call's log line to drop once the reply is written.
    type Output = (Response, CallLog);

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let (msgid, handle) = match self.get_mut() {
            CallTask::Running { msgid, handle } => (*msgid, handle),
            // FuturesUnordered polls a finished future no more.
            CallTask::Answered(answered) => {
                return answered
                    .take()
                    .map_or(std::task::Poll::Pending, std::task::Poll::Ready)
            }
        };
        let joined = std::task::ready!(std::pin::Pin::new(handle).poll(cx));
        let (outcome, log) = match joined {
            Ok((result, log)) => (result.map_err(|e| e.to_string()), log),
            Err(e) => {
                tracing::error!("call task failed: {e}");
                let failed = CallError::Internal("the call failed unexpectedly".into());
                (Err(failed.to_string()), CallLog::default())
            }
        };
        std::task::Poll::Ready((Response { msgid, outcome }, log))
    }
}
