//! Checks every argument before anything leaves the box.

use crate::error::CallError;

/// Where Twilio should send from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// An E.164 number or an alphanumeric sender ID: Twilio's `From`.
    From(String),
    /// A Messaging Service (`MG…`): Twilio's `MessagingServiceSid`.
    MessagingService(String),
}

/// 4–12 ASCII letters or digits: what APM's OTP generator and most policies produce.
pub fn otp(otp: &str) -> Result<&str, CallError> {
    let ok = (4..=12).contains(&otp.len()) && otp.bytes().all(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(otp)
    } else {
        // Never echo the OTP back, not even a bad one: it lands in the policy's session log.
        Err(CallError::BadRequest(
            "otp must be 4 to 12 letters or digits".into(),
        ))
    }
}

/// E.164: `+`, then 1 to 15 digits, the first not 0.
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (1..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

pub fn phone(phone: &str) -> Result<&str, CallError> {
    if is_e164(phone) {
        Ok(phone)
    } else {
        Err(CallError::InvalidPhone(
            "phone must be E.164, like +14155550100".into(),
        ))
    }
}

/// A Twilio SID: a two-letter `prefix` (`AC`, `SK`, `MG`, `SM`…) and 32 hex digits.
pub fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34
        && prefix.len() == 2
        && s.starts_with(prefix)
        && s.bytes().skip(2).all(|b| b.is_ascii_hexdigit())
}

/// Twilio's alphanumeric sender ID: up to 11 of A–Z, a–z, 0–9 and space, with a letter.
fn is_alphanumeric_sender_id(s: &str) -> bool {
    (1..=11).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
        && s.bytes().any(|b| b.is_ascii_alphabetic())
        && s.trim() == s
}

pub fn sender(sender: &str) -> Result<Sender, CallError> {
    if is_sid(sender, "MG") {
        Ok(Sender::MessagingService(sender.to_owned()))
    } else if is_e164(sender) || is_alphanumeric_sender_id(sender) {
        Ok(Sender::From(sender.to_owned()))
    } else {
        Err(CallError::BadRequest(
            "sender must be an E.164 number, an alphanumeric sender ID of up to 11 characters, \
             or a Messaging Service SID (MG…)"
                .into(),
        ))
    }
}

/// How the code reaches the user.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    #[default]
    Sms,
    /// A phone call that reads the code out.
    Voice,
}

impl Channel {
    pub fn name(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Voice => "voice",
        }
    }

    /// Verify's name for it.
    pub fn verify_name(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Voice => "call",
        }
    }
}

/// sendOTP's optional fourth argument: who is asking, as the iRule saw it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Context<'a> {
    /// The end user's address (`IP::client_addr`; a `%route-domain` suffix is dropped).
    pub ip: Option<std::net::IpAddr>,
    pub user: Option<&'a str>,
    pub locale: Option<&'a str>,
    /// The channel the caller asked for; absent means the configured one.
    pub channel: Option<Channel>,
}

/// A map of `ip`, `user`, `locale`, `channel` (strings; nil or empty means absent; other
/// keys are left for later versions), or nil.
pub fn context(value: Option<&rmpv::Value>) -> Result<Context<'_>, CallError> {
    let bad = |what: &str| Err(CallError::BadRequest(format!("context {what}")));
    let entries = match value {
        None | Some(rmpv::Value::Nil) => return Ok(Context::default()),
        Some(rmpv::Value::Map(entries)) => entries,
        Some(_) => return bad("must be a map of ip, user, locale and channel"),
    };
    let mut context = Context::default();
    for (key, value) in entries {
        let Some(key) = key.as_str() else {
            return bad("keys must be strings");
        };
        let text = match value {
            rmpv::Value::Nil => continue,
            rmpv::Value::String(s) => match s.as_str() {
                Some(t) if !t.is_empty() => t,
                Some(_) => continue,
                None => return bad("values must be UTF-8"),
            },
            _ => return bad("values must be strings"),
        };
        match key {
            "ip" => {
                let address = text.split('%').next().unwrap_or_default();
                match address.parse() {
                    Ok(ip) => context.ip = Some(ip),
                    Err(_) => return bad("ip is not an IP address"),
                }
            }
            "user" if text.chars().count() <= 256 && !text.chars().any(char::is_control) => {
                context.user = Some(text)
            }
            "user" => return bad("user must be at most 256 printable characters"),
            "locale"
                if text.len() <= 35
                    && text
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                context.locale = Some(text)
            }
            "locale" => return bad("locale must be a language tag like en-US"),
            "channel" => {
                context.channel = Some(match text {
                    "sms" => Channel::Sms,
                    "voice" | "call" => Channel::Voice,
                    _ => return bad("channel must be sms or voice"),
                })
            }
            _ => {}
        }
    }
    Ok(context)
}

