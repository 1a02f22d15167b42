//! Flags, env vars and the TOML file, merged into one validated [`Settings`].
//!
//! Precedence, highest first: command-line flag, `OTP_SIDECAR_*` env var, config file, default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Deserialize;
use url::Url;

use crate::call::template::{normalize_locale, Templates, DEFAULT_TEMPLATE};
use crate::guard::geo::{default_region, regions, GeoRules};
use crate::guard::lookup::{read_carriers, LookupRules, DEFAULT_BLOCKED_LINE_TYPES};
use crate::guard::ratelimit::{Rate, RateLimits};
use crate::logging::LogFormat;
use crate::server::Limits;
use crate::twilio::calls::{VoiceSettings, DEFAULT_VOICE_LANGUAGE, DEFAULT_VOICE_TEMPLATE};
use crate::twilio::credentials::{CredentialFiles, Credentials, Sources};
use crate::twilio::failover::{
    BreakerSettings, DEFAULT_BREAKER_COOLDOWN, DEFAULT_BREAKER_FAILURES,
};
use crate::twilio::verify::{VerifyService, DEFAULT_VERIFY_URL};
use crate::twilio::{messages, Channel, Sender};

pub const DEFAULT_UNIX: &str = "/run/otp-sidecar/otp.sock";
pub const DEFAULT_API_URL: &str = "https://api.twilio.com";
pub const DEFAULT_LOOKUP_URL: &str = "https://lookups.twilio.com";
pub const DEFAULT_DEADLINE_MS: u64 = 2500;
/// `ILX::call`'s default timeout: a deadline past it answers nobody.
pub const ILX_CALL_TIMEOUT_MS: u64 = 3000;

