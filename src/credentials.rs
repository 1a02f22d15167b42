//! Twilio credentials: where they come from and a type that never prints them.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::validate::is_sid;

/// A secret string. `Debug` and `Display` print a placeholder, so no log line, error chain
/// or panic message can carry it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The one way to read it: call sites are easy to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How requests authenticate. Twilio recommends API keys in production; the URL always
/// carries the account SID either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    AuthToken(Secret),
    ApiKey { key: String, secret: Secret },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub account_sid: String,
    pub auth: Auth,
}

impl Credentials {
    /// The HTTP Basic user name and password.
    pub fn basic(&self) -> (&str, &str) {
        match &self.auth {
            Auth::AuthToken(token) => (&self.account_sid, token.expose()),
            Auth::ApiKey { key, secret } => (key, secret.expose()),
        }
    }

    pub fn describe(&self) -> String {
        match &self.auth {
            Auth::AuthToken(_) => format!("account {} with its auth token", self.account_sid),
            Auth::ApiKey { key, .. } => format!("account {} with API key {key}", self.account_sid),
        }
    }
}

/// The names used for env vars and for files in `$CREDENTIALS_DIRECTORY` alike.
pub const ACCOUNT_SID: &str = "TWILIO_ACCOUNT_SID";
pub const AUTH_TOKEN: &str = "TWILIO_AUTH_TOKEN";
pub const API_KEY: &str = "TWILIO_API_KEY";
pub const API_SECRET: &str = "TWILIO_API_SECRET";

/// Where the config file says each credential lives (values for the non-secret ones).
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialFiles {
    pub account_sid: Option<String>,
    pub account_sid_file: Option<PathBuf>,
    pub auth_token_file: Option<PathBuf>,
    pub api_key: Option<String>,
    pub api_key_file: Option<PathBuf>,
    pub api_secret_file: Option<PathBuf>,
}

/// Where credentials are looked up, first match wins: the environment, then the config
/// file, then systemd's `$CREDENTIALS_DIRECTORY` (`LoadCredential=TWILIO_AUTH_TOKEN:…`).
pub struct Sources<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub files: &'a CredentialFiles,
    pub credentials_directory: Option<PathBuf>,
}

impl Sources<'_> {
    fn lookup(
        &self,
        name: &str,
        value: Option<&String>,
        file: Option<&PathBuf>,
    ) -> Result<Option<String>> {
        if let Some(v) = (self.env)(name).filter(|v| !v.trim().is_empty()) {
            return Ok(Some(v.trim().to_owned()));
        }
        if let Some(v) = value {
            return Ok(Some(v.trim().to_owned()));
        }
        if let Some(path) = file {
            return read_trimmed(path).map(Some);
        }
        if let Some(dir) = &self.credentials_directory {
            let path = dir.join(name);
            if path.exists() {
                return read_trimmed(&path).map(Some);
            }
        }
        Ok(None)
    }

    /// `Ok(None)` when no credential at all is configured.
    pub fn load(&self) -> Result<Option<Credentials>> {
        let f = self.files;
        let account_sid = self.lookup(
            ACCOUNT_SID,
            f.account_sid.as_ref(),
            f.account_sid_file.as_ref(),
        )?;
        let auth_token = self.lookup(AUTH_TOKEN, None, f.auth_token_file.as_ref())?;
        let api_key = self.lookup(API_KEY, f.api_key.as_ref(), f.api_key_file.as_ref())?;
        let api_secret = self.lookup(API_SECRET, None, f.api_secret_file.as_ref())?;

        let Some(account_sid) = account_sid else {
            if auth_token.is_some() || api_key.is_some() || api_secret.is_some() {
                bail!("{ACCOUNT_SID} is missing (the API URL needs the AC… account SID)");
            }
            return Ok(None);
        };
        if !is_sid(&account_sid, "AC") {
            bail!("{ACCOUNT_SID} must be AC followed by 32 hex digits");
        }
        let auth = match (api_key, api_secret, auth_token) {
            (Some(key), Some(secret), _) => {
                if !is_sid(&key, "SK") {
                    bail!("{API_KEY} must be SK followed by 32 hex digits");
                }
                Auth::ApiKey {
                    key,
                    secret: Secret::new(secret),
                }
            }
            (Some(_), None, _) => bail!("{API_KEY} is set but {API_SECRET} is missing"),
            (None, Some(_), _) => bail!("{API_SECRET} is set but {API_KEY} is missing"),
            (None, None, Some(token)) => Auth::AuthToken(Secret::new(token)),
            (None, None, None) => {
                bail!("no Twilio secret: set {AUTH_TOKEN}, or {API_KEY} and {API_SECRET}")
            }
        };
        Ok(Some(Credentials { account_sid, auth }))
    }
}

fn read_trimmed(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read credential file {}", path.display()))?;
    Ok(text.trim().to_owned())
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
            credentials_directory: dir,
        }
        .load()
    }

    #[test]
    fn secrets_never_print() {
        let c = Credentials {
            account_sid: AC.into(),
            auth: Auth::AuthToken(Secret::new("hunter2")),
        };
        assert!(!format!("{c:?} {}", c.describe()).contains("hunter2"));
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
            auth_token_file: Some(dir.path().join("token")),
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
