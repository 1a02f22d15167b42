//! The bundled client: one connection, one call at a time. Used by `otp-sidecar send` and
//! `ping`, by the tests and by `examples/client.rs`.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use futures_util::{SinkExt, StreamExt};
use rmpv::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio_util::codec::Framed;

use crate::rpc::{CodecError, Incoming, MsgpackCodec, Request};

/// Where the daemon listens.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// Any byte stream to the daemon.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// TLS to a daemon's TCP listener: the CA its certificate must chain to, the name it must
/// carry, and (for mutual TLS) a client certificate and key, all PEM.
pub struct Tls {
    pub ca_pem: Vec<u8>,
    pub server_name: String,
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {endpoint}: {source}")]
    Connect { endpoint: String, source: io::Error },
    #[error("TLS to {endpoint}: {reason}")]
    Tls { endpoint: String, reason: String },
    #[error("{0}")]
    Codec(#[from] CodecError),
    #[error("the daemon closed the connection")]
    Closed,
    #[error("the daemon sent something that is not a response")]
    Protocol,
}

pub struct Client {
    framed: Framed<Box<dyn Stream>, MsgpackCodec>,
    next_id: u32,
}

impl Client {
    pub async fn connect(endpoint: &Endpoint) -> Result<Client, ClientError> {
        let stream: io::Result<Box<dyn Stream>> = match endpoint {
            Endpoint::Unix(path) => UnixStream::connect(path).await.map(|s| Box::new(s) as _),
            Endpoint::Tcp(addr) => TcpStream::connect(addr).await.map(|s| {
                let _ = s.set_nodelay(true);
                Box::new(s) as _
            }),
        };
        let stream = stream.map_err(|source| ClientError::Connect {
            endpoint: endpoint.to_string(),
            source,
        })?;
        Ok(Client::over(stream))
    }

    /// Over TLS to the TCP listener at `addr`.
    pub async fn connect_tls(addr: SocketAddr, tls: &Tls) -> Result<Client, ClientError> {
        let endpoint = format!("tcp:{addr}");
        let failed = |reason: String| ClientError::Tls {
            endpoint: endpoint.clone(),
            reason,
        };
        let (config, name) = tls_config(tls).map_err(failed)?;
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect {
                endpoint: endpoint.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(|e| failed(e.to_string()))?;
        Ok(Client::over(Box::new(stream)))
    }

    /// A client over a stream already connected (a TLS stream, say).
    pub fn over(stream: Box<dyn Stream>) -> Client {
        Client {
            framed: Framed::new(stream, MsgpackCodec::default()),
            next_id: 0,
        }
    }

    /// One call. The outer error: the call could not be made. The inner: the daemon's reply,
    /// `Ok(result)` or `Err(error text)`.
    pub async fn call(
        &mut self,
        method: &str,
        params: Vec<Value>,
    ) -> Result<Result<Value, String>, ClientError> {
        let msgid = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.framed
            .send(Request {
                msgid: msgid.into(),
                method: method.into(),
                params,
            })
            .await?;
        loop {
            let value = self.framed.next().await.ok_or(ClientError::Closed)??;
            match Incoming::parse(value) {
                Ok(Incoming::Response(r)) if r.msgid == msgid.into() => return Ok(r.outcome),
                Ok(Incoming::Response(_) | Incoming::Notification { .. }) => continue,
                _ => return Err(ClientError::Protocol),
            }
        }
    }

    /// `sendOTP`: `Ok(sid)` or `Err("ERR …")`.
    pub async fn send_otp(
        &mut self,
        otp: &str,
        phone: &str,
        sender: &str,
    ) -> Result<Result<String, String>, ClientError> {
        self.text("sendOTP", vec![otp.into(), phone.into(), sender.into()])
            .await
    }

    /// `issueOTP`: the daemon draws the code and sends it; `Ok(sid)` or `Err("ERR …")`.
    pub async fn issue_otp(
        &mut self,
        phone: &str,
        sender: &str,
    ) -> Result<Result<String, String>, ClientError> {
        self.text("issueOTP", vec![phone.into(), sender.into()])
            .await
    }

    /// `checkOTP`: `Ok("OK")`, or `Err("ERR invalid_code: …")` (or `expired`, `locked`…).
    pub async fn check_otp(
        &mut self,
        phone: &str,
        code: &str,
    ) -> Result<Result<String, String>, ClientError> {
        self.text("checkOTP", vec![phone.into(), code.into()]).await
    }

    /// A call whose result is a string.
    async fn text(
        &mut self,
        method: &str,
        params: Vec<Value>,
    ) -> Result<Result<String, String>, ClientError> {
        let reply = self.call(method, params).await?;
        Ok(reply.map(|v| match v {
            Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            other => other.to_string(),
        }))
    }
}

/// The rustls client configuration for `tls`, and the server name to check.
fn tls_config(
    tls: &Tls,
) -> Result<
    (
        std::sync::Arc<rustls::ClientConfig>,
        rustls_pki_types::ServerName<'static>,
    ),
    String,
> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&tls.ca_pem) {
        let cert = cert.map_err(|e| format!("the CA file: {e}"))?;
        roots.add(cert).map_err(|e| format!("the CA file: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the CA file holds no PEM certificate".into());
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match &tls.client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("the client certificate: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|_| "the client key is not a PEM private key".to_owned())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("the client certificate: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from(tls.server_name.clone())
        .map_err(|_| format!("{:?} is not a server name", tls.server_name))?;
    Ok((std::sync::Arc::new(config), name))
}

/// The health map as `key: value` lines (nested maps as `outer.inner`), and whether it says
/// the daemon is healthy (no `status: degraded` anywhere).
pub fn health_lines(value: &Value) -> (Vec<String>, bool) {
    fn walk(prefix: &str, value: &Value, out: &mut Vec<String>, healthy: &mut bool) {
        let Some(entries) = value.as_map() else {
            out.push(format!("{prefix}: {}", plain(value)));
            return;
        };
        for (key, value) in entries {
            let key = plain(key);
            let name = if prefix.is_empty() {
                key
            } else {
                format!("{prefix}.{key}")
            };
            if name == "status" && value.as_str() == Some("degraded") {
                *healthy = false;
            }
            walk(&name, value, out, healthy);
        }
    }
    let (mut lines, mut healthy) = (Vec::new(), true);
    walk("", value, &mut lines, &mut healthy);
    (lines, healthy)
}

/// A value as text: a string as it is, anything else as MessagePack's display of it.
pub fn plain(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}
