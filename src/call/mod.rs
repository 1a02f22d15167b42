//! The call: a request parsed once into a typed [`Call`](request::Call), run by the
//! [`Dispatcher`] through the guards to the backend, answered, counted, and logged after the
//! reply has left.

pub mod backend;
pub mod callers;
mod codes;
pub mod log;
pub mod request;
mod send;
pub mod template;
mod twilio_error;

use std::sync::Arc;
use std::time::Duration;

use rmpv::Value;
use tokio::time::Instant;

use crate::codes::Codes;
use crate::delivery::Tracker;
use crate::error::CallError;
use crate::guard::{ConfirmTarget, Guards};
use crate::health::HEALTH;
use crate::metrics::METRICS;
use crate::rpc::{Method, Request};
use crate::twilio::calls::VoiceSettings;
use crate::twilio::Channel;
use backend::Backend;
use callers::Callers;
use log::CallLog;
use request::{Call, Confirmed, Parsed, Probe, Rejected, Target};
use template::Templates;

/// The call's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a call may take.
    pub deadline: Duration,
    pub templates: Templates,
    /// The channel when the caller names none.
    pub channel: Channel,
    pub voice: VoiceSettings,
    /// Where national numbers (`06 12345678`) are read as dialled; `None` takes only `+`.
    pub region: Option<phonenumber::country::Id>,
    /// The callers of the caller tokens file; `None`: calls need no token.
    pub callers: Option<Arc<Callers>>,
}

pub struct Dispatcher {
    settings: Settings,
    guards: Guards,
    backend: Arc<Backend>,
    /// Follows each sent message's fate (issue 26); `None`: nobody does.
    delivery: Option<Arc<Tracker>>,
    /// issueOTP's codes; `None`: issueOTP and checkOTP are not served.
    codes: Option<Arc<Codes>>,
}

impl Dispatcher {
    pub fn new(settings: Settings, guards: Guards, backend: Arc<Backend>) -> Self {
        Dispatcher {
            settings,
            guards,
            backend,
            delivery: None,
            codes: None,
        }
    }

    /// Hands each sent message to `tracker` and answers deliveryStatus from it.
    pub fn with_delivery(mut self, tracker: Arc<Tracker>) -> Self {
        self.delivery = Some(tracker);
        self
    }

    /// Serves issueOTP and checkOTP with `codes`.
    pub fn with_codes(mut self, codes: Arc<Codes>) -> Self {
        self.codes = Some(codes);
        self
    }

    /// Runs one call that arrived at `started` (its deadline counts from there: a wait for a
    /// call slot is part of it) and counts it. Every failure is a [`CallError`], whose text starts
    /// with `ERR `. The call's log line comes back unwritten: drop it once the reply is out.
    pub async fn call(
        &self,
        request: &Request,
        started: Instant,
    ) -> (Result<Value, CallError>, CallLog) {
        let method = &request.method;
        let Parsed { caller, call } = Call::parse(
            request,
            self.settings.region,
            self.settings.callers.as_deref(),
        );
        let (result, log) = match call {
            Ok(call) => self.run(call, started).await,
            Err(Rejected { error, shown }) => {
                let result = Err(error);
                let log = match shown {
                    Some(target) => self.finish(method, target, &result, started),
                    None => CallLog::default(),
                };
                (result.map(Value::from), log)
            }
        };
        METRICS.count_call(
            method.label(),
            result.as_ref().map(|_| ()).map_err(CallError::reason),
        );
        let log = match caller {
            Some(name) => {
                METRICS.count_caller(&name, method.label(), result.is_ok());
                log.by(name)
            }
            None => log,
        };
        (result, log)
    }

    /// Answers `ping` and `health` here and now, and counts them: they await nothing, so
    /// they need no task and never wait for a call slot. `None` for every other method.
    pub fn probe(&self, request: &Request) -> Option<Result<Value, CallError>> {
        let result = Probe::of(request)?.map(|probe| self.answer(probe));
        METRICS.count_call(
            request.method.label(),
            result.as_ref().map(|_| ()).map_err(CallError::reason),
        );
        Some(result)
    }

    fn answer(&self, probe: Probe) -> Value {
        match probe {
            Probe::Ping => "pong".into(),
            Probe::Health => HEALTH.report(
                self.backend.mode(),
                self.guards.state_status(),
                self.guards.store.as_ref().map(|store| store.agreement()),
            ),
        }
    }

