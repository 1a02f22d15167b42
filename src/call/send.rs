//! sendOTP's way out: the guards, then the backend — an SMS through the providers, a call
//! (asked for, or instead of an SMS a landline or Twilio's refusal rules out), Verify, or a
//! dry run — all within the call's deadline, which started when the call arrived.

use std::sync::Arc;

use tokio::time::Instant;

use super::backend::Backend;
use super::request::SendOtp;
use super::Dispatcher;
use crate::codes::Codes;
use crate::delivery::{FollowUp, Sent, Tracker};
use crate::error::CallError;
use crate::guard::validate::Context;
use crate::guard::Checked;
use crate::metrics::METRICS;
use crate::twilio::calls::{self as voice, VoiceCall, VoiceSettings};
use crate::twilio::failover::Providers;
use crate::twilio::lookup::LineType;
use crate::twilio::verify::{Approval, Verification, VerifyService};
use crate::twilio::{Channel, Sender, Sms, TwilioClient};

/// One code on its way, checked.
struct Delivery<'a> {
    to: &'a str,
    code: &'a str,
    sender: &'a Sender,
    locale: Option<&'a str>,
    channel: Channel,
    /// What Lookup said the number is, when it was asked.
    line_type: Option<LineType>,
    /// The caller's context said `channel = "sms"`: no voice follow-up.
    sms_only: bool,
}

/// What sendOTP and issueOTP both send: a code to a number, from a sender, with the
/// caller's context.
pub(super) struct Outgoing<'a> {
    pub phone: &'a str,
    pub code: &'a str,
    pub sender: &'a Sender,
    pub context: &'a Context<'a>,
}

impl Dispatcher {
    pub(super) async fn send_otp(
        &self,
        send: &SendOtp<'_>,
        started: Instant,
    ) -> Result<String, CallError> {
        let outgoing = Outgoing {
            phone: send.phone.as_str(),
            code: send.otp.as_str(),
            sender: &send.sender,
            context: &send.context,
        };
        self.deliver(&outgoing, None, started).await
    }

    /// The one way a code leaves, for sendOTP and issueOTP alike: the guards, then (for
    /// issueOTP) the code's HMAC kept in `codes`, so a code that goes out can be checked and
    /// one the guards refused takes no place; then the backend, within the deadline.
    pub(super) async fn deliver(
        &self,
        outgoing: &Outgoing<'_>,
        codes: Option<&Codes>,
        started: Instant,
    ) -> Result<String, CallError> {
        let (phone, otp, context) = (outgoing.phone, outgoing.code, outgoing.context);
        for field in context.ignored.fields() {
            METRICS.count_context_ignored(field);
        }
        let deadline = started + self.settings.deadline;
        // A call that spent its deadline waiting for a call slot: answered now, and charged
        // to no rate limit, for nothing is sent.
        if Instant::now() >= deadline {
            return Err(self.timed_out());
        }
        let checked = self
            .guards
            .check(phone, otp, context, self.backend.twilio(), deadline)
            .await?;
        let admitted = match checked {
            Checked::Send(admitted) => admitted,
            // APM running its agent again, a user pressing refresh: the first SID, nothing sent.
            Checked::Duplicate(sid) => {
                METRICS.pumping.count_deduplicated();
                return Ok(sid);
            }
        };
        if let Some(codes) = codes {
            codes.keep(phone, otp, self.store_until(deadline)).await?;
        }
        let delivery = Delivery {
            to: phone,
            code: otp,
            sender: outgoing.sender,
            locale: context.locale,
            channel: context.channel.unwrap_or(self.settings.channel),
            line_type: admitted.line_type.clone(),
            sms_only: context.channel == Some(Channel::Sms),
        };
        let send = async {
            match &*self.backend {
                Backend::Messages(providers) => {
                    self.send_message(providers, &delivery, deadline).await
                }
                // Verify sends from the service's own sender: `sender` was only checked.
                Backend::Verify(client, service) => {
                    let verification = Verification {
                        service,
                        to: phone,
                        code: otp,
                        channel: delivery.channel,
                        locale: context.locale,
                        device_ip: context.ip,
                        user: context.user.as_deref(),
                    };
                    Ok(client.start_verification(&verification, deadline).await?)
                }
                Backend::DryRun { sids, verify } => {
                    Ok(sids.next(match (verify, delivery.channel) {
                        (true, _) => "VE",
                        // A call a real run could not place is refused here too.
                        (false, Channel::Voice) => {
                            caller_id(&self.settings.voice, delivery.sender).map(|_| "CA")?
                        }
                        (false, Channel::Sms) => "SM",
                    }))
                }
            }
        };
        let sent = self.within(deadline, send).await?;
        self.guards.record(&admitted, phone, otp, &sent);
        Ok(sent)
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
        let landline = delivery.line_type == Some(LineType::Landline);
        if delivery.channel == Channel::Voice || (fallback && landline) {
            return self.place_call(client, delivery, deadline).await;
        }
        let body = self
            .settings
            .templates
            .render(delivery.code, delivery.locale);
        let tracker = self.delivery.as_ref().filter(|t| t.active());
        let sms = Sms {
            to: delivery.to,
            sender: delivery.sender,
            body: &body,
            status_callback: tracker.and_then(|t| t.callback_url()),
        };
        match providers.create_message_at(&sms, deadline).await {
            Err(refused) if fallback && voice::can_fix(&refused) => {
                tracing::info!(reason = %refused, "Twilio refused the SMS; calling instead");
                self.place_call(client, delivery, deadline).await
            }
            Err(refused) => Err(refused.into()),
            Ok((sid, provider)) => {
                if let Some(tracker) = tracker {
                    self.track(tracker, delivery, &sid, provider);
                }
                Ok(sid)
            }
        }
    }

