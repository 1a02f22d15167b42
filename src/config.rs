//! Flags, env vars and the TOML file, merged into one validated [`Settings`].
//!
//! Precedence, highest first: command-line flag, `OTP_SIDECAR_*` env var, config file, default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use reqwest::Url;
use serde::Deserialize;

use crate::credentials::{CredentialFiles, Credentials, Sources};

pub const DEFAULT_UNIX: &str = "/run/otp-sidecar/otp.sock";
pub const DEFAULT_API_URL: &str = "https://api.twilio.com";
pub const DEFAULT_DEADLINE_MS: u64 = 2500;
pub const DEFAULT_TEMPLATE: &str = "Your OTP is: {otp}";
pub const OTP_PLACEHOLDER: &str = "{otp}";

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
    #[arg(long, env = "OTP_SIDECAR_ALLOW_REMOTE_TCP")]
    pub allow_remote_tcp: bool,

    /// Twilio API base URL: regional edges (https://api.dublin.ie1.twilio.com) or a local mock.
    /// [default: https://api.twilio.com]
    #[arg(long, env = "OTP_SIDECAR_TWILIO_API_URL", value_name = "URL")]
    pub twilio_api_url: Option<String>,

    /// Per-call deadline in ms; keep it under ILX::call's 3000 ms timeout. [default: 2500]
    #[arg(long, env = "OTP_SIDECAR_DEADLINE_MS", value_name = "MS")]
    pub deadline_ms: Option<u64>,

    /// Send nothing: reply with a made-up SM… SID (for testing access policies).
    #[arg(long, env = "OTP_SIDECAR_DRY_RUN")]
    pub dry_run: bool,

    /// Largest MessagePack-RPC frame accepted, in bytes. [default: 65536]
    #[arg(long, env = "OTP_SIDECAR_MAX_FRAME_BYTES", value_name = "BYTES")]
    pub max_frame_bytes: Option<usize>,

    /// SMS body; {otp} is replaced by the code. [default: "Your OTP is: {otp}"]
    #[arg(long, env = "OTP_SIDECAR_BODY_TEMPLATE", value_name = "TEXT")]
    pub body_template: Option<String>,

    /// Twilio ValidityPeriod in seconds (1-36000): drop a message queued longer than the
    /// code lives. [default: unset]
    #[arg(long, env = "OTP_SIDECAR_VALIDITY_PERIOD", value_name = "SECONDS")]
    pub validity_period: Option<u32>,

    /// Worker threads. One answers fastest (no cross-thread wakeups) and leaves the other
    /// cores to TMM; add more only for thousands of calls a second. [default: 1]
    #[arg(long, env = "OTP_SIDECAR_THREADS", value_name = "N")]
    pub threads: Option<usize>,

    /// HTTP(S) proxy for Twilio, e.g. http://proxy:3128 (HTTPS_PROXY and NO_PROXY are also
    /// honoured).
    #[arg(long, env = "OTP_SIDECAR_PROXY", value_name = "URL")]
    pub proxy: Option<String>,
}

/// The config file: the same options as the flags, plus where credentials live.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub unix: Option<PathBuf>,
    pub tcp: Option<SocketAddr>,
    pub allow_remote_tcp: Option<bool>,
    pub twilio_api_url: Option<String>,
    pub deadline_ms: Option<u64>,
    pub dry_run: Option<bool>,
    pub max_frame_bytes: Option<usize>,
    pub body_template: Option<String>,
    pub validity_period: Option<u32>,
    pub threads: Option<usize>,
    pub proxy: Option<String>,
    #[serde(default)]
    pub credentials: CredentialFiles,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }
}

/// The SMS text, checked to carry the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyTemplate(String);

impl BodyTemplate {
    pub fn new(text: &str) -> Result<Self> {
        if !text.contains(OTP_PLACEHOLDER) {
            bail!("body_template must contain {OTP_PLACEHOLDER}");
        }
        // Twilio's limit on Body is 1600 characters.
        if text.chars().count() > 1500 {
            bail!("body_template is longer than 1500 characters");
        }
        Ok(BodyTemplate(text.to_owned()))
    }

