//! The checks a code meets before it may leave, in order: the arguments (validation, done
//! when the call is parsed), the country (geo rules), the resend cooldown, the pumping guard
//! and the rate limits (decided together, charged only when all admit the send), and Twilio
//! Lookup's verdict on the line. Each refusal is counted where it is made. What was sent is
//! remembered for the code's lifetime (`sent`): resends, and confirmOTP's SID.

pub mod bounded;
pub mod budgets;
pub mod geo;
pub mod lookup;
pub mod number_type;
pub mod phone;
pub mod plan;
pub mod pumping;
pub mod rate;
pub mod ratelimit;
pub mod sent;
mod shared;
pub mod validate;

use std::sync::Arc;

use tokio::time::Instant;

use crate::error::CallError;
use crate::state::Store;
use crate::twilio::lookup::LineType;
use crate::twilio::TwilioClient;
use geo::GeoRules;
use lookup::{LookupGuard, LookupRules};
use number_type::NumberTypes;
use pumping::{Pumping, Subject, Throttled};
use ratelimit::Scope;
use ratelimit::{LimitKeys, RateLimiter, RateLimits};
use sent::Sent;
use shared::Shared;
pub use shared::Target as ConfirmTarget;
use validate::Context;

/// The guards' settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub geo: GeoRules,
    /// Number types refused from the numbering plan (empty: none).
    pub number_types: NumberTypes,
    pub rate_limits: RateLimits,
    /// `None`: no Lookup before sending.
    pub lookup: Option<LookupRules>,
    pub pumping: pumping::Settings,
    pub sent: sent::Settings,
}

/// The checks after validation. The limiter and the Lookup cache are shared with the
/// composition root, which sweeps them and keeps the limiter's counts across a reload.
#[derive(Clone)]
pub struct Guards {
    pub geo: GeoRules,
    pub number_types: NumberTypes,
    pub limiter: Arc<RateLimiter>,
    /// Only with a Twilio backend: a dry run looks nothing up.
    pub lookup: Option<Arc<LookupGuard>>,
    /// The shared store the limits are kept in; `None`: in this process only.
    pub store: Option<Arc<Store>>,
    /// Conversion per country and range, and its throttle.
    pub pumping: Arc<Pumping>,
    /// What was sent, for resends and confirmations.
    pub sent: Arc<Sent>,
}

impl Guards {
    /// Where the limits are kept, for `health`: `memory`, `redis ok`, or degraded.
    pub fn state_status(&self) -> &'static str {
        self.store.as_ref().map_or("memory", |store| store.status())
    }

    /// The resend dedup, the geo rules, the resend cooldown, the pumping guard and the rate
    /// limits (decided together, charged only when all admit the send), then Lookup through
    /// `twilio` within `deadline`. With a shared store the dedup, cooldown, pumping and limits
    /// are one round trip (`shared.rs`).
    pub async fn check(
        &self,
        phone: &str,
        code: &str,
        context: &Context<'_>,
        twilio: Option<&TwilioClient>,
        deadline: Instant,
    ) -> Result<Checked, CallError> {
        let sent_keys = self.sent.keys(phone, code);
        if self.store.is_none() {
            if let Some(sid) = self.sent.duplicate(&sent_keys) {
                return Ok(Checked::Duplicate(sid));
            }
        }
        self.geo.check(phone).map_err(|(error, country)| {
            tracing::debug!(country = %country, "refused by the geo rules");
            error
        })?;
        let budgets = self.limiter.limits().country.as_ref();
        // Filed in the numbering plan once, and only when a rule reads it.
        let filed = (self.number_types.active() || budgets.is_some())
            .then(|| plan::file(phone))
            .flatten();
        self.number_types.check(filed.as_ref())?;
        let budget = budgets.and_then(|b| b.budget_for(filed.as_ref()));
        let keys = LimitKeys {
            phone,
            ip: context.ip,
            user: context.user.as_deref(),
            country: budget.as_ref(),
        };
        // One store budget for the whole call (the limits, then the Lookup cache): a store
        // that hangs costs a call state_timeout_ms in all, not once per operation.
        let store_until = match &self.store {
            Some(store) => deadline.min(Instant::now() + store.timeout()),
            None => deadline,
        };
        let shared = match &self.store {
            Some(store) => {
                self.check_shared(store, phone, code, &keys, store_until)
                    .await
            }
            None => Ok(None),
        };
        // Counted in this process: what the send counts under; in the store: kept there.
        let subject = match shared {
            // In memory, or the store failed and `state_failure = local`.
            Ok(None) => self.check_local(phone, &sent_keys, &keys),
            Ok(Some(Shared::Admitted)) => Ok(None),
            Ok(Some(Shared::Duplicate(sid))) => return Ok(Checked::Duplicate(sid)),
            Err(refused) => Err(refused),
        };
        if let (Err(CallError::RateLimited { limit, .. }), Some(budget)) = (&subject, &budget) {
            if *limit == Scope::Country.name() {
                budgets::refused(budget);
            }
        }
        let subject = subject?;
        let line_type = match (&self.lookup, twilio) {
            (Some(guard), Some(client)) => {
                guard.check(client, phone, deadline, store_until).await?
            }
            _ => None,
        };
        Ok(Checked::Send(Admitted {
            line_type,
            sent_keys,
            subject,
        }))
    }

    /// The cooldown, the pumping guard and the limits in this process; what the send counts
    /// under for the pumping guard.
    fn check_local(
        &self,
        phone: &str,
        sent_keys: &sent::Keys,
        keys: &LimitKeys<'_>,
    ) -> Result<Option<Subject>, CallError> {
        if let Some(wait) = self.sent.wait(sent_keys) {
            return Err(rate_limited(wait, "cooldown"));
        }
        match self.pumping.admit(phone, || self.limiter.check(keys)) {
            Ok(Ok(subject)) => Ok(subject),
            Ok(Err(Throttled(_))) => Err(CallError::Blocked("pumping")),
            Err((scope, wait)) => Err(rate_limited(wait, scope.name())),
        }
    }
}

/// What the checks came to when none refused.
#[derive(Debug)]
pub enum Checked {
    Send(Admitted),
    /// The same phone and code went out as this SID within its lifetime: nothing to send.
    Duplicate(String),
}

/// A send the guards admitted: what Lookup said the line is (when it was asked), and the
/// keys its record is kept under, computed once (`Guards::record`).
#[derive(Debug)]
pub struct Admitted {
    pub line_type: Option<LineType>,
    sent_keys: sent::Keys,
    /// `None` when the store counted it, or the pumping guard is off.
    subject: Option<Subject>,
}

/// A refusal by a limit that passes after `wait`.
fn rate_limited(wait: std::time::Duration, limit: &'static str) -> CallError {
    CallError::RateLimited {
        retry_in_s: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        limit,
    }
}