    /// Hands the sent message to the delivery tracker (a bounded queue, never waited for),
    /// with what its voice follow-up needs when one may be placed: configured, a caller ID,
    /// and no caller asking for SMS only.
    fn track(&self, tracker: &Arc<Tracker>, delivery: &Delivery<'_>, sid: &str, provider: usize) {
        let voice = &self.settings.voice;
        let follow_up = match (tracker.follows_up(), delivery.sms_only) {
            (true, false) => voice.caller_id(delivery.sender).map(|from| FollowUp {
                from: from.to_owned(),
                twiml: voice.twiml(delivery.code),
            }),
            _ => None,
        };
        tracker.track(Sent {
            sid: sid.to_owned(),
            phone: delivery.to.to_owned(),
            clients: self.backend.clone(),
            provider,
            follow_up,
            at: Instant::now(),
        });
    }

    async fn place_call(
        &self,
        client: &TwilioClient,
        delivery: &Delivery<'_>,
        deadline: Instant,
    ) -> Result<String, CallError> {
        let voice = &self.settings.voice;
        let call = VoiceCall {
            to: delivery.to,
            from: caller_id(voice, delivery.sender)?,
            twiml: &voice.twiml(delivery.code),
        };
        Ok(client.create_call(&call, deadline).await?)
    }
}

/// The caller ID a call is placed from, or the error a caller gets without one.
fn caller_id<'a>(voice: &'a VoiceSettings, sender: &'a Sender) -> Result<&'a str, CallError> {
    voice.caller_id(sender).ok_or_else(|| {
        CallError::BadRequest(
            "a voice call needs a caller ID number: set voice_from, or send from an E.164 number"
                .into(),
        )
    })
}

/// confirmOTP in Verify mode: tells Twilio the code was right; the verification's SID.
pub(super) async fn approve(
    client: &TwilioClient,
    service: &VerifyService,
    target: &str,
    deadline: Instant,
) -> Result<String, CallError> {
    let approval = Approval { service, target };
    Ok(client.approve_verification(&approval, deadline).await?)
}
