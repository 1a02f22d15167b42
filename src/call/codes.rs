//! issueOTP and checkOTP: the daemon's own codes. issueOTP sends through sendOTP's one path
//! (`send.rs`: every guard, template, channel and failover), with the code drawn here and
//! its HMAC kept once the guards let it go; checkOTP asks the codes, and a success is a
//! conversion, reported through `on_code_accepted`.

use tokio::time::Instant;

use super::backend::Backend;
use super::request::{CheckOtp, IssueOtp};
use super::send::Outgoing;
use super::Dispatcher;
use crate::error::CallError;
use crate::metrics::METRICS;

impl Dispatcher {
    /// issueOTP: a new code to `issue.phone`; the SID, as sendOTP answers.
    pub(super) async fn issue_otp(
        &self,
        issue: &IssueOtp<'_>,
        started: Instant,
    ) -> Result<String, CallError> {
        let codes = self.codes_here("issueOTP")?;
        let code = codes.draw()?;
        let outgoing = Outgoing {
            phone: issue.phone.as_str(),
            code: code.as_str(),
            sender: &issue.sender,
            context: &issue.context,
        };
        let sid = self.deliver(&outgoing, Some(codes), started).await?;
        METRICS.count_code("issued");
        Ok(sid)
    }

    /// checkOTP: `OK` once for a live code of `check.phone`, or `ERR invalid_code`,
    /// `expired` or `locked`.
    pub(super) async fn check_otp(
        &self,
        check: &CheckOtp<'_>,
        started: Instant,
    ) -> Result<String, CallError> {
        let codes = self.codes_here("checkOTP")?;
        let deadline = started + self.settings.deadline;
        if Instant::now() >= deadline {
            return Err(self.timed_out());
        }
        let phone = check.phone.as_str();
        codes
            .check(phone, check.code, self.store_until(deadline))
            .await?;
        self.on_code_accepted(phone, started, deadline).await;
        Ok("OK".to_owned())
    }

    /// A code was accepted for `phone` (E.164): the login converted. Counted as a confirmation
    /// (once per message, with Twilio's Message Feedback as confirmOTP sends it), and no voice
    /// follow-up is placed for the message any more.
    async fn on_code_accepted(&self, phone: &str, started: Instant, deadline: Instant) {
        let found = self
            .guards
            .confirm(crate::guard::ConfirmTarget::Phone(phone), deadline)
            .await;
        if let Some(found) = found.filter(|found| found.first) {
            self.feedback(&found.sid, started);
        }
        if let Some(tracker) = &self.delivery {
            tracker.mark_confirmed(phone);
        }
    }

    /// The codes, unless the backend is Verify's, which draws and checks its own.
    fn codes_here(&self, method: &str) -> Result<&crate::codes::Codes, CallError> {
        let verify = matches!(
            &*self.backend,
            Backend::Verify(..) | Backend::DryRun { verify: true, .. }
        );
        match (&self.codes, verify) {
            (Some(codes), false) => Ok(codes),
            (_, true) => Err(CallError::BadRequest(format!(
                "{method} is not served in Verify mode (verify_service_sid): Verify draws and \
                 checks its own codes; use sendOTP and confirmOTP"
            ))),
            (None, false) => Err(CallError::Internal(format!("{method}: no codes"))),
        }
    }

    /// One store budget for a codes operation: `state_timeout_ms`, never past `deadline`.
    pub(super) fn store_until(&self, deadline: Instant) -> Instant {
        match &self.guards.store {
            Some(store) => deadline.min(Instant::now() + store.timeout()),
            None => deadline,
        }
    }
}
