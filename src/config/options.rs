//! The one options type: every option declared once, for the command line, its
//! `OTP_SIDECAR_*` env var and its config-file key, with its default in its `#[arg]`.
//!
//! Precedence, highest first: flag, env var (clap reads both), config file, default; the
//! layering is in `layers`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};

use super::checks::{locale_table, locale_template, parse_bool};
use super::credentials::CredentialFiles;
use super::failover::ProviderConfig;
use super::fraud_options::FraudOptions;
use crate::call::template::DEFAULT_TEMPLATE;
use crate::guard::lookup::DEFAULT_BLOCKED_LINE_TYPES;
use crate::logging::LogFormat;
use crate::twilio::calls::{DEFAULT_VOICE_LANGUAGE, DEFAULT_VOICE_TEMPLATE};
use crate::twilio::verify::DEFAULT_VERIFY_URL;

pub const DEFAULT_UNIX: &str = "/run/otp-sidecar/otp.sock";

/// The daemon's options (`serve` and `check`). Every field is optional: a layer gives only
/// what it sets. (Their order is the file keys' order in an unknown-key error, and `--help`'s.)
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// TOML config file; every option below is also a key there.
    #[arg(long, env = "OTP_SIDECAR_CONFIG", value_name = "PATH")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Unix socket to listen on (mode 0660; a stale socket file is replaced).
    #[arg(long, env = "OTP_SIDECAR_UNIX", value_name = "PATH", default_value = DEFAULT_UNIX)]
    #[serde(default, with = "super::os_path")]
    pub unix: Option<PathBuf>,

    /// Also listen on TCP, e.g. 127.0.0.1:7777 (off unless given).
    #[arg(long, env = "OTP_SIDECAR_TCP", value_name = "ADDR")]
    pub tcp: Option<SocketAddr>,

    /// Serve the TCP listener over TLS with this certificate chain (PEM; re-read on SIGHUP).
    /// The Unix socket stays plain.
    #[arg(long, env = "OTP_SIDECAR_TLS_CERT", value_name = "PATH")]
    #[serde(default, with = "super::os_path")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1; re-read on SIGHUP).
    #[arg(long, env = "OTP_SIDECAR_TLS_KEY", value_name = "PATH")]
    #[serde(default, with = "super::os_path")]
    pub tls_key: Option<PathBuf>,

    /// Require a client certificate signed by this CA (PEM) on the TLS listener: mutual TLS
    /// (re-read on SIGHUP).
    #[arg(long, env = "OTP_SIDECAR_TLS_CLIENT_CA", value_name = "PATH")]
    #[serde(default, with = "super::os_path")]
    pub tls_client_ca: Option<PathBuf>,

    /// Callers, one "name token" per line: every sendOTP and confirmOTP must then carry one
    /// of the tokens as context.token, or is answered ERR unauthorized (re-read on SIGHUP).
    #[arg(long, env = "OTP_SIDECAR_CALLER_TOKENS_FILE", value_name = "PATH")]
    #[serde(default, with = "super::os_path")]
    pub caller_tokens_file: Option<PathBuf>,

    /// Allow --tcp on a non-loopback address with neither --tls-client-ca nor
    /// --caller-tokens-file: callers are not authenticated, so firewall it.
    #[arg(long, env = "OTP_SIDECAR_ALLOW_UNAUTHENTICATED_TCP", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub allow_unauthenticated_tcp: Option<bool>,

    /// The old name of --allow-unauthenticated-tcp, still accepted (flag, env var, file key).
    #[arg(long, hide = true, env = "OTP_SIDECAR_ALLOW_REMOTE_TCP", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub allow_remote_tcp: Option<bool>,

    /// Give the Unix socket (and its folder, when the daemon owns it) this group, by name or
    /// number: the group the ILX Node processes run in, so they may connect. The daemon must
    /// be a member (the BIG-IP unit gets it as SupplementaryGroups=). Default: the daemon's.
    #[arg(long, env = "OTP_SIDECAR_UNIX_GROUP", value_name = "GROUP")]
    pub unix_group: Option<String>,

    /// Twilio API base URL: regional edges (https://api.dublin.ie1.twilio.com) or a local mock.
    #[arg(
        long,
        env = "OTP_SIDECAR_TWILIO_API_URL",
        value_name = "URL",
        default_value = "https://api.twilio.com"
    )]
    pub twilio_api_url: Option<String>,

    /// Allow a plain http:// Twilio, Lookup or Verify URL to a host that is not loopback (the
    /// credentials would cross the network in clear); loopback http:// is always allowed.
    #[arg(long, env = "OTP_SIDECAR_ALLOW_INSECURE_TWILIO_URL", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub allow_insecure_twilio_url: Option<bool>,

    /// Per-call deadline in ms (100-60000); keep it under ILX::call's 3000 ms timeout.
    #[arg(
        long,
        env = "OTP_SIDECAR_DEADLINE_MS",
        value_name = "MS",
        default_value = "2500"
    )]
    pub deadline_ms: Option<u64>,

    /// Send nothing: reply with a made-up SM… SID (for testing access policies).
    #[arg(long, env = "OTP_SIDECAR_DRY_RUN", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub dry_run: Option<bool>,

    /// Largest MessagePack-RPC frame accepted, in bytes (64-16777216).
    #[arg(
        long,
        env = "OTP_SIDECAR_MAX_FRAME_BYTES",
        value_name = "BYTES",
        default_value = "65536"
    )]
    pub max_frame_bytes: Option<usize>,

    /// SMS body; {otp} is replaced by the code, {minutes} by --otp-lifetime-secs in
    /// minutes.
    #[arg(long, env = "OTP_SIDECAR_BODY_TEMPLATE", value_name = "TEXT", default_value = DEFAULT_TEMPLATE)]
    pub body_template: Option<String>,

    /// SMS body for callers whose context.locale is LOCALE (nl-NL, then nl, is tried);
    /// repeat for each language. Adds to the config file's [templates].
    #[arg(long = "template", value_name = "LOCALE=TEXT", value_parser = locale_template)]
    #[serde(default, skip_serializing, deserialize_with = "locale_table")]
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
    /// cores to TMM; add more only for thousands of calls a second.
    #[arg(
        long,
        env = "OTP_SIDECAR_THREADS",
        value_name = "N",
        default_value = "1"
    )]
    pub threads: Option<usize>,

    /// HTTP(S) proxy for Twilio, e.g. http://proxy:3128 (HTTPS_PROXY and NO_PROXY are also
    /// honoured).
    #[arg(long, env = "OTP_SIDECAR_PROXY", value_name = "URL")]
    pub proxy: Option<String>,

    /// Extra CA certificate (PEM) to trust for Twilio's TLS, e.g. a TLS-inspecting proxy's.
    #[arg(long, env = "OTP_SIDECAR_TWILIO_CA_FILE", value_name = "PATH")]
    #[serde(default, with = "super::os_path")]
    pub twilio_ca_file: Option<PathBuf>,

    /// Open the Twilio connection at start and touch it this often (an authenticated GET of
    /// the account), so no OTP pays a TLS handshake; 0-3600 s, 0 turns warming off.
    #[arg(
        long,
        env = "OTP_SIDECAR_KEEP_WARM_SECS",
        value_name = "SECONDS",
        default_value = "30"
    )]
    pub keep_warm_secs: Option<u64>,

    /// Open connections allowed (1-100000), an eighth kept for the Unix socket; at the cap one
    /// that never completed a call makes room, never one that was served.
    #[arg(
        long,
        env = "OTP_SIDECAR_MAX_CONNECTIONS",
        value_name = "N",
        default_value = "512"
    )]
    pub max_connections: Option<usize>,

    /// Calls in flight across all connections (1-100000); past it, connections are not read until a
    /// call finishes.
    #[arg(
        long,
        env = "OTP_SIDECAR_MAX_IN_FLIGHT",
        value_name = "N",
        default_value = "1024"
    )]
    pub max_in_flight: Option<usize>,

    /// Calls in flight on one connection (1-10000).
    #[arg(
        long,
        env = "OTP_SIDECAR_MAX_IN_FLIGHT_PER_CONNECTION",
        value_name = "N",
        default_value = "128"
    )]
    pub max_in_flight_per_connection: Option<usize>,

    /// Requests in flight to Twilio per account (1-10000), across Messages, Calls, Verify and
    /// Lookup: Twilio's concurrency limit, which instances on one account share. A call that
    /// cannot get one in time to be answered before its deadline is answered busy, unsent.
    #[arg(
        long,
        env = "OTP_SIDECAR_TWILIO_MAX_CONCURRENCY",
        value_name = "N",
        default_value = "100"
    )]
    pub twilio_max_concurrency: Option<usize>,

    /// The longest a Twilio 429's Retry-After may pause every send (0-60 s); calls meanwhile
    /// are answered busy at once.
    #[arg(
        long,
        env = "OTP_SIDECAR_TWILIO_MAX_RETRY_AFTER_SECS",
        value_name = "SECONDS",
        default_value = "5"
    )]
    pub twilio_max_retry_after_secs: Option<u64>,

    /// Close a connection that has no call in flight and sends no complete request for this
    /// long; 0-86400 s, 0 never closes.
    #[arg(
        long,
        env = "OTP_SIDECAR_IDLE_TIMEOUT_SECS",
        value_name = "SECONDS",
        default_value = "300"
    )]
    pub idle_timeout_secs: Option<u64>,

    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464 (loopback only;
    /// off unless given).
    #[arg(long, env = "OTP_SIDECAR_METRICS", value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Log format: human (default) or json (one object per line).
    #[arg(
        long,
        env = "OTP_SIDECAR_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "human"
    )]
    pub log_format: Option<LogFormat>,

    /// Sends per phone number, as N/WINDOW (3/10m, 10/1h) or "off".
    #[arg(
        long,
        env = "OTP_SIDECAR_RATE_LIMIT_PHONE",
        value_name = "RATE",
        default_value = "3/10m"
    )]
    pub rate_limit_phone: Option<String>,

    /// Sends per end-user IP (the context's `ip`), N/WINDOW or "off".
    #[arg(
        long,
        env = "OTP_SIDECAR_RATE_LIMIT_IP",
        value_name = "RATE",
        default_value = "10/10m"
    )]
    pub rate_limit_ip: Option<String>,

    /// Sends per user (the context's `user`), N/WINDOW or "off".
    #[arg(
        long,
        env = "OTP_SIDECAR_RATE_LIMIT_USER",
        value_name = "RATE",
        default_value = "5/10m"
    )]
    pub rate_limit_user: Option<String>,

    /// Sends in all, N/WINDOW or "off".
    #[arg(
        long,
        env = "OTP_SIDECAR_RATE_LIMIT_GLOBAL",
        value_name = "RATE",
        default_value = "600/1m"
    )]
    pub rate_limit_global: Option<String>,

    /// Keys each rate limit remembers at most (phones, IPs, users; 2-10000000).
    #[arg(
        long,
        env = "OTP_SIDECAR_RATE_LIMIT_MAX_KEYS",
        value_name = "N",
        default_value = "100000"
    )]
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

    /// Twilio Lookup's base URL.
    #[arg(
        long,
        env = "OTP_SIDECAR_LOOKUP_API_URL",
        value_name = "URL",
        default_value = "https://lookups.twilio.com"
    )]
    pub lookup_api_url: Option<String>,

    /// Line types Lookup may report that are refused, comma-separated ("" for none).
    #[arg(
        long,
        env = "OTP_SIDECAR_BLOCK_LINE_TYPES",
        value_name = "LIST",
        value_delimiter = ',',
        default_value = DEFAULT_BLOCKED_LINE_TYPES
    )]
    pub block_line_types: Option<Vec<String>>,

    /// File of carriers to refuse, one MCC-MNC per line (310-260).
    #[arg(long, env = "OTP_SIDECAR_BLOCK_CARRIERS_FILE", value_name = "PATH")]
    #[serde(default, with = "super::os_path")]
    pub block_carriers_file: Option<PathBuf>,

    /// How long a Lookup answer is reused, in seconds (0-2592000).
    #[arg(
        long,
        env = "OTP_SIDECAR_LOOKUP_CACHE_SECS",
        value_name = "SECONDS",
        default_value = "86400"
    )]
    pub lookup_cache_secs: Option<u64>,

    /// When Lookup fails or is slow: "open" sends unchecked, "closed" refuses.
    #[arg(
        long,
        env = "OTP_SIDECAR_LOOKUP_FAILURE",
        value_name = "POLICY",
        default_value = "open"
    )]
    pub lookup_failure: Option<String>,

    /// Budgets and filters against SMS pumping, Twilio's fraud signals (fraud_options.rs).
    #[command(flatten)]
    #[serde(flatten)]
    pub fraud: FraudOptions,

    /// Where the rate limits and the Lookup cache are kept: "memory" (this process only), or a
    /// Redis/Valkey every instance shares: redis://HOST:PORT/DB, rediss://HOST:PORT/DB (TLS),
    /// unix:///PATH/redis.sock, or through Sentinel:
    /// redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]. The password comes from OTP_SIDECAR_STATE_PASSWORD (env, a
    /// credentials file or $CREDENTIALS_DIRECTORY), never from the URL; the keys' secret from
    /// OTP_SIDECAR_STATE_KEY the same way.
    #[arg(
        long,
        env = "OTP_SIDECAR_STATE",
        value_name = "URL",
        default_value = "memory"
    )]
    pub state: Option<String>,

    /// Namespace of every key in the shared store.
    #[arg(
        long,
        env = "OTP_SIDECAR_STATE_PREFIX",
        value_name = "PREFIX",
        default_value = "otp-sidecar"
    )]
    pub state_prefix: Option<String>,

    /// How long a call may spend on the shared store in all, 1-5000 ms (never past the call's
    /// deadline).
    #[arg(
        long,
        env = "OTP_SIDECAR_STATE_TIMEOUT_MS",
        value_name = "MS",
        default_value = "50"
    )]
    pub state_timeout_ms: Option<u64>,

    /// When the shared store fails or is slow: "local" limits with this instance's own state,
    /// "closed" refuses with ERR unavailable.
    #[arg(
        long,
        env = "OTP_SIDECAR_STATE_FAILURE",
        value_name = "POLICY",
        default_value = "local"
    )]
    pub state_failure: Option<String>,

    /// CA certificate (PEM) to trust for a rediss:// store instead of the system's.
    #[arg(long, env = "OTP_SIDECAR_STATE_CA_FILE", value_name = "PATH")]
    #[serde(default, with = "super::os_path")]
    pub state_ca_file: Option<PathBuf>,

    /// Send through this Twilio Verify service (VA…) instead of Messages: APM's code goes out
    /// as the verification's CustomCode, sendOTP answers VE…, and confirmOTP reports success.
    #[arg(long, env = "OTP_SIDECAR_VERIFY_SERVICE_SID", value_name = "SID")]
    pub verify_service_sid: Option<String>,

    /// Twilio Verify's base URL.
    #[arg(long, env = "OTP_SIDECAR_VERIFY_API_URL", value_name = "URL", default_value = DEFAULT_VERIFY_URL)]
    pub verify_api_url: Option<String>,

    /// How codes go out unless the caller's context.channel says otherwise: sms or voice (a
    /// call that reads the code out).
    #[arg(
        long,
        env = "OTP_SIDECAR_CHANNEL",
        value_name = "CHANNEL",
        default_value = "sms"
    )]
    pub channel: Option<String>,

    /// Caller ID (E.164) for voice calls. [default: the sendOTP sender, when it is a number]
    #[arg(long, env = "OTP_SIDECAR_VOICE_FROM", value_name = "NUMBER")]
    pub voice_from: Option<String>,

    /// Language the code is read in (TwiML <Say language>).
    #[arg(long, env = "OTP_SIDECAR_VOICE_LANGUAGE", value_name = "TAG", default_value = DEFAULT_VOICE_LANGUAGE)]
    pub voice_language: Option<String>,

    /// What a call says, twice; {digits} is the code, one character at a time.
    #[arg(long, env = "OTP_SIDECAR_VOICE_TEMPLATE", value_name = "TEXT", default_value = DEFAULT_VOICE_TEMPLATE)]
    pub voice_template: Option<String>,

    /// Call instead when Lookup says the number is a landline, or when Twilio refuses the
    /// SMS with 21614, 21408 or 21612 (nothing was sent).
    #[arg(long, env = "OTP_SIDECAR_VOICE_FALLBACK", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub voice_fallback: Option<bool>,

    /// Provider faults in a row (1-1000; unreachable, 429, 5xx, refused credentials) after which
    /// a provider is skipped in favour of the next [[failover]] one.
    #[arg(
        long,
        env = "OTP_SIDECAR_BREAKER_FAILURES",
        value_name = "N",
        default_value = "3"
    )]
    pub breaker_failures: Option<u32>,

    /// How long a skipped provider is left alone (1-86400 s) before one call tries it again.
    #[arg(
        long,
        env = "OTP_SIDECAR_BREAKER_COOLDOWN_SECS",
        value_name = "SECONDS",
        default_value = "30"
    )]
    pub breaker_cooldown_secs: Option<u64>,

    /// The SMS pumping guard and the resend rules: their own block (config/pumping.rs).
    #[command(flatten)]
    #[serde(flatten)]
    pub pumping: super::pumping::PumpingOptions,
    /// Delivery status, the voice follow-up and alerts (config/delivery.rs).
    #[command(flatten)]
    #[serde(flatten)]
    pub delivery: super::delivery::DeliveryOptions,
    /// issueOTP's and checkOTP's codes (config/codes.rs).
    #[command(flatten)]
    #[serde(flatten)]
    pub codes: super::codes::CodesOptions,

    /// Providers to fail over to, in order, after the primary (file only: `[[failover]]`).
    #[arg(skip)]
    #[serde(default, skip_serializing)]
    pub failover: Vec<ProviderConfig>,

    /// Where the credentials live (file only: `[credentials]`).
    #[arg(skip)]
    #[serde(default, skip_serializing)]
    pub credentials: CredentialFiles,
}