/// The daemon's options (`serve` and `check`).
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML config file; every option below is also a key there.
    #[arg(long, env = "OTP_SIDECAR_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Unix socket to listen on (mode 0660; a stale socket file is replaced).
    /// [default: /run/otp-sidecar/otp.sock]
    #[arg(long, env = "OTP_SIDECAR_UNIX", value_name = "PATH")]
    pub unix: Option<PathBuf>,

    /// Also listen on TCP, e.g. 127.0.0.1:7777 (off unless given).
    #[arg(long, env = "OTP_SIDECAR_TCP", value_name = "ADDR")]
    pub tcp: Option<SocketAddr>,

    /// Allow --tcp on a non-loopback address (callers are not authenticated).
    #[arg(long, env = "OTP_SIDECAR_ALLOW_REMOTE_TCP", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub allow_remote_tcp: Option<bool>,

    /// Twilio API base URL: regional edges (https://api.dublin.ie1.twilio.com) or a local mock.
    /// [default: https://api.twilio.com]
    #[arg(long, env = "OTP_SIDECAR_TWILIO_API_URL", value_name = "URL")]
    pub twilio_api_url: Option<String>,

    /// Allow a plain http:// Twilio, Lookup or Verify URL to a host that is not loopback (the
    /// credentials would cross the network in clear); loopback http:// is always allowed.
    #[arg(long, env = "OTP_SIDECAR_ALLOW_INSECURE_TWILIO_URL", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub allow_insecure_twilio_url: Option<bool>,

    /// Per-call deadline in ms (100-60000); keep it under ILX::call's 3000 ms timeout.
    /// [default: 2500]
    #[arg(long, env = "OTP_SIDECAR_DEADLINE_MS", value_name = "MS")]
    pub deadline_ms: Option<u64>,

    /// Send nothing: reply with a made-up SM… SID (for testing access policies).
    #[arg(long, env = "OTP_SIDECAR_DRY_RUN", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub dry_run: Option<bool>,

    /// Largest MessagePack-RPC frame accepted, in bytes (64-16777216). [default: 65536]
    #[arg(long, env = "OTP_SIDECAR_MAX_FRAME_BYTES", value_name = "BYTES")]
    pub max_frame_bytes: Option<usize>,

    /// SMS body; {otp} is replaced by the code, {minutes} by --otp-lifetime-secs in
    /// minutes. [default: "Your OTP is: {otp}"]
    #[arg(long, env = "OTP_SIDECAR_BODY_TEMPLATE", value_name = "TEXT")]
    pub body_template: Option<String>,

    /// SMS body for callers whose context.locale is LOCALE (nl-NL, then nl, is tried);
    /// repeat for each language. Adds to the config file's [templates].
    #[arg(long = "template", value_name = "LOCALE=TEXT", value_parser = locale_template)]
    pub templates: Vec<(String, String)>,

    /// Ends each SMS with the line "@DOMAIN #code", so browsers offer the code to the
    /// login page on DOMAIN (WebOTP, Safari's one-time-code autofill). [default: unset]
    #[arg(long, env = "OTP_SIDECAR_WEBOTP_DOMAIN", value_name = "DOMAIN")]
    pub webotp_domain: Option<String>,

    /// How long the code is valid (APM's OTP timeout, 1-36000 s): the ValidityPeriod unless
    /// --validity-period says otherwise, and {minutes} in templates. [default: unset]
    #[arg(long, env = "OTP_SIDECAR_OTP_LIFETIME_SECS", value_name = "SECONDS")]
    pub otp_lifetime_secs: Option<u32>,

    /// Twilio ValidityPeriod in seconds (1-36000): drop a message queued longer than the
    /// code lives. [default: unset]
    #[arg(long, env = "OTP_SIDECAR_VALIDITY_PERIOD", value_name = "SECONDS")]
    pub validity_period: Option<u32>,

    /// Worker threads (1-64). One answers fastest (no cross-thread wakeups) and leaves the other
    /// cores to TMM; add more only for thousands of calls a second. [default: 1]
    #[arg(long, env = "OTP_SIDECAR_THREADS", value_name = "N")]
    pub threads: Option<usize>,

    /// HTTP(S) proxy for Twilio, e.g. http://proxy:3128 (HTTPS_PROXY and NO_PROXY are also
    /// honoured).
    #[arg(long, env = "OTP_SIDECAR_PROXY", value_name = "URL")]
    pub proxy: Option<String>,

    /// Extra CA certificate (PEM) to trust for Twilio's TLS, e.g. a TLS-inspecting proxy's.
    #[arg(long, env = "OTP_SIDECAR_TWILIO_CA_FILE", value_name = "PATH")]
    pub twilio_ca_file: Option<PathBuf>,

    /// Open the Twilio connection at start and touch it this often (an authenticated GET of
    /// the account), so no OTP pays a TLS handshake; 0-3600 s, 0 turns warming off. [default: 30]
    #[arg(long, env = "OTP_SIDECAR_KEEP_WARM_SECS", value_name = "SECONDS")]
    pub keep_warm_secs: Option<u64>,

    /// Open connections allowed (1-100000); at the cap the longest-idle one makes room. [default: 512]
    #[arg(long, env = "OTP_SIDECAR_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Calls in flight across all connections (1-100000); past it, connections are not read until a
    /// call finishes. [default: 1024]
    #[arg(long, env = "OTP_SIDECAR_MAX_IN_FLIGHT", value_name = "N")]
    pub max_in_flight: Option<usize>,

    /// Calls in flight on one connection (1-10000). [default: 128]
    #[arg(
        long,
        env = "OTP_SIDECAR_MAX_IN_FLIGHT_PER_CONNECTION",
        value_name = "N"
    )]
    pub max_in_flight_per_connection: Option<usize>,

    /// Close a connection that has no call in flight and sends no complete request for this
    /// long; 0-86400 s, 0 never closes. [default: 300]
    #[arg(long, env = "OTP_SIDECAR_IDLE_TIMEOUT_SECS", value_name = "SECONDS")]
    pub idle_timeout_secs: Option<u64>,

    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464 (loopback only;
    /// off unless given).
    #[arg(long, env = "OTP_SIDECAR_METRICS", value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Sends per phone number, as N/WINDOW (3/10m, 10/1h) or "off". [default: 3/10m]
    #[arg(long, env = "OTP_SIDECAR_RATE_LIMIT_PHONE", value_name = "RATE")]
    pub rate_limit_phone: Option<String>,

    /// Sends per end-user IP (the context's `ip`), N/WINDOW or "off". [default: 10/10m]
    #[arg(long, env = "OTP_SIDECAR_RATE_LIMIT_IP", value_name = "RATE")]
    pub rate_limit_ip: Option<String>,

    /// Sends per user (the context's `user`), N/WINDOW or "off". [default: 5/10m]
    #[arg(long, env = "OTP_SIDECAR_RATE_LIMIT_USER", value_name = "RATE")]
    pub rate_limit_user: Option<String>,

    /// Sends in all, N/WINDOW or "off". [default: 600/1m]
    #[arg(long, env = "OTP_SIDECAR_RATE_LIMIT_GLOBAL", value_name = "RATE")]
    pub rate_limit_global: Option<String>,

    /// Keys each rate limit remembers at most (phones, IPs, users; 2-10000000). [default: 100000]
    #[arg(long, env = "OTP_SIDECAR_RATE_LIMIT_MAX_KEYS", value_name = "N")]
    pub rate_limit_max_keys: Option<usize>,

    /// Send only to these countries (ISO codes like NL, or calling codes like +44),
    /// comma-separated. [default: all]
    #[arg(
        long,
        env = "OTP_SIDECAR_ALLOW_COUNTRIES",
        value_name = "LIST",
        value_delimiter = ','
    )]
    pub allow_countries: Option<Vec<String>>,

    /// Never send to these countries (ISO codes or calling codes), comma-separated.
    #[arg(
        long,
        env = "OTP_SIDECAR_DENY_COUNTRIES",
        value_name = "LIST",
        value_delimiter = ','
    )]
    pub deny_countries: Option<Vec<String>>,

    /// Refuse numbers that are not valid for their country (libphonenumber's rules).
    #[arg(long, env = "OTP_SIDECAR_CHECK_NUMBER_VALIDITY", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub check_number_validity: Option<bool>,

    /// Accept national numbers (06 12345678) and international-prefix ones (0031…) as
    /// dialled in this country (ISO 3166 code like NL). [default: unset, + numbers only]
    #[arg(long, env = "OTP_SIDECAR_DEFAULT_REGION", value_name = "CC")]
    pub default_region: Option<String>,

    /// Check each number with Twilio Lookup (line type intelligence, a paid lookup) before
    /// sending; answers are cached.
    #[arg(long, env = "OTP_SIDECAR_LOOKUP", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub lookup: Option<bool>,

    /// Twilio Lookup's base URL. [default: https://lookups.twilio.com]
    #[arg(long, env = "OTP_SIDECAR_LOOKUP_API_URL", value_name = "URL")]
    pub lookup_api_url: Option<String>,

    /// Line types Lookup may report that are refused, comma-separated ("" for none).
    /// [default: premium,tollFree,sharedCost,uan,pager,voicemail]
    #[arg(
        long,
        env = "OTP_SIDECAR_BLOCK_LINE_TYPES",
        value_name = "LIST",
        value_delimiter = ','
    )]
    pub block_line_types: Option<Vec<String>>,

    /// File of carriers to refuse, one MCC-MNC per line (310-260).
    #[arg(long, env = "OTP_SIDECAR_BLOCK_CARRIERS_FILE", value_name = "PATH")]
    pub block_carriers_file: Option<PathBuf>,

    /// How long a Lookup answer is reused, in seconds (0-2592000). [default: 86400]
    #[arg(long, env = "OTP_SIDECAR_LOOKUP_CACHE_SECS", value_name = "SECONDS")]
    pub lookup_cache_secs: Option<u64>,

    /// When Lookup fails or is slow: "open" sends unchecked, "closed" refuses. [default: open]
    #[arg(long, env = "OTP_SIDECAR_LOOKUP_FAILURE", value_name = "POLICY")]
    pub lookup_failure: Option<String>,

    /// How codes go out unless the caller's context.channel says otherwise: sms or voice (a
    /// call that reads the code out). [default: sms]
    #[arg(long, env = "OTP_SIDECAR_CHANNEL", value_name = "CHANNEL")]
    pub channel: Option<String>,

    /// Caller ID (E.164) for voice calls. [default: the sendOTP sender, when it is a number]
    #[arg(long, env = "OTP_SIDECAR_VOICE_FROM", value_name = "NUMBER")]
    pub voice_from: Option<String>,

    /// Language the code is read in (TwiML <Say language>). [default: en-US]
    #[arg(long, env = "OTP_SIDECAR_VOICE_LANGUAGE", value_name = "TAG")]
    pub voice_language: Option<String>,

    /// What a call says, twice; {digits} is the code, one character at a time.
    /// [default: "Your code is {digits}."]
    #[arg(long, env = "OTP_SIDECAR_VOICE_TEMPLATE", value_name = "TEXT")]
    pub voice_template: Option<String>,

    /// Call instead when Lookup says the number is a landline, or when Twilio refuses the
    /// SMS with 21614, 21408 or 21612 (nothing was sent).
    #[arg(long, env = "OTP_SIDECAR_VOICE_FALLBACK", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub voice_fallback: Option<bool>,

    /// Provider faults in a row (1-1000; unreachable, 429, 5xx, refused credentials) after which
    /// a provider is skipped in favour of the next [[failover]] one. [default: 3]
    #[arg(long, env = "OTP_SIDECAR_BREAKER_FAILURES", value_name = "N")]
    pub breaker_failures: Option<u32>,

    /// How long a skipped provider is left alone (1-86400 s) before one call tries it again.
    /// [default: 30]
    #[arg(
        long,
        env = "OTP_SIDECAR_BREAKER_COOLDOWN_SECS",
        value_name = "SECONDS"
    )]
    pub breaker_cooldown_secs: Option<u64>,

    /// Send through this Twilio Verify service (VA…) instead of Messages: APM's code goes out
    /// as the verification's CustomCode, sendOTP answers VE…, and confirmOTP reports success.
    #[arg(long, env = "OTP_SIDECAR_VERIFY_SERVICE_SID", value_name = "SID")]
    pub verify_service_sid: Option<String>,

    /// Twilio Verify's base URL. [default: https://verify.twilio.com]
    #[arg(long, env = "OTP_SIDECAR_VERIFY_API_URL", value_name = "URL")]
    pub verify_api_url: Option<String>,

    /// Log format: human (default) or json (one object per line).
    #[arg(long, env = "OTP_SIDECAR_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// The config file: the same options as the flags, plus where credentials live.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub unix: Option<PathBuf>,
    pub tcp: Option<SocketAddr>,
    pub allow_remote_tcp: Option<bool>,
    pub twilio_api_url: Option<String>,
    pub allow_insecure_twilio_url: Option<bool>,
    pub deadline_ms: Option<u64>,
    pub dry_run: Option<bool>,
    pub max_frame_bytes: Option<usize>,
    pub body_template: Option<String>,
    pub templates: Option<BTreeMap<String, String>>,
    pub webotp_domain: Option<String>,
    pub otp_lifetime_secs: Option<u32>,
    pub validity_period: Option<u32>,
    pub threads: Option<usize>,
    pub proxy: Option<String>,
    pub twilio_ca_file: Option<PathBuf>,
    pub keep_warm_secs: Option<u64>,
    pub max_connections: Option<usize>,
    pub max_in_flight: Option<usize>,
    pub max_in_flight_per_connection: Option<usize>,
    pub idle_timeout_secs: Option<u64>,
    pub metrics: Option<SocketAddr>,
    pub log_format: Option<LogFormat>,
    pub rate_limit_phone: Option<String>,
    pub rate_limit_ip: Option<String>,
    pub rate_limit_user: Option<String>,
    pub rate_limit_global: Option<String>,
    pub rate_limit_max_keys: Option<usize>,
    pub allow_countries: Option<Vec<String>>,
    pub deny_countries: Option<Vec<String>>,
    pub check_number_validity: Option<bool>,
    pub default_region: Option<String>,
    pub lookup: Option<bool>,
    pub lookup_api_url: Option<String>,
    pub block_line_types: Option<Vec<String>>,
    pub block_carriers_file: Option<PathBuf>,
    pub lookup_cache_secs: Option<u64>,
    pub lookup_failure: Option<String>,
    pub verify_service_sid: Option<String>,
    pub verify_api_url: Option<String>,
    pub channel: Option<String>,
    pub voice_from: Option<String>,
    pub voice_language: Option<String>,
    pub voice_template: Option<String>,
    pub voice_fallback: Option<bool>,
    pub breaker_failures: Option<u32>,
    pub breaker_cooldown_secs: Option<u64>,
    /// Providers to fail over to, in order, after the primary (the top-level credentials).
    #[serde(default)]
    pub failover: Vec<ProviderConfig>,
    #[serde(default)]
    pub credentials: CredentialFiles,
    /// The file this came from (not a key).
    #[serde(skip)]
    pub source: Option<ConfigSource>,
}

