//! The operator's view on the metrics listener: `/status.json` and the page at `/` show the
//! same document, built here from the metrics exposition (read back by family name and labels,
//! so families other parts add appear once they are exported), the health report, the
//! providers, the last refusals (`recent`) and the last hour (`history`).

pub mod history;
mod html;
pub mod recent;
mod samples;
mod svg;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

pub use html::{page, CONTENT_SECURITY_POLICY};
use samples::Samples;

/// What only the running parts know: the health report as `ping` shows it, the providers.
pub struct Live {
    pub health: rmpv::Value,
    pub providers: Vec<ProviderRow>,
}

/// A provider and its breaker.
pub struct ProviderRow {
    pub name: String,
    /// The account SID as logs show it (`ACfe…ce`).
    pub account: String,
    pub breaker_open: bool,
}

/// The families other parts export when their feature is on (see docs/operations.md).
const SENT: &str = "otp_sidecar_sent_total";
const CONFIRMED: &str = "otp_sidecar_confirmed_total";
const DELIVERY: &str = "otp_sidecar_delivery_total";
const THROTTLED: &str = "otp_sidecar_pumping_throttled";
const DEDUPLICATED: &str = "otp_sidecar_deduplicated_total";
const CODES: &str = "otp_sidecar_codes_total";

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// HTML-escapes text for an element or a quoted attribute.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The status document: plain names, counts as integers.
pub fn document(live: Live) -> Value {
    let samples = Samples::now();
    let now = history::Snapshot::of(&samples, unix_now());
    let health = to_json(&live.health);
    let field = |name: &str| health.get(name).cloned().unwrap_or(Value::Null);
    json!({
        "status": field("status"),
        "version": field("version"),
        "mode": field("mode"),
        "uptime_s": field("uptime_s"),
        "health": health,
        "state_store": state_store(&samples, field("state"), field("state_agreement")),
        "twilio_budget": budget(&samples),
        "sent": now.sent,
        "refused": now.refused,
        "blocked": by_label(&samples, "otp_sidecar_blocked_total", "rule"),
        "rate_limited": by_label(&samples, "otp_sidecar_rate_limited_total", "limit"),
        "shed": by_label(&samples, "otp_sidecar_shed_total", "reason"),
        "countries": countries(&samples),
        "providers": live.providers.iter().map(|p| json!({
            "name": p.name,
            "account": p.account,
            "breaker": if p.breaker_open { "open" } else { "closed" },
        })).collect::<Vec<_>>(),
        "pumping": pumping(&samples),
        "codes": enabled_map(&samples, CODES, "result"),
        "recent_refusals": recent::latest().into_iter().map(|r| json!({
            "at": r.at,
            "phone": r.phone,
            "reason": r.reason,
            "detail": r.detail,
        })).collect::<Vec<_>>(),
        "last_hour": history::minutes(&now).into_iter().map(|m| json!({
            "at": m.at,
            "sent": m.sent,
            "refused": m.refused,
            "twilio_p50_ms": m.p50_ms,
            "twilio_p99_ms": m.p99_ms,
        })).collect::<Vec<_>>(),
    })
}

fn state_store(samples: &Samples, status: Value, agreement: Value) -> Value {
    json!({
        "status": status,
        "agreement": agreement,
        "operations": by_label(samples, "otp_sidecar_state_operations_total", "result"),
        "fallbacks": by_label(samples, "otp_sidecar_state_fallbacks_total", "policy"),
    })
}

/// One row per account the budget gauges name.
fn budget(samples: &Samples) -> Vec<Value> {
    let mut accounts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (name, size) in [
        ("otp_sidecar_twilio_budget_in_use", false),
        ("otp_sidecar_twilio_budget_size", true),
    ] {
        for s in samples.of(name, &[]) {
            let account = s.label("account").unwrap_or_default().to_owned();
            let row = accounts.entry(account).or_default();
            let value = s.value.max(0.0) as u64;
            if size {
                row.1 = value;
            } else {
                row.0 = value;
            }
        }
    }
    accounts
        .into_iter()
        .map(
            |(account, (in_use, size))| json!({"account": account, "in_use": in_use, "size": size}),
        )
        .collect()
}

/// The family's sum by one label's values.
fn by_label(samples: &Samples, name: &str, label: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for s in samples.of(name, &[]) {
        let key = s.label(label).unwrap_or_default().to_owned();
        *out.entry(key).or_insert(0) += s.value.max(0.0).round() as u64;
    }
    out
}

/// `{"enabled": false}` when the family is not exported; else its sums by `label`.
fn enabled_map(samples: &Samples, name: &str, label: &str) -> Value {
    if !samples.declared(name) {
        return json!({"enabled": false});
    }
    json!({"enabled": true, "by": by_label(samples, name, label)})
}

