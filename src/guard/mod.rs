//! The checks a code meets before it may leave, in order: the arguments (validation, done
//! when the call is parsed), the country (geo rules), the rate limits, and Twilio Lookup's
//! verdict on the line. Each refusal is counted where it is made.

pub mod bounded;
pub mod budgets;
pub mod geo;
pub mod lookup;
pub mod number_type;
pub mod phone;
pub mod plan;
pub mod rate;
pub mod ratelimit;
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
use ratelimit::Scope;
use ratelimit::{LimitKeys, RateLimiter, RateLimits};
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
}

/// The checks after validation. The limiter and the Lookup cache are shared with the
/// composition root, which sweeps them and keeps the limiter's counts across a reload.
pub struct Guards {
    pub geo: GeoRules,
    pub number_types: NumberTypes,
    pub limiter: Arc<RateLimiter>,
    /// Only with a Twilio backend: a dry run looks nothing up.
    pub lookup: Option<Arc<LookupGuard>>,
    /// The shared store the limits are kept in; `None`: in this process only.
    pub store: Option<Arc<Store>>,
}

impl Guards {
    /// Where the limits are kept, for `health`: `memory`, `redis ok`, or degraded.
    pub fn state_status(&self) -> &'static str {
        self.store.as_ref().map_or("memory", |store| store.status())
    }

    /// Geo rules, then the rate limits (which charge the send), then Lookup through `twilio`
    /// within `deadline`. Ok: what Lookup said the line is, when it was asked.
    pub async fn check(
        &self,
        phone: &str,
        context: &Context<'_>,
        twilio: Option<&TwilioClient>,
        deadline: Instant,
    ) -> Result<Option<LineType>, CallError> {
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
        let limited = match &self.store {
            Some(store) => self.limiter.check_shared(store, &keys, store_until).await?,
            None => self.limiter.check(&keys),
        };
        if let Err((scope, wait)) = limited {
            if let (Scope::Country, Some(budget)) = (scope, &budget) {
                budgets::refused(budget);
            }
            return Err(CallError::RateLimited {
                retry_in_s: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                limit: scope.name(),
            });
        }
        match (&self.lookup, twilio) {
            (Some(guard), Some(client)) => guard.check(client, phone, deadline, store_until).await,
            _ => Ok(None),
        }
    }
}
