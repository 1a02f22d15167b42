//! The Twilio stand-in of the storm: real TLS with its own CA (rcgen), hyper's HTTP/1.1 or
//! HTTP/2 server by what ALPN settled, every 201 250 ms after the request was read (a real
//! network's round trip), and Twilio's account concurrency limit: a POST that arrives while
//! 100 others are being answered is refused, 429 with code 20429, after `Shape`'s
//! refusal latency (none by default). A refused POST holds no slot; an abandoned one gives
//! its slot back. A message is created the moment its POST is admitted, whether or not the
//! client waits for the answer (as Twilio would send it).
//!
//! It runs on a thread and a single-threaded runtime of its own, so the caller's work does not
//! delay its answers.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// How long a 201 (and the answer to the daemon's keep-warm GET) takes.
pub const LATENCY: Duration = Duration::from_millis(250);
/// POSTs being answered at once; one more is refused.
pub const LIMIT: usize = 100;

/// What can be changed of the stand-in besides ALPN.
#[derive(Clone, Copy)]
pub struct Shape {
    /// How long a 429 takes. The issue's stand-in answered at once: its HTTP/1.1 row is
    /// reproduced within a few percent with 0 and not with 250 ms.
    pub refusal_latency: Duration,
    /// SETTINGS_MAX_CONCURRENT_STREAMS of an h2 connection.
    pub h2_streams: u32,
}

/// What the mock's ALPN offers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `h2` then `http/1.1`.
    H2AndHttp11,
    /// `http/1.1` alone.
    Http11,
}

#[derive(Default)]
pub struct Stats {
    /// TCP connections accepted (each one a TLS handshake, or a failed one).
    pub connections: AtomicUsize,
    /// Of them, the ones that settled on h2.
    pub h2_connections: AtomicUsize,
    pub posts: AtomicUsize,
    pub gets: AtomicUsize,
    /// POSTs answered 429 / 20429.
    pub refused: AtomicUsize,
    /// POSTs admitted and neither answered nor abandoned yet.
    pub in_flight: AtomicUsize,
    pub peak_in_flight: AtomicUsize,
    /// When each message was created; message `n` has SID `sid(n)`.
    pub created: Mutex<Vec<Instant>>,
}

impl Stats {
    pub fn created(&self) -> Vec<Instant> {
        self.created.lock().expect("created").clone()
    }
}

/// The SID of the `n`-th message the mock created: `SM` and 32 hex digits.
pub fn sid(n: usize) -> String {
    format!("SM{n:032x}")
}

/// The index of a SID the mock made, if it is one.
pub fn sid_index(sid: &str) -> Option<usize> {
    let hex = sid.strip_prefix("SM")?;
    if hex.len() != 32 {
        return None;
    }
    usize::from_str_radix(hex, 16).ok()
}

/// A slot under the concurrency limit, held while the POST is being answered: given back when
/// the answer goes out, or when the client abandons the request (hyper then drops the handler).
struct Slot(Arc<Stats>);

impl Slot {
    fn take(stats: &Arc<Stats>) -> Option<Slot> {
        let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        if now > LIMIT {
            stats.in_flight.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        stats.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        Some(Slot(stats.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct Mock {
    pub url: String,
    /// The CA, PEM: what the daemon and Node.js are told to trust.
    pub ca_pem: String,
    pub stats: Arc<Stats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Mock {
    pub fn start(alpn: Alpn, shape: Shape) -> anyhow::Result<Mock> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "otp-sidecar storm CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])?.signed_by(&key, &ca)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)?;
        config.alpn_protocols = match alpn {
            Alpn::H2AndHttp11 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Alpn::Http11 => vec![b"http/1.1".to_vec()],
        };
        let acceptor = TlsAcceptor::from(Arc::new(config));

        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let seen = stats.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                tokio::select! {
                    _ = accept(listener, acceptor, seen, shape) => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime here ends every connection still open.
        });
        Ok(Mock {
            url: format!("https://{addr}"),
            ca_pem: ca.pem(),
            stats,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Waits until nothing is being answered, at most `limit`.
    pub fn settle(&self, limit: Duration) {
        let started = Instant::now();
        while self.stats.in_flight.load(Ordering::SeqCst) > 0 && started.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    stats: Arc<Stats>,
    shape: Shape,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: the connection waits in the backlog.
                eprintln!("storm mock: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        stats.connections.fetch_add(1, Ordering::SeqCst);
        let _ = stream.set_nodelay(true);
        let (acceptor, stats) = (acceptor.clone(), stats.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let service = {
                let stats = stats.clone();
                hyper::service::service_fn(move |request| {
                    answer(request, stats.clone(), shape.refusal_latency)
                })
            };
            let io = TokioIo::new(tls);
            if h2 {
                stats.h2_connections.fetch_add(1, Ordering::SeqCst);
                // hyper's defaults but for the streams a connection may carry: as many as the
                // account's limit (the issue's stand-in evidently did the same: its h2 run
                // took the 30 s that 12,000 POSTs at 400/s take, with few refused).
                let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                builder.max_concurrent_streams(shape.h2_streams);
                let _ = builder.serve_connection(io, service).await;
            } else {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            }
        });
    }
}

async fn answer(
    request: hyper::Request<hyper::body::Incoming>,
    stats: Arc<Stats>,
    refusal_latency: Duration,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let post = request.method() == hyper::Method::POST;
    // The form, read whole before anything is decided, as Twilio must.
    let _ = request.into_body().collect().await;
    let (status, body) = if !post {
        // The daemon's keep-warm GET of the account.
        stats.gets.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(LATENCY).await;
        (
            200,
            r#"{"sid":"ACfeedfacefeedfacefeedfacefeedface","status":"active"}"#.to_owned(),
        )
    } else {
        stats.posts.fetch_add(1, Ordering::SeqCst);
        match Slot::take(&stats) {
            Some(slot) => {
                let n = {
                    let mut created = stats.created.lock().expect("created");
                    created.push(Instant::now());
                    created.len() - 1
                };
                tokio::time::sleep(LATENCY).await;
                drop(slot);
                (201, format!(r#"{{"sid":"{}","status":"queued"}}"#, sid(n)))
            }
            None => {
                stats.refused.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(refusal_latency).await;
                (
                    429,
                    r#"{"code":20429,"message":"Too Many Requests","status":429}"#.to_owned(),
                )
            }
        }
    };
    Ok(hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("response"))
}
