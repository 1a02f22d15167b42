//! Failover between Twilio providers (accounts, regions, Messaging Services), in order, each
//! behind a circuit breaker.
//!
//! A message moves on to the next provider only when the one asked provably did not accept
//! it (never sent, 429, 401/403, 503): a second SMS is worse than an error. Any fault of a
//! provider's (those, other 5xx, an answer lost after sending, no answer in time) counts
//! against its breaker; after `failures` in a row it is skipped for `cooldown`, then one call
//! at a time tries it again, and the first success closes the breaker: traffic returns to
//! the primary as soon as it recovers.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::Sender;
use crate::metrics::METRICS;
use crate::twilio::{Error, Sms, TwilioClient};

/// The name the top-level credentials go by in logs and metrics.
pub const PRIMARY: &str = "primary";

/// When a provider is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Provider faults in a row that open the breaker.
    pub failures: u32,
    /// How long an open breaker skips its provider before one call tries it again.
    pub cooldown: Duration,
}

/// One place to send through.
#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub client: TwilioClient,
    /// Sends from this sender (e.g. the provider's own Messaging Service) instead of the
    /// caller's.
    pub sender: Option<Sender>,
    breaker: Breaker,
}

impl Provider {
    pub fn new(
        name: String,
        client: TwilioClient,
        sender: Option<Sender>,
        breaker: BreakerSettings,
    ) -> Self {
        Provider {
            name,
            client,
            sender,
            breaker: Breaker::new(breaker),
        }
    }

    /// Whether its breaker is open (skipping it, or letting one call try it again).
    pub fn breaker_open(&self) -> bool {
        self.breaker
            .state
            .lock()
            .map(|s| s.open_until.is_some())
            .unwrap_or(false)
    }
}

/// The providers in order, the primary first.
#[derive(Debug)]
pub struct Providers {
    list: Vec<Provider>,
}

impl Providers {
    /// `list` must hold at least the primary.
    pub fn new(list: Vec<Provider>) -> Self {
        assert!(!list.is_empty(), "the primary provider is always there");
        Providers { list }
    }

    /// The primary's client: warm-ups, Lookup, calls and Verify go through it.
    pub fn primary(&self) -> &TwilioClient {
        &self.list[0].client
    }

    /// Every provider, the primary first.
    pub fn all(&self) -> &[Provider] {
        &self.list
    }

    /// The providers after the primary.
    pub fn backups(&self) -> &[Provider] {
        &self.list[1..]
    }

    /// Sends one SMS through the first provider that takes it.
    pub async fn create_message(&self, sms: &Sms<'_>, deadline: Instant) -> Result<String, Error> {
        Ok(self.create_message_at(sms, deadline).await?.0)
    }

    /// The provider at `index` (0 the primary), as [`create_message_at`](Self::create_message_at) named it.
    pub fn client(&self, index: usize) -> Option<&TwilioClient> {
        self.list.get(index).map(|p| &p.client)
    }

    /// [`create_message`](Self::create_message), also saying which provider took it (its
    /// index): the message's status is asked of the account that sent it.
    pub async fn create_message_at(
        &self,
        sms: &Sms<'_>,
        deadline: Instant,
    ) -> Result<(String, usize), Error> {
        // Nothing to fail over to: a breaker would skip nothing, so none is kept (and no
        // lock is taken on the default path).
        if let [only] = self.list.as_slice() {
            return Ok((only.client.create_message(sms, deadline).await?, 0));
        }
        // Providers whose breaker is open are skipped; when every one is, all are tried in
        // order anyway: an attempt beats a certain error.
        let all_open = self.list.iter().all(|p| p.breaker.is_open());
        let mut refused: Option<Error> = None;
        for (index, provider) in self.list.iter().enumerate() {
            if !all_open && !provider.breaker.admits() {
                continue;
            }
            if let Some(previous) = &refused {
                tracing::warn!(
                    provider = %provider.name,
                    reason = %previous,
                    "the previous provider did not take the message; trying the next"
                );
                METRICS.count_failover();
            }
            let sms = Sms {
                sender: provider.sender.as_ref().unwrap_or(sms.sender),
                ..*sms
            };
            // The caller bounds the call by the deadline: should it cut this one off, the
            // guard tells the breaker (no timer of our own, which would cost a driver wake).
            let pending = Pending(Some(provider));
            let outcome = provider.client.create_message(&sms, deadline).await;
            pending.answered();
            match outcome {
                Ok(sid) => {
                    provider.breaker.record(&provider.name, true);
                    return Ok((sid, index));
                }
                Err(error) => {
                    provider
                        .breaker
                        .record(&provider.name, !error.provider_fault());
                    if !error.not_accepted() || Instant::now() >= deadline {
                        return Err(error);
                    }
                    refused = Some(error);
                }
            }
        }
        Err(refused.expect("at least one provider is asked"))
    }
}

