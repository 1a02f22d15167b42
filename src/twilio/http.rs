//! The HTTP client Twilio is reached with: hyper's pooled client over rustls (HTTP/1.1 or
//! HTTP/2 by ALPN), directly or through an HTTP proxy — CONNECT for `https://` targets,
//! absolute-form requests for `http://` ones (test mocks).
//!
//! It replaced reqwest on the hot path: the same hyper pool and rustls without reqwest's
//! per-request layers saves about 12 µs a call (measured against the nginx mock).

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, PROXY_AUTHORIZATION, USER_AGENT};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::{HeaderMap, Method, Request, StatusCode, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;
use tower_service::Service;

type BoxError = Box<dyn StdError + Send + Sync>;

/// How a client is set up; all of it comes from the daemon's settings.
pub struct HttpOptions<'a> {
    /// `--proxy`; without it the standard proxy environment variables apply.
    pub proxy: Option<&'a str>,
    /// Extra trusted roots (PEM), besides the system's.
    pub extra_ca_pem: Option<&'a [u8]>,
    pub connect_timeout: Duration,
    /// Connections the pool may keep (the request budget: no more are ever in use at once).
    pub max_connections: usize,
}

/// One answer, read in full (up to the cap).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Why there is no answer.
pub struct Failure {
    /// The connection never came up, so the request never left: safe to send again.
    pub before_sending: bool,
    pub detail: String,
}

#[derive(Clone)]
pub struct HttpClient {
    pool: Client<HttpsConnector<Route>, Full<Bytes>>,
    proxies: Arc<Matcher>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

/// The most of an answer we read; a real Twilio answer is about 1 KiB.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
const USER_AGENT_VALUE: &str = concat!("otp-sidecar/", env!("CARGO_PKG_VERSION"));

impl HttpClient {
    pub fn new(options: &HttpOptions<'_>) -> anyhow::Result<Self> {
        let proxies = Arc::new(match options.proxy {
            Some(proxy) => Matcher::builder()
                .all(proxy.to_owned())
                .no(std::env::var("NO_PROXY")
                    .or_else(|_| std::env::var("no_proxy"))
                    .unwrap_or_default())
                .build(),
            None => Matcher::from_env(),
        });
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(Duration::from_secs(30)));
        tcp.set_connect_timeout(Some(options.connect_timeout));
        let route = Route {
            tcp,
            proxies: proxies.clone(),
        };
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(options.extra_ca_pem)?)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(route);
        let pool = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(options.max_connections)
            .build(https);
        Ok(HttpClient { pool, proxies })
    }

    /// Sends one request (a form body if given) and reads the answer.
    pub async fn send(
        &self,
        method: Method,
        uri: &Uri,
        authorization: &HeaderValue,
        form: Option<String>,
    ) -> Result<Answer, Failure> {
        let mut request = Request::builder()
            .method(method)
            .uri(uri.clone())
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
            .header(AUTHORIZATION, authorization.clone());
        if form.is_some() {
            request = request.header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
        }
        // A plain-http target through a proxy gets the proxy's credentials on each request
        // (an https one gives them once, on CONNECT).
        if uri.scheme() == Some(&hyper::http::uri::Scheme::HTTP) {
            if let Some(auth) = self
                .proxies
                .intercept(uri)
                .and_then(|i| i.basic_auth().cloned())
            {
                request = request.header(PROXY_AUTHORIZATION, auth);
            }
        }
        let request = request
            .body(Full::new(form.map(Bytes::from).unwrap_or_default()))
            // Nothing went out, but the same request would fail the same way: not retried.
            .map_err(|e| Failure {
                before_sending: false,
                detail: describe(&e),
            })?;
        let response = self.pool.request(request).await.map_err(|e| Failure {
            before_sending: e.is_connect(),
            // A proxy that failed us is named first: it is not Twilio that is down.
            detail: proxy_failure(&e).map_or_else(|| describe(&e), describe),
        })?;
        let (parts, body) = response.into_parts();
        let body = read_capped(body).await.map_err(|e| Failure {
            before_sending: false,
            detail: describe(&e),
        })?;
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// Reads at most [`MAX_ANSWER_BYTES`]; the rest is left unread (the connection is then not
/// reused, which is fine for an answer that large).
async fn read_capped(mut body: Incoming) -> Result<Vec<u8>, hyper::Error> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(chunk) = frame?.into_data() else {
            continue; // trailers
        };
        let room = MAX_ANSWER_BYTES.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    Ok(out)
}

