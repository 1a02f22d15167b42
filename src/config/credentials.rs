//! Where the Twilio credentials come from: the environment, files the config file names, or
//! systemd's `$CREDENTIALS_DIRECTORY`; every error names the source, never the value.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use toml::Spanned;

use super::file::ConfigSource;
use crate::twilio::credentials::{Auth, Credentials, Secret};
use crate::twilio::is_sid;

/// The names used for env vars and for files in `$CREDENTIALS_DIRECTORY` alike.
pub const ACCOUNT_SID: &str = "TWILIO_ACCOUNT_SID";
pub const AUTH_TOKEN: &str = "TWILIO_AUTH_TOKEN";
pub const API_KEY: &str = "TWILIO_API_KEY";
pub const API_SECRET: &str = "TWILIO_API_SECRET";
/// The shared state store's password and the secret its keys are hashed with.
pub const STATE_PASSWORD: &str = "OTP_SIDECAR_STATE_PASSWORD";
pub const STATE_KEY: &str = "OTP_SIDECAR_STATE_KEY";
/// The secret alert webhook requests are signed with.
pub const ALERT_SECRET: &str = "OTP_SIDECAR_ALERT_SECRET";
/// The key issueOTP's codes are HMACed with.
pub const CODES_KEY: &str = "OTP_SIDECAR_CODES_KEY";

/// Where the config file says each credential lives (values for the non-secret ones). The
/// spans name a key's line in errors.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialFiles {
    pub account_sid: Option<Spanned<String>>,
    pub account_sid_file: Option<Spanned<PathBuf>>,
    pub auth_token_file: Option<Spanned<PathBuf>>,
    pub api_key: Option<Spanned<String>>,
    pub api_key_file: Option<Spanned<PathBuf>>,
    pub api_secret_file: Option<Spanned<PathBuf>>,
    pub state_password_file: Option<Spanned<PathBuf>>,
    pub state_key_file: Option<Spanned<PathBuf>>,
    pub alert_secret_file: Option<Spanned<PathBuf>>,
    pub codes_key_file: Option<Spanned<PathBuf>>,
}

/// Where credentials are looked up, first match wins: the environment, then the config
/// file, then systemd's `$CREDENTIALS_DIRECTORY` (`LoadCredential=TWILIO_AUTH_TOKEN:…`).
pub struct Sources<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub files: &'a CredentialFiles,
    /// The config file `files` came from, to name a key's line in errors.
    pub config: Option<&'a ConfigSource>,
    pub credentials_directory: Option<PathBuf>,
}

/// A credential and where it came from.
struct Found {
    value: String,
    /// `TWILIO_AUTH_TOKEN (env)`, `auth_token_file in /etc/x.toml line 12`,
    /// `$CREDENTIALS_DIRECTORY/TWILIO_AUTH_TOKEN`: never the value.
    from: String,
}

