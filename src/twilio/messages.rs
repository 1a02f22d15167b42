//! Programmable Messaging: who a message is from, and sending one SMS.

use hyper::{Method, Uri};
use tokio::time::Instant;

use super::fraud::is_fraud_block;
use super::rest::{rejected, Kind};
use super::{is_e164, is_sid, Error, TwilioClient};

/// One SMS to send.
#[derive(Debug)]
pub struct Sms<'a> {
    pub to: &'a str,
    pub sender: &'a Sender,
    pub body: &'a str,
    /// Where Twilio posts the message's status changes (`StatusCallback`), when set.
    pub status_callback: Option<&'a str>,
}

impl TwilioClient {
    /// Sends one SMS and returns its `SM…` SID. Retries stay inside `deadline`; the caller
    /// also bounds the whole call by it.
    pub async fn create_message(&self, sms: &Sms<'_>, deadline: Instant) -> Result<String, Error> {
        let (sender_field, sender) = match sms.sender {
            Sender::From(from) => ("From", from.as_str()),
            Sender::MessagingService(sid) => ("MessagingServiceSid", sid.as_str()),
        };
        // The serializer is not Send: finish it before the await.
        let form = {
            let mut form = form_urlencoded::Serializer::new(String::with_capacity(160));
            // Feedback (on confirmOTP) feeds Twilio's conversion insights; it costs nothing.
            form.append_pair("To", sms.to)
                .append_pair(sender_field, sender)
                .append_pair("Body", sms.body)
                .append_pair("ProvideFeedback", "true");
            if let Some(v) = &self.validity_period {
                form.append_pair("ValidityPeriod", v);
            }
            form.append_pair("RiskCheck", self.risk_check);
            if let Some(url) = sms.status_callback {
                form.append_pair("StatusCallback", url);
            }
            form.finish()
        };
        let message = self
            .post(&self.messages_uri, form, Kind::Message, deadline)
            .await?;
        // Made, but failed at once by SMS Pumping Protection: it will never arrive, and the
        // caller must not be told it was sent.
        if let Some(code) = message.error_code.filter(|c| is_fraud_block(Some(*c))) {
            tracing::info!(sid = %message.sid, code, "Twilio blocked the message as SMS pumping");
            return Err(Error::Rejected {
                code: Some(code),
                status: 201,
                message: "blocked by SMS Pumping Protection".into(),
            });
        }
        Ok(message.sid)
    }
}

impl TwilioClient {
    /// Message Feedback: the code in message `sid` was confirmed (`Outcome=confirmed`). One
    /// attempt: a feedback lost is a statistic lost, never a second SMS.
    pub async fn message_feedback(&self, sid: &str, deadline: Instant) -> Result<(), Error> {
        if !is_sid(sid, "SM") {
            return Err(Error::Unmade("not a message SID".into()));
        }
        let base = self.messages_uri.to_string();
        let base = base.strip_suffix(".json").unwrap_or(&base);
        let uri = Uri::try_from(format!("{base}/{sid}/Feedback.json"))
            .map_err(|e| Error::Unmade(e.to_string()))?;
        let form = "Outcome=confirmed".to_owned();
        let answer = self
            .request(Method::POST, &uri, Some(form), deadline)
            .await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(rejected(answer.status, &answer.body))
        }
    }
}

/// A message's state as Twilio reports it (`GET …/Messages/{SID}.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageState {
    /// Twilio's status (`queued`, `sent`, `delivered`, `undelivered`…), as it said it.
    pub status: String,
    /// The error code of a message that failed (30003…), when Twilio named one.
    pub error_code: Option<u32>,
}

#[derive(serde::Deserialize)]
struct Fetched {
    status: Option<String>,
    /// Twilio sends a number, or null; some edges send it as a string.
    error_code: Option<serde_json::Value>,
}

impl TwilioClient {
    /// Fetches the state of the message `sid`, when the request budget has room to spare
    /// (sends come first): `Ok(None)` when it has none now. A background request: no
    /// retries, bounded by `timeout`.
    pub async fn fetch_message(
        &self,
        sid: &str,
        timeout: std::time::Duration,
    ) -> Result<Option<MessageState>, Error> {
        if !is_sid(sid, "SM") {
            return Err(Error::Unmade("not a message SID".into()));
        }
        // `…/Messages.json` → `…/Messages/{sid}.json`; the SID is 34 safe characters.
        let base = self.messages_uri.to_string();
        let uri = format!("{}/{sid}.json", base.trim_end_matches(".json"));
        let uri = hyper::Uri::try_from(uri).map_err(|e| Error::Unmade(e.to_string()))?;
        let fetched = tokio::time::timeout(timeout, self.request_spare(hyper::Method::GET, &uri))
            .await
            .map_err(|_| Error::Timeout(timeout))??;
        let Some(answer) = fetched else {
            return Ok(None);
        };
        if !answer.status.is_success() {
            return Err(super::rest::rejected(answer.status, &answer.body));
        }
        message_state(&answer.body).map(Some)
    }
}

/// The status and error code of a fetched message (never anything else of the answer,
/// which holds the number and the text).
fn message_state(body: &[u8]) -> Result<MessageState, Error> {
    let fetched: Fetched = serde_json::from_slice(body)
        .map_err(|_| Error::Unexpected("the message answer is not a JSON object".into()))?;
    let status = fetched
        .status
        .filter(|s| {
            (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
        .ok_or_else(|| Error::Unexpected("the message answer has no status".into()))?;
    let error_code = match fetched.error_code {
        Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    Ok(MessageState { status, error_code })
}

/// Where Twilio should send from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// An E.164 number or an alphanumeric sender ID: Twilio's `From`.
    From(String),
    /// A Messaging Service (`MG…`): Twilio's `MessagingServiceSid`.
    MessagingService(String),
}

/// Twilio's alphanumeric sender ID: up to 11 of A–Z, a–z, 0–9 and space, with a letter.
fn is_alphanumeric_sender_id(s: &str) -> bool {
    (1..=11).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
        && s.bytes().any(|b| b.is_ascii_alphabetic())
        && s.trim() == s
}

/// What a sender that is none of the forms below is told.
pub const NOT_A_SENDER: &str = "sender must be an E.164 number, an alphanumeric sender ID of up \
                                to 11 characters, or a Messaging Service SID (MG…)";

/// The sender as Twilio takes it: a Messaging Service SID, an E.164 number or an alphanumeric
/// sender ID; else [`NOT_A_SENDER`].
pub fn sender(sender: &str) -> Result<Sender, &'static str> {
    if is_sid(sender, "MG") {
        Ok(Sender::MessagingService(sender.to_owned()))
    } else if is_e164(sender) || is_alphanumeric_sender_id(sender) {
        Ok(Sender::From(sender.to_owned()))
    } else {
        Err(NOT_A_SENDER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetched_message_gives_its_status_and_code_only() {
        let state = |body: &str| message_state(body.as_bytes());
        assert_eq!(
            state(r#"{"status":"undelivered","error_code":30003,"to":"+31612345678"}"#),
            Ok(MessageState {
                status: "undelivered".into(),
                error_code: Some(30003)
            })
        );
        assert_eq!(
            state(r#"{"status":"failed","error_code":"30005"}"#).map(|s| s.error_code),
            Ok(Some(30005))
        );
        assert_eq!(
            state(r#"{"status":"delivered","error_code":null}"#).map(|s| s.error_code),
            Ok(None)
        );
        for bad in [r#"{"status":"Délivré"}"#, r#"{"error_code":1}"#, "[]", "x"] {
            assert!(state(bad).is_err(), "{bad}");
        }
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
}
