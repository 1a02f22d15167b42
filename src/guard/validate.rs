//! The context a call's caller sends (sendOTP's fourth argument, confirmOTP's second): advice,
//! never a refusal, read in one pass with the caller token it may carry.

use std::borrow::Cow;

use crate::twilio::Channel;

/// sendOTP's optional fourth argument: who is asking, as the iRule saw it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Context<'a> {
    /// The end user's address (`IP::client_addr`; a `%route-domain` suffix is dropped).
    pub ip: Option<std::net::IpAddr>,
    /// Only ever a rate-limit key (hashed), never logged: not UTF-8, its bytes are replaced.
    pub user: Option<Cow<'a, str>>,
    pub locale: Option<&'a str>,
    /// The channel the caller asked for; absent means the configured one.
    pub channel: Option<Channel>,
    /// What was left out or used in part, by field.
    pub ignored: Ignored,
    /// `token`, for the caller check (`call::callers`) when a tokens file is configured.
    pub token: Token<'a>,
}

/// `context.token` as the caller sent it (the first `token` key). Never shown: its `Debug`
/// says only which kind it is.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// No token key, nil, an empty string, or a context that is not a map.
    #[default]
    Missing,
    /// Another type (a bin included).
    NotText,
    /// A str, as its bytes.
    Text(&'a [u8]),
}

impl std::fmt::Debug for Token<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Token::Missing => "Missing",
            Token::NotText => "NotText",
            Token::Text(_) => "Text(..)",
        })
    }
}

/// The parts of a context that were ignored (or, for `user`, used with replaced bytes).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ignored([bool; CONTEXT_FIELDS.len()]);

/// The `field` label of `otp_sidecar_context_ignored_total`: the four known keys, any other
/// key, and a context that is not a map at all.
pub const CONTEXT_FIELDS: [&str; 6] = ["user", "ip", "locale", "channel", "other", "context"];

impl Ignored {
    fn note(&mut self, field: &'static str, why: &'static str) {
        self.mark(field);
        tracing::debug!(field, "context {field}: {why}");
    }

    /// Notes a value that is safe to show (a locale, a channel), its bad bytes replaced.
    fn note_showing(&mut self, field: &'static str, why: &'static str, value: &[u8]) {
        self.mark(field);
        let value: String = String::from_utf8_lossy(value).chars().take(40).collect();
        tracing::debug!(field, value = ?value, "context {field}: {why}");
    }

    fn mark(&mut self, field: &'static str) {
        if let Some(i) = CONTEXT_FIELDS.iter().position(|f| *f == field) {
            self.0[i] = true;
        }
    }

    /// The fields noted, in [`CONTEXT_FIELDS`] order.
    pub fn fields(&self) -> impl Iterator<Item = &'static str> + '_ {
        CONTEXT_FIELDS
            .iter()
            .zip(self.0)
            .filter_map(|(field, noted)| noted.then_some(*field))
    }
}

/// A context value as sent: text, bytes that are not UTF-8 (a str that is not, or a bin), or
/// another type.
enum Field<'a> {
    Absent,
    Text(&'a str),
    Bytes(&'a [u8]),
    Other,
}

fn field(value: &rmpv::Value) -> Field<'_> {
    let bytes = match value {
        rmpv::Value::Nil => return Field::Absent,
        rmpv::Value::String(s) => s.as_bytes(),
        rmpv::Value::Binary(b) => b,
        _ => return Field::Other,
    };
    match std::str::from_utf8(bytes) {
        _ if bytes.is_empty() => Field::Absent,
        Ok(text) => Field::Text(text),
        Err(_) => Field::Bytes(bytes),
    }
}

