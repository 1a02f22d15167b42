//! The state store's settings: `memory`, or a Redis/Valkey URL with its secrets, prefix,
//! timeout and failure policy.

use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::checks::{read_ca, redact_url};
use super::credentials::{Sources, STATE_KEY};
use super::{given, Options};
use crate::state::{check_sentinel_url, sentinel_rest, Failure, StoreSettings};

/// `None` for `memory`. A shared store needs the key secret: without it the names would be
/// plain hashes of phone numbers, which anyone can reverse by hashing a country's numbers.
pub(super) fn store(o: &Options, secrets: &Sources) -> Result<Option<StoreSettings>> {
    let url = given(o.state.clone(), "state")?;
    let url = url.trim();
    if url == "memory" {
        return Ok(None);
    }
    let shown = redact_url(url);
    let scheme = match sentinel_rest(url) {
        Some(rest) => {
            if rest.contains('@') || rest.contains('?') {
                bail!(PASSWORD_IN_URL);
            }
            check_sentinel_url(url).with_context(|| format!("state {shown}"))?;
            "redis+sentinel"
        }
        None => {
            let parsed = url::Url::parse(url).with_context(|| {
                format!("state {shown} is neither memory nor a URL like redis://127.0.0.1:6379/0")
            })?;
            check_url(&parsed)?;
            if matches!(parsed.scheme(), "rediss" | "valkeys") {
                "rediss"
            } else {
                "redis"
            }
        }
    };
    let failure = match given(o.state_failure.clone(), "state_failure")?.as_str() {
        "local" => Failure::Local,
        "closed" => Failure::Closed,
        other => bail!("state_failure must be \"local\" or \"closed\", not {other:?}"),
    };
    let prefix = given(o.state_prefix.clone(), "state_prefix")?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("state_prefix must be printable ASCII without spaces, like otp-sidecar");
    }
    let ca_pem = match &o.state_ca_file {
        Some(path) if scheme == "rediss" => Some(read_ca(path)?),
        Some(_) => bail!("state_ca_file applies to a rediss:// store only"),
        None => None,
    };
    let (password, key) = secrets.state_secrets()?;
    let Some(key) = key else {
        bail!(
            "state {shown} needs {STATE_KEY}, the secret every instance hashes the store's keys \
             with (so no key holds a phone number or user name): set it in the environment, \
             as state_key_file under [credentials], or in $CREDENTIALS_DIRECTORY"
        );
    };
    Ok(Some(StoreSettings {
        url: url.to_owned(),
        shown,
        password,
        key,
        ca_pem,
        prefix,
        timeout: Duration::from_millis(given(o.state_timeout_ms, "state_timeout_ms")?),
        failure,
    }))
}

const PASSWORD_IN_URL: &str = "state: the URL carries a password; put it in \
    OTP_SIDECAR_STATE_PASSWORD (a credentials file or $CREDENTIALS_DIRECTORY) instead";

/// What a state URL may be; the password never comes from it (it would end up in logs,
/// `ps` and shell histories): it comes from OTP_SIDECAR_STATE_PASSWORD like the Twilio secrets.
fn check_url(url: &url::Url) -> Result<()> {
    match url.scheme() {
        "redis" | "rediss" | "valkey" | "valkeys" | "unix" | "redis+unix" | "valkey+unix" => {}
        other => bail!(
            "state must be memory, redis://HOST:PORT/DB, rediss://…, unix:///PATH or \
             redis+sentinel://HOST:PORT[,HOST:PORT…]/SERVICE[/DB], not a {other}: URL"
        ),
    }
    if url.password().is_some() || url.query_pairs().any(|(k, _)| k == "pass") {
        bail!(PASSWORD_IN_URL);
    }
    Ok(())
}