/// Sent, confirmed, conversion and delivered by country, from the families the pumping guard
/// and delivery status export; `enabled: false` when neither is.
fn countries(samples: &Samples) -> Value {
    let sent_on = samples.declared(SENT);
    let confirmed_on = samples.declared(CONFIRMED);
    let delivery_on = samples.declared(DELIVERY);
    let throttled_by_country = samples
        .of(THROTTLED, &[])
        .any(|s| s.label("country").is_some());
    let mut names = BTreeSet::new();
    for family in [SENT, CONFIRMED, DELIVERY] {
        for s in samples.of(family, &[]) {
            if let Some(country) = s.label("country") {
                names.insert(country.to_owned());
            }
        }
    }
    let rows: Vec<Value> = names
        .into_iter()
        .map(|country| {
            let c = [("country", country.as_str())];
            let sent = samples.sum(SENT, &c);
            let confirmed = samples.sum(CONFIRMED, &c);
            let mut row = Map::new();
            row.insert("country".into(), json!(country));
            row.insert("sent".into(), json!(sent));
            row.insert("confirmed".into(), on(confirmed_on, confirmed));
            let conversion = (confirmed_on && sent > 0).then(|| confirmed * 100 / sent);
            row.insert("conversion_pct".into(), json!(conversion));
            let delivered = samples.sum(DELIVERY, &[("status", "delivered"), c[0]]);
            row.insert("delivered".into(), on(delivery_on, delivered));
            let throttled = samples.sum(THROTTLED, &c);
            row.insert("throttled".into(), on(throttled_by_country, throttled));
            Value::Object(row)
        })
        .collect();
    json!({
        "enabled": sent_on || delivery_on,
        "confirmed_enabled": confirmed_on,
        "delivery_enabled": delivery_on,
        "rows": rows,
    })
}

fn on(enabled: bool, n: u64) -> Value {
    if enabled {
        json!(n)
    } else {
        Value::Null
    }
}

fn pumping(samples: &Samples) -> Value {
    if !samples.declared(THROTTLED) {
        return json!({"enabled": false});
    }
    json!({
        "enabled": true,
        "throttled": by_label(samples, THROTTLED, "scope"),
        "deduplicated": samples.sum(DEDUPLICATED, &[]),
    })
}

/// The health report (MessagePack) as JSON: strings, integers, booleans, maps.
fn to_json(value: &rmpv::Value) -> Value {
    match value {
        rmpv::Value::Nil => Value::Null,
        rmpv::Value::Boolean(b) => json!(b),
        rmpv::Value::Integer(i) => i
            .as_u64()
            .map(Value::from)
            .or_else(|| i.as_i64().map(Value::from))
            .unwrap_or(Value::Null),
        rmpv::Value::F32(f) => json!(f),
        rmpv::Value::F64(f) => json!(f),
        rmpv::Value::String(s) => json!(s.as_str().unwrap_or_default()),
        rmpv::Value::Binary(_) | rmpv::Value::Ext(..) => Value::Null,
        rmpv::Value::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        rmpv::Value::Map(pairs) => Value::Object(
            pairs
                .iter()
                .map(|(k, v)| (k.as_str().unwrap_or_default().to_owned(), to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The families the pumping guard and delivery status export, as they will read.
    #[test]
    fn countries_and_throttles_come_from_the_agreed_families_once_exported() {
        let text = "# TYPE otp_sidecar_sent counter\n\
            otp_sidecar_sent_total{country=\"NL\"} 8\n\
            otp_sidecar_sent_total{country=\"ZZ\"} 1\n\
            # TYPE otp_sidecar_confirmed counter\n\
            otp_sidecar_confirmed_total{country=\"NL\"} 6\n\
            # TYPE otp_sidecar_delivery counter\n\
            otp_sidecar_delivery_total{status=\"delivered\",code=\"\",country=\"NL\"} 7\n\
            otp_sidecar_delivery_total{status=\"undelivered\",code=\"30008\",country=\"NL\"} 1\n\
            # TYPE otp_sidecar_pumping_throttled gauge\n\
            otp_sidecar_pumping_throttled{scope=\"country\"} 1\n\
            otp_sidecar_pumping_throttled{scope=\"range\"} 3\n";
        let samples = Samples::parse(text);
        let c = countries(&samples);
        assert_eq!(c["enabled"], true);
        assert_eq!(
            c["rows"][0],
            json!({"country": "NL", "sent": 8, "confirmed": 6, "conversion_pct": 75,
                   "delivered": 7, "throttled": null})
        );
        assert_eq!(c["rows"][1]["conversion_pct"], 0);
        assert_eq!(
            pumping(&samples),
            json!({"enabled": true, "throttled": {"country": 1, "range": 3}, "deduplicated": 0})
        );
        let none = Samples::parse("# TYPE otp_sidecar_calls counter\n");
        assert_eq!(countries(&none)["enabled"], false);
        assert_eq!(pumping(&none), json!({"enabled": false}));
    }
}
