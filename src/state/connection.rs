//! The connection to Redis or Valkey: one multiplexed connection that every call shares,
//! made lazily and remade by itself after the store goes away (redis-rs's ConnectionManager).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, TlsCertificates};

use super::StoreSettings;

/// Opens nothing yet: the first operation connects, so a store that is down at start (or
/// after a reload) costs a fallback, not a refused start.
pub fn connect(settings: &StoreSettings) -> Result<ConnectionManager> {
    let info = settings
        .url
        .as_str()
        .into_connection_info()
        .with_context(|| format!("state {} is not a Redis URL", settings.shown))?;
    let mut redis = info.redis_settings().clone();
    if let Some(password) = &settings.password {
        redis = redis.set_password(password.expose());
    }
    let info = info.set_redis_settings(redis);
    let client = match &settings.ca_pem {
        Some(pem) => Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        ),
        None => Client::open(info),
    }
    .with_context(|| format!("state {}", settings.shown))?;
    // Retries are short and few: while the store is away each operation falls back at once
    // (its own timeout), and the next one after a failed attempt starts a new one.
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(1)));
    ConnectionManager::new_lazy_with_config(client, config)
        .with_context(|| format!("state {}", settings.shown))
}

/// What a state URL may be; the password never comes from it (it would end up in logs,
/// `ps` and shell histories): it comes from OTP_SIDECAR_STATE_PASSWORD like the Twilio secrets.
pub fn check_url(url: &url::Url) -> Result<()> {
    match url.scheme() {
        "redis" | "rediss" | "valkey" | "valkeys" | "unix" | "redis+unix" | "valkey+unix" => {}
        other => bail!(
            "state must be memory, redis://HOST:PORT/DB, rediss://… or unix:///PATH, not a \
             {other}: URL"
        ),
    }
    if url.password().is_some() || url.query_pairs().any(|(k, _)| k == "pass") {
        bail!(
            "state: the URL carries a password; put it in OTP_SIDECAR_STATE_PASSWORD (a \
             credentials file or $CREDENTIALS_DIRECTORY) instead"
        );
    }
    Ok(())
}
