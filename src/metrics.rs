//! Prometheus metrics: one process-wide set that every part counts into through its methods.
//! The loopback HTTP endpoint that serves it is `server::metrics_http`.
//!
//! Labels only ever carry values from fixed lists (method names we know, reason tokens), so
//! a caller cannot grow the set by sending odd method names.

mod outcomes;
mod pumping;

use outcomes::{AlertLabels, DeliveryLabels};

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub method: &'static str,
    /// `ok` or `error`.
    pub outcome: &'static str,
    /// The `ERR` reason token; empty for `ok`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `rate`, `get`, `set`, `ping`, `codes`.
    pub op: &'static str,
    /// `ok`, `failed`, `timeout`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabel {
    pub policy: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    pub rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FieldLabel {
    pub field: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabel {
    pub provider: String,
}

/// A caller named in the caller tokens file (or `none`), and its call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallerLabels {
    /// A name from the tokens file, or `none`: the set is bounded by the file.
    pub caller: String,
    pub method: &'static str,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// A Twilio account, its SID shortened as reports show it (`ACfe…ce`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabel {
    pub account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    /// Seconds per HTTP request to Twilio (each attempt, warm-ups included).
    pub twilio_seconds: Histogram,
    pub twilio_retries: Counter,
    in_flight: Gauge,
    connections: Gauge,
    connections_refused: Counter,
    reloads: Family<ResultLabel, Counter>,
    rate_limited: Family<LimitLabel, Counter>,
    blocked: Family<RuleLabel, Counter>,
    context_ignored: Family<FieldLabel, Counter>,
    lookups: Family<ResultLabel, Counter>,
    state_operations: Family<StateLabels, Counter>,
    state_fallbacks: Family<PolicyLabel, Counter>,
    pub failovers: Counter,
    breaker_open: Family<ProviderLabel, Gauge>,
    /// Twilio requests holding a slot of the request budget now, and the budget's size, by
    /// account (a failover provider on another account has its own budget).
    budget_in_use: Family<AccountLabel, Gauge>,
    budget_size: Family<AccountLabel, Gauge>,
    /// Seconds a request waited for a budget slot.
    pub budget_wait_seconds: Histogram,
    /// Calls answered `ERR unavailable: busy …` without a request, by reason.
    pub shed: Family<ReasonLabel, Counter>,
    pub twilio_429: Counter,
    /// Requests let through to relearn the answer time when it left no room (one per 10 s).
    pub budget_probes: Counter,
    /// TLS handshakes on the TCP listener, by result (`ok` or why it failed).
    tls_handshakes: Family<ResultLabel, Counter>,
    /// Calls that needed a caller token, by caller (`none`: no token or a wrong one).
    caller_calls: Family<CallerLabels, Counter>,
    /// Issue 25's block: conversion, the pumping guard, resends.
    pub pumping: pumping::PumpingMetrics,
    // Delivery status, follow-ups and alerts (issue 26).
    delivery: Family<DeliveryLabels, Counter>,
    delivery_events: Family<ResultLabel, Counter>,
    alerts: Family<AlertLabels, Counter>,
    /// issueOTP / checkOTP: codes issued, and checks by result.
    codes: Family<ResultLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// The one set of metrics, counted whether or not anyone scrapes it (a few atomics).
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("otp_sidecar");
        let r = &mut registry;
        let calls = registered(
            r,
            "calls",
            "RPC calls answered, by method, outcome and ERR reason",
        );
        // 1 ms .. ~4 s: loopback mocks at the low end, the deadline at the top.
        let twilio_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 13));
        r.register(
            "twilio_request_duration_seconds",
            "Time for one HTTP request to Twilio, answer read",
            twilio_seconds.clone(),
        );
        let twilio_retries = registered(
            r,
            "twilio_retries",
            "Requests to Twilio sent again after a refused connection or a 429",
        );
        let in_flight = registered(r, "in_flight", "Calls running now, all connections");
        let connections = registered(r, "connections", "Open connections");
        let connections_refused = registered(
            r,
            "connections_refused",
            "Connections closed at once because max_connections were open",
        );
        let reloads = registered(
            r,
            "reloads",
            "Configuration reloads (SIGHUP), applied or refused",
        );
        let rate_limited = registered(
            r,
            "rate_limited",
            "Sends refused by a rate limit, by limit (phone, ip, user, global)",
        );
        let blocked = registered(
            r,
            "blocked",
            "Sends refused by a fraud rule, by rule (country, line_type, carrier)",
        );
        let context_ignored = registered(
            r,
            "context_ignored",
            "sendOTP context values left out (or, for user, used with bad bytes replaced), by \
             field (user, ip, locale, channel, other, context)",
        );
        let lookups = registered(
            r,
            "lookups",
            "Twilio Lookup checks, by result (answered, cached, failed)",
        );
        let state_operations = registered(
            r,
            "state_operations",
            "Operations on the shared state store, by op (rate, get, set, ping) and result \
             (ok, failed, timeout)",
        );
        let state_fallbacks = registered(
            r,
            "state_fallbacks",
            "Calls that met a failed state store, by policy (local: limited in-process; \
             closed: refused)",
        );
        let failovers = registered(
            r,
            "failovers",
            "Messages handed to the next provider after one provably did not take them",
        );
        let breaker_open = registered(
            r,
            "breaker_open",
            "1 while a provider's circuit breaker is open (it is skipped), by provider",
        );
        let budget_in_use = registered(
            r,
            "twilio_budget_in_use",
            "Twilio requests in flight, holding a slot of the request budget, by account",
        );
        let budget_size = registered(
            r,
            "twilio_budget_size",
            "Slots of the Twilio request budget now (twilio_max_concurrency, less while backing off a 429), by account",
        );
        // 1 ms .. ~4 s, like the requests themselves.
        let budget_wait_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 13));
        r.register(
            "twilio_budget_wait_seconds",
            "Time a Twilio request that found no free slot of the request budget waited for one",
            budget_wait_seconds.clone(),
        );
        let shed = registered(
            r,
            "shed",
            "Calls answered busy without a Twilio request, by reason (queue: the wait ahead leaves no time; late: no slot before the last moment; no_time: too little time left at all)",
        );
        let twilio_429 = registered(
            r,
            "twilio_429",
            "HTTP 429 answers from Twilio (each shrinks the request budget)",
        );
        let budget_probes = registered(
            r,
            "twilio_budget_probes",
            "Requests let through to relearn Twilio's answer time when the learned one left no room before the deadline",
        );
        let tls_handshakes = registered(
            r,
            "tls_handshakes",
            "TLS handshakes on the TCP listener, by result (ok, timeout, no_client_certificate, bad_client_certificate, not_tls, alert, closed, io, other)",
        );
        let caller_calls = registered(
            r,
            "caller_calls",
            "Calls that needed a caller token (sendOTP, confirmOTP), by caller name from the tokens file (none: no token or one not accepted), method and outcome",
        );
        let pumping = pumping::PumpingMetrics::register(r);
        let delivery = registered(
            r,
            "delivery",
            "Messages' final status, by status, code, country",
        );
        let delivery_events = registered(r, "delivery_events", "Delivery tracking, by result: poll answered, deferred (no spare Twilio budget), failed; untracked; callback, callback_refused; followup_placed, followup_failed, followup_confirmed, followup_expired");
        let alerts = registered(
            r,
            "alerts",
            "Alerts, by kind and outcome: raised, suppressed, dropped, sent, failed",
        );
        let codes = registered(
            r,
            "codes",
            "issueOTP and checkOTP: codes issued, and checks by result (ok, invalid, expired, locked)",
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The running version", build_info);
        Metrics {
            registry,
            calls,
            twilio_seconds,
            twilio_retries,
            in_flight,
            connections,
            connections_refused,
            reloads,
            rate_limited,
            blocked,
            context_ignored,
            lookups,
            state_operations,
            state_fallbacks,
            failovers,
            breaker_open,
            budget_in_use,
            budget_size,
            budget_wait_seconds,
            shed,
            twilio_429,
            budget_probes,
            tls_handshakes,
            caller_calls,
            pumping,
            delivery,
            delivery_events,
            alerts,
            codes,
        }
    }

    /// The gauge of open connections, for the server's connection slots to move.
    pub fn connections_gauge(&self) -> Gauge {
        self.connections.clone()
    }

    /// The gauge of calls running, for the server's call slots to move.
    pub fn in_flight_gauge(&self) -> Gauge {
        self.in_flight.clone()
    }

    pub fn open_connections(&self) -> i64 {
        self.connections.get()
    }

    pub fn calls_in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// A connection closed at once because max_connections were open.
    pub fn count_connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// A SIGHUP reload, applied or refused.
    pub fn count_reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn count_handshake(&self, result: &'static str) {
        self.tls_handshakes
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// `caller` is a name from the tokens file, or `none`.
    pub fn count_caller(&self, caller: &str, method: &'static str, ok: bool) {
        self.caller_calls
            .get_or_create(&CallerLabels {
                caller: caller.to_owned(),
                method,
                outcome: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    pub fn breaker_open(&self, provider: &str, open: bool) {
        self.breaker_open
            .get_or_create(&ProviderLabel {
                provider: provider.to_owned(),
            })
            .set(i64::from(open));
    }

    pub fn count_lookup(&self, result: &'static str) {
        self.lookups.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn count_state(&self, op: &'static str, result: &'static str) {
        self.state_operations
            .get_or_create(&StateLabels { op, result })
            .inc();
    }

    pub fn count_state_fallback(&self, policy: &'static str) {
        self.state_fallbacks
            .get_or_create(&PolicyLabel { policy })
            .inc();
    }

    pub fn count_blocked(&self, rule: &'static str) {
        self.blocked.get_or_create(&RuleLabel { rule }).inc();
    }

    /// `field` is one of the context fields the guard knows (`user`, `ip`, `locale`, `channel`, `other`, `context`).
    pub fn count_context_ignored(&self, field: &'static str) {
        self.context_ignored
            .get_or_create(&FieldLabel { field })
            .inc();
    }

    pub fn count_rate_limited(&self, limit: &'static str) {
        self.rate_limited.get_or_create(&LimitLabel { limit }).inc();
    }

    /// Counts a refusal by a fraud rule or a rate limit, whichever check made it.
    pub fn count_refusal(&self, detail: crate::error::Detail) {
        match detail {
            crate::error::Detail::Rule(rule) => self.count_blocked(rule),
            crate::error::Detail::Limit(limit) => self.count_rate_limited(limit),
            _ => {}
        }
    }

    pub fn count_call(&self, method: &'static str, result: Result<(), &'static str>) {
        let (outcome, reason) = match result {
            Ok(()) => ("ok", ""),
            Err(reason) => ("error", reason),
        };
        self.calls
            .get_or_create(&CallLabels {
                method,
                outcome,
                reason,
            })
            .inc();
    }

    pub fn observe_twilio(&self, took: Duration) {
        self.twilio_seconds.observe(took.as_secs_f64());
    }

    /// A request the Twilio budget shed (`reason`: no_time, queue, late): nothing was sent.
    pub fn count_shed(&self, reason: &'static str) {
        self.shed.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn count_twilio_retry(&self) {
        self.twilio_retries.inc();
    }

    pub fn count_twilio_429(&self) {
        self.twilio_429.inc();
    }

    pub fn count_failover(&self) {
        self.failovers.inc();
    }

    pub fn count_budget_probe(&self) {
        self.budget_probes.inc();
    }

    /// The gauge of the account's budget slots in use, for its slots to move.
    pub fn budget_in_use_gauge(&self, account: &str) -> Gauge {
        self.budget_in_use
            .get_or_create(&AccountLabel {
                account: account.to_owned(),
            })
            .clone()
    }

    pub fn set_budget_size(&self, account: &str, size: usize) {
        self.budget_size
            .get_or_create(&AccountLabel {
                account: account.to_owned(),
            })
            .set(size as i64);
    }

    pub fn observe_budget_wait(&self, waited: Duration) {
        self.budget_wait_seconds.observe(waited.as_secs_f64());
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// A new metric of type `M`, registered under `name`.
fn registered<M>(registry: &mut Registry, name: &str, help: &str) -> M
where
    M: Default + Clone + prometheus_client::registry::Metric,
{
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}
