//! `check`'s report: what the daemon would run with, one line per part, never a secret.

use std::fmt::Write as _;

use super::{redact_url, Settings};

/// What `check` prints, from "configuration OK" on.
pub fn report(settings: &Settings) -> String {
    let mut out = String::new();
    macro_rules! line {
        ($($arg:tt)*) => {{
            let _ = writeln!(out, $($arg)*);
        }};
    }
    line!("configuration OK");
    line!("  unix socket:  {}", settings.unix.display());
    if let Some(group) = &settings.unix_group {
        line!("  unix group:   {} (gid {})", group.name, group.gid);
    }
    line!(
        "  tcp:          {}",
        or_off(settings.tcp, |a| a.to_string())
    );
    line!(
        "  tls:          {}",
        or_off(settings.tls.as_ref(), |t| {
            let clients = match &t.files.client_ca {
                Some(ca) => format!(
                    "client certificates from the CA in {} required",
                    ca.display()
                ),
                None => "no client certificate asked for".to_owned(),
            };
            format!(
                "cert {}, key {}; {clients}",
                t.files.cert.display(),
                t.files.key.display()
            )
        })
    );
    line!(
        "  callers:      {}",
        or_off(settings.call.callers.as_ref(), |c| format!(
            "{} ({}) from {}: sendOTP and confirmOTP need context.token",
            c.names().count(),
            c.names().collect::<Vec<_>>().join(", "),
            c.path().display()
        ))
    );
    line!("  twilio api:   {}", settings.backend.twilio.api_url);
    line!(
        "  proxy:        {}",
        or_off(settings.backend.twilio.proxy.as_ref(), |p| redact_url(
            p.as_str()
        ))
    );
    line!("  deadline:     {} ms", settings.call.deadline.as_millis());
    let codes = &settings.codes;
    line!(
        "  codes:        issueOTP draws {} of {} characters, good {} s, {} wrong lock; key {}",
        codes.length,
        codes.alphabet.len(),
        codes.lifetime.as_secs(),
        codes.max_attempts,
        codes.key_from
    );
    line!("  threads:      {}", settings.threads);
    let limits = &settings.limits;
    line!(
        "  limits:       {} connections, {} calls in flight ({} per connection), idle {}",
        limits.max_connections,
        limits.max_in_flight,
        limits.max_in_flight_per_connection,
        limits
            .idle_timeout
            .map_or_else(|| "never".to_owned(), |t| format!("{} s", t.as_secs()))
    );
    line!(
        "  twilio budget: {} requests in flight per account; a 429 pauses sends {} s at most",
        settings.backend.twilio.max_concurrency,
        settings.backend.twilio.max_retry_after.as_secs()
    );
    let rates = &settings.guard.rate_limits;
    let rate = |r: Option<crate::guard::ratelimit::Rate>| or_off(r, |r| r.to_string());
    line!(
        "  rate limits:  phone {}, ip {}, user {}, global {}",
        rate(rates.phone),
        rate(rates.ip),
        rate(rates.user),
        rate(rates.global)
    );
    line!(
        "  state:        {}",
        settings.state.as_ref().map_or_else(
            || "memory (this process only)".to_owned(),
            |s| format!(
                "{} (keys under {}:, hashed with a shared key{}; {} ms per operation, on \
                 failure {})",
                s.shown,
                s.prefix,
                if s.password.is_some() {
                    ", password set"
                } else {
                    ""
                },
                s.timeout.as_millis(),
                s.failure.name()
            )
        )
    );
    line!(
        "  default_region: {}",
        settings
            .call
            .region
            .as_ref()
            .map_or("none (only +E.164 accepted)", AsRef::as_ref)
    );
    line!(
        "  lookup:       {}",
        or_off(settings.guard.lookup.as_ref(), |l| format!(
            "{} line types, {} carriers blocked, cached {} s, fails {}",
            l.block_line_types.len(),
            l.block_carriers.len(),
            l.cache_ttl.as_secs(),
            if l.fail_open { "open" } else { "closed" }
        ))
    );
    let failover: Vec<String> = settings
        .backend
        .failover
        .iter()
        .map(|p| {
            let account = p
                .credentials
                .as_ref()
                .map_or_else(|| "the primary's account".to_owned(), |c| c.describe());
            format!("{} ({} at {})", p.name, account, p.api_url)
        })
        .collect();
    line!(
        "  failover:     {}",
        if failover.is_empty() {
            "off".to_owned()
        } else {
            format!(
                "{}; a provider is skipped after {} faults in a row, for {} s",
                failover.join(", then "),
                settings.backend.breaker.failures,
                settings.backend.breaker.cooldown.as_secs()
            )
        }
    );
    let voice = &settings.call.voice;
    line!(
        "  channel:      {} (calls from {}, in {}, fallback to a call {})",
        settings.call.channel.name(),
        voice.from.as_deref().unwrap_or("the sender"),
        voice.language,
        if voice.fallback { "on" } else { "off" }
    );
    match &settings.backend.verify {
        // Verify writes the text itself, from the service's template.
        Some(service) => line!(
            "  verify:       {} (its own message text and lifetime)",
            service.service_sid()
        ),
        None => {
            for (name, cost) in settings.call.templates.costs() {
                line!("  template {name}: {cost} with a 6-digit code");
            }
            line!(
                "  validity:     {}",
                or_off(settings.backend.twilio.validity_period, |v| format!(
                    "{v} s"
                ))
            );
        }
    }
    line!(
        "  keep warm:    {}",
        or_off(settings.keep_warm, |t| format!("every {} s", t.as_secs()))
    );
    line!(
        "  metrics:      {}",
        or_off(settings.metrics, |a| format!("http://{a}/metrics"))
    );
    match (&settings.backend.credentials, settings.dry_run) {
        (_, true) => line!("  mode:         DRY RUN (nothing is sent)"),
        (Some(c), false) => line!("  credentials:  {} (from {})", c.describe(), c.origin),
        (None, false) => {}
    }
    out
}

/// A setting that may be off, for `check`'s report.
fn or_off<T>(value: Option<T>, show: impl FnOnce(T) -> String) -> String {
    value.map_or_else(|| "off".to_owned(), show)
}
