//! Shared state: what the instances of a pool must agree on — today the rate limits and the
//! Lookup cache; later duplicate suppression, conversion counters and issued codes — kept in
//! Redis or Valkey. Every operation is bounded (`state_timeout_ms`, and never past the call's
//! deadline); when one fails the caller either falls back to its own in-process state
//! (`local`) or refuses (`closed`), as configured. Without a store (`memory`) nothing here runs.

mod connection;
mod keys;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use redis::aio::ConnectionManager;
use redis::Script;
use tokio::time::Instant;

pub use connection::check_url;
use keys::Keys;

use crate::error::CallError;
use crate::metrics::METRICS;
use crate::twilio::credentials::Secret;

/// What to do when the store cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Use this instance's own state (still limited, per instance).
    Local,
    /// Refuse the call: `ERR unavailable: state store …`.
    Closed,
}

impl Failure {
    pub fn name(self) -> &'static str {
        match self {
            Failure::Local => "local",
            Failure::Closed => "closed",
        }
    }
}

/// A shared store's settings (`--state redis://…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// As configured; it never carries a password (refused when it does).
    pub url: String,
    /// For logs and `check`: the URL without any user name.
    pub shown: String,
    pub password: Option<Secret>,
    /// The keyed hash's secret, shared by every instance.
    pub key: Secret,
    /// PEM roots for `rediss://` instead of the system's.
    pub ca_pem: Option<Vec<u8>>,
    pub prefix: String,
    pub timeout: Duration,
    pub failure: Failure,
}

/// One limit as the store checks it: its key, its emission interval and its window.
pub struct Limit {
    pub key: String,
    pub interval: Duration,
    pub window: Duration,
}

/// Why an operation did not complete; never a secret (the store's own error text, or the
/// timeout).
#[derive(Debug)]
pub struct Failed(String);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct Store {
    settings: StoreSettings,
    connection: ConnectionManager,
    keys: Keys,
    gcra: Script,
    /// Set from a failed operation until one succeeds: the warning is logged once per episode
    /// and `health` says so.
    degraded: AtomicBool,
}

impl Store {
    /// Makes the client; connecting waits for the first operation.
    pub fn new(settings: &StoreSettings) -> Result<Store> {
        if tokio::runtime::Handle::try_current().is_err() {
            anyhow::bail!("internal: the state store was made outside the runtime");
        }
        Ok(Store {
            connection: connection::connect(settings)?,
            keys: Keys::new(&settings.prefix, &settings.key),
            gcra: Script::new(include_str!("gcra.lua")),
            degraded: AtomicBool::new(false),
            settings: settings.clone(),
        })
    }

    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// The name for `value` of `kind` (`rate:phone`, `lookup`): a keyed hash, never the value.
    pub fn key(&self, kind: &str, value: &[u8]) -> String {
        self.keys.hashed(kind, value)
    }

    /// The name for what has no subject (`rate:global`).
    pub fn plain_key(&self, kind: &str) -> String {
        self.keys.plain(kind)
    }

    /// Checks and charges `limits` in one round trip (atomic across instances): `None` when
    /// all admit the send, or the index of the first that refuses and how long until it would
    /// not. A refusal charges nothing.
    pub async fn gcra(
        &self,
        limits: &[Limit],
        deadline: Instant,
    ) -> Result<Option<(usize, Duration)>, Failed> {
        let mut invocation = self.gcra.prepare_invoke();
        for limit in limits {
            invocation
                .key(&limit.key)
                .arg(micros(limit.interval))
                .arg(micros(limit.window));
        }
        let mut connection = self.connection.clone();
        let (index, wait_us): (usize, u64) = self
            .attempt("rate", deadline, invocation.invoke_async(&mut connection))
            .await?;
        Ok(match index {
            0 => None,
            i => Some((i - 1, Duration::from_micros(wait_us))),
        })
    }

    pub async fn get(&self, key: &str, deadline: Instant) -> Result<Option<Vec<u8>>, Failed> {
        let mut connection = self.connection.clone();
        let mut get = redis::cmd("GET");
        get.arg(key);
        self.attempt("get", deadline, get.query_async(&mut connection))
            .await
    }

    /// Stores `value` for `ttl` (at least a millisecond).
    pub async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        deadline: Instant,
    ) -> Result<(), Failed> {
        let mut connection = self.connection.clone();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut set = redis::cmd("SET");
        set.arg(key).arg(value).arg("PX").arg(ttl_ms);
        self.attempt("set", deadline, set.query_async::<()>(&mut connection))
            .await
    }

    /// Asks the store whether it answers (the watch task's heartbeat, and `check --online`).
    pub async fn ping(&self, within: Duration) -> Result<(), Failed> {
        let mut connection = self.connection.clone();
        let ping = redis::cmd("PING");
        let deadline = Instant::now() + within;
        let answer = ping.query_async::<String>(&mut connection);
        self.attempt_within("ping", deadline, within, answer)
            .await
            .map(drop)
    }

    /// What to do after `failed`: `Ok` to go on with this instance's own state (`local`), or
    /// the caller's refusal (`closed`). (The failure itself was logged, once per episode.)
    pub fn fall_back(&self, failed: Failed) -> Result<(), CallError> {
        let policy = self.settings.failure;
        METRICS.count_state_fallback(policy.name());
        match policy {
            Failure::Local => Ok(()),
            Failure::Closed => Err(CallError::Unavailable(format!("state store {}", failed.0))),
        }
    }

    /// `redis ok`, or what a caller gets while the store does not answer.
    pub fn status(&self) -> &'static str {
        match (self.degraded.load(Ordering::Relaxed), self.settings.failure) {
            (false, _) => "redis ok",
            (true, Failure::Local) => "degraded (local fallback)",
            (true, Failure::Closed) => "degraded (refusing sends)",
        }
    }

    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    pub fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    fn mark_degraded(&self, failed: &Failed) {
        if self.degraded.swap(true, Ordering::Relaxed) {
            tracing::debug!("state store {}: {}", self.settings.shown, failed.0);
        } else {
            let then = match self.settings.failure {
                Failure::Local => "each instance limits on its own until it answers again",
                Failure::Closed => "sends are refused until it answers again",
            };
            tracing::warn!(
                "state store {} {} ({}; state_failure = {}); logged once per episode",
                self.settings.shown,
                failed.0,
                then,
                self.settings.failure.name()
            );
        }
    }

    async fn attempt<T>(
        &self,
        op: &'static str,
        deadline: Instant,
        work: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Failed> {
        self.attempt_within(op, deadline, self.settings.timeout, work)
            .await
    }

    /// Runs one operation for at most `limit`, and never past `deadline`.
    async fn attempt_within<T>(
        &self,
        op: &'static str,
        deadline: Instant,
        limit: Duration,
        work: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Failed> {
        let budget = limit.min(deadline.saturating_duration_since(Instant::now()));
        let failed = match tokio::time::timeout(budget, work).await {
            Ok(Ok(value)) => {
                METRICS.count_state(op, "ok");
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("state store {} answers again", self.settings.shown);
                }
                return Ok(value);
            }
            Ok(Err(e)) => {
                METRICS.count_state(op, "failed");
                Failed(format!("failed: {}", one_line(&e)))
            }
            Err(_) => {
                METRICS.count_state(op, "timeout");
                Failed(format!("did not answer within {} ms", budget.as_millis()))
            }
        };
        self.mark_degraded(&failed);
        Err(failed)
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The store's error as one line: its kind and the server's words, which never carry the
/// password.
fn one_line(e: &redis::RedisError) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}
