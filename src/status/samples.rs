//! The metrics exposition read back by family name and labels, so the status page shows any
//! family the daemon exports (those other parts add later included) without knowing its type.
//! Read per status request and once a minute by the sampler; never on the call path.

use std::collections::HashSet;

use crate::metrics::METRICS;

/// One line of the exposition: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether every `(key, value)` of `filter` is among its labels.
    fn matches(&self, filter: &[(&str, &str)]) -> bool {
        filter.iter().all(|(k, v)| self.label(k) == Some(v))
    }
}

/// Every sample of one exposition, and the families it declares (a family with no label set
/// yet is declared but has no sample: exported, all zero).
#[derive(Debug, Default)]
pub struct Samples {
    samples: Vec<Sample>,
    declared: HashSet<String>,
}

impl Samples {
    /// The daemon's metrics as they stand.
    pub fn now() -> Samples {
        Samples::parse(&METRICS.render())
    }

    pub fn parse(text: &str) -> Samples {
        let mut out = Samples::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some(name) = rest.split(' ').next() {
                    out.declared.insert(name.to_owned());
                }
            } else if !line.starts_with('#') {
                if let Some(sample) = parse_line(line) {
                    out.samples.push(sample);
                }
            }
        }
        out
    }

    /// Whether the family (`otp_sidecar_sent_total` or `otp_sidecar_sent`) is exported.
    pub fn declared(&self, name: &str) -> bool {
        self.declared.contains(name) || self.declared.contains(name.trim_end_matches("_total"))
    }

    /// The samples named `name` whose labels include `filter`.
    pub fn of<'a>(
        &'a self,
        name: &'a str,
        filter: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.name == name && s.matches(filter))
    }

    /// Their sum, as a whole count.
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> u64 {
        let total: f64 = self.of(name, filter).map(|s| s.value).sum();
        total.max(0.0).round() as u64
    }
}

/// `name{k="v",…} value [timestamp]`; `None` for anything else.
fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `k="v",k2="v\"2"}` → the pairs and what follows the `}`.
fn parse_labels(mut text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start_matches(',');
        if let Some(after) = text.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = text.find("=\"")?;
        let key = text[..eq].to_owned();
        let mut value = String::new();
        let mut chars = text[eq + 2..].char_indices();
        let end = loop {
            let (at, c) = chars.next()?;
            match c {
                '"' => break at,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.push((key, value));
        text = &text[eq + 2 + end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_values_and_declared_families() {
        let text = "# TYPE otp_sidecar_sent counter\n\
                    # TYPE otp_sidecar_quiet counter\n\
                    otp_sidecar_sent_total{country=\"NL\",note=\"a\\\"b,}\"} 3\n\
                    otp_sidecar_sent_total{country=\"BE\"} 1\n\
                    otp_sidecar_up 1 1700000000\n\
                    # EOF\n";
        let s = Samples::parse(text);
        assert_eq!(s.sum("otp_sidecar_sent_total", &[]), 4);
        assert_eq!(s.sum("otp_sidecar_sent_total", &[("country", "NL")]), 3);
        let nl = s
            .of("otp_sidecar_sent_total", &[("country", "NL")])
            .next()
            .map(|s| s.label("note").map(str::to_owned));
        assert_eq!(nl, Some(Some("a\"b,}".to_owned())));
        assert_eq!(s.sum("otp_sidecar_up", &[]), 1);
        assert!(s.declared("otp_sidecar_quiet_total"));
        assert!(!s.declared("otp_sidecar_nothing_total"));
        assert_eq!(s.of("otp_sidecar_quiet_total", &[]).count(), 0);
    }
}