    /// What the status page needs of the running parts: the health report as `ping` shows
    /// it, and the providers.
    pub fn status(&self) -> crate::status::Live {
        crate::status::Live {
            health: self.answer(Probe::Health),
            providers: self.backend.providers(),
        }
    }

    async fn run(&self, call: Call<'_>, started: Instant) -> (Result<Value, CallError>, CallLog) {
        match call {
            Call::SendOtp(send) => {
                let target = Target::Phone(send.phone.as_str().to_owned());
                let result = self.send_otp(&send, started).await;
                let log = self.finish(&Method::SendOtp, target, &result, started);
                (result.map(Value::from), log)
            }
            Call::ConfirmOtp(confirmed) => {
                let (target, result) = self.confirm_otp(&confirmed, started).await;
                let log = self.finish(&Method::ConfirmOtp, target, &result, started);
                (result.map(Value::from), log)
            }
            Call::DeliveryStatus(sid) => {
                let result = match &self.delivery {
                    Some(tracker) => tracker.status(sid).await,
                    None => None,
                };
                let result = result.ok_or_else(|| {
                    CallError::NotFound("no delivery status known for this SID".into())
                });
                (result.map(Value::from), CallLog::default())
            }
            Call::IssueOtp(issue) => {
                let target = Target::Phone(issue.phone.as_str().to_owned());
                let result = self.issue_otp(&issue, started).await;
                let log = self.finish(&Method::IssueOtp, target, &result, started);
                (result.map(Value::from), log)
            }
            Call::CheckOtp(check) => {
                let target = Target::Phone(check.phone.as_str().to_owned());
                let result = self.check_otp(&check, started).await;
                let log = self.finish(&Method::CheckOtp, target, &result, started);
                (result.map(Value::from), log)
            }
            Call::Probe(probe) => (Ok(self.answer(probe)), CallLog::default()),
        }
    }

    /// What a finished call that sends or confirms leaves behind besides its reply: the health
    /// record (of a real send), the refusal's counter, and its log line.
    fn finish(
        &self,
        method: &Method,
        target: Target,
        result: &Result<String, CallError>,
        started: Instant,
    ) -> CallLog {
        if matches!(method, Method::SendOtp | Method::IssueOtp) {
            // A dry run never talks to Twilio, so its sends say nothing of Twilio's health.
            if self.backend.twilio().is_some() {
                match result {
                    Ok(_) => HEALTH.record("send", true, "sent"),
                    Err(e) => {
                        if let Some((healthy, detail)) = e.twilio_health() {
                            HEALTH.record("send", healthy, detail);
                        }
                    }
                }
            }
            // Refusals by a fraud rule or a limit are counted here, whichever check made them.
            if let Err(e) = result {
                METRICS.count_refusal(e.detail());
                if let CallError::Twilio {
                    code: code @ (20003 | 20005),
                    ..
                } = e
                {
                    crate::alerts::raise(
                        crate::alerts::Kind::CredentialsRefused,
                        &format!("Twilio refused a send with {code}: credentials or account"),
                    );
                }
            }
        }
        CallLog::new(method, target, result, started)
    }

