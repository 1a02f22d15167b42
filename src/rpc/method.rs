//! The methods a request may name, matched once as the request is read: everything after
//! works on [`Method`], never on the name.

/// A request's method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    SendOtp,
    ConfirmOtp,
    /// `deliveryStatus(SM…)`: the last known status of a message (issue 26).
    DeliveryStatus,
    /// The daemon draws the code, keeps its HMAC and sends it as sendOTP would.
    IssueOtp,
    /// Checks a code issueOTP sent.
    CheckOtp,
    Ping,
    Health,
    /// A name the daemon does not serve, as sent (bytes that are not UTF-8 replaced): the
    /// reply quotes its start.
    Unknown(String),
}

impl Method {
    /// The method a name (str or bin on the wire) stands for.
    pub fn of(name: &[u8]) -> Method {
        match name {
            b"sendOTP" => Method::SendOtp,
            b"confirmOTP" => Method::ConfirmOtp,
            b"deliveryStatus" => Method::DeliveryStatus,
            b"issueOTP" => Method::IssueOtp,
            b"checkOTP" => Method::CheckOtp,
            b"ping" => Method::Ping,
            b"health" => Method::Health,
            _ => Method::Unknown(String::from_utf8_lossy(name).into_owned()),
        }
    }

    /// The name as written on the wire.
    pub fn name(&self) -> &str {
        match self {
            Method::Unknown(name) => name,
            known => known.label(),
        }
    }

    /// The `method` label of `otp_sidecar_calls_total` (and the log line's `method`).
    pub fn label(&self) -> &'static str {
        match self {
            Method::SendOtp => "sendOTP",
            Method::ConfirmOtp => "confirmOTP",
            Method::DeliveryStatus => "deliveryStatus",
            Method::IssueOtp => "issueOTP",
            Method::CheckOtp => "checkOTP",
            Method::Ping => "ping",
            Method::Health => "health",
            Method::Unknown(_) => "unknown",
        }
    }

    /// `ping` and `health`: answered at once, without a task or a call slot, so a health
    /// check gets through however busy the daemon is.
    pub fn answers_at_once(&self) -> bool {
        matches!(self, Method::Ping | Method::Health)
    }
}

impl From<&str> for Method {
    fn from(name: &str) -> Method {
        Method::of(name.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_kept() {
        for name in [
            "sendOTP",
            "confirmOTP",
            "deliveryStatus",
            "issueOTP",
            "checkOTP",
            "ping",
            "health",
        ] {
            let method = Method::from(name);
            assert!(!matches!(method, Method::Unknown(_)), "{name}");
            assert_eq!(method.name(), name);
        }
        let odd = Method::of(b"sendOtp\xff");
        assert_eq!(odd, Method::Unknown("sendOtp\u{fffd}".into()));
        assert_eq!((odd.name(), odd.label()), ("sendOtp\u{fffd}", "unknown"));
    }
}