/// A config file's path and text, to name the line of a key in errors.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    pub text: String,
}

impl ConfigSource {
    /// The 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        self.text.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut file: FileConfig = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "invalid config file {}: {}",
                path.display(),
                toml_error(&text, &e)
            )
        })?;
        file.source = Some(ConfigSource {
            path: path.to_owned(),
            text,
        });
        Ok(file)
    }
}

/// A TOML error as `line L, column C, key K: reason`. The parser's own message quotes the
/// offending line and value, which may be a secret put under the wrong key: the reason keeps
/// only the kinds (`invalid type: string, expected u64`), never a value.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let reason = redact_toml_message(e.message().trim());
    let Some(start) = e
        .span()
        .map(|s| s.start)
        .filter(|&s| text.is_char_boundary(s))
    else {
        return reason;
    };
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let key = toml_key_at(text, line_start)
        .map(|k| format!(", key {k}"))
        .unwrap_or_default();
    format!("line {line}, column {column}{key}: {reason}")
}

/// The dotted key (table included) that the line at `line_start` sets, if it plainly sets one.
fn toml_key_at(text: &str, line_start: usize) -> Option<String> {
    let line = text[line_start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let plain = |k: &str| {
        !k.is_empty()
            && k.len() <= 64
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    };
    if !plain(key) {
        return None;
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
        .filter(|t| plain(t));
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_owned(),
    })
}