    /// confirmOTP(phone or VE…): APM accepted the code. The conversion is counted (once per
    /// message) in every mode; Verify mode reports the approval, Messages mode sends Twilio's
    /// Message Feedback (in the background: it never delays the reply) and answers the SID.
    async fn confirm_otp(
        &self,
        confirmed: &Confirmed<'_>,
        started: Instant,
    ) -> (Target, Result<String, CallError>) {
        let (shown, target) = match confirmed {
            Confirmed::Phone(phone) => (Target::Phone(phone.as_str().to_owned()), phone.as_str()),
            Confirmed::Verification(sid) => (Target::Shown((*sid).to_owned()), *sid),
        };
        // The conversion counts here, once per message: APM accepted the code.
        let deadline = started + self.settings.deadline;
        let found = match confirmed {
            Confirmed::Phone(phone) => ConfirmTarget::Phone(phone.as_str()),
            Confirmed::Verification(sid) => ConfirmTarget::Sid(sid),
        };
        let found = self.guards.confirm(found, deadline).await;
        // No voice follow-up for a message whose code was accepted.
        if let Some(tracker) = &self.delivery {
            tracker.mark_confirmed(target);
        }
        let result = match &*self.backend {
            Backend::Verify(client, service) => {
                self.within(deadline, send::approve(client, service, target, deadline))
                    .await
            }
            Backend::DryRun { sids, verify: true } => Ok(if target.starts_with("VE") {
                target.to_owned()
            } else {
                sids.next("VE")
            }),
            _ => match (confirmed, &found) {
                (Confirmed::Phone(_), Some(found)) => {
                    if found.first {
                        self.feedback(&found.sid, started);
                    }
                    Ok(found.sid.clone())
                }
                (Confirmed::Phone(_), None) => Err(CallError::BadRequest(
                    "no message was sent to this number within the code's lifetime".into(),
                )),
                (Confirmed::Verification(_), _) => Err(CallError::BadRequest(
                    "a VE… SID needs Verify mode (verify_service_sid)".into(),
                )),
            },
        };
        (shown, result)
    }

    /// Message Feedback for `sid`, through the primary provider (whose account sent it, unless
    /// a failover provider did), bounded by a call's deadline; a failure is logged and counted.
    fn feedback(&self, sid: &str, started: Instant) {
        let Backend::Messages(_) = &*self.backend else {
            return;
        };
        if !sid.starts_with("SM") {
            return; // a voice call has no feedback
        }
        let backend = self.backend.clone();
        let sid = sid.to_owned();
        let deadline = started.max(Instant::now()) + self.settings.deadline;
        tokio::spawn(async move {
            let Some(client) = backend.twilio() else {
                return;
            };
            let sent = tokio::time::timeout_at(deadline, client.message_feedback(&sid, deadline));
            match sent.await {
                Ok(Ok(())) => METRICS.pumping.count_feedback("ok"),
                Ok(Err(e)) => {
                    METRICS.pumping.count_feedback("failed");
                    tracing::warn!(error = %e, "Twilio Message Feedback failed (the confirmation counts)");
                }
                Err(_) => {
                    METRICS.pumping.count_feedback("failed");
                    tracing::warn!("Twilio Message Feedback timed out (the confirmation counts)");
                }
            }
        });
    }

    /// Bounds a call to Twilio by the caller's deadline.
    async fn within(
        &self,
        deadline: Instant,
        call: impl std::future::Future<Output = Result<String, CallError>>,
    ) -> Result<String, CallError> {
        tokio::time::timeout_at(deadline, call)
            .await
            .unwrap_or_else(|_| Err(self.timed_out()))
    }

    fn timed_out(&self) -> CallError {
        CallError::Timeout {
            deadline_ms: self.settings.deadline.as_millis() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Options, Settings as Configured};
    use crate::guard::ratelimit::RateLimiter;

    #[test]
    fn a_call_future_stays_small() {
        // Every call's future is boxed when spawned (one copy), then moved as a pointer; one
        // that grew by holding a connect path inline had doubled the instructions a call
        // costs, when the task moved it by value. 4.1 KB in a test build today.
        let options = Options {
            dry_run: Some(true),
            ..Default::default()
        };
        let settings = Configured::resolve(&options, &|_| None).expect("dry-run settings");
        let guards = Guards {
            geo: settings.guard.geo.clone(),
            number_types: settings.guard.number_types.clone(),
            limiter: Arc::new(RateLimiter::new(settings.guard.rate_limits.clone())),
            lookup: None,
            store: None,
            pumping: Arc::new(crate::guard::pumping::Pumping::new(
                settings.guard.pumping.clone(),
            )),
            sent: Arc::new(crate::guard::sent::Sent::new(settings.guard.sent.clone())),
        };
        let backend = Arc::new(Backend::dry_run(false));
        let dispatcher = Dispatcher::new(settings.call, guards, backend);
        let request = Request {
            msgid: 1.into(),
            method: Method::SendOtp,
            params: vec!["123456".into(), "+31612345678".into(), "ACME".into()],
        };
        // sendOTP's: ping and health are answered without a future (`probe`).
        let call = dispatcher.call(&request, Instant::now());
        let size = std::mem::size_of_val(&call);
        assert!(size <= 8 * 1024, "the call future is {size} bytes");
    }
}
