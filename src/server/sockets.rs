//! Sockets: the listener and stream kinds served, binding the Unix socket (and checking its
//! path for `check`), and riding out failing accepts.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use tokio::io::DuplexStream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use super::open::{Conn, Listener};
use super::{Live, Server};

/// A listener of either kind.
pub(super) trait Acceptor: Send + 'static {
    type Stream: Stream;
    const KIND: &'static str;
    const LISTENER: Listener;
    fn accept_stream(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Serves one accepted stream (TCP over TLS when the live settings have it).
    fn serve<'a>(
        server: &'a Server,
        stream: Self::Stream,
        live: &'a Live,
        conn: &'a Conn,
    ) -> impl Future<Output = String> + Send + 'a;
}

/// A connected stream: a socket of either kind, or an in-memory pipe.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
}

impl Acceptor for UnixListener {
    type Stream = UnixStream;
    const KIND: &'static str = "unix";
    const LISTENER: Listener = Listener::Unix;
    async fn accept_stream(&self) -> io::Result<UnixStream> {
        self.accept().await.map(|(s, _)| s)
    }
    fn serve<'a>(
        server: &'a Server,
        stream: UnixStream,
        live: &'a Live,
        conn: &'a Conn,
    ) -> impl Future<Output = String> + Send + 'a {
        server.serve_connection(stream, &live.limits, live.max_frame, conn)
    }
}

impl Acceptor for TcpListener {
    type Stream = TcpStream;
    const KIND: &'static str = "tcp";
    const LISTENER: Listener = Listener::Tcp;
    async fn accept_stream(&self) -> io::Result<TcpStream> {
        let (stream, _) = self.accept().await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
    fn serve<'a>(
        server: &'a Server,
        stream: TcpStream,
        live: &'a Live,
        conn: &'a Conn,
    ) -> impl Future<Output = String> + Send + 'a {
        server.serve_tcp(stream, live, conn)
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

/// An in-memory pipe (the fuzz target drives the connection loop through one): always ready.
impl Stream for DuplexStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

/// Set while accepts fail, so the log says so once, not 20 times a second.
pub(super) static ACCEPT_FAILING: AtomicBool = AtomicBool::new(false);

/// Out of file descriptors and the like: wait a little instead of spinning, and keep
/// listening (the connection stays in the backlog until a descriptor is free).
pub(super) async fn accept_failed(e: io::Error) {
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

/// The group the Unix socket is given (`unix_group`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixGroup {
    pub name: String,
    pub gid: u32,
}

impl UnixGroup {
    /// `name` as this host's group database has it (a number is taken as it is).
    pub fn lookup(name: &str) -> Result<UnixGroup> {
        if let Ok(gid) = name.parse::<u32>() {
            return Ok(UnixGroup {
                name: name.to_owned(),
                gid,
            });
        }
        let c_name = std::ffi::CString::new(name)
            .with_context(|| format!("unix_group {name:?} holds a NUL byte"))?;
        let mut buf = vec![0u8; 4096];
        loop {
            // SAFETY: every pointer is valid for the call; getgrnam_r writes the group into
            // `group` and its strings into `buf`, and `found` is null or points at `group`.
            let mut group: libc::group = unsafe { std::mem::zeroed() };
            let mut found: *mut libc::group = std::ptr::null_mut();
            let rc = unsafe {
                libc::getgrnam_r(
                    c_name.as_ptr(),
                    &mut group,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut found,
                )
            };
            match rc {
                0 if found.is_null() => {
                    bail!("unix_group {name}: no such group on this host (`getent group {name}`)")
                }
                0 => {
                    return Ok(UnixGroup {
                        name: name.to_owned(),
                        gid: group.gr_gid,
                    })
                }
                libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
                _ => {
                    return Err(io::Error::from_raw_os_error(rc))
                        .with_context(|| format!("unix_group {name}: cannot look it up"))
                }
            }
        }
    }
}

/// Gives the socket `group`, and its folder too when this process owns the folder (systemd's
/// RuntimeDirectory=, 0750): members of the group may then reach the socket and connect.
fn hand_to_group(path: &Path, group: &UnixGroup) -> Result<()> {
    let why = || {
        format!(
            "cannot give {} to group {} (gid {}): the daemon must be a member of it (the unit's \
             SupplementaryGroups=, which boot.sh adds from unix_group) or run as root",
            path.display(),
            group.name,
            group.gid
        )
    };
    std::os::unix::fs::chown(path, None, Some(group.gid)).with_context(why)?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if std::fs::metadata(parent).is_ok_and(|m| m.uid() == me) {
            std::os::unix::fs::chown(parent, None, Some(group.gid)).with_context(why)?;
        }
    }
    Ok(())
}

pub(super) fn bind_unix(path: &Path, group: Option<&UnixGroup>) -> Result<UnixListener> {
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
    if let Some(group) = group {
        hand_to_group(path, group)?;
    }
    Ok(listener)
}