/// serde's `invalid type: string "9f8e…", expected u64` as `invalid type: string, expected
/// u64`; the value of `unknown variant` and `invalid value` left out likewise; and any other
/// quoted text removed.
fn redact_toml_message(message: &str) -> String {
    let message = message.lines().next().unwrap_or_default();
    for prefix in ["invalid type: ", "invalid value: ", "unknown variant "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
            let kind: String = found
                .split(['"', '`', '\''])
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            let mut out = prefix.trim_end().to_owned();
            if !kind.is_empty() {
                out.push(' ');
                out.push_str(&kind);
            }
            out.push_str(" (the value is not shown)");
            if !expected.is_empty() {
                out.push_str(", expected ");
                out.push_str(expected);
            }
            return out;
        }
    }
    // Anything else in double quotes is the file's text.
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    for c in message.chars() {
        if c == '"' {
            if !quoted {
                out.push_str("\"…\"");
            }
            quoted = !quoted;
        } else if !quoted {
            out.push(c);
        }
    }
    out
}

/// `--template nl=TEXT` as a pair.
fn locale_template(arg: &str) -> Result<(String, String), String> {
    arg.split_once('=')
        .map(|(locale, text)| (locale.to_owned(), text.to_owned()))
        .ok_or_else(|| "expected LOCALE=TEXT, e.g. nl=Uw code is {otp}".to_owned())
}

/// Everything the daemon needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub unix: PathBuf,
    pub tcp: Option<SocketAddr>,
    pub twilio_api_url: Url,
    pub deadline: Duration,
    pub dry_run: bool,
    pub max_frame_bytes: usize,
    pub templates: Templates,
    /// Explicit, or the OTP lifetime.
    pub validity_period: Option<u32>,
    pub threads: usize,
    pub proxy: Option<Url>,
    /// Extra trusted CA certificate, PEM, read at load time.
    pub twilio_ca_pem: Option<Vec<u8>>,
    /// `None`: no warming.
    pub keep_warm: Option<Duration>,
    pub limits: Limits,
    pub metrics: Option<SocketAddr>,
    pub log_format: LogFormat,
    pub rate_limits: RateLimits,
    pub geo: GeoRules,
    /// Where national numbers are read as dialled; `None`: only `+` numbers.
    pub default_region: Option<phonenumber::country::Id>,
    /// `None`: no Lookup before sending.
    pub lookup: Option<LookupRules>,
    pub lookup_api_url: Url,
    /// Verify mode, when set.
    pub verify: Option<VerifyService>,
    /// The channel when the caller names none.
    pub channel: Channel,
    pub voice: VoiceSettings,
    /// Providers after the primary, in order (Messages mode).
    pub failover: Vec<ProviderSettings>,
    pub breaker: BreakerSettings,
    /// `None` only in dry-run mode.
    pub credentials: Option<Credentials>,
    /// What is allowed but probably wrong: `serve` logs these at WARN, `check` prints them.
    pub warnings: Vec<String>,
    pub twilio: crate::twilio::Settings,
}

