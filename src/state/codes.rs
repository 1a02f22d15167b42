//! Issued codes in the shared store (`codes.lua`): kept and checked in one atomic round trip
//! each, on the store's clock, so an HA pair issues on one instance and checks on the other.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use tokio::time::Instant;

use super::{micros, Failed, Store};

static CODES: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("codes.lua")));

/// What the script answered: its verdict number (see `codes.lua`) and a time in µs.
pub type Answer = (i64, u64);

impl Store {
    /// Adds `mac` (hex) to the codes under `key`, living `lifetime`; at most `max_live` kept.
    pub async fn keep_code(
        &self,
        key: &str,
        mac: &str,
        lifetime: Duration,
        max_live: usize,
        until: Instant,
    ) -> Result<(), Failed> {
        self.run_codes(key, ("keep", mac, lifetime, max_live as u64), until)
            .await
            .map(|_| ())
    }

    /// Checks `mac` (hex) against the codes under `key`, consuming them on a match.
    pub async fn check_code(
        &self,
        key: &str,
        mac: &str,
        lifetime: Duration,
        max_attempts: u32,
        until: Instant,
    ) -> Result<Answer, Failed> {
        self.run_codes(
            key,
            ("check", mac, lifetime, u64::from(max_attempts)),
            until,
        )
        .await
    }

    async fn run_codes(
        &self,
        key: &str,
        (op, mac, lifetime, limit): (&str, &str, Duration, u64),
        until: Instant,
    ) -> Result<Answer, Failed> {
        let (held, budget) = self.hold("codes", until)?;
        let mut invocation = CODES.prepare_invoke();
        invocation
            .key(key)
            .arg(op)
            .arg(mac)
            .arg(micros(lifetime))
            .arg(self.clock.store_time(Instant::now() + budget))
            .arg(limit);
        let mut connection = held.connection.clone();
        let answer: Answer = self
            .attempt(
                "codes",
                &held,
                budget,
                invocation.invoke_async(&mut connection),
            )
            .await?;
        if answer.0 < 0 {
            // Only when this host's idea of the store's clock is off: nothing changed.
            return Err(Failed(
                "answered that the call's deadline had passed".into(),
            ));
        }
        Ok(answer)
    }
}