/// A map of `ip`, `user`, `locale`, `channel` (strings; nil or empty means absent), or nil;
/// `token` is kept as sent for the caller check.
///
/// Advice only, so it never refuses a call: a value that is not UTF-8 is read with its bad
/// bytes replaced, a locale that is not a language tag, an `ip` that is not an address, an
/// unknown channel, a known key holding another type, other keys (of any type) and a context
/// that is not a map are left out. Each is noted in [`Context::ignored`] and logged at debug
/// (the user never: it is only a rate-limit key).
pub fn context(value: Option<&rmpv::Value>) -> Context<'_> {
    let mut context = Context::default();
    let entries = match value {
        None | Some(rmpv::Value::Nil) => return context,
        Some(rmpv::Value::Map(entries)) => entries,
        Some(_) => {
            context.ignored.note("context", "not a map; ignored");
            return context;
        }
    };
    let ignored = &mut context.ignored;
    let mut token_seen = false;
    for (key, value) in entries {
        let key = match key {
            rmpv::Value::String(s) => s.as_bytes(),
            rmpv::Value::Binary(b) => b,
            _ => {
                ignored.note("other", "a key that is not a string; ignored");
                continue;
            }
        };
        if key == b"token" {
            // Checked by the caller check (call::callers), when a tokens file is configured;
            // otherwise unused. Never logged, never counted.
            if !token_seen {
                token_seen = true;
                context.token = token(value);
            }
            continue;
        }
        let value = field(value);
        match (key, value) {
            (_, Field::Absent) => {}
            (b"ip", Field::Text(text)) => {
                let address = text.split('%').next().unwrap_or_default();
                match address.parse() {
                    Ok(ip) => context.ip = Some(ip),
                    Err(_) => ignored.note(
                        "ip",
                        "not an IP address; ignored (no IP limit for this call)",
                    ),
                }
            }
            (b"ip", _) => ignored.note(
                "ip",
                "not an IP address; ignored (no IP limit for this call)",
            ),
            (b"user", Field::Text(text)) => context.user = Some(Cow::Borrowed(text)),
            (b"user", Field::Bytes(bytes)) => {
                context.user = Some(String::from_utf8_lossy(bytes));
                ignored.note(
                    "user",
                    "not UTF-8; its bad bytes replaced for the user limit",
                );
            }
            (b"user", _) => ignored.note(
                "user",
                "not a string; ignored (no user limit for this call)",
            ),
            (b"locale", Field::Text(text)) if is_locale(text) => context.locale = Some(text),
            (b"locale", Field::Text(text)) => ignored.note_showing(
                "locale",
                "not a language tag; ignored (the default template)",
                text.as_bytes(),
            ),
            (b"locale", Field::Bytes(bytes)) => {
                ignored.note_showing("locale", "not UTF-8; ignored (the default template)", bytes)
            }
            (b"locale", _) => {
                ignored.note("locale", "not a string; ignored (the default template)")
            }
            (b"channel", Field::Text("sms")) => context.channel = Some(Channel::Sms),
            (b"channel", Field::Text("voice" | "call")) => context.channel = Some(Channel::Voice),
            (b"channel", Field::Text(text)) => ignored.note_showing(
                "channel",
                "not sms or voice; ignored (the configured channel)",
                text.as_bytes(),
            ),
            (b"channel", Field::Bytes(bytes)) => ignored.note_showing(
                "channel",
                "not sms or voice; ignored (the configured channel)",
                bytes,
            ),
            (b"channel", _) => {
                ignored.note("channel", "not a string; ignored (the configured channel)")
            }
            _ => ignored.note("other", "a key this version does not know; ignored"),
        }
    }
    context
}

fn token(value: &rmpv::Value) -> Token<'_> {
    match value {
        rmpv::Value::Nil => Token::Missing,
        rmpv::Value::String(s) if s.as_bytes().is_empty() => Token::Missing,
        rmpv::Value::String(s) => Token::Text(s.as_bytes()),
        _ => Token::NotText,
    }
}