/// A provider's answer being waited for; dropped unanswered (the call cut off at its
/// deadline), it counts as a fault of the provider's.
struct Pending<'a>(Option<&'a Provider>);

impl Pending<'_> {
    fn answered(mut self) {
        self.0 = None;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(provider) = self.0 {
            provider.breaker.record(&provider.name, false);
        }
    }
}

/// A circuit breaker: closed, or open until a moment, after which one call at a time may
/// try the provider again.
#[derive(Debug)]
struct Breaker {
    settings: BreakerSettings,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    faults_in_a_row: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    fn new(settings: BreakerSettings) -> Self {
        Breaker {
            settings,
            state: Mutex::default(),
        }
    }

    /// Open, with the cooldown still running.
    fn is_open(&self) -> bool {
        self.state
            .lock()
            .map(|s| s.open_until.is_some_and(|until| Instant::now() < until))
            .unwrap_or(false)
    }

    /// Whether to ask the provider now. Past the cooldown one call is let through, and the
    /// next waits another cooldown unless that call closes the breaker: a call cut off by
    /// its deadline cannot leave the breaker stuck.
    fn admits(&self) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return true;
        };
        match state.open_until {
            None => true,
            Some(until) if Instant::now() >= until => {
                state.open_until = Some(Instant::now() + self.settings.cooldown);
                true
            }
            Some(_) => false,
        }
    }

    fn record(&self, name: &str, healthy: bool) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let was_open = state.open_until.is_some();
        if healthy {
            *state = BreakerState::default();
            if was_open {
                tracing::info!(provider = %name, "provider answering again; breaker closed");
                METRICS.breaker_open(name, false);
            }
            return;
        }
        state.faults_in_a_row = state.faults_in_a_row.saturating_add(1);
        if was_open || state.faults_in_a_row >= self.settings.failures {
            state.open_until = Some(Instant::now() + self.settings.cooldown);
            if !was_open {
                tracing::warn!(
                    provider = %name,
                    faults = state.faults_in_a_row,
                    cooldown_s = self.settings.cooldown.as_secs(),
                    "provider failing; breaker open, skipping it"
                );
                METRICS.breaker_open(name, true);
                crate::alerts::raise(
                    crate::alerts::Kind::BreakerOpen,
                    &format!(
                        "provider {name} failing: breaker open for {} s",
                        self.settings.cooldown.as_secs()
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerSettings {
            failures: 2,
            cooldown: Duration::from_secs(10),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_faults_in_a_row_and_lets_one_probe_through_after_the_cooldown() {
        let b = breaker();
        b.record("p", false);
        assert!(b.admits(), "one fault does not open it");
        b.record("p", true);
        b.record("p", false);
        assert!(b.admits(), "a success in between resets the count");
        b.record("p", false);
        assert!(!b.admits(), "two in a row open it");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.admits(), "the probe after the cooldown");
        assert!(!b.admits(), "only one probe");
        b.record("p", false);
        assert!(!b.admits(), "a failed probe opens it again");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.admits());
        b.record("p", true);
        assert!(b.admits() && b.admits(), "a good probe closes it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_cut_off_leaves_it_open_for_another_cooldown_only() {
        let b = breaker();
        b.record("p", false);
        b.record("p", false);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.admits());
        // No record: the probe's call was dropped at its deadline.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.admits());
    }
}
