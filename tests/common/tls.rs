//! A Twilio stand-in over real TLS, with its own test CA: it counts TCP connections (each one
//! a handshake) and the requests it answers, so a test can see whether a send paid for a
//! handshake.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

#[derive(Default)]
pub struct Counts {
    pub connections: AtomicUsize,
    pub gets: AtomicUsize,
    pub posts: AtomicUsize,
}

pub struct TlsTwilio {
    pub url: String,
    pub addr: SocketAddr,
    /// The test CA, PEM: what the daemon must be told to trust.
    pub ca_pem: String,
    pub counts: Arc<Counts>,
}

impl TlsTwilio {
    /// Listens on 127.0.0.1 with a certificate for that address, signed by a fresh CA. It
    /// runs on a thread of its own, so a test that blocks does not stall it.
    pub fn start() -> TlsTwilio {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "otp-sidecar test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA");
        let key = KeyPair::generate().expect("key");
        // Also valid for a name that never resolves: reachable only through a proxy.
        let cert =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "twilio.invalid".to_owned()])
                .expect("params")
                .signed_by(&key, &ca)
                .expect("certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let counts = Arc::new(Counts::default());
        let seen = counts.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        std::thread::spawn(move || {
            runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((stream, _)) = listener.accept().await {
                seen.connections.fetch_add(1, Ordering::SeqCst);
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let seen = seen.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(&request, &seen)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        })
        });
        TlsTwilio {
            url: format!("https://{addr}"),
            addr,
            ca_pem: ca.pem(),
            counts,
        }
    }

    pub fn connections(&self) -> usize {
        self.counts.connections.load(Ordering::SeqCst)
    }
    pub fn gets(&self) -> usize {
        self.counts.gets.load(Ordering::SeqCst)
    }
    pub fn posts(&self) -> usize {
        self.counts.posts.load(Ordering::SeqCst)
    }
}

fn answer<B>(request: &hyper::Request<B>, seen: &Counts) -> hyper::Response<Full<Bytes>> {
    let body = if request.method() == hyper::Method::POST {
        seen.posts.fetch_add(1, Ordering::SeqCst);
        format!(r#"{{"sid":"{}","status":"queued"}}"#, super::SID)
    } else {
        seen.gets.fetch_add(1, Ordering::SeqCst);
        format!(r#"{{"sid":"{}","status":"active"}}"#, super::AC)
    };
    let status = if request.method() == hyper::Method::POST {
        201
    } else {
        200
    };
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}
