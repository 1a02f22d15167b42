//! The backend's settings: how to reach Twilio (URLs, proxy, CA, concurrency), Verify mode,
//! the failover providers and their breaker, and the account's credentials — one struct, as
//! the backend is built from them together.

use std::time::Duration;

use anyhow::{bail, Result};

use super::checks::{parse_api_url, parse_http_url, read_ca};
use super::file::ConfigSource;
use super::fraud_options::pairs;
use super::{given, redact_url, Options, ProviderSettings};
use crate::twilio::credentials::Credentials;
use crate::twilio::failover::{BreakerSettings, PRIMARY};
use crate::twilio::fraud::signals;
use crate::twilio::verify::VerifyService;

/// What the Twilio backend is built from.
#[derive(Debug, Clone)]
pub struct BackendSettings {
    pub twilio: crate::twilio::Settings,
    /// Verify mode, when set.
    pub verify: Option<VerifyService>,
    /// Providers after the primary, in order (Messages mode).
    pub failover: Vec<ProviderSettings>,
    pub breaker: BreakerSettings,
    /// `None` only in dry-run mode.
    pub credentials: Option<Credentials>,
}

/// `credentials` as loaded; `deadline` is the call's, which the connect timeout divides.
pub(super) fn resolve(
    o: &Options,
    source: Option<&ConfigSource>,
    credentials: Option<Credentials>,
    deadline: Duration,
    dry_run: bool,
) -> Result<BackendSettings> {
    let allow_insecure = o.allow_insecure_twilio_url.unwrap_or(false);
    let api = |name: &str, value: &Option<String>| {
        parse_api_url(name, &given(value.clone(), name)?, allow_insecure)
    };
    let api_url = api("twilio_api_url", &o.twilio_api_url)?;
    let proxy = match &o.proxy {
        Some(p) => {
            let url = parse_http_url("proxy", p)?;
            // HTTPS to Twilio goes through the proxy with CONNECT; TLS to the proxy itself
            // is not supported.
            if url.scheme() != "http" {
                bail!(
                    "proxy must be an http:// URL (HTTPS to Twilio is tunnelled through it), \
                     not {}",
                    redact_url(p)
                );
            }
            Some(url)
        }
        None => None,
    };
    let ca_pem = match &o.twilio_ca_file {
        Some(path) => Some(read_ca(path)?),
        None => None,
    };
    let lookup_url = api("lookup_api_url", &o.lookup_api_url)?;
    let verify_api_url = api("verify_api_url", &o.verify_api_url)?;
    let verify = match &o.verify_service_sid {
        Some(sid) => Some(
            VerifyService::new(&verify_api_url, sid.trim())?.with_signals(signals(
                &pairs(
                    o.fraud.verify_tags.as_deref().unwrap_or_default(),
                    "verify_tags",
                )?,
                &pairs(
                    o.fraud.verify_rate_limits.as_deref().unwrap_or_default(),
                    "verify_rate_limits",
                )?,
            )?),
        ),
        None => None,
    };

    let breaker = BreakerSettings {
        failures: given(o.breaker_failures, "breaker_failures")?,
        cooldown: Duration::from_secs(given(o.breaker_cooldown_secs, "breaker_cooldown_secs")?),
    };
    let failover = o
        .failover
        .iter()
        .map(|p| p.resolve(&api_url, allow_insecure, source))
        .collect::<Result<Vec<_>>>()?;
    let mut names: Vec<&str> = vec![PRIMARY];
    for provider in &failover {
        if names.contains(&provider.name.as_str()) {
            bail!("failover: the name {:?} is used twice", provider.name);
        }
        names.push(&provider.name);
    }
    if verify.is_some() && !failover.is_empty() {
        bail!("failover applies to Messages, not to Verify mode (verify_service_sid)");
    }

    if credentials.is_none() && !dry_run {
        bail!(
            "no Twilio credentials: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (or \
             TWILIO_API_KEY and TWILIO_API_SECRET), name files under [credentials] in the \
             config, or use --dry-run"
        );
    }

    let twilio = crate::twilio::Settings {
        api_url,
        lookup_url,
        proxy,
        ca_pem,
        // With failover, a provider that cannot be reached must leave time for the next.
        connect_timeout: deadline / (1 + failover.len() as u32),
        validity_period: o.validity_period.or(o.otp_lifetime_secs),
        risk_check: o.fraud.risk_check.unwrap_or(true),
        max_concurrency: given(o.twilio_max_concurrency, "twilio_max_concurrency")?,
        max_retry_after: Duration::from_secs(given(
            o.twilio_max_retry_after_secs,
            "twilio_max_retry_after_secs",
        )?),
    };
    Ok(BackendSettings {
        twilio,
        verify,
        failover,
        breaker,
        credentials,
    })
}
