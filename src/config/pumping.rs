//! The pumping guard's and the resend rules' options (issue 25 §2, §5), one block flattened into
//! [`Options`](super::Options): flag, env var and file key as everywhere, and their settings.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::checks::parse_bool;
use super::{given, Options};
use crate::guard::geo::regions;
use crate::guard::pumping::{self, Mode};
use crate::guard::sent::{self, parse_cooldown};

/// How long a code lives when `otp_lifetime_secs` is not set: what dedup and the last SID of
/// a number are kept for.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
pub struct PumpingOptions {
    /// The SMS pumping guard: "monitor" logs and counts the countries and ranges it would
    /// throttle, "enforce" throttles them (ERR blocked: pumping), "off" counts nothing.
    #[arg(
        long,
        env = "OTP_SIDECAR_PUMPING_MODE",
        value_name = "MODE",
        default_value = "monitor"
    )]
    pub pumping_mode: Option<String>,

    /// Percent of sends to a country or range that must be confirmed (0-100) before it is
    /// throttled.
    #[arg(
        long,
        env = "OTP_SIDECAR_PUMPING_MIN_CONVERSION",
        value_name = "PERCENT",
        default_value = "20"
    )]
    pub pumping_min_conversion: Option<u32>,

    /// Sends to a country or range in the window before its conversion is judged
    /// (1-1000000).
    #[arg(
        long,
        env = "OTP_SIDECAR_PUMPING_MIN_SENDS",
        value_name = "N",
        default_value = "20"
    )]
    pub pumping_min_sends: Option<u64>,

    /// What a throttled country or range still gets, N/WINDOW, or "off" for nothing.
    #[arg(
        long,
        env = "OTP_SIDECAR_PUMPING_TRICKLE",
        value_name = "RATE",
        default_value = "1/10m"
    )]
    pub pumping_trickle: Option<String>,

    /// How long a throttle lasts before the country or range is judged again (60-604800 s).
    #[arg(
        long,
        env = "OTP_SIDECAR_PUMPING_BLOCK_SECS",
        value_name = "SECONDS",
        default_value = "3600"
    )]
    pub pumping_block_secs: Option<u64>,

    /// The sliding window conversion is counted over, in four steps (60-604800 s).
    #[arg(
        long,
        env = "OTP_SIDECAR_PUMPING_WINDOW_SECS",
        value_name = "SECONDS",
        default_value = "3600"
    )]
    pub pumping_window_secs: Option<u64>,

    /// Countries never watched (ISO codes like NL, or calling codes like +44),
    /// comma-separated. [default: none]
    #[arg(
        long,
        env = "OTP_SIDECAR_PUMPING_EXEMPT",
        value_name = "LIST",
        value_delimiter = ','
    )]
    pub pumping_exempt: Option<Vec<String>>,

    /// The same phone and code again within the code's lifetime (otp_lifetime_secs, or 300 s)
    /// answers the first SID and sends nothing.
    #[arg(long, env = "OTP_SIDECAR_RESEND_DEDUP", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", default_value = "true", value_parser = parse_bool)]
    pub resend_dedup: Option<bool>,

    /// Waits between sends to one number that grow with each send, like "30s, 60s, 120s,
    /// 300s" (ERR rate_limited: retry in N s), or "off".
    #[arg(
        long,
        env = "OTP_SIDECAR_RESEND_COOLDOWN",
        value_name = "WAITS",
        default_value = "off"
    )]
    pub resend_cooldown: Option<String>,
}

/// The guard's settings; ranges are remembered as many as the rate limits' keys.
pub(super) fn pumping(o: &Options) -> Result<pumping::Settings> {
    let p = &o.pumping;
    let trickle = match given(p.pumping_trickle.clone(), "pumping_trickle")?.as_str() {
        "off" => None,
        text => Some(text.parse().context("pumping_trickle")?),
    };
    let exempt =
        regions(&p.pumping_exempt.clone().unwrap_or_default()).context("pumping_exempt")?;
    Ok(pumping::Settings {
        mode: Mode::parse(&given(p.pumping_mode.clone(), "pumping_mode")?)?,
        min_conversion: given(p.pumping_min_conversion, "pumping_min_conversion")?,
        min_sends: given(p.pumping_min_sends, "pumping_min_sends")?,
        trickle,
        block: Duration::from_secs(given(p.pumping_block_secs, "pumping_block_secs")?),
        window: Duration::from_secs(given(p.pumping_window_secs, "pumping_window_secs")?),
        exempt,
        max_ranges: given(o.rate_limit_max_keys, "rate_limit_max_keys")?,
    })
}

pub(super) fn sent(o: &Options) -> Result<sent::Settings> {
    let p = &o.pumping;
    Ok(sent::Settings {
        dedup: given(p.resend_dedup, "resend_dedup")?,
        cooldown: parse_cooldown(&given(p.resend_cooldown.clone(), "resend_cooldown")?)?,
        lifetime: o
            .otp_lifetime_secs
            .map_or(DEFAULT_LIFETIME, |s| Duration::from_secs(s.into())),
        max_keys: given(o.rate_limit_max_keys, "rate_limit_max_keys")?,
    })
}