impl Settings {
    /// Merges flags (clap has already folded in env vars), the config file and defaults.
    pub fn resolve(args: &ServeArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let dry_run = args.dry_run.or(file.dry_run).unwrap_or(false);
        let mut warnings = Vec::new();

        let tcp = args.tcp.or(file.tcp);
        let allow_remote = args
            .allow_remote_tcp
            .or(file.allow_remote_tcp)
            .unwrap_or(false);
        if let Some(addr) = tcp {
            if !addr.ip().is_loopback() && !allow_remote {
                bail!(
                    "--tcp {addr} is not a loopback address; callers are not authenticated, so \
                     pass --allow-remote-tcp to listen there"
                );
            }
        }

        let api_url = args
            .twilio_api_url
            .clone()
            .or(file.twilio_api_url)
            .unwrap_or_else(|| DEFAULT_API_URL.into());
        let allow_insecure = args
            .allow_insecure_twilio_url
            .or(file.allow_insecure_twilio_url)
            .unwrap_or(false);
        let twilio_api_url = parse_api_url("twilio_api_url", &api_url, allow_insecure)?;

        let deadline_ms = args
            .deadline_ms
            .or(file.deadline_ms)
            .unwrap_or(DEFAULT_DEADLINE_MS);
        if !(100..=60_000).contains(&deadline_ms) {
            bail!("deadline_ms must be between 100 and 60000, not {deadline_ms}");
        }
        if deadline_ms > ILX_CALL_TIMEOUT_MS {
            warnings.push(format!(
                "deadline_ms {deadline_ms} is over ILX::call's default {ILX_CALL_TIMEOUT_MS} ms \
                 timeout: an ILX caller gives up before a slow call is answered"
            ));
        }

        let max_frame_bytes = in_range(
            "max_frame_bytes",
            args.max_frame_bytes.or(file.max_frame_bytes),
            crate::rpc::DEFAULT_MAX_FRAME,
            64..=16 * 1024 * 1024,
        )?;

        let lifetime = args.otp_lifetime_secs.or(file.otp_lifetime_secs);
        if let Some(v) = lifetime {
            if !(1..=36_000).contains(&v) {
                bail!("otp_lifetime_secs must be between 1 and 36000 seconds, not {v}");
            }
        }
        let template = args.body_template.clone().or(file.body_template);
        // Flags add to (and for the same locale, replace) the file's templates.
        let mut locales: Vec<(String, String)> =
            file.templates.unwrap_or_default().into_iter().collect();
        for (locale, text) in &args.templates {
            locales.retain(|(l, _)| normalize_locale(l) != normalize_locale(locale));
            locales.push((locale.clone(), text.clone()));
        }
        let templates = Templates::new(
            template.as_deref().unwrap_or(DEFAULT_TEMPLATE),
            &locales,
            args.webotp_domain
                .as_deref()
                .or(file.webotp_domain.as_deref()),
            lifetime.map(|s| Duration::from_secs(s.into())),
        )?;

        let validity_period = args.validity_period.or(file.validity_period).or(lifetime);
        if let Some(v) = validity_period {
            if !(1..=36_000).contains(&v) {
                bail!("validity_period must be between 1 and 36000 seconds, not {v}");
            }
        }

        let threads = in_range("threads", args.threads.or(file.threads), 1, 1..=64)?;

        let proxy = match args.proxy.clone().or(file.proxy) {
            Some(p) => {
                let url = parse_http_url("proxy", &p)?;
                // HTTPS to Twilio goes through the proxy with CONNECT; TLS to the proxy itself
                // is not supported.
                if url.scheme() != "http" {
                    bail!(
                        "proxy must be an http:// URL (HTTPS to Twilio is tunnelled through it), \
                         not {}",
                        redact_url(&p)
                    );
                }
                Some(url)
            }
            None => None,
        };

        let twilio_ca_pem = match args.twilio_ca_file.clone().or(file.twilio_ca_file) {
            Some(path) => Some(read_ca(&path)?),
            None => None,
        };
        let keep_warm = match args.keep_warm_secs.or(file.keep_warm_secs).unwrap_or(30) {
            0 => None,
            s @ 1..=3600 => Some(Duration::from_secs(s)),
            s => bail!("keep_warm_secs must be between 0 and 3600, not {s}"),
        };
        let limits = Limits {
            max_connections: in_range(
                "max_connections",
                args.max_connections.or(file.max_connections),
                512,
                1..=100_000,
            )?,
            max_in_flight: in_range(
                "max_in_flight",
                args.max_in_flight.or(file.max_in_flight),
                1024,
                1..=100_000,
            )?,
            max_in_flight_per_connection: in_range(
                "max_in_flight_per_connection",
                args.max_in_flight_per_connection
                    .or(file.max_in_flight_per_connection),
                128,
                1..=10_000,
            )?,
            idle_timeout: match args
                .idle_timeout_secs
                .or(file.idle_timeout_secs)
                .unwrap_or(300)
            {
                0 => None,
                s @ 1..=86_400 => Some(Duration::from_secs(s)),
                s => bail!("idle_timeout_secs must be between 0 and 86400, not {s}"),
            },
        };
        let metrics = args.metrics.or(file.metrics);
        if let Some(addr) = metrics {
            if !addr.ip().is_loopback() {
                bail!(
                    "metrics {addr} is not a loopback address; metrics are served on loopback only"
                );
            }
        }
        let log_format = args.log_format.or(file.log_format).unwrap_or_default();
        let rate = |name: &str, arg: &Option<String>, key: Option<String>, default: &str| match arg
            .clone()
            .or(key)
            .as_deref()
            .unwrap_or(default)
        {
            "off" => Ok(None),
            text => text
                .parse::<Rate>()
                .map(Some)
                .with_context(|| format!("rate_limit_{name}")),
        };
        let rate_limits = RateLimits {
            phone: rate(
                "phone",
                &args.rate_limit_phone,
                file.rate_limit_phone,
                "3/10m",
            )?,
            ip: rate("ip", &args.rate_limit_ip, file.rate_limit_ip, "10/10m")?,
            user: rate("user", &args.rate_limit_user, file.rate_limit_user, "5/10m")?,
            global: rate(
                "global",
                &args.rate_limit_global,
                file.rate_limit_global,
                "600/1m",
            )?,
            max_keys: in_range(
                "rate_limit_max_keys",
                args.rate_limit_max_keys.or(file.rate_limit_max_keys),
                100_000,
                2..=10_000_000,
            )?,
        };

        let geo = GeoRules {
            allow: match args.allow_countries.clone().or(file.allow_countries) {
                Some(list) => Some(regions(&list).context("allow_countries")?),
                None => None,
            },
            deny: regions(
                &args
                    .deny_countries
                    .clone()
                    .or(file.deny_countries)
                    .unwrap_or_default(),
            )
            .context("deny_countries")?,
            check_validity: args
                .check_number_validity
                .or(file.check_number_validity)
                .unwrap_or(false),
        };
        let default_region = match args.default_region.clone().or(file.default_region) {
            Some(text) => default_region(&text).context("default_region")?,
            None => None,
        };

        let lookup_api_url = parse_api_url(
            "lookup_api_url",
            &args
                .lookup_api_url
                .clone()
                .or(file.lookup_api_url)
                .unwrap_or_else(|| DEFAULT_LOOKUP_URL.into()),
            allow_insecure,
        )?;
        let lookup = if args.lookup.or(file.lookup).unwrap_or(false) {
            let block_line_types = match args.block_line_types.clone().or(file.block_line_types) {
                Some(list) => list
                    .into_iter()
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect(),
                None => DEFAULT_BLOCKED_LINE_TYPES
                    .iter()
                    .map(|t| t.to_string())
                    .collect(),
            };
            let block_carriers = match args
                .block_carriers_file
                .clone()
                .or(file.block_carriers_file)
            {
                Some(path) => read_carriers(&path)?,
                None => Default::default(),
            };
            let cache_secs = args
                .lookup_cache_secs
                .or(file.lookup_cache_secs)
                .unwrap_or(86_400);
            if cache_secs > 30 * 86_400 {
                bail!("lookup_cache_secs must be between 0 and 2592000, not {cache_secs}");
            }
            let fail_open = match args
                .lookup_failure
                .clone()
                .or(file.lookup_failure)
                .as_deref()
                .unwrap_or("open")
            {
                "open" => true,
                "closed" => false,
                other => bail!("lookup_failure must be \"open\" or \"closed\", not {other:?}"),
            };
            Some(LookupRules {
                block_line_types,
                block_carriers,
                cache_ttl: Duration::from_secs(cache_secs),
                fail_open,
            })
        } else {
            None
        };

        let verify_api_url = parse_api_url(
            "verify_api_url",
            &args
                .verify_api_url
                .clone()
                .or(file.verify_api_url)
                .unwrap_or_else(|| DEFAULT_VERIFY_URL.into()),
            allow_insecure,
        )?;
        let verify = match args.verify_service_sid.clone().or(file.verify_service_sid) {
            Some(sid) => Some(VerifyService::new(&verify_api_url, sid.trim())?),
            None => None,
        };

        let channel = match args.channel.clone().or(file.channel).as_deref() {
            None | Some("sms") => Channel::Sms,
            Some("voice") => Channel::Voice,
            Some(other) => bail!("channel must be \"sms\" or \"voice\", not {other:?}"),
        };
        let voice = VoiceSettings {
            from: args.voice_from.clone().or(file.voice_from),
            language: args
                .voice_language
                .clone()
                .or(file.voice_language)
                .unwrap_or_else(|| DEFAULT_VOICE_LANGUAGE.into()),
            template: args
                .voice_template
                .clone()
                .or(file.voice_template)
                .unwrap_or_else(|| DEFAULT_VOICE_TEMPLATE.into()),
            fallback: args.voice_fallback.or(file.voice_fallback).unwrap_or(false),
        };
        voice.validate()?;

        let breaker = BreakerSettings {
            failures: match args.breaker_failures.or(file.breaker_failures) {
                None => DEFAULT_BREAKER_FAILURES,
                Some(n @ 1..=1000) => n,
                Some(n) => bail!("breaker_failures must be between 1 and 1000, not {n}"),
            },
            cooldown: match args.breaker_cooldown_secs.or(file.breaker_cooldown_secs) {
                None => DEFAULT_BREAKER_COOLDOWN,
                Some(s @ 1..=86_400) => Duration::from_secs(s),
                Some(s) => bail!("breaker_cooldown_secs must be between 1 and 86400, not {s}"),
            },
        };
        let failover = file
            .failover
            .iter()
            .map(|p| p.resolve(&twilio_api_url, allow_insecure, file.source.as_ref()))
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

        let credentials = Sources {
            env,
            files: &file.credentials,
            config: file.source.as_ref(),
            credentials_directory: env("CREDENTIALS_DIRECTORY")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
        }
        .load()?;
        if credentials.is_none() && !dry_run {
            bail!(
                "no Twilio credentials: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (or \
                 TWILIO_API_KEY and TWILIO_API_SECRET), name files under [credentials] in the \
                 config, or use --dry-run"
            );
        }

        let twilio = crate::twilio::Settings {
            api_url: twilio_api_url.clone(),
            lookup_url: lookup_api_url.clone(),
            proxy: proxy.clone(),
            ca_pem: twilio_ca_pem.clone(),
            // With failover, a provider that cannot be reached must leave time for the next.
            connect_timeout: Duration::from_millis(deadline_ms) / (1 + failover.len() as u32),
            validity_period,
        };
        Ok(Settings {
            twilio,
            unix: args
                .unix
                .clone()
                .or(file.unix)
                .unwrap_or_else(|| DEFAULT_UNIX.into()),
            tcp,
            twilio_api_url,
            deadline: Duration::from_millis(deadline_ms),
            dry_run,
            max_frame_bytes,
            templates,
            validity_period,
            threads,
            proxy,
            twilio_ca_pem,
            keep_warm,
            limits,
            metrics,
            log_format,
            rate_limits,
            geo,
            default_region,
            lookup,
            lookup_api_url,
            verify,
            channel,
            voice,
            failover,
            breaker,
            credentials,
            warnings,
        })
    }
}

