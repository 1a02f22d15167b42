//! The status page: the status document as one self-contained HTML page. The figures are in
//! tables (a text browser shows them all); the last hour is also drawn as inline SVG. No
//! script, no asset: the Content-Security-Policy allows only the page's own style block.

use std::fmt::Write;
use std::sync::LazyLock;

use aws_lc_rs::digest::{digest, SHA256};
use base64::Engine;
use serde_json::Value;

use super::esc;
use super::svg::chart;

/// Seconds between the page's own reloads.
const REFRESH_S: u32 = 15;

const STYLE: &str = "body{font:14px/1.4 sans-serif;margin:1em 2em;color:#222}\
table{border-collapse:collapse;margin:.3em 0 1em}\
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}\
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}\
.ok{color:#060}.degraded,.open{color:#b00;font-weight:bold}\
.charts{display:flex;flex-wrap:wrap;gap:1.5em}figure{margin:0}\
figcaption{font-size:12px;color:#555}svg{background:#fafafa;border:1px solid #ddd}";

/// Nothing off the page: no script, no image, no frame, no form; only its own style block
/// (by hash).
pub static CONTENT_SECURITY_POLICY: LazyLock<String> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(digest(&SHA256, STYLE.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
});

/// The page for `doc` (see [`super::document`]).
pub fn page(doc: &Value) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let status = text(&doc["status"]);
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_S}\">\
         <title>otp-sidecar: {}</title><style>{STYLE}</style></head><body>\
         <h1>otp-sidecar <span class=\"{}\">{}</span></h1>",
        esc(&status),
        esc(&status),
        esc(&status)
    );
    overview(&mut out, doc);
    last_hour(&mut out, doc);
    refusals(&mut out, doc);
    countries(&mut out, &doc["countries"]);
    providers(&mut out, doc);
    pumping(&mut out, doc);
    codes(&mut out, doc);
    recent(&mut out, doc);
    let _ = writeln!(
        out,
        "<p>The same figures for scripts: <a href=\"/status.json\">/status.json</a>; \
         for Prometheus: <a href=\"/metrics\">/metrics</a>. Reloads every {REFRESH_S} s.</p>\
         </body></html>"
    );
    out
}

fn overview(out: &mut String, doc: &Value) {
    let state = &doc["state_store"];
    let mut rows = vec![
        row(["status", &text(&doc["status"])]),
        row(["version", &text(&doc["version"])]),
        row(["mode", &text(&doc["mode"])]),
        row(["uptime", &uptime(doc["uptime_s"].as_u64().unwrap_or(0))]),
        row(["state store", &text(&state["status"])]),
    ];
    if !state["agreement"].is_null() {
        rows.push(row(["state store instances", &text(&state["agreement"])]));
    }
    rows.push(row(["sent", &text(&doc["sent"])]));
    for b in doc["twilio_budget"].as_array().into_iter().flatten() {
        let label = match text(&b["account"]) {
            a if a.is_empty() => "Twilio budget in use".to_owned(),
            a => format!("Twilio budget in use ({a})"),
        };
        let used = format!("{} of {}", text(&b["in_use"]), text(&b["size"]));
        rows.push(row([&label, &used]));
    }
    section(out, "Overview", &["", ""], &rows);
    let ops = &state["operations"];
    if ops.as_object().is_some_and(|o| !o.is_empty()) {
        section(
            out,
            "State store operations",
            &["result", "count"],
            &pairs(ops),
        );
    }
}

fn refusals(out: &mut String, doc: &Value) {
    let _ = write!(out, "<h2>Refusals</h2>");
    for (key, title, label) in [
        ("refused", "By reason (as the wire names it)", "reason"),
        ("blocked", "Blocked, by rule", "rule"),
        ("rate_limited", "Rate limited, by limit", "limit"),
        ("shed", "Busy (shed), by reason", "reason"),
    ] {
        let rows = pairs(&doc[key]);
        if rows.is_empty() {
            let _ = write!(out, "<p>{}: none.</p>", esc(title));
        } else {
            let _ = write!(out, "<h3>{}</h3>", esc(title));
            table(out, &[label, "count"], &rows);
        }
    }
}

