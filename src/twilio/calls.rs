//! Voice: a phone call that reads the code out, digit by digit, twice — Twilio's Calls API
//! with the TwiML inline, so no webhook has to be reachable from Twilio.

use tokio::time::Instant;

use super::error::Error;
use super::{is_e164, Sender};
use crate::twilio::{Kind, TwilioClient};

pub const DEFAULT_VOICE_TEMPLATE: &str = "Your code is {digits}.";
pub const DEFAULT_VOICE_LANGUAGE: &str = "en-US";
/// The longest call, in seconds: the text twice takes well under a minute.
const TIME_LIMIT_SECS: &str = "60";

/// Twilio codes an SMS can fail with that a call can get past: not a mobile number (21614),
/// no SMS to that region (21408), not reachable by SMS (21612).
const VOICE_CAN_FIX: [u32; 3] = [21614, 21408, 21612];

/// How calls are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceSettings {
    /// The caller ID; without one, the sendOTP sender when it is a number.
    pub from: Option<String>,
    /// `<Say language>`, e.g. en-US, nl-NL.
    pub language: String,
    /// What is said, twice; `{digits}` is the code, one character at a time.
    pub template: String,
    /// Call when Lookup says the number is a landline, or when the SMS fails in a way a
    /// call can get past.
    pub fallback: bool,
}

impl Default for VoiceSettings {
    fn default() -> Self {
        VoiceSettings {
            from: None,
            language: DEFAULT_VOICE_LANGUAGE.into(),
            template: DEFAULT_VOICE_TEMPLATE.into(),
            fallback: false,
        }
    }
}

impl VoiceSettings {
    /// Checks what the configuration gave.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(from) = &self.from {
            if !is_e164(from) {
                anyhow::bail!("voice_from must be an E.164 number, like +14155550100");
            }
        }
        if !self.template.contains("{digits}") {
            anyhow::bail!("voice_template must contain {{digits}}");
        }
        let language_ok = (2..=12).contains(&self.language.len())
            && self
                .language
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !language_ok {
            anyhow::bail!("voice_language must be a language tag like en-US");
        }
        Ok(())
    }

    /// The caller ID for a call the sendOTP `sender` asked for, if there is one.
    pub fn caller_id<'a>(&'a self, sender: &'a Sender) -> Option<&'a str> {
        match (&self.from, sender) {
            (Some(from), _) => Some(from),
            (None, Sender::From(number)) if is_e164(number) => Some(number),
            _ => None,
        }
    }

    /// Whether a call can be placed for this sender at all.
    pub fn can_call(&self, sender: &Sender) -> bool {
        self.caller_id(sender).is_some()
    }

    /// The TwiML: the text, a pause, the text again.
    pub fn twiml(&self, code: &str) -> String {
        let text = xml_escape(&self.template.replace("{digits}", &spell(code)));
        let language = xml_escape(&self.language);
        format!(
            "<Response><Say language=\"{language}\">{text}</Say><Pause length=\"1\"/>\
             <Say language=\"{language}\">{text}</Say></Response>"
        )
    }
}

/// One call to place: who is called, from which number, and what is said (TwiML).
#[derive(Debug)]
pub struct VoiceCall<'a> {
    pub to: &'a str,
    pub from: &'a str,
    pub twiml: &'a str,
}

impl TwilioClient {
    /// Places the call; returns its `CA…` SID.
    pub async fn create_call(
        &self,
        call: &VoiceCall<'_>,
        deadline: Instant,
    ) -> Result<String, Error> {
        let form = form_urlencoded::Serializer::new(String::with_capacity(320))
            .append_pair("To", call.to)
            .append_pair("From", call.from)
            .append_pair("Twiml", call.twiml)
            .append_pair("TimeLimit", TIME_LIMIT_SECS)
            .finish();
        Ok(self
            .post(&self.calls_uri, form, Kind::Call, deadline)
            .await?
            .sid)
    }
}

/// Whether an SMS that failed this way may reach the user by a call instead. Twilio
/// refused the SMS, so nothing was sent.
pub fn can_fix(error: &Error) -> bool {
    matches!(error, Error::Rejected { code: Some(code), .. } if VOICE_CAN_FIX.contains(code))
}

/// `918273` → `9, 1, 8, 2, 7, 3`: one character at a time, with a pause between.
fn spell(code: &str) -> String {
    let chars: Vec<String> = code
        .chars()
        .map(|c| c.to_ascii_uppercase().to_string())
        .collect();
    chars.join(", ")
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_is_read_digit_by_digit_twice_in_the_language() {
        let settings = VoiceSettings {
            language: "nl-NL".into(),
            template: "Uw code is {digits} <&>".into(),
            ..VoiceSettings::default()
        };
        assert_eq!(
            settings.twiml("9a1"),
            "<Response><Say language=\"nl-NL\">Uw code is 9, A, 1 &lt;&amp;&gt;</Say>\
             <Pause length=\"1\"/><Say language=\"nl-NL\">Uw code is 9, A, 1 &lt;&amp;&gt;</Say>\
             </Response>"
        );
    }

    #[test]
    fn the_caller_id_is_voice_from_or_a_numeric_sender() {
        let default = VoiceSettings::default();
        let number = Sender::From("+14155550100".into());
        let alpha = Sender::From("ACME".into());
        assert_eq!(default.caller_id(&number), Some("+14155550100"));
        assert_eq!(default.caller_id(&alpha), None);
        let configured = VoiceSettings {
            from: Some("+3197010000000".into()),
            ..VoiceSettings::default()
        };
        assert_eq!(configured.caller_id(&alpha), Some("+3197010000000"));
    }

    #[test]
    fn settings_are_checked() {
        let ok = VoiceSettings::default();
        assert!(ok.validate().is_ok());
        for bad in [
            VoiceSettings {
                from: Some("ACME".into()),
                ..VoiceSettings::default()
            },
            VoiceSettings {
                template: "no code".into(),
                ..VoiceSettings::default()
            },
            VoiceSettings {
                language: "en US\"".into(),
                ..VoiceSettings::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_sms_failures_a_call_can_get_past_fall_back() {
        let twilio = |code| Error::Rejected {
            code: Some(code),
            message: String::new(),
            status: 400,
        };
        assert!(can_fix(&twilio(21614)));
        assert!(!can_fix(&twilio(21211)));
        assert!(!can_fix(&Error::Unreachable("x".into())));
    }
}
