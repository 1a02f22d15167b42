//! Whether the instances sharing a prefix agree: each heartbeat leaves this instance's record
//! (a fingerprint of OTP_SIDECAR_STATE_KEY and its rate limits, under a random id of the
//! process) in `{prefix}:instances` and reads the others'. Another key shares nothing (its key names differ); other limits read
//! one timestamp two ways. Either is warned about once per change, and shown by `health`
//! (`state_agreement`) and `check --online`.

use std::hash::BuildHasher;
use std::sync::{LazyLock, Mutex};

/// This process's name in the records: its own record is never "another instance", also
/// while its previous one (before a reload changed the limits) lasts.
pub fn instance_id() -> &'static str {
    static ID: LazyLock<String> = LazyLock::new(|| {
        let random = std::collections::hash_map::RandomState::new();
        format!("{:016x}", random.hash_one(std::process::id()))
    });
    &ID
}

/// What `state_agreement` says when nothing disagrees.
pub const AGREED: &str = "agreed";

pub struct Agreement {
    /// `fingerprint limits`.
    own: Mutex<String>,
    fingerprint: String,
    /// The last verdict, to warn once per change.
    verdict: Mutex<String>,
}

impl Agreement {
    pub fn new(fingerprint: String) -> Agreement {
        Agreement {
            own: Mutex::new(format!("{fingerprint} (limits not set)")),
            fingerprint,
            verdict: Mutex::new(AGREED.to_owned()),
        }
    }

    /// This instance's limits as a record shows them (`phone=3/10m ip=off …`).
    pub fn set_limits(&self, limits: &str) {
        if let Ok(mut own) = self.own.lock() {
            *own = format!("{} {limits}", self.fingerprint);
        }
    }

    pub fn own(&self) -> String {
        self.own.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// What the others' records say of this one.
    pub fn judge(&self, others: &[String]) -> String {
        let own = self.own();
        let limits = own.split_once(' ').map_or("", |(_, l)| l);
        if others
            .iter()
            .any(|other| !other.starts_with(&format!("{} ", self.fingerprint)))
        {
            return "another instance on this prefix uses another OTP_SIDECAR_STATE_KEY \
                    (nothing is shared with it)"
                .to_owned();
        }
        match others.iter().find(|other| *other != &own) {
            Some(other) => {
                let theirs = other.split_once(' ').map_or("", |(_, l)| l);
                format!("another instance uses other rate limits ({theirs}; here {limits})")
            }
            None => AGREED.to_owned(),
        }
    }

    /// Keeps `verdict`; true when it changed (the caller logs it once).
    pub fn settle(&self, verdict: &str) -> bool {
        let Ok(mut last) = self.verdict.lock() else {
            return false;
        };
        if *last == verdict {
            return false;
        }
        verdict.clone_into(&mut last);
        true
    }

    pub fn verdict(&self) -> String {
        self.verdict
            .lock()
            .map(|v| v.clone())
            .unwrap_or_else(|_| AGREED.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_keys_and_other_limits_are_told_apart() {
        let agreement = Agreement::new("abc".into());
        agreement.set_limits("phone=3/10m");
        assert_eq!(agreement.judge(&[]), AGREED);
        assert_eq!(agreement.judge(&["abc phone=3/10m".into()]), AGREED);
        assert!(agreement
            .judge(&["abc phone=10/10m".into()])
            .contains("other rate limits (phone=10/10m; here phone=3/10m)"));
        assert!(agreement
            .judge(&["def phone=3/10m".into()])
            .contains("another OTP_SIDECAR_STATE_KEY"));
        assert!(agreement.settle("x"));
        assert!(!agreement.settle("x"));
        assert!(agreement.settle(AGREED));
    }
}
