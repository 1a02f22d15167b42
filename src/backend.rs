//! Where an SMS goes: Twilio, or nowhere (dry-run).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::error::CallError;
use crate::twilio::{Sms, TwilioClient};

#[derive(Debug)]
pub enum Backend {
    Twilio(Box<TwilioClient>),
    /// Sends nothing and answers with a made-up `SM` SID, so a test access policy can run
    /// its success branch end to end.
    DryRun(DrySids),
}

impl Backend {
    pub async fn send(&self, sms: &Sms<'_>, deadline: Instant) -> Result<String, CallError> {
        match self {
            Backend::Twilio(client) => client.send(sms, deadline).await,
            Backend::DryRun(sids) => Ok(sids.next()),
        }
    }

    /// The mode's name, for health reports.
    pub fn mode(&self) -> &'static str {
        match self {
            Backend::Twilio(_) => "twilio",
            Backend::DryRun(_) => "dry_run",
        }
    }
}

/// Unique, SM-shaped SIDs: `SM` + 32 hex digits, like Twilio's.
#[derive(Debug)]
pub struct DrySids {
    seed: u64,
    counter: AtomicU64,
}

impl Default for DrySids {
    fn default() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        DrySids {
            seed: now ^ u64::from(std::process::id()).rotate_left(32),
            counter: AtomicU64::new(0),
        }
    }
}

impl DrySids {
    pub fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let hi = splitmix64(self.seed ^ n);
        let lo = splitmix64(hi ^ n.rotate_left(17));
        format!("SM{hi:016x}{lo:016x}")
    }
}

/// A tiny, well-known mixing function: enough to make the SIDs look unrelated.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_sids_are_sm_shaped_and_unique() {
        let sids = DrySids::default();
        let a = sids.next();
        let b = sids.next();
        assert!(crate::validate::is_sid(&a, "SM"), "{a}");
        assert_ne!(a, b);
    }
}
