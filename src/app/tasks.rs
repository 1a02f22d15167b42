//! Background work: what the first call must not pay for (done before READY and before a
//! reload's swap), keeping the Twilio connection warm, sweeping the limiter and the Lookup
//! cache, the timer heartbeat, and the status page's minute sampler.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use super::build::Parts;
use crate::call::backend::Backend;
use crate::twilio::refuses_credentials;

/// The parts the tasks work on, replaced by a reload.
pub type SharedParts = Arc<ArcSwap<Parts>>;

/// What the first call must not pay for, done before it takes over (at start, before READY;
/// on reload, before the swap): the numbering plan (~90 ms, which any number not in strict
/// E.164 needs, `+1 (415) 555-0100` too), and the Twilio connection when warming is on. A store
/// that can never work (a Redis Cluster) refuses the start or the reload; one that is only down
/// is a fallback, as ever.
pub async fn prepare(parts: &Parts) -> anyhow::Result<()> {
    let settings = &parts.settings;
    let _ = tokio::task::spawn_blocking(crate::guard::geo::load_numbering_plan).await;
    if settings.keep_warm.is_some() {
        warm_up(&parts.backend, settings.call.deadline).await;
    }
    // Connects to the shared store now (and reads its clock); one that does not answer was
    // logged by the store.
    if let Some(store) = &parts.store {
        match store.probe(settings.call.deadline, true).await {
            Ok(()) => tracing::info!("state store {} answers", store.settings().shown),
            Err(failed) if failed.is_cluster() => {
                anyhow::bail!("state store {} {failed}", store.settings().shown)
            }
            Err(_) => {}
        }
    }
    Ok(())
}

/// Opens the Twilio connection (TLS included) before the first OTP needs it.
async fn warm_up(backend: &Backend, timeout: Duration) {
    let Some(client) = backend.twilio() else {
        return;
    };
    let started = Instant::now();
    match client.warm(timeout).await {
        Ok(status) if refuses_credentials(status) => {
            tracing::error!(
                status = status.as_u16(),
                "Twilio refused the credentials: every send will fail until they are fixed"
            );
        }
        Ok(status) => {
            tracing::info!(
                status = status.as_u16(),
                ms = started.elapsed().as_millis() as u64,
                "Twilio connection warm"
            );
        }
        Err(e) => tracing::warn!("cannot reach Twilio yet ({e}); sends will try again"),
    }
    // A failover is quicker on an open connection; their answers are only logged.
    for provider in backend.backups() {
        match provider.client.touch(timeout).await {
            Ok(status) if refuses_credentials(status) => tracing::error!(
                provider = %provider.name,
                status = status.as_u16(),
                "failover provider refused its credentials: it cannot take over until fixed"
            ),
            Ok(status) => {
                tracing::info!(provider = %provider.name, status = status.as_u16(), "failover provider warm")
            }
            Err(e) => {
                tracing::warn!(provider = %provider.name, "cannot reach failover provider yet ({e})")
            }
        }
    }
}

/// Touches the Twilio connection every `interval` so it is never idle long enough to close.
pub async fn keep_warm(parts: SharedParts, interval: Duration) {
    let mut was_warm = true;
    loop {
        tokio::time::sleep(interval).await;
        let parts = parts.load_full();
        let timeout = parts.settings.call.deadline;
        let Some(client) = parts.backend.twilio() else {
            continue;
        };
        let warm = matches!(client.warm(timeout).await, Ok(s) if !refuses_credentials(s));
        for provider in parts.backend.backups() {
            let touched = provider.client.touch(timeout).await;
            tracing::debug!(provider = %provider.name, ok = touched.is_ok(), "failover provider kept warm");
        }
        if warm != was_warm {
            if warm {
                tracing::info!("Twilio answers again");
            } else {
                tracing::warn!("Twilio keep-warm request failed");
            }
            was_warm = warm;
        }
    }
}

/// Once a minute, forgets rate-limit keys whose window has passed, expired Lookup answers and
/// issued codes that no longer matter.
pub async fn sweep_rate_limits(parts: SharedParts) {
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let parts = parts.load_full();
        let kept = parts.limiter.sweep();
        let cached = parts.lookup.as_ref().map_or(0, |l| l.sweep());
        let ranges = parts.pumping.sweep();
        let records = parts.sent.sweep();
        let phones = parts.codes.sweep();
        tracing::debug!(
            kept,
            cached,
            ranges,
            records,
            phones,
            "rate-limit keys, Lookup answers, pumping ranges, sent records and codes swept"
        );
    }
}

/// Once a minute, a snapshot of the counters the status page's last hour is drawn from (the
/// first is taken before READY, so no call falls before it).
pub async fn sample_status() {
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        crate::status::history::sample();
    }
}

/// Probes the shared store every second with a write like a call's, so `health` tells a store
/// that went away, came back or stopped taking writes without waiting for a call; a connection
/// that is gone (or was refused, a wrong password since fixed) is remade in between.
pub async fn watch_state(parts: SharedParts) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let store = parts.load().store.clone();
        if let Some(store) = store {
            let _ = store.probe(store.timeout(), true).await;
        }
    }
}

/// Keeps a timer pending that is due before any call's deadline. Tokio wakes its own driver
/// (an eventfd write, then an extra pass through epoll) whenever a new timer is due earlier
/// than the one it last planned to wake for; with this beat due first, registering a call's
/// deadline never does. It costs one wake every half deadline and saves a syscall a call.
pub async fn timer_heartbeat(parts: SharedParts) {
    loop {
        let beat = parts.load().settings.call.deadline / 2;
        tokio::time::sleep(beat).await;
    }
}
