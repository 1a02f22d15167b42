//! Delivery status, the voice follow-up and alerts (issue 26): their options, declared here
//! and flattened into [`Options`](super::Options) (same flags, env vars and top-level file
//! keys as any other option), and their settings.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use url::Url;

use super::checks::parse_bool;
use super::credentials::Sources;
use super::Options;
use crate::alerts;
use crate::delivery::{self, Mode};
use crate::twilio::credentials::{Auth, Credentials};

#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
pub struct DeliveryOptions {
    /// How each message's fate is learned: poll (GET the message until a final status or the
    /// code's lifetime; needs nothing reachable), callback (Twilio posts it to
    /// --delivery-callback-url; needs the auth token), or off.
    #[arg(
        long,
        env = "OTP_SIDECAR_DELIVERY_STATUS",
        value_name = "MODE",
        default_value = "poll"
    )]
    pub delivery_status: Option<String>,

    /// The public https:// URL Twilio posts status callbacks to (StatusCallback), as Twilio
    /// sees it: the request signature covers it. [default: unset]
    #[arg(long, env = "OTP_SIDECAR_DELIVERY_CALLBACK_URL", value_name = "URL")]
    pub delivery_callback_url: Option<String>,

    /// Where the status callback listener listens, e.g. 0.0.0.0:8443 (plain HTTP; put it
    /// behind the TLS that --delivery-callback-url names). [default: unset]
    #[arg(
        long,
        env = "OTP_SIDECAR_DELIVERY_CALLBACK_LISTEN",
        value_name = "ADDR"
    )]
    pub delivery_callback_listen: Option<SocketAddr>,

    /// Call once, reading the same code, when an SMS ends undelivered or failed with 30003,
    /// 30005 or 30006 while the code is alive (needs a caller ID: --voice-from or a number
    /// as sender).
    #[arg(long, env = "OTP_SIDECAR_VOICE_ON_UNDELIVERED", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub voice_on_undelivered: Option<bool>,

    /// POST alerts (JSON, signed with HMAC-SHA256 by OTP_SIDECAR_ALERT_SECRET) to this
    /// https:// URL. [default: unset]
    #[arg(long, env = "OTP_SIDECAR_ALERT_WEBHOOK", value_name = "URL")]
    pub alert_webhook: Option<String>,

    /// Also log each alert on one WARN line (alert=KIND) for syslog or journald to forward.
    #[arg(long, env = "OTP_SIDECAR_LOG_ALERTS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub log_alerts: Option<bool>,
}

/// The delivery tracker's settings; `verify`/`dry_run`: no Messages are sent, so none is
/// tracked.
pub(super) fn settings(
    o: &Options,
    credentials: Option<&Credentials>,
    sends_messages: bool,
    warnings: &mut Vec<String>,
) -> Result<delivery::Settings> {
    let d = &o.delivery;
    let mode = match d.delivery_status.as_deref().unwrap_or("poll") {
        "poll" => Mode::Poll,
        "callback" => Mode::Callback,
        "off" => Mode::Off,
        other => bail!("delivery_status must be \"poll\", \"callback\" or \"off\", not {other:?}"),
    };
    let voice_on_undelivered = d.voice_on_undelivered.unwrap_or(false);
    if voice_on_undelivered && mode == Mode::Off {
        bail!("voice_on_undelivered needs delivery_status = \"poll\" or \"callback\"");
    }
    if voice_on_undelivered && o.voice_from.is_none() {
        warnings.push(
            "voice_on_undelivered without voice_from: only messages sent from an E.164 \
             number get the follow-up call (the sender is its caller ID)"
                .into(),
        );
    }
    let mut callback = None;
    if mode == Mode::Callback {
        let url = d
            .delivery_callback_url
            .as_deref()
            .context("delivery_status = \"callback\" needs delivery_callback_url")?;
        let url = Url::parse(url).context("delivery_callback_url is not a URL")?;
        if !matches!(url.scheme(), "https" | "http") || url.password().is_some() {
            bail!("delivery_callback_url must be an https:// URL without credentials");
        }
        let listen = d
            .delivery_callback_listen
            .context("delivery_status = \"callback\" needs delivery_callback_listen")?;
        // The signature is keyed by the auth token: an API key cannot check it.
        let token = match credentials.map(|c| &c.auth) {
            Some(Auth::AuthToken(token)) => token.clone(),
            _ if !sends_messages => crate::twilio::credentials::Secret::new(""),
            _ => bail!(
                "delivery_status = \"callback\" needs TWILIO_AUTH_TOKEN: Twilio signs its \
                 callbacks with the account's auth token, which an API key cannot check"
            ),
        };
        callback = Some(delivery::CallbackSettings { url, listen, token });
    }
    Ok(delivery::Settings {
        mode: if sends_messages { mode } else { Mode::Off },
        lifetime: delivery::lifetime(o.otp_lifetime_secs),
        voice_on_undelivered,
        callback,
    })
}

