//! TLS on the TCP listener (for off-box pools): the server certificate and key, and with a
//! client CA, mutual TLS. The handshake runs in the connection's own task, bounded in time,
//! so a slow or hostile client never holds up accepts or other callers. The Unix socket stays
//! plain.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::future::Either;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::connection::EVICTED;
use super::open::Conn;
use super::{Live, Server};
use crate::metrics::METRICS;

/// The longest a TLS handshake may take (less when the idle timeout is shorter): BIG-IP's
/// server-side SSL completes one in milliseconds on a LAN.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the TCP listener's certificate, key and (for mutual TLS) client CA are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates must chain to this CA; `None`: no client certificate asked for.
    pub client_ca: Option<PathBuf>,
}

/// The TCP listener's TLS, read from its files (at start and at each reload).
#[derive(Clone)]
pub struct Tls {
    pub files: TlsFiles,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    /// The files only: never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Reads and checks the files: the certificate chain, its private key (which must match
    /// it) and the client CA. Errors name the file, never its contents.
    pub fn load(files: &TlsFiles) -> Result<Tls> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cert_pem = read(&files.cert, "tls_cert")?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                anyhow!(
                    "tls_cert {}: not a PEM certificate ({e})",
                    show(&files.cert)
                )
            })?;
        if chain.is_empty() {
            bail!("tls_cert {} holds no PEM certificate", show(&files.cert));
        }
        let key_pem = read(&files.key, "tls_key")?;
        // The parser's error names no part of the key.
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            anyhow!(
                "tls_key {}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it ({e})",
                show(&files.key)
            )
        })?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let builder = match &files.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let roots = client_roots(path)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| anyhow!("tls_client_ca {}: {e}", show(path)))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder.with_single_cert(chain, key).map_err(|e| {
            anyhow!(
                "tls_cert {} and tls_key {} do not make a usable pair ({e})",
                show(&files.cert),
                show(&files.key)
            )
        })?;
        Ok(Tls {
            files: files.clone(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Whether callers must present a client certificate.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }
}

fn show(path: &Path) -> String {
    crate::error::shown_path(path)
}

fn read(path: &Path, key: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {key} {}", show(path)))?;
    if bytes.is_empty() {
        bail!("{key} {} is empty", show(path));
    }
    Ok(bytes)
}

fn client_roots(path: &Path) -> Result<Arc<RootCertStore>> {
    let pem = read(path, "tls_client_ca")?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let added = cert
            .map_err(|e| anyhow!("{e}"))
            .and_then(|der| roots.add(der).map_err(|e| anyhow!("{e}")));
        if let Err(e) = added {
            bail!(
                "tls_client_ca {}: certificate {} is not a valid CA certificate ({e})",
                show(path),
                i + 1
            );
        }
    }
    if roots.is_empty() {
        bail!("tls_client_ca {} holds no PEM certificate", show(path));
    }
    Ok(Arc::new(roots))
}

/// A served TLS connection. Two things tokio-rustls leaves to its user:
///
/// - rustls answers a TLS 1.2 renegotiation request (a ClientHello after the handshake) by
///   queueing a `no_renegotiation` alert, which only a write would send; with no reply due,
///   the client waited for the idle timeout. The alert is flushed at once and the connection
///   closed (a client that renegotiates gets nothing more from this daemon).
/// - a peer that closes without `close_notify` is a read error to rustls; here it is a plain
///   end of stream, since MessagePack frames carry their own length and a truncated one is
///   still reported by the codec.
pub struct TlsConn {
    inner: TlsStream<TcpStream>,
    /// A renegotiation was refused: flush the alert, then end the connection.
    refused: bool,
}

/// Why a connection that asked to renegotiate ended.
const RENEGOTIATION_REFUSED: &str = "TLS renegotiation refused";

impl TlsConn {
    /// rustls has something to send although no reply was written: in TLS 1.2, only the
    /// alert refusing a renegotiation. (TLS 1.3's post-handshake answers are flushed too.)
    fn alert_pending(&self) -> bool {
        let (_, session) = self.inner.get_ref();
        session.wants_write()
            && session.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_2)
    }
}

