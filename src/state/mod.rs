//! Shared state: what the instances of a pool must agree on — today the rate limits and the
//! Lookup cache; later duplicate suppression, conversion counters and issued codes — kept in
//! Redis or Valkey. Every operation is bounded (`state_timeout_ms`, and never past the call's
//! deadline); when one fails the caller either falls back to its own in-process state
//! (`local`) or refuses (`closed`), as configured. Without a store (`memory`) nothing here runs.

mod agree;
mod bounded;
mod clock;
mod codes;
mod guard;
mod keys;
mod link;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use redis::Script;
use tokio::time::Instant;

use agree::Agreement;
pub use agree::AGREED;
use clock::Clock;
pub use guard::{Pumped, Verdict, Watch};
use keys::Keys;
pub use link::{check_sentinel_url, sentinel_rest};
use link::{Held, Link};

use crate::error::{sanitize, CallError};
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

impl Failed {
    /// The store is a Redis Cluster node, which no retry will change.
    pub fn is_cluster(&self) -> bool {
        self.0.contains(link::CLUSTER_REFUSED)
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct Store {
    settings: StoreSettings,
    link: Arc<Link>,
    keys: Keys,
    gcra: Script,
    probe: Script,
    tally: Script,
    record: Script,
    /// Set from a failed operation (a call's or the heartbeat's, which writes like a call)
    /// until one succeeds: the warning is logged once per episode and `health` says so.
    degraded: AtomicBool,
    /// Heartbeats in a row that got no answer: a connection silent for long is remade.
    silent: AtomicU32,
    clock: Clock,
    agreement: Agreement,
}

/// How long an instance's record lasts without a heartbeat.
const RECORD_LASTS: Duration = Duration::from_secs(10);
/// Heartbeats without an answer before the connection is remade.
const SILENT_BEATS: u32 = 3;

impl Store {
    /// Makes the client; connecting waits for the first operation.
    pub fn new(settings: &StoreSettings) -> Result<Store> {
        if tokio::runtime::Handle::try_current().is_err() {
            anyhow::bail!("internal: the state store was made outside the runtime");
        }
        let keys = Keys::new(&settings.prefix, &settings.key);
        // A keyed hash of nothing: equal only where the key is.
        let fingerprint = keys.hashed("key-fingerprint", b"");
        let fingerprint = fingerprint[fingerprint.len() - 16..].to_owned();
        Ok(Store {
            link: Link::new(settings)?,
            keys,
            gcra: Script::new(include_str!("gcra.lua")),
            probe: Script::new(include_str!("probe.lua")),
            tally: Script::new(include_str!("tally.lua")),
            record: Script::new(include_str!("record.lua")),
            degraded: AtomicBool::new(false),
            silent: AtomicU32::new(0),
            clock: Clock::new(),
            agreement: Agreement::new(fingerprint),
            settings: settings.clone(),
        })
    }

    /// The rate limits this instance runs, as its record shows them to the others.
    pub fn set_limits(&self, limits: &str) {
        self.agreement.set_limits(limits);
    }

    /// `agreed`, or how another instance on this prefix disagrees.
    pub fn agreement(&self) -> String {
        self.agreement.verdict()
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

    /// GET within the call's store budget (`until`).
    pub async fn get(&self, key: &str, until: Instant) -> Result<Option<Vec<u8>>, Failed> {
        let (held, budget) = self.hold("get", until)?;
        let mut connection = held.connection.clone();
        let mut get = redis::cmd("GET");
        get.arg(key);
        self.attempt("get", &held, budget, get.query_async(&mut connection))
            .await
    }

    /// Stores `value` for `ttl` (at least a millisecond).
    pub async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        until: Instant,
    ) -> Result<(), Failed> {
        let (held, budget) = self.hold("set", until)?;
        let mut connection = held.connection.clone();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut set = redis::cmd("SET");
        set.arg(key).arg(value).arg("PX").arg(ttl_ms);
        self.attempt("set", &held, budget, set.query_async::<()>(&mut connection))
            .await
    }

    /// The heartbeat (and the start's and `check --online`'s question): connects when there is
    /// no connection, then runs a write like a call's, reads the store's clock and the other
    /// instances' records. `record`: leave this instance's record (a daemon; not `check`).
    pub async fn probe(&self, within: Duration, record: bool) -> Result<(), Failed> {
        let held = match self.link.get_or_connect().await {
            Ok(held) => held,
            Err(why) => {
                METRICS.count_state("ping", "failed");
                let failed = Failed(format!("cannot connect: {}", sanitize(&why)));
                self.mark_degraded(&failed);
                return Err(failed);
            }
        };
        let mut invocation = self.probe.prepare_invoke();
        invocation
            .key(self.keys.plain("instances"))
            .key(self.keys.plain("probe"))
            .arg(agree::instance_id())
            .arg(self.agreement.own())
            .arg(micros(RECORD_LASTS))
            .arg(u8::from(record));
        let mut connection = held.connection.clone();
        let sent = Instant::now();
        let answer = self
            .attempt(
                "ping",
                &held,
                within,
                invocation.invoke_async(&mut connection),
            )
            .await;
        let (store_now, others): (u64, Vec<String>) = match answer {
            Ok(answer) => answer,
            Err(failed) => {
                if failed.0.starts_with("did not answer")
                    && self.silent.fetch_add(1, Ordering::Relaxed) + 1 >= SILENT_BEATS
                {
                    self.silent.store(0, Ordering::Relaxed);
                    self.link.forget(&held);
                }
                return Err(failed);
            }
        };
        self.silent.store(0, Ordering::Relaxed);
        self.clock.learn(sent, Instant::now(), store_now);
        let verdict = self.agreement.judge(&others);
        if self.agreement.settle(&verdict) {
            if verdict == AGREED {
                tracing::info!(
                    "state store {}: the instances agree again",
                    self.settings.shown
                );
            } else {
                tracing::warn!("state store {}: {verdict}", self.settings.shown);
            }
        }
        Ok(())
    }

    /// What to do after `failed`: `Ok` to go on with this instance's own state (`local`), or
    /// the caller's refusal (`closed`). (The failure itself was logged, once per episode.)
    pub fn fall_back(&self, failed: Failed) -> Result<(), CallError> {
        let policy = self.settings.failure;
        METRICS.count_state_fallback(policy.name());
        match policy {
            Failure::Local => Ok(()),
            // The store's own words stay in the log (logged once per episode by the store).
            Failure::Closed => {
                tracing::debug!(
                    "state store {}: refusing ({})",
                    self.settings.shown,
                    failed.0
                );
                Err(CallError::StateStore)
            }
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
            crate::alerts::raise(
                crate::alerts::Kind::StoreLost,
                &format!("state store {} {} ({then})", self.settings.shown, failed.0),
            );
        }
    }

    /// The connection and the time an operation may take: at most `state_timeout_ms`, and
    /// never past `until` (the call's own store budget). No connection, or no time left,
    /// fails at once.
    pub(crate) fn hold(
        &self,
        op: &'static str,
        until: Instant,
    ) -> Result<(Held, Duration), Failed> {
        let budget = self
            .settings
            .timeout
            .min(until.saturating_duration_since(Instant::now()));
        if budget.is_zero() {
            // The call spent its store budget on an earlier operation: not the store's fault.
            METRICS.count_state(op, "timeout");
            return Err(Failed("no time left for the store in this call".into()));
        }
        match self.link.get() {
            Some(held) => Ok((held, budget)),
            None => {
                METRICS.count_state(op, "failed");
                let failed = Failed("is not connected".into());
                self.mark_degraded(&failed);
                Err(failed)
            }
        }
    }

    /// Runs one operation on `held` for at most `budget`.
    pub(crate) async fn attempt<T>(
        &self,
        op: &'static str,
        held: &Held,
        budget: Duration,
        work: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Failed> {
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
                if remakes_connection(&e) {
                    self.link.forget(held);
                }
                Failed(format!("failed: {}", sanitize(&one_line(&e))))
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

/// An error after which the connection is of no more use: it closed or broke, the server
/// refused our credentials, or it is no longer the primary (behind Sentinel the next
/// connection asks again where the primary is).
fn remakes_connection(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || matches!(
            e.code(),
            Some("READONLY" | "NOAUTH" | "WRONGPASS" | "MASTERDOWN")
        )
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The store's error as one line: its kind and the server's words, which never carry the
/// password.
fn one_line(e: &redis::RedisError) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}
