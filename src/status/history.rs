//! The last hour, per minute: a snapshot of the counters the daemon keeps anyway (sends,
//! refusals by reason, the Twilio latency histogram), taken once a minute by the sampler task;
//! a minute's figures are the difference between two snapshots. Nothing is added to the call
//! path.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use super::samples::Samples;
use super::unix_now;

/// Snapshots kept: 61 give the 60 minutes between them.
const KEPT: usize = 61;

pub const CALLS: &str = "otp_sidecar_calls_total";
const LATENCY: &str = "otp_sidecar_twilio_request_duration_seconds_bucket";

/// The counters at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Seconds since the epoch.
    pub at: u64,
    pub sent: u64,
    /// sendOTP refusals by wire reason.
    pub refused: BTreeMap<String, u64>,
    /// The latency histogram: (upper bound in seconds, answers at or below it).
    pub latency: Vec<(f64, u64)>,
}

impl Snapshot {
    pub fn of(samples: &Samples, at: u64) -> Snapshot {
        let sent = samples.sum(CALLS, &[("method", "sendOTP"), ("outcome", "ok")]);
        let mut refused = BTreeMap::new();
        for s in samples.of(CALLS, &[("method", "sendOTP"), ("outcome", "error")]) {
            let reason = s.label("reason").unwrap_or_default().to_owned();
            *refused.entry(reason).or_insert(0) += s.value.max(0.0) as u64;
        }
        let mut latency: Vec<(f64, u64)> = samples
            .of(LATENCY, &[])
            .filter_map(|s| {
                let le = s.label("le")?;
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((bound, s.value.max(0.0) as u64))
            })
            .collect();
        latency.sort_by(|a, b| a.0.total_cmp(&b.0));
        Snapshot {
            at,
            sent,
            refused,
            latency,
        }
    }
}

/// One minute's figures (the last one runs until now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minute {
    /// When it began, seconds since the epoch.
    pub at: u64,
    pub sent: u64,
    pub refused: BTreeMap<String, u64>,
    /// Twilio answer times, ms (the upper bound of the histogram bucket); `None`: no answer.
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
}

static HISTORY: Mutex<VecDeque<Snapshot>> = Mutex::new(VecDeque::new());

/// Takes the minute's snapshot (the sampler task, once a minute; the first at start).
pub fn sample() {
    let snapshot = Snapshot::of(&Samples::now(), unix_now());
    if let Ok(mut history) = HISTORY.lock() {
        if history.len() == KEPT {
            history.pop_front();
        }
        history.push_back(snapshot);
    }
}

/// The minutes between the snapshots kept, and the one running since the last (up to `now`).
pub fn minutes(now: &Snapshot) -> Vec<Minute> {
    let kept: Vec<Snapshot> = HISTORY
        .lock()
        .map(|h| h.iter().cloned().collect())
        .unwrap_or_default();
    between(&kept, now)
}

fn between(kept: &[Snapshot], now: &Snapshot) -> Vec<Minute> {
    let start = Snapshot {
        at: now.at,
        ..Snapshot::default()
    };
    let mut points: Vec<&Snapshot> = kept.iter().collect();
    if points.is_empty() {
        points.push(&start);
    }
    points.push(now);
    // The oldest minute drops out once the running one makes 61.
    let skip = points.len().saturating_sub(KEPT);
    points[skip..]
        .windows(2)
        .map(|w| difference(w[0], w[1]))
        .collect()
}

fn difference(before: &Snapshot, after: &Snapshot) -> Minute {
    let refused = after
        .refused
        .iter()
        .map(|(reason, n)| {
            let was = before.refused.get(reason).copied().unwrap_or(0);
            (reason.clone(), n.saturating_sub(was))
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    let buckets: Vec<(f64, u64)> = after
        .latency
        .iter()
        .map(|(bound, n)| {
            let was = before
                .latency
                .iter()
                .find(|(b, _)| b == bound)
                .map_or(0, |(_, n)| *n);
            (*bound, n.saturating_sub(was))
        })
        .collect();
    Minute {
        at: before.at,
        sent: after.sent.saturating_sub(before.sent),
        refused,
        p50_ms: quantile_ms(&buckets, 0.50),
        p99_ms: quantile_ms(&buckets, 0.99),
    }
}

/// The upper bound (ms) of the first cumulative bucket holding `q` of the answers; above the
/// last finite bound, that bound.
fn quantile_ms(buckets: &[(f64, u64)], q: f64) -> Option<u64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let wanted = (q * total as f64).ceil() as u64;
    let last_finite = buckets
        .iter()
        .rev()
        .find(|(b, _)| b.is_finite())
        .map_or(0.0, |(b, _)| *b);
    let bound = buckets
        .iter()
        .find(|(_, n)| *n >= wanted)
        .map_or(last_finite, |(b, _)| *b);
    let bound = if bound.is_finite() {
        bound
    } else {
        last_finite
    };
    Some((bound * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(at: u64, sent: u64, twilio: u64, latency: &[(f64, u64)]) -> Snapshot {
        Snapshot {
            at,
            sent,
            refused: [("twilio".to_owned(), twilio)].into(),
            latency: latency.to_vec(),
        }
    }

    #[test]
    fn minutes_are_differences_and_quantiles_come_from_buckets() {
        let inf = f64::INFINITY;
        let a = snap(60, 10, 1, &[(0.001, 0), (0.002, 0), (0.004, 0), (inf, 0)]);
        let b = snap(
            120,
            15,
            3,
            &[(0.001, 50), (0.002, 98), (0.004, 100), (inf, 100)],
        );
        let now = snap(
            150,
            16,
            3,
            &[(0.001, 50), (0.002, 98), (0.004, 100), (inf, 101)],
        );
        let m = between(&[a, b], &now);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].at, m[0].sent), (60, 5));
        assert_eq!(m[0].refused.get("twilio"), Some(&2));
        assert_eq!((m[0].p50_ms, m[0].p99_ms), (Some(1), Some(4)));
        assert_eq!((m[1].at, m[1].sent), (120, 1));
        assert!(m[1].refused.is_empty(), "no refusal in the running minute");
        // Above the last finite bound: that bound.
        assert_eq!(m[1].p99_ms, Some(4));
    }

    #[test]
    fn an_hour_at_most() {
        let kept: Vec<Snapshot> = (0..KEPT as u64).map(|i| snap(i * 60, i, 0, &[])).collect();
        let now = snap(KEPT as u64 * 60, 100, 0, &[]);
        let m = between(&kept, &now);
        assert_eq!(m.len(), 60);
        assert_eq!(m.last().map(|m| m.sent), Some(100 - (KEPT as u64 - 1)));
        assert_eq!(m.first().map(|m| m.at), Some(60));
        assert_eq!(between(&[], &now)[0].sent, 100);
    }
}
