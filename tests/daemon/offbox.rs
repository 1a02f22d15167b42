//! Off-box pools: the harness the off-box tests share (a test CA, the daemon's TLS files, TLS
//! clients, tokens). The tests are in offbox_tls.rs, offbox_tokens.rs, offbox_rule.rs and
//! offbox_clients.rs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use otp_sidecar::client::Client;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::common::*;

pub(crate) const TOKEN_A: &str = "tok-a-5e1f0c9d8b7a6f5e4d3c2b1a";
pub(crate) const TOKEN_B: &str = "tok-b-0a1b2c3d4e5f60718293a4b5";

/// A test CA that signs server and client certificates.
pub(crate) struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
pub(crate) struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA"),
        }
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn leaf(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    pub(crate) fn server(&self) -> Leaf {
        self.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth)
    }

    pub(crate) fn client(&self) -> Leaf {
        self.leaf("bigip-a.example", ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// The daemon's TLS files in `dir`: server.pem, server.key and, with a client CA, client-ca.pem.
pub(crate) struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    pub tokens: PathBuf,
}

impl Files {
    pub(crate) fn new(dir: &Path) -> Files {
        Files {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            client_ca: dir.join("client-ca.pem"),
            tokens: dir.join("tokens"),
        }
    }

    /// Mutual TLS in `dir`: a server certificate from a "server CA" written, and a "client
    /// CA" written as the one the daemon accepts client certificates from; both CAs back.
    pub(crate) fn mutual(dir: &Path) -> (Files, Ca, Ca) {
        let files = Files::new(dir);
        let (server_ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
        files.write_server(&server_ca.server());
        std::fs::write(&files.client_ca, client_ca.pem()).unwrap();
        (files, server_ca, client_ca)
    }

    pub(crate) fn write_server(&self, leaf: &Leaf) {
        std::fs::write(&self.cert, &leaf.cert).unwrap();
        std::fs::write(&self.key, &leaf.key).unwrap();
    }

    pub(crate) fn tls_args(&self) -> Vec<String> {
        vec![
            format!("--tls-cert={}", self.cert.display()),
            format!("--tls-key={}", self.key.display()),
        ]
    }

    pub(crate) fn client_ca_arg(&self) -> String {
        format!("--tls-client-ca={}", self.client_ca.display())
    }

    pub(crate) fn tokens_arg(&self) -> String {
        format!("--caller-tokens-file={}", self.tokens.display())
    }
}

fn provider() -> Arc<tokio_rustls::rustls::crypto::CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS connection to `addr` trusting `server_ca`, presenting `client` when given.
pub(crate) async fn tls_connect(
    addr: std::net::SocketAddr,
    server_ca: &str,
    client: Option<&Leaf>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(server_ca.as_bytes()) {
        roots.add(cert.expect("CA pem")).expect("CA");
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match client {
        Some(leaf) => {
            let chain = CertificateDer::pem_slice_iter(leaf.cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("chain");
            let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").expect("name");
    TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
}

/// A client over TLS, or the error of its handshake.
pub(crate) async fn tls_client(
    addr: std::net::SocketAddr,
    server_ca: &str,
    client: Option<&Leaf>,
) -> std::io::Result<Client> {
    let stream = tls_connect(addr, server_ca, client).await?;
    Ok(Client::over(Box::new(stream)))
}

/// sendOTP with a context holding `token` (when given) and nothing else.
pub(crate) async fn send_token(
    client: &mut Client,
    token: Option<rmpv::Value>,
) -> Result<String, String> {
    let ctx = match token {
        Some(t) => rmpv::Value::Map(vec![("token".into(), t)]),
        None => rmpv::Value::Map(vec![]),
    };
    send_with(client, PHONE, ctx)
        .await
        .map(|v| v.as_str().unwrap_or_default().to_owned())
}

/// That a TLS client is refused: at the handshake, or (TLS 1.3 sends the client's certificate
/// after the client is done) at its first call, which gets no answer.
pub(crate) async fn assert_refused(
    addr: std::net::SocketAddr,
    server_ca: &str,
    client: Option<&Leaf>,
) {
    let refused = match tls_client(addr, server_ca, client).await {
        Err(_) => true,
        Ok(mut c) => {
            let call = c.call("ping", vec![]);
            matches!(
                tokio::time::timeout(Duration::from_secs(5), call).await,
                Ok(Err(_))
            )
        }
    };
    assert!(refused, "the client was served");
}

/// A counter's value in a scrape, 0 when absent.
pub(crate) fn counter(metrics: &str, line_start: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn write_tokens(files: &Files, text: &str) {
    std::fs::write(&files.tokens, text).unwrap();
}
