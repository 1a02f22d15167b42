//! The application: start (bind, warm Twilio, READY), serve, reload on SIGHUP, and drain on
//! SIGTERM / SIGINT; the composition root that turns settings into running parts; the
//! background tasks; and systemd.

mod build;
mod reload;
pub mod systemd;
mod tasks;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use arc_swap::ArcSwap;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::config::{Options, Settings};
use crate::server::{Listeners, Live, LiveSwap};
use crate::twilio::online::Backup;
use build::build;
use reload::reload;
use tasks::{
    keep_warm, prepare, sample_status, sweep_rate_limits, timer_heartbeat, watch_state, SharedParts,
};

/// Runs the daemon until SIGTERM or SIGINT, then drains. `args` are kept for reloads.
pub async fn run(options: Options, settings: Settings) -> Result<()> {
    // Installed before the listeners exist, so a signal that follows READY at once (as
    // systemd may send) is handled instead of killing the process.
    let mut signals = Signals::install()?;
    crate::alerts::configure(&settings.alerts);
    let (live, parts) = build(&settings, None)?;
    let shared: LiveSwap = Arc::new(ArcSwap::from_pointee(live));
    let parts: SharedParts = Arc::new(ArcSwap::from_pointee(parts));
    let (open_files, room) = crate::server::reserve_descriptors();
    if room < settings.limits.max_connections {
        tracing::warn!(
            open_files,
            max_connections = settings.limits.max_connections,
            "the open-file limit leaves room for {room} connections: past that, connections \
             are treated as over max_connections (raise LimitNOFILE= to allow more)"
        );
    }
    let inherited = systemd::inherited_listeners()?;
    let listeners = if inherited.is_empty() {
        Listeners::bind(&settings.unix, settings.unix_group.as_ref(), settings.tcp).await?
    } else {
        tracing::info!(
            sockets = inherited.len(),
            "using the sockets systemd passed (--unix and --tcp are ignored)"
        );
        Listeners::inherited(inherited)?
    };
    let metrics = match settings.metrics {
        Some(addr) => match crate::server::serve_metrics(addr, shared.clone()).await {
            Ok(addr) => addr.to_string(),
            Err(e) => {
                // Nobody will serve the socket file just made: leave no trace of it.
                listeners.abandon();
                return Err(e);
            }
        },
        None => "off".to_owned(),
    };
    let callbacks = match crate::delivery::callback::serve(parts.load().delivery.clone()).await {
        Ok(addr) => addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
        Err(e) => {
            listeners.abandon();
            return Err(e);
        }
    };
    prepare(&parts.load()).await?;
    if settings.metrics.is_some() {
        // The status page's last hour counts from here.
        crate::status::history::sample();
    }
    if let Some(interval) = settings.keep_warm {
        tokio::spawn(keep_warm(parts.clone(), interval));
    }

    let (unix, tcp) = (listeners.unix_paths(), listeners.tcp_addrs());
    tracing::info!(
        unix = %unix,
        tcp = %tcp,
        metrics = %metrics,
        delivery_callbacks = %callbacks,
        deadline_ms = settings.call.deadline.as_millis() as u64,
        "otp-sidecar {} ready",
        env!("CARGO_PKG_VERSION")
    );
    systemd::ready(&format!("serving on unix={unix} tcp={tcp}"));
    if let Some(interval) = systemd::spawn_watchdog() {
        tracing::debug!(interval_ms = interval.as_millis() as u64, "watchdog on");
    }

    tokio::spawn(sweep_rate_limits(parts.clone()));
    tokio::spawn(watch_state(parts.clone()));
    tokio::spawn(timer_heartbeat(parts.clone()));
    if settings.metrics.is_some() {
        tokio::spawn(sample_status());
    }

    let shutdown = CancellationToken::new();
    let drain = settings.call.deadline + Duration::from_secs(1);
    let serving = tokio::spawn(listeners.serve(shared.clone(), shutdown.clone(), drain));
    loop {
        match signals.next().await {
            Stop::Reload => reload(&options, &shared, &parts).await,
            Stop::Stop(name) => {
                tracing::info!("{name}: stopping; answering the calls in flight");
                break;
            }
        }
    }
    systemd::stopping("answering the calls in flight");
    shutdown.cancel();
    let _ = serving.await;
    tracing::info!("stopped");
    Ok(())
}

/// What `serve` would refuse at start beyond the settings themselves, checked without binding
/// or sending (for `check`): the Unix socket's path, and the backend (TLS roots, proxy,
/// credentials in headers) built as serving builds it.
pub fn preflight(settings: &Settings) -> Result<()> {
    crate::server::check_unix_path(&settings.unix)?;
    // The state store's client starts its connection task when made: that needs a runtime.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let _entered = runtime.enter();
    build(settings, None).map(drop)
}

/// Starts the uptime clock `health` reports from (at daemon start, before anything else).
pub fn start_clock() {
    crate::health::started();
}

/// `check --online`: one line per question put to Twilio (nothing is sent), and whether it
/// passed.
pub async fn check_online(settings: &Settings) -> Vec<(String, bool)> {
    let backups: Vec<Backup> = settings
        .backend
        .failover
        .iter()
        .map(|p| Backup {
            name: &p.name,
            api_url: &p.api_url,
            credentials: p.credentials.as_ref(),
        })
        .collect();
    let verdicts = crate::twilio::online::check_online(
        &settings.backend.twilio,
        settings.backend.credentials.as_ref(),
        settings.backend.verify.as_ref(),
        &backups,
    )
    .await;
    let mut lines: Vec<(String, bool)> = verdicts.into_iter().map(|v| (v.line, v.ok)).collect();
    if let Some(state) = &settings.state {
        match crate::state::Store::new(state) {
            Ok(store) => {
                store.set_limits(&settings.guard.rate_limits.describe());
                match store.probe(Duration::from_secs(2), false).await {
                    Ok(()) => {
                        lines.push((format!("state store {} takes writes", state.shown), true));
                        let agreement = store.agreement();
                        let agreed = agreement == crate::state::AGREED;
                        lines.push((format!("state store instances: {agreement}"), agreed));
                    }
                    Err(failed) => {
                        lines.push((format!("state store {} {failed}", state.shown), false))
                    }
                }
            }
            Err(e) => lines.push((format!("state store {}: {e:#}", state.shown), false)),
        }
    }
    lines
}

/// The serving parts of `settings` as the daemon builds them, for driving the connection
/// handling without listeners (the fuzz target).
pub fn live(settings: &Settings) -> Result<Live> {
    build(settings, None).map(|(live, _)| live)
}

enum Stop {
    Reload,
    Stop(&'static str),
}

struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Stop {
        tokio::select! {
            _ = self.term.recv() => Stop::Stop("SIGTERM"),
            _ = self.int.recv() => Stop::Stop("SIGINT"),
            _ = self.hup.recv() => Stop::Reload,
        }
    }
}