fn countries(out: &mut String, c: &Value) {
    let why = " (the pumping guard and delivery status export these figures)";
    if not_enabled(out, c, "By country", "By country", why) {
        return;
    }
    let rows: Vec<Vec<String>> = c["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let pct = match r["conversion_pct"].as_u64() {
                Some(p) => format!("{p}%"),
                None => "-".into(),
            };
            vec![
                text(&r["country"]),
                text(&r["sent"]),
                or_not_enabled(&r["confirmed"]),
                pct,
                or_not_enabled(&r["delivered"]),
                or_not_enabled(&r["throttled"]),
            ]
        })
        .collect();
    section(
        out,
        "By country",
        &[
            "country",
            "sent",
            "confirmed",
            "conversion",
            "delivered",
            "throttled",
        ],
        &rows,
    );
}

fn providers(out: &mut String, doc: &Value) {
    let rows: Vec<Vec<String>> = doc["providers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| vec![text(&p["name"]), text(&p["account"]), text(&p["breaker"])])
        .collect();
    if rows.is_empty() {
        let _ = write!(out, "<h2>Providers</h2><p>None (dry run).</p>");
    } else {
        section(out, "Providers", &["provider", "account", "breaker"], &rows);
    }
}

/// A section whose block says it is off gets its heading and a "not enabled" line (`why`
/// after it); true then, and the caller writes nothing more.
fn not_enabled(out: &mut String, block: &Value, title: &str, what: &str, why: &str) -> bool {
    if block["enabled"] == Value::Bool(true) {
        return false;
    }
    let _ = write!(out, "<h2>{title}</h2><p>{what}: not enabled{why}.</p>");
    true
}

fn pumping(out: &mut String, doc: &Value) {
    let p = &doc["pumping"];
    if not_enabled(out, p, "Pumping guard", "Pumping guard", "") {
        return;
    }
    let mut rows: Vec<Vec<String>> = pairs(&p["throttled"])
        .into_iter()
        .map(|mut r| {
            r[0] = format!("throttled ({})", r[0]);
            r
        })
        .collect();
    rows.push(row(["deduplicated", &text(&p["deduplicated"])]));
    section(out, "Pumping guard", &["", "now"], &rows);
}

fn codes(out: &mut String, doc: &Value) {
    let c = &doc["codes"];
    if not_enabled(out, c, "Codes", "Codes issued by the daemon", "") {
        return;
    }
    section(out, "Codes", &["result", "count"], &pairs(&c["by"]));
}

fn recent(out: &mut String, doc: &Value) {
    let rows: Vec<Vec<String>> = doc["recent_refusals"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                clock(r["at"].as_u64().unwrap_or(0), true),
                text(&r["phone"]),
                text(&r["reason"]),
                text(&r["detail"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        let _ = write!(out, "<h2>Last refusals</h2><p>None yet.</p>");
    } else {
        section(
            out,
            "Last refusals",
            &["time (UTC)", "phone", "reason", "detail"],
            &rows,
        );
    }
}

fn last_hour(out: &mut String, doc: &Value) {
    let minutes: Vec<&Value> = doc["last_hour"].as_array().into_iter().flatten().collect();
    let refused_of = |m: &Value| -> u64 {
        m["refused"]
            .as_object()
            .map_or(0, |o| o.values().filter_map(Value::as_u64).sum())
    };
    let sent: Vec<u64> = minutes
        .iter()
        .map(|m| m["sent"].as_u64().unwrap_or(0))
        .collect();
    let refused: Vec<u64> = minutes.iter().map(|m| refused_of(m)).collect();
    let p50: Vec<u64> = minutes
        .iter()
        .map(|m| m["twilio_p50_ms"].as_u64().unwrap_or(0))
        .collect();
    let p99: Vec<u64> = minutes
        .iter()
        .map(|m| m["twilio_p99_ms"].as_u64().unwrap_or(0))
        .collect();
    let _ = write!(out, "<h2>Last hour, per minute</h2><div class=\"charts\">");
    chart(out, "sends per minute", &[(&sent, "#2a7")]);
    chart(out, "refusals per minute", &[(&refused, "#c33")]);
    chart(
        out,
        "Twilio latency p50 (blue) / p99 (orange), ms",
        &[(&p99, "#e80"), (&p50, "#27c")],
    );
    let _ = write!(out, "</div>");
    let rows: Vec<Vec<String>> = minutes
        .iter()
        .rev()
        .map(|m| {
            let reasons = m["refused"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| format!("{k} {}", text(v)))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            vec![
                clock(m["at"].as_u64().unwrap_or(0), false),
                text(&m["sent"]),
                reasons,
                or_dash(&m["twilio_p50_ms"]),
                or_dash(&m["twilio_p99_ms"]),
            ]
        })
        .collect();
    let _ = write!(out, "<details><summary>per minute, newest first</summary>");
    table(
        out,
        &["minute (UTC)", "sent", "refused", "p50 ms", "p99 ms"],
        &rows,
    );
    let _ = write!(out, "</details>");
}

fn section(out: &mut String, title: &str, headers: &[&str], rows: &[Vec<String>]) {
    let _ = write!(out, "<h2>{}</h2>", esc(title));
    table(out, headers, rows);
}

fn table(out: &mut String, headers: &[&str], rows: &[Vec<String>]) {
    out.push_str("<table>");
    if headers.iter().any(|h| !h.is_empty()) {
        out.push_str("<tr>");
        for h in headers {
            let _ = write!(out, "<th>{}</th>", esc(h));
        }
        out.push_str("</tr>");
    }
    for r in rows {
        out.push_str("<tr>");
        for cell in r {
            let _ = write!(out, "<td>{}</td>", esc(cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

/// An object's entries as rows: key, value.
fn pairs(v: &Value) -> Vec<Vec<String>> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| vec![k.clone(), text(v)])
        .collect()
}

/// A JSON value as a cell: strings unquoted, null as empty.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn or_not_enabled(v: &Value) -> String {
    if v.is_null() {
        "not enabled".into()
    } else {
        text(v)
    }
}

fn or_dash(v: &Value) -> String {
    if v.is_null() {
        "-".into()
    } else {
        text(v)
    }
}

fn uptime(s: u64) -> String {
    format!(
        "{}d {:02}:{:02}:{:02}",
        s / 86400,
        s / 3600 % 24,
        s / 60 % 60,
        s % 60
    )
}

/// `HH:MM` (or `YYYY-MM-DD HH:MM:SS` with `full`) in UTC.
fn clock(unix: u64, full: bool) -> String {
    let (days, secs) = (unix / 86400, unix % 86400);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if !full {
        return format!("{h:02}:{m:02}");
    }
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{d:02} {h:02}:{m:02}:{s:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_it_shows_and_dates_are_civil() {
        assert_eq!(esc("<b a=\"1\">&'"), "&lt;b a=&quot;1&quot;&gt;&amp;&#39;");
        assert_eq!(clock(0, true), "1970-01-01 00:00:00");
        assert_eq!(clock(1_796_669_203, true), "2026-12-07 18:46:43");
        let doc = serde_json::json!({"status": "<script>", "recent_refusals": [
            {"at": 0, "phone": "+31*****5678", "reason": "blocked", "detail": "<x>"}]});
        let html = page(&doc);
        assert!(
            !html.contains("<script>") && !html.contains("<x>"),
            "{html}"
        );
        assert!(html.contains("&lt;script&gt;"));
    }
}