/// The name the top-level credentials go by in logs and metrics.
pub const PRIMARY: &str = "primary";

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
    fn resolve(
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

fn in_range(
    what: &str,
    value: Option<usize>,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize> {
    let value = value.unwrap_or(default);
    if !range.contains(&value) {
        bail!(
            "{what} must be between {} and {}, not {value}",
            range.start(),
            range.end()
        );
    }
    Ok(value)
}

/// Reads a CA file and checks it holds at least one PEM certificate and that every one is a
/// certificate rustls can trust (as the Twilio client will, at start and at reload — and in
/// dry-run mode and `check`, which build no client).
fn read_ca(path: &Path) -> Result<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let pem =
        std::fs::read(path).with_context(|| format!("cannot read CA file {}", path.display()))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        bail!("CA file {} holds no PEM certificate", path.display());
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let added = cert
            .map_err(|e| anyhow::anyhow!("{e}"))
            .and_then(|der| roots.add(der).map_err(|e| anyhow::anyhow!("{e}")));
        if let Err(e) = added {
            bail!(
                "CA file {}: certificate {} is not a valid certificate ({e})",
                path.display(),
                i + 1
            );
        }
    }
    if roots.is_empty() {
        bail!("CA file {} holds no valid certificate", path.display());
    }
    Ok(pem)
}

