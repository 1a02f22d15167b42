//! The loopback HTTP endpoint that serves the metrics (`GET /metrics`) and the operator's
//! view of them (`GET /status.json`, and the page at `GET /`), with a cap on the connections
//! open at once so that idle scrapers cannot take the descriptors the RPC sockets need.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;

use super::LiveSwap;
use crate::metrics::METRICS;
use crate::slots::Slots;
use crate::status;

/// Metrics connections open at once; more are accepted and closed.
pub const MAX_METRICS_CONNECTIONS: usize = 32;
/// The longest a connection may hold a slot; then it is told to close once its request in
/// progress is answered, and dropped if that answer is not taken within `CLOSE_GRACE` (a
/// client that never reads its responses would otherwise keep its slot for ever).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The open scrape connections (their gauge is not exported: nobody asked for it).
static SCRAPES: LazyLock<Slots> = LazyLock::new(|| Slots::new(Gauge::default()));
static AT_CAPACITY: AtomicBool = AtomicBool::new(false);

/// Binds the metrics listener now (so a taken port fails the start), serves it in the
/// background; the status page reads the running parts from `live`.
pub async fn serve(addr: SocketAddr, live: LiveSwap) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("metrics accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Past the cap a connection is closed at once.
            let Some(open) = SCRAPES.try_take(MAX_METRICS_CONNECTIONS) else {
                if !AT_CAPACITY.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        max = MAX_METRICS_CONNECTIONS,
                        "metrics connection limit reached: closing new ones until one ends"
                    );
                }
                continue;
            };
            AT_CAPACITY.store(false, Ordering::Relaxed);
            let live = live.clone();
            tokio::spawn(async move {
                let _open = open;
                let service = hyper::service::service_fn(|request| answer(request, &live));
                // A scraper that hangs up early is not worth a log line.
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(connection);
                if tokio::time::timeout(CONNECTION_TIMEOUT, connection.as_mut())
                    .await
                    .is_err()
                {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(CLOSE_GRACE, connection).await;
                }
            });
        }
    });
    Ok(local)
}

async fn answer(
    request: Request<Incoming>,
    live: &LiveSwap,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => Response::builder()
            .header(
                hyper::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(METRICS.render()))),
        (&Method::GET, "/status.json") => {
            let doc = status::document(live.load().dispatcher.status());
            Response::builder()
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .header(hyper::header::CACHE_CONTROL, "no-store")
                .body(Full::new(Bytes::from(doc.to_string())))
        }
        (&Method::GET, "/") => {
            let doc = status::document(live.load().dispatcher.status());
            Response::builder()
                .header(hyper::header::CONTENT_TYPE, "text/html; charset=utf-8")
                .header(hyper::header::CACHE_CONTROL, "no-store")
                .header(
                    hyper::header::CONTENT_SECURITY_POLICY,
                    status::CONTENT_SECURITY_POLICY.as_str(),
                )
                .header(hyper::header::X_CONTENT_TYPE_OPTIONS, "nosniff")
                .header(hyper::header::REFERRER_POLICY, "no-referrer")
                .body(Full::new(Bytes::from(status::page(&doc))))
        }
        // Browsers ask for it; an empty answer keeps a 404 out of their console.
        (&Method::GET, "/favicon.ico") => Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Full::new(Bytes::new())),
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(
                b"try / (the status page), /status.json or /metrics\n",
            ))),
    };
    Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}
