//! Configuration: one [`Options`] type (flags, env vars and the TOML file), layered and checked,
//! then composed into per-part settings — each part of the daemon gets only its own struct.
//!
//! Precedence, highest first: command-line flag, `OTP_SIDECAR_*` env var, config file, default.

mod checks;
mod credentials;
mod exposure;
mod failover;
mod file;
mod guard;
mod layers;
mod listener;
mod options;
mod os_path;
mod report;
mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

pub use checks::{parse_bool, redact_url};
pub use failover::ProviderSettings;
pub use options::{Options, DEFAULT_UNIX};
pub use report::report;

use crate::call::template::Templates;
use crate::guard::geo::default_region;
use crate::logging::LogFormat;
use crate::server::Limits;
use crate::twilio::calls::VoiceSettings;
use crate::twilio::failover::{BreakerSettings, PRIMARY};
use crate::twilio::verify::VerifyService;
use crate::twilio::Channel;
use checks::{parse_api_url, parse_http_url, read_ca};
use credentials::Sources;

/// `ILX::call`'s default timeout: a deadline past it answers nobody.
pub const ILX_CALL_TIMEOUT_MS: u64 = 3000;

/// Everything the daemon needs, validated, by the part that needs it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub unix: PathBuf,
    /// The Unix socket's group (`None`: the daemon's own).
    pub unix_group: Option<crate::server::UnixGroup>,
    pub tcp: Option<SocketAddr>,
    /// TLS on the TCP listener.
    pub tls: Option<crate::server::Tls>,
    pub metrics: Option<SocketAddr>,
    pub threads: usize,
    pub log_format: LogFormat,
    /// `None`: no warming.
    pub keep_warm: Option<Duration>,
    pub dry_run: bool,
    pub max_frame_bytes: usize,
    pub limits: Limits,
    pub call: crate::call::Settings,
    pub guard: crate::guard::Settings,
    pub twilio: crate::twilio::Settings,
    /// Verify mode, when set.
    pub verify: Option<VerifyService>,
    /// Providers after the primary, in order (Messages mode).
    pub failover: Vec<ProviderSettings>,
    pub breaker: BreakerSettings,
    /// `None` only in dry-run mode.
    pub credentials: Option<crate::twilio::credentials::Credentials>,
    /// The shared state store; `None`: in this process's memory.
    pub state: Option<crate::state::StoreSettings>,
    /// What is allowed but probably wrong: `serve` logs these at WARN, `check` prints them.
    pub warnings: Vec<String>,
}

/// A value every layer below the flags has (the defaults are the bottom layer).
fn given<T>(value: Option<T>, name: &str) -> Result<T> {
    value.with_context(|| format!("{name} has no value"))
}

