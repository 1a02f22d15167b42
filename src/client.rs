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

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {endpoint}: {source}")]
    Connect { endpoint: String, source: io::Error },
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
                method: method.to_owned(),
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
        let reply = self
            .call("sendOTP", vec![otp.into(), phone.into(), sender.into()])
            .await?;
        Ok(reply.map(|v| match v {
            Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            other => other.to_string(),
        }))
    }
}
