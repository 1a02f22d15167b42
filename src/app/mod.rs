//! The daemon's life: start (bind, warm Twilio, READY), serve, reload on SIGHUP, and drain
//! on SIGTERM / SIGINT.

pub mod systemd;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use arc_swap::ArcSwap;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::call::backend::Backend;
use crate::call::Dispatcher;
use crate::config::{ServeArgs, Settings, PRIMARY};
use crate::guard::ratelimit::RateLimiter;
use crate::metrics::{ResultLabel, METRICS};
use crate::server::{Listeners, Live, Shared};
use crate::twilio::credentials::Credentials;
use crate::twilio::failover::{Provider, Providers};

use crate::twilio::{refuses_credentials, TwilioClient};

/// Runs the daemon until SIGTERM or SIGINT, then drains. `args` are kept for reloads.
pub async fn run(args: ServeArgs, settings: Settings) -> Result<()> {
    // Installed before the listeners exist, so a signal that follows READY at once (as
    // systemd may send) is handled instead of killing the process.
    let mut signals = Signals::install()?;
    let shared: Shared = Arc::new(ArcSwap::from_pointee(build_live(&settings, None)?));
    let (open_files, room) = crate::server::slots::reserve_descriptors();
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
        Listeners::bind(&settings.unix, settings.tcp).await?
    } else {
        tracing::info!(
            sockets = inherited.len(),
            "using the sockets systemd passed (--unix and --tcp are ignored)"
        );
        Listeners::inherited(inherited)?
    };
    let metrics = match settings.metrics {
        Some(addr) => crate::metrics::serve(addr).await?.to_string(),
        None => "off".to_owned(),
    };
    prepare(&shared.load().dispatcher, &settings).await;
    if let Some(interval) = settings.keep_warm {
        tokio::spawn(keep_warm(shared.clone(), interval, settings.deadline));
    }

    let (unix, tcp) = (listeners.unix_paths(), listeners.tcp_addrs());
    tracing::info!(
        unix = %unix,
        tcp = %tcp,
        metrics = %metrics,
        deadline_ms = settings.deadline.as_millis() as u64,
        "otp-sidecar {} ready",
        env!("CARGO_PKG_VERSION")
    );
    systemd::ready(&format!("serving on unix={unix} tcp={tcp}"));
    if let Some(interval) = systemd::spawn_watchdog() {
        tracing::debug!(interval_ms = interval.as_millis() as u64, "watchdog on");
    }

    tokio::spawn(sweep_rate_limits(shared.clone()));
    tokio::spawn(timer_heartbeat(shared.clone()));

    let shutdown = CancellationToken::new();
    let drain = settings.deadline + Duration::from_secs(1);
    let serving = tokio::spawn(listeners.serve(shared.clone(), shutdown.clone(), drain));
    let mut current = settings;
    loop {
        match signals.next().await {
            Stop::Reload => {
                if let Some(new) = reload(&args, &current, &shared).await {
                    current = new;
                }
            }
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
    build_live(settings, None).map(drop)
}

/// What serving needs, made from settings: the backend (and its Twilio client) and limits.
/// The running rate limiter is kept (with its counts) when the rate limits did not change.
fn build_live(settings: &Settings, running: Option<&Live>) -> Result<Live> {
    // Verify writes its own text: the templates' warnings would be about nothing sent.
    if settings.verify.is_none() {
        for warning in settings.templates.warnings() {
            tracing::warn!("{warning}");
        }
    }
    let limiter = match running.map(|live| live.dispatcher.limiter()) {
        Some(limiter) if *limiter.limits() == settings.rate_limits => limiter.clone(),
        _ => Arc::new(RateLimiter::new(settings.rate_limits)),
    };
    let backend = match &settings.credentials {
        Some(credentials) if !settings.dry_run => {
            let client = Box::new(TwilioClient::new(&settings.twilio, credentials)?);
            match &settings.verify {
                Some(service) => {
                    tracing::info!(
                        service = service.service_sid(),
                        "sending through Twilio Verify as {}",
                        credentials.describe()
                    );
                    Backend::Verify(client, service.clone())
                }
                None => {
                    tracing::info!(twilio = %settings.twilio_api_url, "sending through {}", credentials.describe());
                    Backend::Messages(providers(settings, credentials, *client)?)
                }
            }
        }
        _ => {
            let sids = if settings.verify.is_some() {
                "VE…"
            } else {
                "SM… (CA… for a call)"
            };
            tracing::warn!(
                "DRY RUN: nothing will be sent; every sendOTP answers with a made-up {sids} SID"
            );
            Backend::dry_run(settings)
        }
    };
    Ok(Live {
        dispatcher: Arc::new(Dispatcher::new(settings, backend, limiter)),
        limits: settings.limits,
        max_frame: settings.max_frame_bytes,
    })
}

/// The primary and the failover providers, in order; they share one connection pool.
fn providers(
    settings: &Settings,
    credentials: &Credentials,
    primary: TwilioClient,
) -> Result<Providers> {
    let mut list = Vec::with_capacity(1 + settings.failover.len());
    for p in &settings.failover {
        let account = p.credentials.as_ref().unwrap_or(credentials);
        let client = primary.sibling(&p.api_url, account)?;
        tracing::info!(provider = %p.name, twilio = %p.api_url, "failover: then through {}", account.describe());
        list.push(Provider::new(
            p.name.clone(),
            client,
            p.sender.clone(),
            settings.breaker,
        ));
    }
    list.insert(
        0,
        Provider::new(PRIMARY.to_owned(), primary, None, settings.breaker),
    );
    Ok(Providers::new(list))
}

/// Re-reads the configuration; a bad one is refused and the running one stays.
async fn reload(args: &ServeArgs, current: &Settings, shared: &Shared) -> Option<Settings> {
    systemd::reloading();
    let outcome = match Settings::resolve(args, &|name| std::env::var(name).ok()) {
        Ok(new) => build_live(&new, Some(&shared.load())).map(|live| (new, live)),
        Err(e) => Err(e),
    };
    let result = match outcome {
        Ok((new, live)) => {
            prepare(&live.dispatcher, &new).await;
            shared.store(Arc::new(live));
            for what in needs_restart(current, &new) {
                tracing::warn!("{what} changed: it takes effect at the next restart");
            }
            tracing::info!("SIGHUP: configuration reloaded");
            METRICS
                .reloads
                .get_or_create(&ResultLabel { result: "applied" })
                .inc();
            Some(new)
        }
        Err(e) => {
            // One line, however many the parser's message has.
            let why = format!("{e:#}")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            tracing::error!("SIGHUP: reload refused, the running configuration stays: {why}");
            METRICS
                .reloads
                .get_or_create(&ResultLabel { result: "refused" })
                .inc();
            None
        }
    };
    systemd::ready("serving");
    result
}

/// Settings that belong to the listeners and the runtime, which a reload leaves alone.
fn needs_restart(old: &Settings, new: &Settings) -> Vec<&'static str> {
    [
        ("unix", old.unix != new.unix),
        ("tcp", old.tcp != new.tcp),
        ("threads", old.threads != new.threads),
        ("metrics", old.metrics != new.metrics),
        ("log_format", old.log_format != new.log_format),
        ("keep_warm_secs", old.keep_warm != new.keep_warm),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

/// What the first call must not pay for, done before it takes over (at start, before READY;
/// on reload, before the swap): the numbering plan (~100 ms) when geo rules are on, and the
/// Twilio connection when warming is on.
async fn prepare(dispatcher: &Dispatcher, settings: &Settings) {
    if settings.geo.active() || settings.default_region.is_some() {
        let _ = tokio::task::spawn_blocking(crate::guard::geo::load_numbering_plan).await;
    }
    if settings.keep_warm.is_some() {
        warm_up(dispatcher, settings.deadline).await;
    }
}

/// Opens the Twilio connection (TLS included) before the first OTP needs it.
async fn warm_up(dispatcher: &Dispatcher, timeout: Duration) {
    let Some(client) = dispatcher.twilio() else {
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
    for provider in dispatcher.backups() {
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
async fn keep_warm(shared: Shared, interval: Duration, timeout: Duration) {
    let mut was_warm = true;
    loop {
        tokio::time::sleep(interval).await;
        let dispatcher = shared.load().dispatcher.clone();
        let Some(client) = dispatcher.twilio() else {
            continue;
        };
        let warm = matches!(client.warm(timeout).await, Ok(s) if !refuses_credentials(s));
        for provider in dispatcher.backups() {
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

/// Once a minute, forgets rate-limit keys whose window has passed and expired Lookup answers.
async fn sweep_rate_limits(shared: Shared) {
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let dispatcher = shared.load().dispatcher.clone();
        let kept = dispatcher.limiter().sweep();
        let cached = dispatcher.lookup().map_or(0, |l| l.sweep());
        tracing::debug!(kept, cached, "rate-limit keys and Lookup answers swept");
    }
}

/// Keeps a timer pending that is due before any call's deadline. Tokio wakes its own driver
/// (an eventfd write, then an extra pass through epoll) whenever a new timer is due earlier
/// than the one it last planned to wake for; with this beat due first, registering a call's
/// deadline never does. It costs one wake every half deadline and saves a syscall a call.
async fn timer_heartbeat(shared: Shared) {
    loop {
        let beat = shared.load().dispatcher.deadline() / 2;
        tokio::time::sleep(beat).await;
    }
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