/// `0` turns it off; otherwise that many seconds.
fn secs_or_off(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

impl Settings {
    /// Layers `explicit` (flags and env vars) over the config file it names and the defaults,
    /// checks the result and composes the parts' settings. `env` reads the credentials' vars.
    pub fn resolve(explicit: &Options, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings> {
        let (file, source) = match &explicit.config {
            Some(path) => {
                let (file, source) = file::load::<Options>(path)?;
                (file, Some(source))
            }
            None => (Options::default(), None),
        };
        let o = explicit.over(file)?;
        let dry_run = o.dry_run.unwrap_or(false);
        let mut warnings = Vec::new();

        let secrets = Sources {
            env,
            files: &o.credentials,
            config: source.as_ref(),
            credentials_directory: env("CREDENTIALS_DIRECTORY")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
        };
        warnings.extend(exposure::warnings(
            &o,
            secrets.credentials_directory.as_deref(),
        ));
        let credentials = secrets.load()?;
        let state = state::store(&o, &secrets)?;
        let guard = guard::settings(&o)?;

        let tcp = o.tcp;
        let auth = listener::resolve(&o, &mut warnings)?;
        let allow_insecure = o.allow_insecure_twilio_url.unwrap_or(false);
        let api_url = parse_api_url(
            "twilio_api_url",
            &given(o.twilio_api_url, "twilio_api_url")?,
            allow_insecure,
        )?;
        let deadline_ms = given(o.deadline_ms, "deadline_ms")?;
        if deadline_ms > ILX_CALL_TIMEOUT_MS {
            warnings.push(format!(
                "deadline_ms {deadline_ms} is over ILX::call's default {ILX_CALL_TIMEOUT_MS} ms \
                 timeout: an ILX caller gives up before a slow call is answered"
            ));
        }
        let deadline = Duration::from_millis(deadline_ms);
        if deadline <= crate::twilio::budget::FIRST_GUESS {
            warnings.push(format!(
                "deadline_ms {deadline_ms} leaves no room for the {} ms a Twilio answer is assumed \
                 to take until one has been timed: sends are answered busy except one probe \
                 every {} s until the answers teach a shorter time",
                crate::twilio::budget::FIRST_GUESS.as_millis(),
                crate::twilio::budget::PROBE_INTERVAL.as_secs()
            ));
        }

        if let Some(store) = &state {
            if store.timeout * 4 > deadline {
                warnings.push(format!(
                    "state_timeout_ms {} is over a quarter of deadline_ms {deadline_ms}: a slow \
                     store leaves little of the deadline to Twilio",
                    store.timeout.as_millis()
                ));
            }
        }

        let lifetime = o.otp_lifetime_secs;
        let templates = Templates::new(
            &given(o.body_template, "body_template")?,
            &o.templates,
            o.webotp_domain.as_deref(),
            lifetime.map(|s| Duration::from_secs(s.into())),
        )?;
        let validity_period = o.validity_period.or(lifetime);

        let proxy = match o.proxy {
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
        let ca_pem = match &o.twilio_ca_file {
            Some(path) => Some(read_ca(path)?),
            None => None,
        };
        let limits = Limits {
            max_connections: given(o.max_connections, "max_connections")?,
            max_in_flight: given(o.max_in_flight, "max_in_flight")?,
            max_in_flight_per_connection: given(
                o.max_in_flight_per_connection,
                "max_in_flight_per_connection",
            )?,
            idle_timeout: secs_or_off(given(o.idle_timeout_secs, "idle_timeout_secs")?),
        };
        if let Some(addr) = o.metrics {
            if !addr.ip().is_loopback() {
                bail!(
                    "metrics {addr} is not a loopback address; metrics are served on loopback only"
                );
            }
        }
        let region = match &o.default_region {
            Some(text) => default_region(text).context("default_region")?,
            None => None,
        };

        let lookup_url = parse_api_url(
            "lookup_api_url",
            &given(o.lookup_api_url, "lookup_api_url")?,
            allow_insecure,
        )?;
        let verify_api_url = parse_api_url(
            "verify_api_url",
            &given(o.verify_api_url, "verify_api_url")?,
            allow_insecure,
        )?;
        let verify = match &o.verify_service_sid {
            Some(sid) => Some(VerifyService::new(&verify_api_url, sid.trim())?),
            None => None,
        };

        let channel = match given(o.channel, "channel")?.as_str() {
            "sms" => Channel::Sms,
            "voice" => Channel::Voice,
            other => bail!("channel must be \"sms\" or \"voice\", not {other:?}"),
        };
        let voice = VoiceSettings {
            from: o.voice_from,
            language: given(o.voice_language, "voice_language")?,
            template: given(o.voice_template, "voice_template")?,
            fallback: o.voice_fallback.unwrap_or(false),
        };
        voice.validate()?;

        let breaker = BreakerSettings {
            failures: given(o.breaker_failures, "breaker_failures")?,
            cooldown: Duration::from_secs(given(o.breaker_cooldown_secs, "breaker_cooldown_secs")?),
        };
        let failover = o
            .failover
            .iter()
            .map(|p| p.resolve(&api_url, allow_insecure, source.as_ref()))
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
            validity_period,
            max_concurrency: given(o.twilio_max_concurrency, "twilio_max_concurrency")?,
            max_retry_after: Duration::from_secs(given(
                o.twilio_max_retry_after_secs,
                "twilio_max_retry_after_secs",
            )?),
        };
        Ok(Settings {
            unix: given(o.unix, "unix")?,
            unix_group: listener::unix_group(o.unix_group.as_deref())?,
            tcp,
            tls: auth.tls,
            metrics: o.metrics,
            threads: given(o.threads, "threads")?,
            log_format: given(o.log_format, "log_format")?,
            keep_warm: secs_or_off(given(o.keep_warm_secs, "keep_warm_secs")?),
            dry_run,
            max_frame_bytes: given(o.max_frame_bytes, "max_frame_bytes")?,
            limits,
            call: crate::call::Settings {
                deadline,
                templates,
                channel,
                voice,
                region,
                callers: auth.callers,
            },
            guard,
            twilio,
            verify,
            failover,
            breaker,
            credentials,
            state,
            warnings,
        })
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
        let s = Settings::resolve(&Options::default(), &with_creds).unwrap();
        assert_eq!(s.unix, PathBuf::from(DEFAULT_UNIX));
        assert_eq!(s.tcp, None);
        assert_eq!(s.twilio.api_url.as_str(), "https://api.twilio.com/");
        assert_eq!(s.call.deadline, Duration::from_millis(2500));
        assert_eq!(s.max_frame_bytes, 65536);
        assert_eq!(s.threads, 1);
        assert_eq!(
            s.call.templates.render("123456", None),
            "Your OTP is: 123456"
        );
        assert!(!s.dry_run);
    }

    #[test]
    fn credentials_required_unless_dry_run() {
        assert!(Settings::resolve(&Options::default(), &no_env).is_err());
        let args = Options {
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
        let mut args = Options {
            tcp: Some("0.0.0.0:7777".parse().unwrap()),
            dry_run: Some(true),
            ..Default::default()
        };
        assert!(Settings::resolve(&args, &no_env).is_err());
        args.allow_remote_tcp = Some(true);
        assert!(Settings::resolve(&args, &no_env).is_ok());
        args.allow_remote_tcp = None;
        args.allow_unauthenticated_tcp = Some(true);
        assert!(Settings::resolve(&args, &no_env).is_ok());
        // The new name wins over the old one.
        args.allow_remote_tcp = Some(true);
        args.allow_unauthenticated_tcp = Some(false);
        let e = format!("{:#}", Settings::resolve(&args, &no_env).unwrap_err());
        for choice in [
            "--tls-client-ca",
            "--caller-tokens-file",
            "--allow-unauthenticated-tcp",
        ] {
            assert!(e.contains(choice), "{e}");
        }
        args.tcp = Some("[::1]:7777".parse().unwrap());
        args.allow_remote_tcp = None;
        args.allow_unauthenticated_tcp = None;
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
        let args = Options {
            config: Some(path),
            dry_run: Some(true),
            templates: vec![("pt-br".into(), "Flag {otp}".into())],
            ..Default::default()
        };
        let s = Settings::resolve(&args, &no_env).unwrap();
        assert_eq!(s.call.templates.render("42", Some("pt-BR")), "Flag 42");
        assert_eq!(s.call.templates.render("42", Some("nl")), "Bestand 42");
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
        let args = Options {
            config: Some(path),
            deadline_ms: Some(2000),
            ..Default::default()
        };
        let s = Settings::resolve(&args, &no_env).unwrap();
        assert_eq!(s.call.deadline, Duration::from_millis(2000));
        assert_eq!(s.call.templates.render("42", None), "Code 42");
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
        let e = format!("{:#}", file::load::<Options>(&path).unwrap_err());
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
            Options {
                config: Some(typo),
                ..Default::default()
            },
            Options {
                deadline_ms: Some(5),
                ..Default::default()
            },
            Options {
                body_template: Some("no code".into()),
                ..Default::default()
            },
            Options {
                validity_period: Some(0),
                ..Default::default()
            },
            Options {
                twilio_api_url: Some("ftp://x".into()),
                ..Default::default()
            },
            Options {
                max_frame_bytes: Some(1),
                ..Default::default()
            },
            Options {
                proxy: Some("https://proxy.example:3128".into()),
                ..Default::default()
            },
        ];
        for args in cases {
            assert!(Settings::resolve(&args, &with_creds).is_err(), "{args:?}");
        }
    }
}
