//! The voice follow-up: a message that ends undelivered or failed with 30003, 30005 or 30006
//! (the SMS cannot arrive; a call can) is followed by exactly one call reading the same code,
//! while the code is alive, unless it was confirmed meanwhile. Never for 30007 or any other
//! code, never twice (one per message's task), never when the caller asked for SMS only (no
//! [`FollowUp`] is made then). Placed by the instance that sent the message: only it holds the
//! code, in memory.

use std::time::Duration;

use tokio::time::Instant;

use super::{Fate, Sent, Tracker};
use crate::mask::mask_phone;
use crate::metrics::METRICS;
use crate::twilio::calls::VoiceCall;

/// The longest the follow-up's request may take.
const CALL_DEADLINE: Duration = Duration::from_secs(10);

/// What a follow-up call needs: its caller ID and its TwiML (which holds the code: never
/// shown, dropped with the message's task).
pub struct FollowUp {
    pub from: String,
    pub twiml: String,
}

impl std::fmt::Debug for FollowUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FollowUp(..)")
    }
}

impl Tracker {
    pub(super) async fn follow_up(&self, sent: &Sent, fate: &Fate) {
        let Some(follow_up) = &sent.follow_up else {
            return;
        };
        if !self.settings.voice_on_undelivered || !fate.call_can_reach() {
            return;
        }
        let phone = mask_phone(&sent.phone);
        let ends = sent.at + self.settings.lifetime;
        if Instant::now() >= ends {
            METRICS.count_delivery_event("followup_expired");
            return;
        }
        if self
            .records
            .confirmed(&sent.sid, &sent.phone, sent.at)
            .await
        {
            tracing::info!(phone = %phone, sid = %sent.sid, "code already confirmed: no voice follow-up");
            METRICS.count_delivery_event("followup_confirmed");
            return;
        }
        // Calls go through the primary: the caller ID belongs to its account.
        let Some(client) = sent.clients.client(0) else {
            return;
        };
        let call = VoiceCall {
            to: &sent.phone,
            from: &follow_up.from,
            twiml: &follow_up.twiml,
        };
        let deadline = (Instant::now() + CALL_DEADLINE).min(ends);
        match client.create_call(&call, deadline).await {
            Ok(call_sid) => {
                tracing::info!(phone = %phone, sid = %sent.sid, call_sid = %call_sid, code = fate.code, "SMS cannot arrive: voice follow-up placed");
                self.records.set(&sent.sid, format!("calling {call_sid}"));
                METRICS.count_delivery_event("followup_placed");
            }
            Err(e) => {
                tracing::warn!(phone = %phone, sid = %sent.sid, error = %e, "voice follow-up failed");
                METRICS.count_delivery_event("followup_failed");
            }
        }
    }
}
