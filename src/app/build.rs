//! The composition root: settings in, the running parts out. Each part gets only its own
//! settings; what more than one part uses (the backend, the limiter, the Lookup cache) is made
//! here once and handed to each.

use std::sync::Arc;

use anyhow::Result;

use crate::call::backend::Backend;
use crate::call::Dispatcher;
use crate::codes::Codes;
use crate::config::Settings;
use crate::delivery::Tracker;
use crate::guard::lookup::LookupGuard;
use crate::guard::pumping::Pumping;
use crate::guard::ratelimit::RateLimiter;
use crate::guard::sent::Sent;
use crate::guard::Guards;
use crate::server::Live;
use crate::state::Store;
use crate::twilio::credentials::Credentials;
use crate::twilio::failover::{Provider, Providers, PRIMARY};
use crate::twilio::TwilioClient;

/// What the background tasks (warming, sweeps, the heartbeat) work on; a reload replaces it
/// with the serving parts.
pub struct Parts {
    pub backend: Arc<Backend>,
    pub limiter: Arc<RateLimiter>,
    pub lookup: Option<Arc<LookupGuard>>,
    /// The shared state store, when there is one (`--state redis://…`).
    pub store: Option<Arc<Store>>,
    pub pumping: Arc<Pumping>,
    pub sent: Arc<Sent>,
    /// Follows each sent message's fate.
    pub delivery: Arc<Tracker>,
    /// issueOTP's codes (swept with the limiter).
    pub codes: Arc<Codes>,
    pub settings: Settings,
}

/// What serving needs, made from settings: the backend (and its Twilio clients), the guards
/// and the dispatcher, and the server's limits. The running rate limiter is kept (with its
/// counts) when the rate limits did not change, and the running store (with its connection)
/// when the state settings did not.
pub fn build(settings: &Settings, running: Option<&Parts>) -> Result<(Live, Parts)> {
    // Verify writes its own text: the templates' warnings would be about nothing sent.
    if settings.backend.verify.is_none() {
        for warning in settings.call.templates.warnings() {
            tracing::warn!("{warning}");
        }
    }
    let rate_limits = &settings.guard.rate_limits;
    let limiter = match running.map(|parts| &parts.limiter) {
        Some(limiter) if limiter.limits() == rate_limits => limiter.clone(),
        _ => Arc::new(RateLimiter::new(rate_limits.clone())),
    };
    let store = match (
        &settings.state,
        running.and_then(|parts| parts.store.as_ref()),
    ) {
        (None, _) => None,
        // A store that is failing is made anew: a reload is how an operator retries one
        // whose password was just fixed.
        (Some(wanted), Some(store)) if store.settings() == wanted && !store.is_degraded() => {
            Some(store.clone())
        }
        (Some(wanted), _) => {
            tracing::info!(
                "state shared through {} (keys under {}:, state_failure = {})",
                wanted.shown,
                wanted.prefix,
                wanted.failure.name()
            );
            Some(Arc::new(Store::new(wanted)?))
        }
    };
    if let Some(store) = &store {
        store.set_limits(&rate_limits.describe());
    }
    let running_client = running.and_then(|parts| parts.backend.twilio());
    let backend = Arc::new(backend(settings, running_client)?);
    // Lookup is asked through the Twilio client: a dry run looks nothing up.
    let lookup = match (&settings.guard.lookup, backend.twilio()) {
        (Some(rules), Some(_)) => Some(Arc::new(LookupGuard::new(rules.clone(), store.clone()))),
        _ => None,
    };
    // The counts and records survive a reload that leaves their settings alone.
    let pumping = match running.map(|parts| &parts.pumping) {
        Some(p) if *p.settings() == settings.guard.pumping => p.clone(),
        _ => Arc::new(Pumping::new(settings.guard.pumping.clone())),
    };
    let sent = match running.map(|parts| &parts.sent) {
        Some(s) if *s.settings() == settings.guard.sent => s.clone(),
        _ => Arc::new(Sent::new(settings.guard.sent.clone())),
    };
    let guards = Guards {
        geo: settings.guard.geo.clone(),
        number_types: settings.guard.number_types.clone(),
        limiter: limiter.clone(),
        lookup: lookup.clone(),
        store: store.clone(),
        pumping: pumping.clone(),
        sent: sent.clone(),
    };
    // The running tracker (its messages in flight, what it knows) is kept when its settings
    // and the store did not change.
    let delivery = match running {
        Some(parts)
            if parts.delivery.settings() == &settings.delivery
                && parts.store.as_ref().map(Arc::as_ptr) == store.as_ref().map(Arc::as_ptr) =>
        {
            parts.delivery.clone()
        }
        _ => Tracker::new(settings.delivery.clone(), store.clone()),
    };
    // A message that will never arrive counts against its range and country, as an
    // unconfirmed send does (the first build's guards: the hook is set once per tracker).
    let lost = guards.clone();
    delivery.on_final_status(Box::new(move |phone, fate| {
        if fate.status.is_lost() {
            let (guards, phone) = (lost.clone(), phone.to_owned());
            tokio::spawn(async move { guards.undelivered(&phone).await });
        }
    }));
    // The codes outlive a reload that keeps their settings and store (issued codes stay good).
    let codes = match running.map(|parts| &parts.codes) {
        Some(codes) if codes.settings() == &settings.codes && codes.kept_in(store.as_ref()) => {
            codes.clone()
        }
        _ => Arc::new(
            Codes::new(settings.codes.clone(), store.clone())
                .map_err(|_| anyhow::anyhow!("no random bytes from the OS for the codes' key"))?,
        ),
    };
    let dispatcher = Dispatcher::new(settings.call.clone(), guards, backend.clone())
        .with_delivery(delivery.clone())
        .with_codes(codes.clone());
    let live = Live {
        dispatcher: Arc::new(dispatcher),
        limits: settings.limits,
        max_frame: settings.max_frame_bytes,
        tls: settings.tls.clone(),
    };
    let parts = Parts {
        backend,
        limiter,
        lookup,
        store,
        pumping,
        sent,
        delivery,
        codes,
        settings: settings.clone(),
    };
    Ok((live, parts))
}