/// rustls with the platform's verifier (system roots), plus any extra roots given (also the
/// state store's `rediss://`).
pub fn tls_config(extra_ca_pem: Option<&[u8]>) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = match extra_ca_pem {
        None => rustls_platform_verifier::Verifier::new(provider.clone())?,
        Some(pem) => {
            let roots = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .context("reading the extra CA certificates")?;
            anyhow::ensure!(!roots.is_empty(), "no certificate in the extra CA file");
            rustls_platform_verifier::Verifier::new_with_extra_roots(roots, provider.clone())?
        }
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// The error and its causes on one line (hyper's own message says little: "client error
/// (Connect)"). Credentials are never part of a URL here, so nothing secret shows.
fn describe(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The proxy failed us (cannot be reached, or refused the tunnel), if that is where `e`
/// comes from.
fn proxy_failure<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    let mut cause = Some(e);
    while let Some(error) = cause {
        if error.is::<ProxyFailed>() {
            return Some(error);
        }
        cause = error.source();
    }
    None
}

/// Connecting through a proxy failed at the proxy: it names the proxy by `host:port` (never
/// its credentials) and what went wrong there.
#[derive(Debug)]
struct ProxyFailed {
    proxy: String,
    /// Reached, but it would not open the tunnel (CONNECT answered with an error).
    refused: bool,
    cause: BoxError,
}

impl ProxyFailed {
    fn new(proxy: &Uri, refused: bool, cause: BoxError) -> Self {
        ProxyFailed {
            proxy: proxy_address(proxy),
            refused,
            cause,
        }
    }
}

impl std::fmt::Display for ProxyFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.refused {
            write!(f, "proxy {} refused the tunnel", self.proxy)
        } else {
            write!(f, "proxy {} unreachable", self.proxy)
        }
    }
}

impl StdError for ProxyFailed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.cause)
    }
}

/// `host:port` of a proxy URI: no scheme, no credentials.
fn proxy_address(proxy: &Uri) -> String {
    let host = proxy.host().unwrap_or("?");
    let port = proxy.port_u16().unwrap_or(match proxy.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    format!("{host}:{port}")
}

/// Opens the TCP leg towards a target: straight to it, or to the proxy that serves it.
#[derive(Clone)]
struct Route {
    tcp: HttpConnector,
    proxies: Arc<Matcher>,
}

impl Service<Uri> for Route {
    type Response = Tcp;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Tcp, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, target: Uri) -> Self::Future {
        let mut tcp = self.tcp.clone();
        let proxy = self.proxies.intercept(&target);
        Box::pin(async move {
            let Some(proxy) = proxy else {
                let io = tcp.call(target).await?;
                return Ok(Tcp { io, proxied: false });
            };
            if proxy.uri().scheme() != Some(&hyper::http::uri::Scheme::HTTP) {
                return Err("only http:// proxies are supported".into());
            }
            let failed = |refused: bool, e: BoxError| -> BoxError {
                Box::new(ProxyFailed::new(proxy.uri(), refused, e))
            };
            // The proxy first, so that a dead one is told from a refused tunnel.
            let io = tcp
                .call(proxy.uri().clone())
                .await
                .map_err(|e| failed(false, e.into()))?;
            if target.scheme() == Some(&hyper::http::uri::Scheme::HTTPS) {
                let mut tunnel = Tunnel::new(proxy.uri().clone(), OneConnection(Some(io)));
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                let io = tunnel
                    .call(target)
                    .await
                    .map_err(|e| failed(true, e.into()))?;
                // TLS runs end to end through the tunnel: requests are origin-form.
                Ok(Tcp { io, proxied: false })
            } else {
                Ok(Tcp { io, proxied: true })
            }
        })
    }
}

/// Hands [`Tunnel`] the connection to the proxy, already made.
struct OneConnection(Option<TokioIo<TcpStream>>);

impl Service<Uri> for OneConnection {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<TokioIo<TcpStream>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        std::future::ready(
            self.0
                .take()
                .ok_or_else(|| "the connection to the proxy is used already".into()),
        )
    }
}

/// A TCP connection that knows whether it ends at a proxy (then requests are absolute-form).
struct Tcp {
    io: TokioIo<TcpStream>,
    proxied: bool,
}

impl Connection for Tcp {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.proxied)
    }
}

impl Read for Tcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Tcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
