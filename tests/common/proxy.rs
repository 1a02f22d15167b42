//! An HTTP CONNECT proxy on loopback: it records each CONNECT line and Proxy-Authorization
//! header, then pipes the tunnel to one fixed address (whatever host was asked for).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// The CONNECT target, `host:port`.
    pub target: String,
    pub authorization: Option<String>,
}

pub struct ConnectProxy {
    pub url: String,
    pub tunnels: Arc<Mutex<Vec<Tunnel>>>,
}

impl ConnectProxy {
    pub async fn start(upstream: SocketAddr) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let seen = tunnels.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(tunnel(client, upstream, seen.clone()));
            }
        });
        ConnectProxy { url, tunnels }
    }

    pub fn tunnels(&self) -> Vec<Tunnel> {
        self.tunnels.lock().unwrap().clone()
    }
}

async fn tunnel(client: TcpStream, upstream: SocketAddr, seen: Arc<Mutex<Vec<Tunnel>>>) {
    let mut client = BufReader::new(client);
    let mut line = String::new();
    if client.read_line(&mut line).await.is_err() {
        return;
    }
    let Some(target) = line
        .strip_prefix("CONNECT ")
        .and_then(|rest| rest.split(' ').next())
    else {
        let _ = client
            .get_mut()
            .write_all(b"HTTP/1.1 405 CONNECT only\r\n\r\n")
            .await;
        return;
    };
    let target = target.to_owned();
    let mut authorization = None;
    loop {
        let mut header = String::new();
        if client.read_line(&mut header).await.unwrap_or(0) == 0 {
            return;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("proxy-authorization") {
                authorization = Some(value.trim().to_owned());
            }
        }
    }
    seen.lock().unwrap().push(Tunnel {
        target,
        authorization,
    });
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        let _ = client
            .get_mut()
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            .await;
        return;
    };
    if client
        .get_mut()
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}
