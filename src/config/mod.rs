//! Configuration: one [`Options`] type (flags, env vars and the TOML file), layered and checked,
//! then composed into per-part settings — each part of the daemon gets only its own struct.
//!
//! Precedence, highest first: command-line flag, `OTP_SIDECAR_*` env var, config file, default.

mod backend;
mod call;
mod checks;
mod codes;
mod credentials;
mod delivery;
mod exposure;
mod failover;
mod file;
mod fraud_options;
mod guard;
mod layers;
mod listener;
mod options;
mod os_path;
mod pumping;
mod report;
mod server;
mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

pub use checks::{parse_bool, redact_url};
pub use failover::ProviderSettings;
pub use options::{Options, DEFAULT_UNIX};
pub use report::report;

pub use backend::BackendSettings;

use crate::logging::LogFormat;
use crate::server::Limits;
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
    /// Twilio, Verify, failover and the credentials: what the backend is built from.
    pub backend: BackendSettings,
    /// The shared state store; `None`: in this process's memory.
    pub state: Option<crate::state::StoreSettings>,
    /// Delivery status and the voice follow-up.
    pub delivery: crate::delivery::Settings,
    /// Where alerts go.
    pub alerts: crate::alerts::Settings,
    /// issueOTP / checkOTP's codes.
    pub codes: crate::codes::Settings,
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
        let codes = codes::settings(&o, &secrets, state.as_ref())?;
        let guard = guard::settings(&o)?;
        let auth = listener::resolve(&o, &mut warnings)?;
        let call = call::settings(&o, auth.callers, &mut warnings)?;
        if let Some(store) = &state {
            if store.timeout * 4 > call.deadline {
                warnings.push(format!(
                    "state_timeout_ms {} is over a quarter of deadline_ms {}: a slow store \
                     leaves little of the deadline to Twilio",
                    store.timeout.as_millis(),
                    call.deadline.as_millis()
                ));
            }
        }
        let limits = server::limits(&o)?;
        let metrics = server::metrics(&o)?;
        let alerts = delivery::alerts(&o, &secrets)?;
        let sends_messages = !dry_run && o.verify_service_sid.is_none();
        let delivery = delivery::settings(&o, credentials.as_ref(), sends_messages, &mut warnings)?;
        let backend = backend::resolve(&o, source.as_ref(), credentials, call.deadline, dry_run)?;
        Ok(Settings {
            unix: given(o.unix, "unix")?,
            unix_group: listener::unix_group(o.unix_group.as_deref())?,
            tcp: o.tcp,
            tls: auth.tls,
            metrics,
            threads: given(o.threads, "threads")?,
            log_format: given(o.log_format, "log_format")?,
            keep_warm: secs_or_off(given(o.keep_warm_secs, "keep_warm_secs")?),
            dry_run,
            max_frame_bytes: given(o.max_frame_bytes, "max_frame_bytes")?,
            limits,
            call,
            guard,
            backend,
            state,
            delivery,
            alerts,
            codes,
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
        assert_eq!(s.backend.twilio.api_url.as_str(), "https://api.twilio.com/");
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
            .backend
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
        assert_eq!(s.backend.credentials.unwrap().basic(), (AC, "secret"));
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
    fn a_mistyped_top_level_key_is_named_by_its_own_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "deadline_ms = 1000\n\n  dedline = 5\n[templates]\n").unwrap();
        let e = format!("{:#}", file::load::<Options>(&path).unwrap_err());
        assert!(
            e.contains("line 3, column 3, key dedline: unknown field `dedline`"),
            "{e}"
        );
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
