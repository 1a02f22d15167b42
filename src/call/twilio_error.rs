//! The one translation of a Twilio outcome into what the caller is told: `ERR twilio <code>:`
//! for Twilio's refusals, `ERR unavailable:` when it could not be reached, failed, or was not
//! asked (busy), `ERR internal:` for an answer that is not what was asked, `ERR timeout:`.

use crate::error::CallError;
use crate::twilio::fraud::is_fraud_block;
use crate::twilio::Error;

impl From<Error> for CallError {
    fn from(error: Error) -> Self {
        match error {
            Error::Busy(_) => CallError::Busy(error.to_string()),
            Error::Rejected {
                code: Some(code), ..
            } if is_fraud_block(Some(code)) => CallError::FraudGuard(code),
            Error::Rejected {
                code: Some(code),
                status,
                message,
            } => CallError::Twilio {
                code,
                message,
                status,
            },
            Error::Rejected { code: None, .. } | Error::Unreachable(_) | Error::Lost(_) => {
                CallError::Unavailable(error.to_string())
            }
            Error::NoValidSid | Error::Unexpected(_) | Error::Unmade(_) => {
                CallError::Internal(error.to_string())
            }
            Error::Timeout(after) => CallError::Timeout {
                deadline_ms: after.as_millis() as u64,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twilio::error::Shed;

    #[test]
    fn the_wire_forms_of_twilio_outcomes() {
        let wire = |e: Error| CallError::from(e).to_string();
        assert_eq!(
            wire(Error::Busy(Shed::NoTime)),
            "ERR unavailable: busy: too little time left for Twilio to answer before the deadline"
        );
        assert_eq!(
            wire(Error::Rejected {
                code: Some(21211),
                status: 400,
                message: "Invalid 'To' Phone Number".into()
            }),
            "ERR twilio 21211: Invalid 'To' Phone Number"
        );
        assert_eq!(
            wire(Error::Rejected {
                code: None,
                status: 503,
                message: String::new()
            }),
            "ERR unavailable: Twilio answered HTTP 503"
        );
        assert_eq!(
            wire(Error::Rejected {
                code: Some(60410),
                status: 403,
                message: "blocked by Fraud Guard".into()
            }),
            "ERR blocked: fraud_guard 60410"
        );
        assert_eq!(
            wire(Error::NoValidSid),
            "ERR internal: Twilio answered without a valid SID"
        );
        assert_eq!(
            wire(Error::Lost("connection reset".into())),
            "ERR unavailable: connection reset"
        );
        assert!(CallError::from(Error::Busy(Shed::Late))
            .twilio_health()
            .is_none());
    }
}