    pub fn render(&self, otp: &str) -> String {
        self.0.replace(OTP_PLACEHOLDER, otp)
    }
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
    pub body_template: BodyTemplate,
    pub validity_period: Option<u32>,
    pub threads: usize,
    pub proxy: Option<Url>,
    /// `None` only in dry-run mode.
    pub credentials: Option<Credentials>,
}

impl Settings {
    /// Merges flags (clap has already folded in env vars), the config file and defaults.
    pub fn resolve(args: &ServeArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let dry_run = args.dry_run || file.dry_run.unwrap_or(false);

        let tcp = args.tcp.or(file.tcp);
        let allow_remote = args.allow_remote_tcp || file.allow_remote_tcp.unwrap_or(false);
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
        let twilio_api_url = parse_http_url("twilio_api_url", &api_url)?;

        let deadline_ms = args
            .deadline_ms
            .or(file.deadline_ms)
            .unwrap_or(DEFAULT_DEADLINE_MS);
        if !(100..=60_000).contains(&deadline_ms) {
            bail!("deadline_ms must be between 100 and 60000, not {deadline_ms}");
        }

        let max_frame_bytes = args
            .max_frame_bytes
            .or(file.max_frame_bytes)
            .unwrap_or(crate::rpc::DEFAULT_MAX_FRAME);
        if !(64..=16 * 1024 * 1024).contains(&max_frame_bytes) {
            bail!("max_frame_bytes must be between 64 and 16777216, not {max_frame_bytes}");
        }

        let template = args.body_template.clone().or(file.body_template);
        let body_template = BodyTemplate::new(template.as_deref().unwrap_or(DEFAULT_TEMPLATE))?;

        let validity_period = args.validity_period.or(file.validity_period);
        if let Some(v) = validity_period {
            if !(1..=36_000).contains(&v) {
                bail!("validity_period must be between 1 and 36000 seconds, not {v}");
            }
        }

        let threads = args.threads.or(file.threads).unwrap_or(1);
        if !(1..=64).contains(&threads) {
            bail!("threads must be between 1 and 64, not {threads}");
        }

        let proxy = match args.proxy.clone().or(file.proxy) {
            Some(p) => Some(parse_http_url("proxy", &p)?),
            None => None,
        };

        let credentials = Sources {
            env,
            files: &file.credentials,
            credentials_directory: env("CREDENTIALS_DIRECTORY").map(PathBuf::from),
        }
        .load()?;
        if credentials.is_none() && !dry_run {
            bail!(
                "no Twilio credentials: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (or \
                 TWILIO_API_KEY and TWILIO_API_SECRET), name files under [credentials] in the \
                 config, or use --dry-run"
            );
        }

        Ok(Settings {
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
            body_template,
            validity_period,
            threads,
            proxy,
            credentials,
        })
    }
}

fn parse_http_url(what: &str, text: &str) -> Result<Url> {
    let url = Url::parse(text).with_context(|| format!("{what} is not a URL: {text}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        bail!("{what} must be an http:// or https:// URL, not {text}");
    }
    Ok(url)
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
        assert_eq!(s.body_template.render("123456"), "Your OTP is: 123456");
        assert!(!s.dry_run);
    }

    #[test]
    fn credentials_required_unless_dry_run() {
        assert!(Settings::resolve(&ServeArgs::default(), &no_env).is_err());
        let args = ServeArgs {
            dry_run: true,
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
            dry_run: true,
            ..Default::default()
        };
        assert!(Settings::resolve(&args, &no_env).is_err());
        args.allow_remote_tcp = true;
        assert!(Settings::resolve(&args, &no_env).is_ok());
        args.tcp = Some("[::1]:7777".parse().unwrap());
        args.allow_remote_tcp = false;
        assert!(Settings::resolve(&args, &no_env).is_ok());
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
        assert_eq!(s.body_template.render("42"), "Code 42");
        assert_eq!(s.unix, PathBuf::from("/tmp/x.sock"));
        assert_eq!(s.credentials.unwrap().basic(), (AC, "secret"));
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
        ];
        for args in cases {
            assert!(Settings::resolve(&args, &with_creds).is_err(), "{args:?}");
        }
    }
}