/// Where codes go: Messages through the providers, Verify, or a dry run.
/// `running`: the client serving now, whose request budget a reload keeps.
fn backend(settings: &Settings, running: Option<&TwilioClient>) -> Result<Backend> {
    let credentials = match &settings.backend.credentials {
        Some(credentials) if !settings.dry_run => credentials,
        _ => {
            let sids = if settings.backend.verify.is_some() {
                "VE…"
            } else {
                "SM… (CA… for a call)"
            };
            tracing::warn!(
                "DRY RUN: nothing will be sent; every sendOTP answers with a made-up {sids} SID"
            );
            return Ok(Backend::dry_run(settings.backend.verify.is_some()));
        }
    };
    let client = TwilioClient::replacing(&settings.backend.twilio, credentials, running)?;
    let client = Box::new(client);
    Ok(match &settings.backend.verify {
        Some(service) => {
            tracing::info!(
                service = service.service_sid(),
                "sending through Twilio Verify as {}",
                credentials.describe()
            );
            Backend::Verify(client, service.clone())
        }
        None => {
            tracing::info!(twilio = %settings.backend.twilio.api_url, "sending through {}", credentials.describe());
            Backend::Messages(providers(settings, credentials, *client)?)
        }
    })
}

/// The primary and the failover providers, in order; they share one connection pool.
fn providers(
    settings: &Settings,
    credentials: &Credentials,
    primary: TwilioClient,
) -> Result<Providers> {
    let mut list = Vec::with_capacity(1 + settings.backend.failover.len());
    for p in &settings.backend.failover {
        let account = p.credentials.as_ref().unwrap_or(credentials);
        let client = primary.sibling(&p.api_url, account)?;
        tracing::info!(provider = %p.name, twilio = %p.api_url, "failover: then through {}", account.describe());
        list.push(Provider::new(
            p.name.clone(),
            client,
            p.sender.clone(),
            settings.backend.breaker,
        ));
    }
    list.insert(
        0,
        Provider::new(PRIMARY.to_owned(), primary, None, settings.backend.breaker),
    );
    Ok(Providers::new(list))
}