/// A language tag as templates take it: `nl`, `pt-BR`, `pt_BR`.
fn is_locale(text: &str) -> bool {
    text.len() <= 35
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_rules() {
        use rmpv::Value;
        let map = |pairs: Vec<(&str, Value)>| {
            Value::Map(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
        };
        assert_eq!(context(None), Context::default());
        assert_eq!(context(Some(&Value::Nil)), Context::default());
        let full = map(vec![
            ("ip", "10.1.2.3%2".into()),
            ("user", "alice@example.com".into()),
            ("locale", "nl-NL".into()),
            ("channel", "sms".into()),
        ]);
        let c = context(Some(&full));
        assert_eq!(c.ip, Some("10.1.2.3".parse().unwrap()));
        assert_eq!(
            (c.user.as_deref(), c.locale, c.channel),
            (Some("alice@example.com"), Some("nl-NL"), Some(Channel::Sms))
        );
        assert_eq!(c.ignored, Ignored::default());
        let voice = map(vec![("channel", "call".into())]);
        assert_eq!(context(Some(&voice)).channel, Some(Channel::Voice));
        let empty = map(vec![("ip", "".into()), ("user", Value::Nil)]);
        assert_eq!(context(Some(&empty)), Context::default());
        assert_eq!(
            context(Some(&map(vec![("ip", "2001:db8::1".into())]))).ip,
            Some("2001:db8::1".parse().unwrap())
        );
        // Keys and values as bin (encoders without a str type) read as their text.
        let bin = Value::Map(vec![(
            Value::Binary(b"user".to_vec()),
            Value::Binary("José".as_bytes().to_vec()),
        )]);
        let c = context(Some(&bin));
        assert_eq!(
            (c.user.as_deref(), c.ignored),
            (Some("José"), Ignored::default())
        );
    }

    #[test]
    fn nothing_in_a_context_refuses_a_call() {
        use rmpv::Value;
        // A str of Latin-1 bytes, as an iRule that keeps each character's low 8 bits sends it.
        let latin1 = || rmpv::decode::read_value(&mut &b"\xa6J\xfcrgen"[..]).unwrap();
        let one = |key: &str, value: Value| Value::Map(vec![(key.into(), value)]);
        // The context, and the fields noted as ignored.
        let cases: Vec<(Value, &[&str])> = vec![
            (Value::from("ip=1.2.3.4"), &["context"]),
            (Value::Array(vec![]), &["context"]),
            (one("ip", "not-an-ip".into()), &["ip"]),
            (one("ip", 5.into()), &["ip"]),
            (one("ip", latin1()), &["ip"]),
            (one("user", 42.into()), &["user"]),
            (one("user", latin1()), &["user"]),
            (one("user", Value::Binary(vec![0xff, 0xfe])), &["user"]),
            (one("locale", "en-US,en;q=0.9".into()), &["locale"]),
            (one("locale", "es-ñ".into()), &["locale"]),
            (one("locale", "en US; drop".into()), &["locale"]),
            (one("locale", latin1()), &["locale"]),
            (one("locale", true.into()), &["locale"]),
            (one("channel", "fax".into()), &["channel"]),
            (one("channel", 1.into()), &["channel"]),
            (one("attempt", 3.into()), &["other"]),
            (one("token", "t0k3n-0123456789abcdef".into()), &[]),
            (one("token", 7.into()), &[]),
            (Value::Map(vec![(5.into(), "x".into())]), &["other"]),
            (
                Value::Map(vec![
                    ("ip".into(), "192.0.2.1".into()),
                    (Value::Nil, Value::Nil),
                    ("later".into(), Value::Map(vec![])),
                    ("channel".into(), "pigeon".into()),
                ]),
                &["channel", "other"],
            ),
        ];
        for (value, fields) in cases {
            let c = context(Some(&value));
            assert_eq!(c.ignored.fields().collect::<Vec<_>>(), fields, "{value}");
            assert_eq!((c.locale, c.channel), (None, None), "{value}");
        }
        // A user that is not UTF-8 is still a user limit's key, its bad bytes replaced.
        let juergen = one("user", latin1());
        let c = context(Some(&juergen));
        assert_eq!(c.user.as_deref(), Some("J\u{fffd}rgen"));
        let mixed = Value::Map(vec![
            ("ip".into(), "bogus".into()),
            ("user".into(), "bob".into()),
            ("locale".into(), "de".into()),
        ]);
        let c = context(Some(&mixed));
        assert_eq!(
            (c.ip, c.user.as_deref(), c.locale),
            (None, Some("bob"), Some("de"))
        );
    }
}
