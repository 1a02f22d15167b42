//! `[[failover]]` entries: each checked into a provider the Twilio clients are built for.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use url::Url;

use super::checks::parse_api_url;
use super::credentials::{CredentialFiles, Sources};
use super::file::ConfigSource;
use crate::twilio::credentials::Credentials;
use crate::twilio::{messages, Sender};

/// One `[[failover]]` entry of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// For logs and metrics.
    pub name: String,
    /// Send from this instead of the caller's sender: the account's own number, sender ID or
    /// Messaging Service (MG…).
    pub sender: Option<String>,
    /// Another region's edge, e.g. https://api.dublin.ie1.twilio.com. [default: twilio_api_url]
    pub twilio_api_url: Option<String>,
    /// Another account; without it, the primary's credentials (another Messaging Service).
    pub credentials: Option<CredentialFiles>,
}

/// A failover provider, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSettings {
    pub name: String,
    pub sender: Option<Sender>,
    pub api_url: Url,
    /// `None`: the primary's.
    pub credentials: Option<Credentials>,
}

impl ProviderConfig {
    pub(super) fn resolve(
        &self,
        primary_api: &Url,
        allow_insecure: bool,
        config: Option<&ConfigSource>,
    ) -> Result<ProviderSettings> {
        let name = self.name.trim();
        if name.is_empty() || name.len() > 40 || name.chars().any(char::is_control) {
            bail!("failover: a name must be 1 to 40 printable characters");
        }
        let context = || format!("failover {name:?}");
        let sender = match &self.sender {
            Some(s) => Some(
                messages::sender(s)
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .with_context(context)?,
            ),
            None => None,
        };
        let api_url = match &self.twilio_api_url {
            Some(u) => parse_api_url("twilio_api_url", u, allow_insecure).with_context(context)?,
            None => primary_api.clone(),
        };
        let credentials = match &self.credentials {
            // Only what the entry names: the environment and systemd's directory hold the
            // primary's.
            Some(files) => Some(
                Sources {
                    env: &|_| None,
                    files,
                    config,
                    credentials_directory: None,
                }
                .load()
                .with_context(context)?
                .ok_or_else(|| anyhow::anyhow!("failover {name:?}: credentials are empty"))?,
            ),
            None => None,
        };
        if credentials.is_none() && sender.is_none() && self.twilio_api_url.is_none() {
            bail!("failover {name:?} is the primary again: give it a sender, credentials or a twilio_api_url");
        }
        Ok(ProviderSettings {
            name: name.to_owned(),
            sender,
            api_url,
            credentials,
        })
    }
}
