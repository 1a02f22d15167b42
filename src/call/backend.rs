//! Where a code goes: Twilio Messages, Twilio Verify, or nowhere (dry-run).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::status::ProviderRow;
use crate::twilio::failover::{Provider, Providers, PRIMARY};
use crate::twilio::verify::VerifyService;
use crate::twilio::TwilioClient;

#[derive(Debug)]
pub enum Backend {
    /// Programmable Messaging: the daemon writes the text (or places the call) itself, through
    /// the primary provider or the failover ones.
    Messages(Providers),
    /// Verify: Twilio writes the text around APM's code, and learns from confirmOTP.
    Verify(Box<TwilioClient>, VerifyService),
    /// Sends nothing and answers with a made-up SID (`VE…` in Verify mode, else `SM…`), so
    /// a test access policy can run its success branch end to end.
    DryRun { sids: DrySids, verify: bool },
}

impl Backend {
    /// A dry run: made-up `VE…` SIDs in Verify mode, else `SM…`.
    pub fn dry_run(verify: bool) -> Backend {
        Backend::DryRun {
            sids: DrySids::default(),
            verify,
        }
    }

    /// The mode's name, for health reports.
    pub fn mode(&self) -> &'static str {
        match self {
            Backend::Messages(_) => "twilio",
            Backend::Verify(..) => "verify",
            Backend::DryRun { .. } => "dry_run",
        }
    }

    /// The Twilio client, unless this is a dry run.
    pub fn twilio(&self) -> Option<&TwilioClient> {
        match self {
            Backend::Messages(providers) => Some(providers.primary()),
            Backend::Verify(client, _) => Some(client),
            Backend::DryRun { .. } => None,
        }
    }

    /// The providers and their breakers for the status page, the primary first (none in a
    /// dry run).
    pub fn providers(&self) -> Vec<ProviderRow> {
        let row = |name: &str, client: &TwilioClient, breaker_open| ProviderRow {
            name: name.to_owned(),
            account: client.account_shown(),
            breaker_open,
        };
        match self {
            Backend::Messages(providers) => providers
                .all()
                .iter()
                .map(|p| row(&p.name, &p.client, p.breaker_open()))
                .collect(),
            Backend::Verify(client, _) => vec![row(PRIMARY, client, false)],
            Backend::DryRun { .. } => Vec::new(),
        }
    }

    /// The failover providers (Messages mode), in order.
    pub fn backups(&self) -> &[Provider] {
        match self {
            Backend::Messages(providers) => providers.backups(),
            _ => &[],
        }
    }
}

/// Delivery polls and follow-up calls reach the provider that sent a message through this.
impl crate::delivery::Clients for Backend {
    fn client(&self, index: usize) -> Option<&TwilioClient> {
        match self {
            Backend::Messages(providers) => providers.client(index),
            _ => None,
        }
    }
}

/// Unique, Twilio-shaped SIDs: a prefix (`SM`, `VE`, `CA`) + 32 hex digits.
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
    pub fn next(&self, prefix: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let hi = splitmix64(self.seed ^ n);
        let lo = splitmix64(hi ^ n.rotate_left(17));
        format!("{prefix}{hi:016x}{lo:016x}")
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
        let a = sids.next("SM");
        let b = sids.next("SM");
        assert!(crate::twilio::is_sid(&a, "SM"), "{a}");
        assert_ne!(a, b);
    }
}
