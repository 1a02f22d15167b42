//! The layers of options: what the flags and env vars gave (without clap's defaults), over
//! the config file, over the defaults. Layers merge generically, as JSON objects key by key, so
//! a new option needs no code here; then every numeric range is checked, whichever layer set it.

use std::ops::RangeInclusive;

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use super::options::Options;
use crate::call::template::normalize_locale;

/// The ranges of the numeric options, checked on the merged layers whichever set them. (Their
/// `--help` says the same; a test holds the two together.)
pub const RANGES: &[(&str, RangeInclusive<u64>)] = &[
    ("deadline_ms", 100..=60_000),
    ("max_frame_bytes", 64..=16 * 1024 * 1024),
    ("otp_lifetime_secs", 1..=36_000),
    ("validity_period", 1..=36_000),
    ("threads", 1..=64),
    ("keep_warm_secs", 0..=3600),
    ("max_connections", 1..=100_000),
    ("max_in_flight", 1..=100_000),
    ("max_in_flight_per_connection", 1..=10_000),
    ("twilio_max_concurrency", 1..=10_000),
    ("twilio_max_retry_after_secs", 0..=60),
    ("idle_timeout_secs", 0..=86_400),
    ("rate_limit_max_keys", 2..=10_000_000),
    ("lookup_cache_secs", 0..=30 * 86_400),
    ("block_pumping_risk", 0..=100),
    ("state_timeout_ms", 1..=5000),
    ("breaker_failures", 1..=1000),
    ("breaker_cooldown_secs", 1..=86_400),
    ("pumping_min_conversion", 0..=100),
    ("pumping_min_sends", 1..=1_000_000),
    ("pumping_block_secs", 60..=604_800),
    ("pumping_window_secs", 60..=604_800),
    ("code_length", 4..=10),
    ("max_attempts", 1..=100),
];

/// A layer as a JSON object; unset options are `null`.
type Layer = serde_json::Map<String, serde_json::Value>;

impl Options {
    /// What the flags and env vars set, without the values clap filled in from defaults
    /// (those are the bottom layer, under the config file).
    pub fn explicit(matches: &ArgMatches) -> Result<Options> {
        let parsed = Options::from_arg_matches(matches)?;
        let mut layer = parsed.layer()?;
        for id in matches.ids() {
            if matches.value_source(id.as_str()) == Some(ValueSource::DefaultValue) {
                layer.remove(id.as_str());
            }
        }
        let mut explicit = Options::from_layer(layer)?;
        explicit.config = parsed.config;
        explicit.templates = parsed.templates;
        Ok(explicit)
    }

    /// The defaults: what an empty command line gives with no environment.
    pub fn defaults() -> Options {
        #[derive(clap::Parser)]
        struct Bare {
            #[command(flatten)]
            options: Options,
        }
        let command = Bare::command().mut_args(|a| a.env(None::<&str>));
        command
            .try_get_matches_from(["otp-sidecar"])
            .ok()
            .and_then(|m| Options::from_arg_matches(&m).ok())
            .unwrap_or_default()
    }

    /// `self` (flags and env) over `file` over the defaults, with every range checked.
    pub fn over(&self, file: Options) -> Result<Options> {
        let mut merged = Options::defaults().layer()?;
        for upper in [file.layer()?, self.layer()?] {
            for (key, value) in upper {
                if !value.is_null() {
                    merged.insert(key, value);
                }
            }
        }
        for (key, range) in RANGES {
            if let Some(value) = merged.get(*key).and_then(serde_json::Value::as_u64) {
                in_range(key, value, range)?;
            }
        }
        let mut options = Options::from_layer(merged)?;
        options.config = self.config.clone();
        // Flags add to (and for the same locale, however spelled, replace) the file's.
        let mut templates = file.templates;
        for (locale, text) in &self.templates {
            templates.retain(|(l, _)| normalize_locale(l) != normalize_locale(locale));
            templates.push((locale.clone(), text.clone()));
        }
        options.templates = templates;
        options.failover = file.failover;
        options.credentials = file.credentials;
        Ok(options)
    }

    fn layer(&self) -> Result<Layer> {
        match serde_json::to_value(self).context("an option cannot be read")? {
            serde_json::Value::Object(layer) => Ok(layer),
            _ => bail!("the options are not a table"),
        }
    }

    fn from_layer(layer: Layer) -> Result<Options> {
        serde_json::from_value(serde_json::Value::Object(layer)).context("an option cannot be read")
    }
}

/// The one range check: `value` of option `name` within `range`.
pub fn in_range<T: PartialOrd + std::fmt::Display>(
    name: &str,
    value: T,
    range: &RangeInclusive<T>,
) -> Result<T> {
    if !range.contains(&value) {
        bail!(
            "{name} must be between {} and {}, not {value}",
            range.start(),
            range.end()
        );
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::super::options::DEFAULT_UNIX;
    use super::*;
    use clap::Args;

    fn command() -> clap::Command {
        Options::augment_args(clap::Command::new("otp-sidecar"))
    }

    #[test]
    fn every_range_is_in_its_help() {
        let command = command();
        for (key, range) in RANGES {
            let arg = command
                .get_arguments()
                .find(|a| a.get_id() == *key)
                .unwrap_or_else(|| panic!("{key} is an option"));
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            let shown = format!("{}-{}", range.start(), range.end());
            assert!(help.contains(&shown), "{key}: {help:?} lacks {shown}");
        }
    }

    #[test]
    fn explicit_keeps_what_was_given_and_drops_clap_defaults() {
        let matches = command()
            .try_get_matches_from([
                "otp-sidecar",
                "--deadline-ms",
                "2500",
                "--template",
                "nl=x {otp}",
            ])
            .unwrap();
        let explicit = Options::explicit(&matches).unwrap();
        // Given, even though it equals the default: it beats the file.
        assert_eq!(explicit.deadline_ms, Some(2500));
        assert_eq!(
            explicit.templates,
            [("nl".to_owned(), "x {otp}".to_owned())]
        );
        // Not given: left to the file and then the defaults.
        assert_eq!(explicit.unix, None);
        assert_eq!(explicit.max_connections, None);
        let defaults = Options::defaults();
        assert_eq!(defaults.unix, Some(DEFAULT_UNIX.into()));
        assert_eq!(defaults.max_connections, Some(512));
        assert_eq!(defaults.dry_run, None);
    }

    #[test]
    fn a_file_value_beats_a_default_and_a_flag_beats_the_file() {
        let file = Options {
            max_connections: Some(7),
            deadline_ms: Some(900),
            ..Default::default()
        };
        let flags = Options {
            deadline_ms: Some(1000),
            ..Default::default()
        };
        let merged = flags.over(file).unwrap();
        assert_eq!(merged.max_connections, Some(7));
        assert_eq!(merged.deadline_ms, Some(1000));
        assert_eq!(merged.max_in_flight, Some(1024));
    }

    #[test]
    fn a_range_is_checked_whichever_layer_set_it() {
        let file = Options {
            threads: Some(65),
            ..Default::default()
        };
        let e = Options::default().over(file).unwrap_err().to_string();
        assert_eq!(e, "threads must be between 1 and 64, not 65");
    }
}