impl Sources<'_> {
    /// `key in FILE line N`, for a key of the config file.
    fn file_key(&self, key: &str, span: std::ops::Range<usize>) -> String {
        match self.config {
            Some(config) => format!(
                "{key} in {} line {}",
                config.path.display(),
                config.line_of(span.start)
            ),
            None => format!("{key} in the config file"),
        }
    }

    fn lookup(
        &self,
        name: &str,
        (value_key, value): (&str, Option<&Spanned<String>>),
        (file_key, file): (&str, Option<&Spanned<PathBuf>>),
    ) -> Result<Option<Found>> {
        if let Some(v) = (self.env)(name).filter(|v| !v.trim().is_empty()) {
            return Ok(Some(Found {
                value: v.trim().to_owned(),
                from: format!("{name} (env)"),
            }));
        }
        if let Some(v) = value {
            let from = self.file_key(value_key, v.span());
            return non_empty(v.get_ref().trim().to_owned(), from).map(Some);
        }
        if let Some(path) = file {
            let from = self.file_key(file_key, path.span());
            return read_trimmed(path.get_ref(), from).map(Some);
        }
        if let Some(dir) = &self.credentials_directory {
            let path = dir.join(name);
            if path.exists() {
                return read_trimmed(&path, format!("$CREDENTIALS_DIRECTORY/{name}")).map(Some);
            }
        }
        Ok(None)
    }

    /// issueOTP's key (`None` when not configured), from the same places as the others: at
    /// least 16 characters, as the state key.
    pub fn codes_key(&self) -> Result<Option<Secret>> {
        let file = ("codes_key_file", self.files.codes_key_file.as_ref());
        self.long_secret(CODES_KEY, file, "the codes key")
    }

    /// The state store's password and key secret (each `None` when not configured), from the
    /// same places as the Twilio secrets.
    pub fn state_secrets(&self) -> Result<(Option<Secret>, Option<Secret>)> {
        let f = self.files;
        let password = self.lookup(
            STATE_PASSWORD,
            ("", None),
            ("state_password_file", f.state_password_file.as_ref()),
        )?;
        let file = ("state_key_file", f.state_key_file.as_ref());
        let key = self.long_secret(STATE_KEY, file, "the state key")?;
        Ok((password.map(|f| Secret::new(f.value)), key))
    }

    /// The alert webhook's signing secret, when configured (at least 16 characters).
    pub fn alert_secret(&self) -> Result<Option<Secret>> {
        let file = ("alert_secret_file", self.files.alert_secret_file.as_ref());
        self.long_secret(ALERT_SECRET, file, "the alert secret")
    }

    /// A key or signing secret (`None` when not configured): refused under 16 characters,
    /// naming where it came from (never what it is).
    fn long_secret(
        &self,
        name: &str,
        file: (&str, Option<&Spanned<PathBuf>>),
        what: &str,
    ) -> Result<Option<Secret>> {
        let found = self.lookup(name, ("", None), file)?;
        if let Some(found) = &found {
            if found.value.len() < 16 {
                bail!(
                    "{what} from {} is shorter than 16 characters; make one with \
                     `openssl rand -hex 32`",
                    found.from
                );
            }
        }
        Ok(found.map(|f| Secret::new(f.value)))
    }

    /// `Ok(None)` when no credential at all is configured. Every error names the source
    /// (env var, config key and line, or systemd credential) it is about.
    pub fn load(&self) -> Result<Option<Credentials>> {
        let f = self.files;
        let account_sid = self.lookup(
            ACCOUNT_SID,
            ("account_sid", f.account_sid.as_ref()),
            ("account_sid_file", f.account_sid_file.as_ref()),
        )?;
        let auth_token = self.lookup(
            AUTH_TOKEN,
            ("", None),
            ("auth_token_file", f.auth_token_file.as_ref()),
        )?;
        let api_key = self.lookup(
            API_KEY,
            ("api_key", f.api_key.as_ref()),
            ("api_key_file", f.api_key_file.as_ref()),
        )?;
        let api_secret = self.lookup(
            API_SECRET,
            ("", None),
            ("api_secret_file", f.api_secret_file.as_ref()),
        )?;

        let Some(account_sid) = account_sid else {
            if let Some(other) = auth_token.or(api_key).or(api_secret) {
                bail!(
                    "{ACCOUNT_SID} is missing (the API URL needs the AC… account SID), yet {} \
                     is set",
                    other.from
                );
            }
            return Ok(None);
        };
        if !is_sid(&account_sid.value, "AC") {
            bail!(
                "the account SID from {} must be AC followed by 32 hex digits",
                account_sid.from
            );
        }
        let (auth, secret_from) = match (api_key, api_secret, auth_token) {
            (Some(key), Some(secret), _) => {
                if !is_sid(&key.value, "SK") {
                    bail!(
                        "the API key from {} must be SK followed by 32 hex digits",
                        key.from
                    );
                }
                let from = format!("{}, {}", key.from, secret.from);
                let auth = Auth::ApiKey {
                    key: key.value,
                    secret: Secret::new(secret.value),
                };
                (auth, from)
            }
            (Some(key), None, _) => {
                bail!(
                    "the API key from {} is set but {API_SECRET} is missing",
                    key.from
                )
            }
            (None, Some(secret), _) => bail!(
                "the API secret from {} is set but {API_KEY} is missing",
                secret.from
            ),
            (None, None, Some(token)) => (Auth::AuthToken(Secret::new(token.value)), token.from),
            (None, None, None) => bail!(
                "no Twilio secret for the account SID from {}: set {AUTH_TOKEN}, or {API_KEY} \
                 and {API_SECRET}",
                account_sid.from
            ),
        };
        Ok(Some(Credentials {
            account_sid: account_sid.value,
            auth,
            origin: format!("{}, {secret_from}", account_sid.from),
        }))
    }
}

