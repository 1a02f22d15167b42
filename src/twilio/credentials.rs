//! Twilio credentials, in types that never print the secret. Where they come from is the
//! configuration's business (`config::credentials`).

use std::fmt;

/// `ACfe…ce`: enough of a SID to tell which, in a report, a metric label or the status page.
pub fn short_sid(sid: &str) -> String {
    match (sid.get(..4), sid.get(sid.len().saturating_sub(2)..)) {
        (Some(head), Some(tail)) if sid.len() > 6 => format!("{head}…{tail}"),
        _ => sid.to_owned(),
    }
}

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
    /// Where they came from, e.g. `TWILIO_ACCOUNT_SID (env), $CREDENTIALS_DIRECTORY/TWILIO_AUTH_TOKEN`.
    pub origin: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let c = Credentials {
            account_sid: "AC0123456789abcdef0123456789abcdef".into(),
            auth: Auth::AuthToken(Secret::new("hunter2")),
            origin: String::new(),
        };
        assert!(!format!("{c:?} {}", c.describe()).contains("hunter2"));
    }
}