/// An http:// or https:// URL. Errors never quote a value that does not parse (it may be a
/// secret pasted under the wrong key) and show any other with its user name and password
/// redacted.
fn parse_http_url(what: &str, text: &str) -> Result<Url> {
    let url = match Url::parse(text) {
        Ok(url) => url,
        // The parser's reason names no part of the value.
        Err(e) => bail!("{what} is not a URL ({e}; the value is not shown)"),
    };
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        bail!(
            "{what} must be an http:// or https:// URL, not {}",
            redact_url(text)
        );
    }
    Ok(url)
}

/// A Twilio API base URL: no user name or password in it (the credentials go in their own
/// header), and https:// unless it is loopback (a mock) or `allow_insecure` says otherwise.
fn parse_api_url(what: &str, text: &str, allow_insecure: bool) -> Result<Url> {
    let url = parse_http_url(what, text)?;
    if !url.username().is_empty() || url.password().is_some() {
        bail!(
            "{what} must not carry a user name or password (the Twilio credentials come from \
             TWILIO_* variables, [credentials] or $CREDENTIALS_DIRECTORY), not {}",
            redact_url(text)
        );
    }
    if url.scheme() == "http" && !allow_insecure && !is_loopback_host(&url) {
        bail!(
            "{what} {} is plain http:// to a host that is not loopback: the Twilio credentials \
             would cross the network in clear; use https://, or pass \
             --allow-insecure-twilio-url if that network is trusted",
            redact_url(text)
        );
    }
    Ok(url)
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => {
            name.eq_ignore_ascii_case("localhost")
                || name.to_ascii_lowercase().ends_with(".localhost")
        }
        None => false,
    }
}