impl tokio::io::AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = if this.refused {
            Poll::Pending
        } else {
            Pin::new(&mut this.inner).poll_read(cx, buf)
        };
        // A failed read has its own answer (rustls may have queued a fatal alert for it).
        let failed = matches!(read, Poll::Ready(Err(_)));
        if !this.refused && !failed && this.alert_pending() {
            this.refused = true;
            tracing::debug!("{RENEGOTIATION_REFUSED}: sending the alert and closing");
        }
        // Bytes read along with the request are handed on first; the next read closes.
        if this.refused && (read.is_pending() || buf.filled().len() == before) {
            std::task::ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
            let refused = std::io::Error::other(RENEGOTIATION_REFUSED);
            return Poll::Ready(Err(refused));
        }
        match read {
            Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl tokio::io::AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A TLS connection: rustls may already hold decrypted bytes the socket no longer shows, so
/// it always counts as readable (the read itself waits).
impl super::Stream for TlsConn {
    fn readable(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

/// Set while handshakes fail, so the log warns once per episode, not per connection.
static HANDSHAKES_FAILING: AtomicBool = AtomicBool::new(false);

impl Server {
    /// Serves an accepted TCP connection: over TLS when the live settings have it (the
    /// handshake first, bounded by [`HANDSHAKE_TIMEOUT`]), plain otherwise. Not an async fn:
    /// a plain connection's future is the plain loop's alone (an idle connection costs only
    /// that), and a TLS one's is boxed.
    pub(super) fn serve_tcp<'a>(
        &'a self,
        stream: TcpStream,
        live: &'a Live,
        conn: &'a Conn,
    ) -> impl std::future::Future<Output = String> + Send + 'a {
        match &live.tls {
            None => Either::Left(self.serve_connection(stream, &live.limits, live.max_frame, conn)),
            Some(tls) => Either::Right(Box::pin(self.serve_tls(tls, stream, live, conn))),
        }
    }

    async fn serve_tls(&self, tls: &Tls, stream: TcpStream, live: &Live, conn: &Conn) -> String {
        let limit = live
            .limits
            .idle_timeout
            .map_or(HANDSHAKE_TIMEOUT, |idle| idle.min(HANDSHAKE_TIMEOUT));
        let handshake = tokio::time::timeout(limit, tls.acceptor.accept(stream));
        let outcome = tokio::select! {
            done = handshake => done,
            () = conn.evicted() => return EVICTED.into(),
            () = self.shutdown.cancelled() => return "shutting down".into(),
        };
        let stream = match outcome {
            Ok(Ok(stream)) => {
                HANDSHAKES_FAILING.store(false, Ordering::Relaxed);
                METRICS.count_handshake("ok");
                conn.handshake_done();
                stream
            }
            Ok(Err(e)) => return handshake_failed(why(&e), &e.to_string()),
            Err(_) => {
                let detail = format!("not finished within {} ms", limit.as_millis());
                return handshake_failed("timeout", &detail);
            }
        };
        let stream = TlsConn {
            inner: stream,
            refused: false,
        };
        Box::pin(self.serve_connection(stream, &live.limits, live.max_frame, conn)).await
    }
}

/// Counts and logs a failed handshake (debug each time, warn once per episode); says why the
/// connection ended.
fn handshake_failed(result: &'static str, detail: &str) -> String {
    METRICS.count_handshake(result);
    if HANDSHAKES_FAILING.swap(true, Ordering::Relaxed) {
        tracing::debug!(result, "TLS handshake failed: {detail}");
    } else {
        tracing::warn!(
            result,
            "TLS handshake failed: {detail} (logged at debug until one succeeds)"
        );
    }
    format!("TLS handshake failed: {detail}")
}

/// The `result` label of a failed handshake: a fixed list, whatever the client sent.
fn why(e: &std::io::Error) -> &'static str {
    let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "closed",
            _ => "io",
        };
    };
    match tls {
        rustls::Error::NoCertificatesPresented => "no_client_certificate",
        rustls::Error::InvalidCertificate(_) => "bad_client_certificate",
        rustls::Error::InvalidMessage(_) | rustls::Error::PeerIncompatible(_) => "not_tls",
        rustls::Error::AlertReceived(_) => "alert",
        _ => "other",
    }
}
