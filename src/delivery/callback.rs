//! The status callback listener (`delivery_status = "callback"`): Twilio posts each status
//! change of a message to `delivery_callback_url`, signed with the account's auth token
//! (`X-Twilio-Signature`). A request whose signature does not match changes nothing and is
//! answered 403. Bounded: a small body, few connections at once, short timeouts.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;

use super::{signature, Fate, Tracker};
use crate::slots::Slots;

/// Connections open at once; more are closed at once.
const MAX_CONNECTIONS: usize = 64;
/// A status callback is a few hundred bytes of form.
const MAX_BODY: usize = 8 * 1024;
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection may stay open.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

static OPEN: LazyLock<Slots> = LazyLock::new(|| Slots::new(Gauge::default()));

/// Refused callbacks are logged at most once per `REFUSED_LOG_EVERY`, with how many went
/// unlogged since (the counter has them all): each costs a stranger one small request on the
/// one listener the internet reaches, and a line each would flood the journal, which then
/// drops the daemon's other lines.
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(60);

/// When the last refusal was logged, and how many were refused without a line since.
static REFUSED: Mutex<(Option<Instant>, u64)> = Mutex::new((None, 0));

fn log_refused() {
    let mut refused = REFUSED.lock().unwrap_or_else(PoisonError::into_inner);
    let (last_line, unlogged) = &mut *refused;
    let now = Instant::now();
    if last_line.is_some_and(|at| now.duration_since(at) < REFUSED_LOG_EVERY) {
        *unlogged += 1;
        return;
    }
    *last_line = Some(now);
    let unlogged_since_last_line = std::mem::take(unlogged);
    drop(refused);
    tracing::warn!(
        unlogged_since_last_line,
        "status callback with a missing or wrong X-Twilio-Signature: ignored (logged once a \
         minute at most; otp_sidecar_delivery_events_total{{result=\"callback_refused\"}} counts each)"
    );
}

/// Binds the listener (a taken port fails the start) and serves it in the background.
pub async fn serve(tracker: Arc<Tracker>) -> Result<Option<SocketAddr>> {
    let Some(settings) = tracker.settings().callback.clone() else {
        return Ok(None);
    };
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen for status callbacks on {}", settings.listen))?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Some(open) = OPEN.try_take(MAX_CONNECTIONS) else {
                continue;
            };
            let tracker = tracker.clone();
            tokio::spawn(async move {
                let _open = open;
                let service = hyper::service::service_fn(move |request| {
                    let tracker = tracker.clone();
                    async move { Ok::<_, Infallible>(answer(&tracker, request).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_BODY.max(8192))
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
            });
        }
    });
    Ok(Some(local))
}

fn reply(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

async fn answer(tracker: &Tracker, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(settings) = &tracker.settings().callback else {
        return reply(StatusCode::NOT_FOUND);
    };
    if request.method() != Method::POST || request.uri().path() != settings.url.path() {
        return reply(StatusCode::NOT_FOUND);
    }
    let given = request
        .headers()
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return reply(StatusCode::PAYLOAD_TOO_LARGE),
    };
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let token = settings.token.expose();
    let genuine =
        given.is_some_and(|given| signature::verify(token, settings.url.as_str(), &params, &given));
    if !genuine {
        log_refused();
        crate::metrics::METRICS.count_delivery_event("callback_refused");
        return reply(StatusCode::FORBIDDEN);
    }
    let field = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (Some(sid), Some(status)) = (field("MessageSid"), field("MessageStatus")) else {
        return reply(StatusCode::BAD_REQUEST);
    };
    if !crate::twilio::is_sid(sid, "SM") {
        return reply(StatusCode::BAD_REQUEST);
    }
    let code = field("ErrorCode").and_then(|c| c.trim().parse().ok());
    crate::metrics::METRICS.count_delivery_event("callback");
    tracker.reported(sid, Fate::new(status, code));
    reply(StatusCode::NO_CONTENT)
}
