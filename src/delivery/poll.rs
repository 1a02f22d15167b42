//! A tracked message's task: learn its fate (polls on the schedule, or the status callback),
//! then log, count and record the final status, feed the hook, and decide on the follow-up.
//! The task, and the code it may hold for the follow-up, end with the code's lifetime.

use std::time::Duration;

use tokio::sync::oneshot;

use super::{schedule, Fate, Mode, Sent, Tracker};
use crate::alerts::{self, Kind};
use crate::health::HEALTH;
use crate::mask::mask_phone;
use crate::metrics::METRICS;
use crate::twilio::Error;

/// The longest one poll may take.
const POLL_TIMEOUT: Duration = Duration::from_secs(5);

impl Tracker {
    pub(super) async fn follow(&self, sent: Sent) {
        let fate = match self.settings.mode {
            Mode::Poll => self.poll(&sent).await,
            Mode::Callback => self.await_callback(&sent).await,
            Mode::Off => None,
        };
        match fate {
            Some(fate) => self.finish(&sent, fate).await,
            None => tracing::debug!(
                phone = %mask_phone(&sent.phone),
                sid = %sent.sid,
                "no final delivery status within the code's lifetime"
            ),
        }
    }

    /// Polls on the schedule until a final status; `None` when none came in the lifetime.
    async fn poll(&self, sent: &Sent) -> Option<Fate> {
        let client = sent.clients.client(sent.provider)?;
        let mut last = None;
        for after in schedule::polls(self.settings.lifetime) {
            tokio::time::sleep_until(sent.at + after).await;
            let _permit = self.polls.acquire().await.ok()?;
            match client.fetch_message(&sent.sid, POLL_TIMEOUT).await {
                // Sends come first: no room in the request budget now, try at the next time.
                Ok(None) => METRICS.count_delivery_event("deferred"),
                Ok(Some(state)) => {
                    METRICS.count_delivery_event("answered");
                    let fate = Fate::new(&state.status, state.error_code);
                    if last != Some(fate) {
                        self.records.set(&sent.sid, fate.text());
                        last = Some(fate);
                    }
                    if fate.status.is_final() {
                        return Some(fate);
                    }
                }
                // The account does not know the message (another account's, or gone).
                Err(Error::Rejected { status: 404, .. }) => {
                    METRICS.count_delivery_event("failed");
                    return None;
                }
                Err(e) => {
                    METRICS.count_delivery_event("failed");
                    tracing::debug!(sid = %sent.sid, error = %e, "delivery status poll failed");
                }
            }
        }
        None
    }

    /// Waits for the status callback's final status, at most until the lifetime ends.
    async fn await_callback(&self, sent: &Sent) -> Option<Fate> {
        let (tell, told) = oneshot::channel();
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(sent.sid.clone(), tell);
        }
        let fate = tokio::time::timeout_at(sent.at + self.settings.lifetime, told)
            .await
            .ok()
            .and_then(Result::ok);
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.remove(&sent.sid);
        }
        fate
    }

    /// A status a verified callback reported for `sid`.
    pub(super) fn reported(&self, sid: &str, fate: Fate) {
        self.records.set(sid, fate.text());
        if fate.status.is_final() {
            let waiting = self.waiting.lock().ok().and_then(|mut w| w.remove(sid));
            if let Some(tell) = waiting {
                let _ = tell.send(fate);
            }
        }
    }

    /// A final status: one log line, the metric, the hour's rate (an alert when it
    /// collapses), the hook, and the follow-up.
    async fn finish(&self, sent: &Sent, fate: Fate) {
        let after_s = sent.at.elapsed().as_secs();
        let country = country(&sent.phone);
        let phone = mask_phone(&sent.phone);
        if fate.status.is_lost() {
            tracing::warn!(phone = %phone, sid = %sent.sid, delivery = %fate.status.name(), code = fate.code, after_s, country = %country, "message not delivered");
        } else {
            tracing::info!(phone = %phone, sid = %sent.sid, delivery = %fate.status.name(), code = fate.code, after_s, country = %country, "message status final");
        }
        METRICS.count_delivery(fate.status.name(), fate.code_label(), country);
        if fate.status != super::Status::Canceled
            && HEALTH.delivery_final(fate.status.is_delivered())
        {
            let (finals, delivered) = HEALTH.delivery_hour();
            alerts::raise(
                Kind::DeliveryCollapse,
                &format!("{delivered} of the last hour's {finals} messages were delivered"),
            );
        }
        if let Some(hook) = self.on_final.get() {
            hook(&sent.phone, &fate);
        }
        self.follow_up(sent, &fate).await;
    }
}

/// ISO 3166 alpha-2 of a number by the numbering plan (as the geo rules read it), `ZZ` when
/// unknown.
pub fn country(phone: &str) -> String {
    phonenumber::parse(None, phone)
        .ok()
        .and_then(|n| n.country().id())
        .map_or_else(|| "ZZ".to_owned(), |id| id.as_ref().to_owned())
}
