//! The RPC methods: argument checks, the call to the backend, one log line per call.

pub mod backend;
pub mod log;
pub mod template;

use std::sync::Arc;

use rmpv::Value;
use tokio::time::Instant;

use crate::call::backend::Backend;
use crate::call::log::{CallLog, Method as CallMethod, Target};
use crate::call::template::Templates;
use crate::config::Settings;
use crate::error::CallError;
use crate::guard::geo::GeoRules;
use crate::guard::lookup::LookupGuard;
use crate::guard::ratelimit::{Caller, RateLimiter};
use crate::guard::validate;
use crate::health::HEALTH;
use crate::metrics::METRICS;
use crate::twilio::calls::{self as voice, VoiceSettings};
use crate::twilio::failover::{Provider, Providers};
use crate::twilio::verify::Verification;
use crate::twilio::{is_sid, messages, Channel, Sender};
use crate::twilio::{Sms, TwilioClient};

pub struct Dispatcher {
    backend: Backend,
    geo: GeoRules,
    /// Only with a Twilio backend: a dry run looks nothing up.
    lookup: Option<LookupGuard>,
    limiter: Arc<RateLimiter>,
    templates: Templates,
    /// The channel when the caller names none.
    channel: Channel,
    voice: VoiceSettings,
    deadline: std::time::Duration,
    /// Where national numbers (`06 12345678`) are read as dialled; `None` takes only `+`.
    region: Option<phonenumber::country::Id>,
}

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
    /// `limiter` is passed in so a reload can keep the counts when the limits did not change.
    pub fn new(settings: &Settings, backend: Backend, limiter: Arc<RateLimiter>) -> Self {
        let lookup = match (&settings.lookup, backend.twilio()) {
            (Some(rules), Some(_)) => Some(LookupGuard::new(rules.clone())),
            _ => None,
        };
        Dispatcher {
            backend,
            geo: settings.geo.clone(),
            lookup,
            limiter,
            templates: settings.templates.clone(),
            channel: settings.channel,
            voice: settings.voice.clone(),
            deadline: settings.deadline,
            region: settings.default_region,
        }
    }

    /// A dry run of `settings` with limits of its own (the fuzz target, tests).
    pub fn dry_run(settings: &Settings) -> Self {
        let limiter = Arc::new(RateLimiter::new(settings.rate_limits));
        Self::new(settings, Backend::dry_run(settings), limiter)
    }

    /// How long a call may take.
    pub fn deadline(&self) -> std::time::Duration {
        self.deadline
    }

    pub fn limiter(&self) -> &Arc<RateLimiter> {
        &self.limiter
    }

    pub fn lookup(&self) -> Option<&LookupGuard> {
        self.lookup.as_ref()
    }

    /// The failover providers (Messages mode), in order.
    pub fn backups(&self) -> &[Provider] {
        match &self.backend {
            Backend::Messages(providers) => providers.backups(),
            _ => &[],
        }
    }

    /// The Twilio client, unless this is a dry run.
    pub fn twilio(&self) -> Option<&TwilioClient> {
        self.backend.twilio()
    }

    /// Runs one call and counts it. Every failure is a [`CallError`], whose text starts
    /// with `ERR `. The call's log line comes back unwritten: drop it once the reply is out.
    pub async fn call(
        &self,
        method: &str,
        params: &[Value],
    ) -> (Result<Value, CallError>, CallLog) {
        let (name, (result, log)) = match method {
            "sendOTP" => ("sendOTP", self.send_otp(params).await),
            "confirmOTP" => ("confirmOTP", self.confirm_otp(params).await),
            "ping" => (
                "ping",
                (
                    expect_arity(method, params, 0).map(|()| "pong".into()),
                    CallLog::default(),
                ),
            ),
            "health" => (
                "health",
                (
                    expect_arity(method, params, 0).map(|()| HEALTH.report(self.backend.mode())),
                    CallLog::default(),
                ),
            ),
            _ => (
                "unknown",
                (
                    Err(CallError::BadRequest(format!(
                        "unknown method '{}' (known: sendOTP, confirmOTP, ping, health)",
                        method.chars().take(40).collect::<String>()
                    ))),
                    CallLog::default(),
                ),
            ),
        };
        METRICS.count_call(name, result.as_ref().map(|_| ()).map_err(CallError::reason));
        (result, log)
    }

    async fn send_otp(&self, params: &[Value]) -> (Result<Value, CallError>, CallLog) {
        if !(3..=4).contains(&params.len()) {
            let result = Err(CallError::BadRequest(format!(
                "sendOTP takes 3 arguments and an optional context map, got {}",
                params.len()
            )));
            return (result, CallLog::default());
        }
        let started = Instant::now();
        let raw_phone = string_param(params, 1, "phone");
        let phone = raw_phone
            .clone()
            .and_then(|p| validate::phone(p, self.region));
        let result = self.checked_send(params, &phone, started).await;
        // A dry run never talks to Twilio, so its sends say nothing of Twilio's health.
        if self.twilio().is_some() {
            record_health(&result);
        }
        // Refusals by a fraud rule or a limit are counted here, whichever check made them.
        match &result {
            Err(CallError::Blocked(rule)) => METRICS.count_blocked(rule),
            Err(CallError::RateLimited { limit, .. }) => METRICS.count_rate_limited(limit),
            _ => {}
        }
        // Only a valid number is logged (masked, as E.164): a caller that swapped its
        // arguments would otherwise put most of an OTP into the log. An OTP is never a `+`
        // number, but may read as a national one: those are shown once the OTP checked out.
        let shown = match (&phone, raw_phone) {
            (Ok(p), Ok(raw)) if raw.trim_start().starts_with('+') => Some(p),
            (Ok(p), _) => string_param(params, 0, "otp")
                .and_then(validate::otp)
                .is_ok()
                .then_some(p),
            _ => None,
        };
        let target = match shown {
            Some(p) => Target::Phone(p.clone().into_owned()),
            None => Target::Shown("(invalid)".to_owned()),
        };
        let log = CallLog::new(CallMethod::SendOtp, target, &result, started);
        (result.map(Value::from), log)
    }

    /// `phone` is the second argument, already read as E.164 (or refused), so the call's log
    /// line can show it; it is checked in its turn, after the OTP.
    async fn checked_send(
        &self,
        params: &[Value],
        phone: &Result<std::borrow::Cow<'_, str>, CallError>,
        started: Instant,
    ) -> Result<String, CallError> {
        let otp = validate::otp(string_param(params, 0, "otp")?)?;
        let phone: &str = phone.as_ref().map_err(CallError::clone)?;
        let sender = messages::sender(string_param(params, 2, "sender")?)?;
        // Advice, never a refusal: what it could not use is counted and left out.
        let context = validate::context(params.get(3));
        for field in context.ignored.fields() {
            METRICS.count_context_ignored(field);
        }
        self.geo.check(phone).map_err(|(error, country)| {
            tracing::debug!(country = %country, "refused by the geo rules");
            error
        })?;
        let caller = Caller {
            phone,
            ip: context.ip,
            user: context.user.as_deref(),
        };
        if let Err((scope, wait)) = self.limiter.check(&caller) {
            return Err(CallError::RateLimited {
                retry_in_s: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                limit: scope.name(),
            });
        }
        let deadline = started + self.deadline;
        let line_type = match (&self.lookup, self.twilio()) {
            (Some(guard), Some(client)) => guard.check(client, phone, deadline).await?,
            _ => None,
        };
        let delivery = Delivery {
            to: phone,
            code: otp,
            sender: &sender,
            locale: context.locale,
            channel: context.channel.unwrap_or(self.channel),
            line_type,
        };
        let send = async {
            match &self.backend {
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
                        (false, Channel::Voice) => {
                            self.voice.caller_id_for(&sender).map(|_| "CA")?
                        }
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
        let fallback = self.voice.fallback && self.voice.can_call(delivery.sender);
        let landline = delivery.line_type.as_deref() == Some("landline");
        if delivery.channel == Channel::Voice || (fallback && landline) {
            return self.place_call(client, delivery, deadline).await;
        }
        let body = self.templates.render(delivery.code, delivery.locale);
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
        self.voice
            .call(
                client,
                delivery.to,
                delivery.sender,
                delivery.code,
                deadline,
            )
            .await
    }

    /// confirmOTP(phone or VE…): APM accepted the code; Verify mode reports the approval.
    async fn confirm_otp(&self, params: &[Value]) -> (Result<Value, CallError>, CallLog) {
        let started = Instant::now();
        let target = match (params.len(), params.first()) {
            (1, Some(Value::String(s))) => s.as_str().unwrap_or_default(),
            _ => {
                let refused = CallError::BadRequest(
                    "confirmOTP takes 1 argument: the phone number or the VE… SID".into(),
                );
                return (Err(refused), CallLog::default());
            }
        };
        // The number as sendOTP was given it (the iRule passes the same attribute), as E.164.
        let phone = validate::phone(target, self.region);
        let (shown, target) = if let Ok(phone) = &phone {
            (Target::Phone(phone.to_string()), phone.as_ref())
        } else if is_sid(target, "VE") {
            (Target::Shown(target.to_owned()), target)
        } else {
            let refused = CallError::BadRequest(
                "confirmOTP needs an E.164 phone number or a VE… verification SID".into(),
            );
            return (Err(refused), CallLog::default());
        };
        let result = match &self.backend {
            Backend::Verify(client, service) => {
                let deadline = started + self.deadline;
                self.within(deadline, service.approve(client, target, deadline))
                    .await
            }
            Backend::DryRun { sids, verify: true } => Ok(if target.starts_with("VE") {
                target.to_owned()
            } else {
                sids.next("VE")
            }),
            _ => Err(CallError::BadRequest(
                "confirmOTP needs Verify mode (verify_service_sid)".into(),
            )),
        };
        let log = CallLog::new(CallMethod::ConfirmOtp, shown, &result, started);
        (result.map(Value::from), log)
    }

    /// Bounds a call to Twilio by the caller's deadline.
    async fn within(
        &self,
        deadline: Instant,
        call: impl std::future::Future<Output = Result<String, CallError>>,
    ) -> Result<String, CallError> {
        tokio::time::timeout_at(deadline, call)
            .await
            .unwrap_or(Err(CallError::Timeout {
                deadline_ms: self.deadline.as_millis() as u64,
            }))
    }
}

/// What a send says about Twilio's health: failures of the caller's making say nothing.
fn record_health(result: &Result<String, CallError>) {
    let (healthy, detail) = match result {
        Ok(_) => (true, "sent".to_owned()),
        Err(
            CallError::BadRequest(_) | CallError::InvalidPhone(_) | CallError::RateLimited { .. },
        ) => return,
        Err(CallError::Twilio { code, .. }) => {
            (!is_account_problem(*code), format!("twilio {code}"))
        }
        Err(e) => (false, e.reason().to_owned()),
    };
    HEALTH.record("send", healthy, detail);
}

/// Twilio codes that fail every send, not just this one: bad credentials, suspended account.
fn is_account_problem(code: u32) -> bool {
    matches!(code, 20003 | 20005 | 30002)
}

fn expect_arity(method: &str, params: &[Value], n: usize) -> Result<(), CallError> {
    if params.len() == n {
        Ok(())
    } else {
        Err(CallError::BadRequest(format!(
            "{method} takes {n} arguments, got {}",
            params.len()
        )))
    }
}

fn string_param<'a>(params: &'a [Value], i: usize, name: &str) -> Result<&'a str, CallError> {
    match params.get(i) {
        Some(Value::String(s)) => s
            .as_str()
            .ok_or_else(|| CallError::BadRequest(format!("{name} is not valid UTF-8"))),
        _ => Err(CallError::BadRequest(format!("{name} must be a string"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeArgs;

    #[test]
    fn a_call_future_stays_small() {
        // Every call's future is moved into its task when spawned; one that grew by holding
        // a connect path inline doubled the instructions a call costs. 2.6 KB today.
        let args = ServeArgs {
            dry_run: Some(true),
            ..Default::default()
        };
        let settings = Settings::resolve(&args, &|_| None).expect("dry-run settings");
        let dispatcher = Dispatcher::dry_run(&settings);
        let call = dispatcher.call("ping", &[]);
        let size = std::mem::size_of_val(&call);
        assert!(size <= 8 * 1024, "the call future is {size} bytes");
    }
}
