//! sendOTP's way out: the guards, then the backend — an SMS through the providers, a call
//! (asked for, or instead of an SMS a landline or Twilio's refusal rules out), Verify, or a
//! dry run — all within the call's deadline, which started when the call arrived.

use tokio::time::Instant;

use super::backend::Backend;
use super::request::SendOtp;
use super::Dispatcher;
use crate::error::CallError;
use crate::metrics::METRICS;
use crate::twilio::calls as voice;
use crate::twilio::failover::Providers;
use crate::twilio::verify::Verification;
use crate::twilio::{Channel, Sender, Sms, TwilioClient};

/// One code on its way, checked.
struct Delivery<'a> {
    to: &'a str,
    code: &'a str,
    sender: &'a Sender,
    locale: Option<&'a str>,
    channel: Channel,
    /// What Lookup said the number is, when it was asked.
    line_type: Option<String>,
}

impl Dispatcher {
    pub(super) async fn send_otp(
        &self,
        send: &SendOtp<'_>,
        started: Instant,
    ) -> Result<String, CallError> {
        let (phone, otp, context) = (send.phone.as_str(), send.otp.as_str(), &send.context);
        for field in context.ignored.fields() {
            METRICS.count_context_ignored(field);
        }
        let deadline = started + self.settings.deadline;
        // A call that spent its deadline waiting for a call slot: answered now, and charged
        // to no rate limit, for nothing is sent.
        if Instant::now() >= deadline {
            return Err(self.timed_out());
        }
        let line_type = self
            .guards
            .check(phone, context, self.backend.twilio(), deadline)
            .await?;
        let delivery = Delivery {
            to: phone,
            code: otp,
            sender: &send.sender,
            locale: context.locale,
            channel: context.channel.unwrap_or(self.settings.channel),
            line_type,
        };
        let send = async {
            match &*self.backend {
                Backend::Messages(providers) => {
                    self.send_message(providers, &delivery, deadline).await
                }
                // Verify sends from the service's own sender: `sender` was only checked.
                Backend::Verify(client, service) => {
                    let verification = Verification {
                        to: phone,
                        code: otp,
                        channel: delivery.channel,
                        locale: context.locale,
                    };
                    service.start(client, &verification, deadline).await
                }
                Backend::DryRun { sids, verify } => {
                    Ok(sids.next(match (verify, delivery.channel) {
                        (true, _) => "VE",
                        // A call a real run could not place is refused here too.
                        (false, Channel::Voice) => self
                            .settings
                            .voice
                            .caller_id_for(delivery.sender)
                            .map(|_| "CA")?,
                        (false, Channel::Sms) => "SM",
                    }))
                }
            }
        };
        self.within(deadline, send).await
    }

    /// Programmable Messaging: an SMS, or a call when the caller asked for one, when Lookup
    /// says the number is a landline, or when Twilio refused the SMS in a way a call can get
    /// past (the last two only with `voice_fallback`).
    async fn send_message(
        &self,
        providers: &Providers,
        delivery: &Delivery<'_>,
        deadline: Instant,
    ) -> Result<String, CallError> {
        // Calls go through the primary: the caller ID belongs to its account.
        let client = providers.primary();
        let fallback =
            self.settings.voice.fallback && self.settings.voice.can_call(delivery.sender);
        let landline = delivery.line_type.as_deref() == Some("landline");
        if delivery.channel == Channel::Voice || (fallback && landline) {
            return self.place_call(client, delivery, deadline).await;
        }
        let body = self
            .settings
            .templates
            .render(delivery.code, delivery.locale);
        let sms = Sms {
            to: delivery.to,
            sender: delivery.sender,
            body: &body,
        };
        match providers.send(&sms, deadline).await {
            Err(refused) if fallback && voice::can_fix(&refused.error) => {
                tracing::info!(reason = %refused.error, "Twilio refused the SMS; calling instead");
                self.place_call(client, delivery, deadline).await
            }
            sent => sent.map_err(CallError::from),
        }
    }

    async fn place_call(
        &self,
        client: &TwilioClient,
        delivery: &Delivery<'_>,
        deadline: Instant,
    ) -> Result<String, CallError> {
        self.settings
            .voice
            .call(
                client,
                delivery.to,
                delivery.sender,
                delivery.code,
                deadline,
            )
            .await
    }
}
