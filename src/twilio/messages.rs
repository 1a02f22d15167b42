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