/// A phone number fit for a log line: `+31612345678` → `+3161****5678`.
pub fn mask_phone(phone: &str) -> String {
    let count = phone.chars().count();
    let (head, tail) = if count >= 10 { (5, 4) } else { (3, 2) };
    if count <= head + tail {
        return "****".into();
    }
    // Byte offsets of the kept head and tail (a char boundary even for non-ASCII input).
    let at = |n: usize| phone.char_indices().nth(n).map_or(phone.len(), |(i, _)| i);
    let (head_end, tail_start) = (at(head), at(count - tail));
    let mut masked = String::with_capacity(head_end + 4 + phone.len() - tail_start);
    masked.push_str(&phone[..head_end]);
    masked.push_str("****");
    masked.push_str(&phone[tail_start..]);
    masked
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
        assert_eq!(context(None).unwrap(), Context::default());
        assert_eq!(context(Some(&Value::Nil)).unwrap(), Context::default());
        let full = map(vec![
            ("ip", "10.1.2.3%2".into()),
            ("user", "alice@example.com".into()),
            ("locale", "nl-NL".into()),
            ("channel", "sms".into()),
        ]);
        let c = context(Some(&full)).unwrap();
        assert_eq!(c.ip, Some("10.1.2.3".parse().unwrap()));
        assert_eq!(
            (c.user, c.locale, c.channel),
            (Some("alice@example.com"), Some("nl-NL"), Some(Channel::Sms))
        );
        let voice = map(vec![("channel", "call".into()), ("later", "x".into())]);
        assert_eq!(context(Some(&voice)).unwrap().channel, Some(Channel::Voice));
        let empty = map(vec![("ip", "".into()), ("user", Value::Nil)]);
        assert_eq!(context(Some(&empty)).unwrap(), Context::default());
        assert_eq!(
            context(Some(&map(vec![("ip", "2001:db8::1".into())])))
                .unwrap()
                .ip,
            Some("2001:db8::1".parse().unwrap())
        );
        for bad in [
            Value::from("ip=1.2.3.4"),
            map(vec![("ip", "not-an-ip".into())]),
            map(vec![("ip", 7.into())]),
            map(vec![("user", "a\nb".into())]),
            map(vec![("locale", "en US; drop".into())]),
            map(vec![("channel", "fax".into())]),
            Value::Map(vec![(1.into(), "x".into())]),
        ] {
            assert!(context(Some(&bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn otp_rules() {
        for good in ["1234", "123456", "ABCdef123456"] {
            assert!(otp(good).is_ok(), "{good}");
        }
        for bad in ["123", "1234567890123", "12 34", "12-34", "١٢٣٤", ""] {
            assert!(otp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn e164_rules() {
        for good in ["+1", "+31612345678", "+123456789012345"] {
            assert!(is_e164(good), "{good}");
        }
        for bad in [
            "31612345678",
            "+0612345678",
            "+1234567890123456",
            "+",
            "+31 6 1234",
            "+3161234567a",
            "++3161234567",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
        assert_eq!(phone("0612").unwrap_err().reason(), "invalid_phone");
    }

    #[test]
    fn sender_kinds() {
        assert_eq!(
            sender("+14155550100"),
            Ok(Sender::From("+14155550100".into()))
        );
        assert_eq!(sender("ACME Bank"), Ok(Sender::From("ACME Bank".into())));
        let mg = format!("MG{}", "a".repeat(32));
        assert_eq!(sender(&mg), Ok(Sender::MessagingService(mg.clone())));
        let not_hex_mg = format!("MG{}", "z".repeat(32));
        for bad in [
            "",
            "12345",
            "ACME Bank Ltd",
            "ACME-Bank",
            " ACME",
            &not_hex_mg,
            "+0123",
        ] {
            assert!(sender(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn masks_phones() {
        assert_eq!(mask_phone("+31612345678"), "+3161****5678");
        assert_eq!(mask_phone("+1234567"), "+12****67");
        assert_eq!(mask_phone("+12"), "****");
        // Not ASCII (never valid E.164, but the mask must not split a character).
        assert_eq!(mask_phone("+٣١٦١٢٣٤٥٦٧٨"), "+٣١٦١****٥٦٧٨");
    }
}