/// A credential value, refused when empty (an empty file is a mistake, never a secret).
fn non_empty(value: String, from: String) -> Result<Found> {
    if value.is_empty() {
        bail!("{from} is empty");
    }
    Ok(Found { value, from })
}

/// Reads a credential file. The path is shown only when it looks like one (holds a `/`): a
/// secret pasted as the value of `auth_token_file` must not be printed back.
fn read_trimmed(path: &Path, from: String) -> Result<Found> {
    let shown = path.to_str().filter(|p| p.contains('/'));
    let from = match shown {
        Some(p) => format!("{from} ({p})"),
        None => from,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => non_empty(text.trim().to_owned(), from),
        Err(e) => {
            let hint = if shown.is_none() && !path.as_os_str().is_empty() {
                "; the value is not shown, as it does not look like a path (an absolute path \
                 is expected)"
            } else {
                ""
            };
            bail!("cannot read {from}: {}{hint}", io_reason(&e))
        }
    }
}

/// An I/O error's reason without the "(os error 2)" suffix.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const AC: &str = "AC0123456789abcdef0123456789abcdef";
    const SK: &str = "SK0123456789abcdef0123456789abcdef";

    fn load(
        env: &[(&str, &str)],
        files: &CredentialFiles,
        dir: Option<PathBuf>,
    ) -> Result<Option<Credentials>> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = move |k: &str| env.get(k).cloned();
        Sources {
            env: &get,
            files,
            config: None,
            credentials_directory: dir,
        }
        .load()
    }

    #[test]
    fn env_auth_token_and_api_key() {
        let none = CredentialFiles::default();
        let c = load(&[(ACCOUNT_SID, AC), (AUTH_TOKEN, "tok")], &none, None)
            .unwrap()
            .unwrap();
        assert_eq!(c.basic(), (AC, "tok"));
        let c = load(
            &[
                (ACCOUNT_SID, AC),
                (AUTH_TOKEN, "tok"),
                (API_KEY, SK),
                (API_SECRET, "sec"),
            ],
            &none,
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            c.basic(),
            (SK, "sec"),
            "an API key wins over the auth token"
        );
        assert!(load(&[], &none, None).unwrap().is_none());
    }

    #[test]
    fn refuses_half_configurations() {
        let none = CredentialFiles::default();
        assert!(load(&[(AUTH_TOKEN, "tok")], &none, None).is_err());
        assert!(load(&[(ACCOUNT_SID, AC)], &none, None).is_err());
        assert!(load(&[(ACCOUNT_SID, AC), (API_KEY, SK)], &none, None).is_err());
        assert!(load(&[(ACCOUNT_SID, "AC12"), (AUTH_TOKEN, "t")], &none, None).is_err());
    }

    #[test]
    fn files_and_credentials_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "from-file\n").unwrap();
        std::fs::write(dir.path().join(ACCOUNT_SID), format!("{AC}\n")).unwrap();
        std::fs::write(dir.path().join(AUTH_TOKEN), "from-credstore\n").unwrap();
        let files = CredentialFiles {
            auth_token_file: Some(Spanned::new(0..0, dir.path().join("token"))),
            ..Default::default()
        };
        let c = load(&[], &files, Some(dir.path().into())).unwrap().unwrap();
        assert_eq!(c.basic(), (AC, "from-file"));
        let c = load(&[], &CredentialFiles::default(), Some(dir.path().into()))
            .unwrap()
            .unwrap();
        assert_eq!(c.basic(), (AC, "from-credstore"));
    }
}