/// The alerts' settings: the webhook and its secret, and whether to log them.
pub(super) fn alerts(o: &Options, secrets: &Sources) -> Result<alerts::Settings> {
    let d = &o.delivery;
    let webhook = match d.alert_webhook.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => {
            let url = Url::parse(text).context("alert_webhook is not a URL")?;
            let loopback = url.host_str().is_some_and(|h| {
                h == "localhost"
                    || h.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
                    || h.trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|a| a.is_loopback())
            });
            if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
                bail!("alert_webhook must be an https:// URL (plain http:// only to loopback)");
            }
            if url.password().is_some() {
                bail!("alert_webhook must not carry a password");
            }
            let secret = secrets.alert_secret()?.with_context(|| {
                format!(
                    "alert_webhook needs {}, the secret its requests are signed with: set it \
                     in the environment, as alert_secret_file under [credentials], or in \
                     $CREDENTIALS_DIRECTORY",
                    super::credentials::ALERT_SECRET
                )
            })?;
            Some((url, secret.expose().as_bytes().to_vec()))
        }
    };
    Ok(alerts::Settings {
        webhook,
        log: d.log_alerts.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{file, Settings};
    use super::*;

    #[test]
    fn the_keys_are_top_level_file_keys_and_typos_are_still_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.toml");
        std::fs::write(
            &good,
            "dry_run = true\ndelivery_status = \"off\"\nlog_alerts = true\n",
        )
        .unwrap();
        let (options, _) = file::load::<Options>(&good).unwrap();
        assert_eq!(options.delivery.delivery_status.as_deref(), Some("off"));
        assert_eq!(options.delivery.log_alerts, Some(true));
        let typo = dir.path().join("typo.toml");
        std::fs::write(&typo, "delivery_statuss = \"off\"\n").unwrap();
        let e = format!("{:#}", file::load::<Options>(&typo).unwrap_err());
        assert!(e.contains("unknown field `delivery_statuss`"), "{e}");
    }

    #[test]
    fn callbacks_need_the_auth_token_and_follow_ups_need_tracking() {
        let env = |k: &str| match k {
            "TWILIO_ACCOUNT_SID" => Some("AC0123456789abcdef0123456789abcdef".to_owned()),
            "TWILIO_API_KEY" => Some("SK0123456789abcdef0123456789abcdef".to_owned()),
            "TWILIO_API_SECRET" => Some("secret".to_owned()),
            _ => None,
        };
        let mut o = Options::default();
        o.delivery.delivery_status = Some("callback".into());
        o.delivery.delivery_callback_url = Some("https://otp.example.com/twilio/status".into());
        o.delivery.delivery_callback_listen = Some("127.0.0.1:0".parse().unwrap());
        let e = format!("{:#}", Settings::resolve(&o, &env).unwrap_err());
        assert!(e.contains("TWILIO_AUTH_TOKEN"), "{e}");
        let mut o = Options::default();
        o.delivery.delivery_status = Some("off".into());
        o.delivery.voice_on_undelivered = Some(true);
        let e = format!("{:#}", Settings::resolve(&o, &env).unwrap_err());
        assert!(e.contains("voice_on_undelivered needs"), "{e}");
        let mut o = Options::default();
        o.delivery.delivery_status = Some("sometimes".into());
        assert!(Settings::resolve(&o, &env).is_err());
        let s = Settings::resolve(&Options::default(), &env).unwrap();
        assert_eq!(s.delivery.mode, Mode::Poll, "polling is the default");
    }
}