/// `text` with anything between `://` and the last `@` replaced by `***`: the user name and
/// password of a URL, whether it parses or not.
pub fn redact_url(text: &str) -> String {
    let (scheme, rest) = match text.find("://") {
        Some(i) => text.split_at(i + 3),
        None => ("", text),
    };
    match rest.rfind('@') {
        Some(at) => format!("{scheme}***{}", &rest[at..]),
        None => text.to_owned(),
    }
}

/// The one parser of every boolean option, flag or env var: `1/0`, `yes/no`, `on/off`,
/// `true/false`, in any case. (Empty env vars are dropped before parsing: they count as unset.)
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "on" | "true" => Ok(true),
        "0" | "no" | "off" | "false" => Ok(false),
        _ => Err("expected one of 1/0, yes/no, on/off, true/false".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AC: &str = "AC0123456789abcdef0123456789abcdef";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn with_creds(k: &str) -> Option<String> {
        match k {
            "TWILIO_ACCOUNT_SID" => Some(AC.into()),
            "TWILIO_AUTH_TOKEN" => Some("token".into()),
            _ => None,
        }
    }

    #[test]
    fn defaults() {
        let s = Settings::resolve(&ServeArgs::default(), &with_creds).unwrap();
        assert_eq!(s.unix, PathBuf::from(DEFAULT_UNIX));
        assert_eq!(s.tcp, None);
        assert_eq!(s.twilio_api_url.as_str(), "https://api.twilio.com/");
        assert_eq!(s.deadline, Duration::from_millis(2500));
        assert_eq!(s.max_frame_bytes, 65536);
        assert_eq!(s.threads, 1);
        assert_eq!(s.templates.render("123456", None), "Your OTP is: 123456");
        assert!(!s.dry_run);
    }

    #[test]
    fn credentials_required_unless_dry_run() {
        assert!(Settings::resolve(&ServeArgs::default(), &no_env).is_err());
        let args = ServeArgs {
            dry_run: Some(true),
            ..Default::default()
        };
        assert!(Settings::resolve(&args, &no_env)
            .unwrap()
            .credentials
            .is_none());
    }

    #[test]
    fn refuses_remote_tcp_unless_allowed() {
        let mut args = ServeArgs {
            tcp: Some("0.0.0.0:7777".parse().unwrap()),
            dry_run: Some(true),
            ..Default::default()
        };
        assert!(Settings::resolve(&args, &no_env).is_err());
        args.allow_remote_tcp = Some(true);
        assert!(Settings::resolve(&args, &no_env).is_ok());
        args.tcp = Some("[::1]:7777".parse().unwrap());
        args.allow_remote_tcp = None;
        assert!(Settings::resolve(&args, &no_env).is_ok());
    }

    #[test]
    fn a_template_flag_replaces_the_files_for_the_same_locale_however_spelled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[templates]\npt_BR = 'Arquivo {otp}'\nnl = 'Bestand {otp}'\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            dry_run: Some(true),
            templates: vec![("pt-br".into(), "Flag {otp}".into())],
            ..Default::default()
        };
        let s = Settings::resolve(&args, &no_env).unwrap();
        assert_eq!(s.templates.render("42", Some("pt-BR")), "Flag 42");
        assert_eq!(s.templates.render("42", Some("nl")), "Bestand 42");
    }

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            format!(
                "deadline_ms = 1000\nbody_template = 'Code {{otp}}'\nunix = '/tmp/x.sock'\n\
                 [credentials]\naccount_sid = '{AC}'\nauth_token_file = '{}'\n",
                dir.path().join("tok").display()
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("tok"), "secret\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            deadline_ms: Some(2000),
            ..Default::default()
        };
        let s = Settings::resolve(&args, &no_env).unwrap();
        assert_eq!(s.deadline, Duration::from_millis(2000));
        assert_eq!(s.templates.render("42", None), "Code 42");
        assert_eq!(s.unix, PathBuf::from("/tmp/x.sock"));
        assert_eq!(s.credentials.unwrap().basic(), (AC, "secret"));
    }

    #[test]
    fn a_config_error_names_the_line_but_never_quotes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "deadline_ms = 1000\n[credentials]\napi_secret = 'hunter2-secret'\n",
        )
        .unwrap();
        let e = format!("{:#}", FileConfig::load(&path).unwrap_err());
        assert!(
            e.contains("line 3, column 1, key credentials.api_secret: unknown field `api_secret`"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn rejects_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let typo = dir.path().join("typo.toml");
        std::fs::write(&typo, "deadline = 5\n").unwrap();
        let cases = [
            ServeArgs {
                config: Some(typo),
                ..Default::default()
            },
            ServeArgs {
                deadline_ms: Some(5),
                ..Default::default()
            },
            ServeArgs {
                body_template: Some("no code".into()),
                ..Default::default()
            },
            ServeArgs {
                validity_period: Some(0),
                ..Default::default()
            },
            ServeArgs {
                twilio_api_url: Some("ftp://x".into()),
                ..Default::default()
            },
            ServeArgs {
                max_frame_bytes: Some(1),
                ..Default::default()
            },
            ServeArgs {
                proxy: Some("https://proxy.example:3128".into()),
                ..Default::default()
            },
        ];
        for args in cases {
            assert!(Settings::resolve(&args, &with_creds).is_err(), "{args:?}");
        }
    }
}
