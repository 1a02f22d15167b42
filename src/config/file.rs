//! The config file: read, parsed, and its errors told by line and key without quoting the
//! file (a secret may sit under the wrong key).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A config file's path and text, to name the line of a key in errors.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    pub text: String,
}

impl ConfigSource {
    /// The 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        self.text.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }
}

/// Reads and parses the config file; errors name the line and key, never a value.
pub fn load<T: serde::de::DeserializeOwned>(path: &Path) -> Result<(T, ConfigSource)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let parsed = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "invalid config file {}: {}",
            path.display(),
            toml_error(&text, &e)
        )
    })?;
    let source = ConfigSource {
        path: path.to_owned(),
        text,
    };
    Ok((parsed, source))
}

/// A TOML error as `line L, column C, key K: reason`. The parser's own message quotes the
/// offending line and value, which may be a secret put under the wrong key: the reason keeps
/// only the kinds (`invalid type: string, expected u64`), never a value.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let reason = redact_toml_message(e.message().trim());
    // A flattened block of options (fraud_options.rs) makes an unknown top-level key an
    // error of the whole table: its own line is found by its name.
    let whole_table = e.span().is_none_or(|s| s.start == 0);
    let span = unknown_top_level_key(text, e.message())
        .filter(|_| whole_table)
        .or(e.span().map(|s| s.start));
    let Some(start) = span.filter(|&s| text.is_char_boundary(s)) else {
        return reason;
    };
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let key = toml_key_at(text, line_start)
        .map(|k| format!(", key {k}"))
        .unwrap_or_default();
    format!("line {line}, column {column}{key}: {reason}")
}

/// Where the top-level key an `unknown field `NAME`` error names is set (before any table).
fn unknown_top_level_key(text: &str, message: &str) -> Option<usize> {
    let name = message.strip_prefix("unknown field `")?.split('`').next()?;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            return None;
        }
        let key = trimmed.split('=').next().unwrap_or_default().trim();
        if trimmed.contains('=') && key.trim_matches('"') == name {
            return Some(offset + line.len() - trimmed.len());
        }
        offset += line.len();
    }
    None
}

/// The dotted key (table included) that the line at `line_start` sets, if it plainly sets one.
fn toml_key_at(text: &str, line_start: usize) -> Option<String> {
    let line = text[line_start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let plain = |k: &str| {
        !k.is_empty()
            && k.len() <= 64
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    };
    if !plain(key) {
        return None;
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
        .filter(|t| plain(t));
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_owned(),
    })
}

/// serde's `invalid type: string "9f8e…", expected u64` as `invalid type: string, expected
/// u64`; the value of `unknown variant` and `invalid value` left out likewise; and any other
/// quoted text removed.
fn redact_toml_message(message: &str) -> String {
    let message = message.lines().next().unwrap_or_default();
    for prefix in ["invalid type: ", "invalid value: ", "unknown variant "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
            let kind: String = found
                .split(['"', '`', '\''])
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            let mut out = prefix.trim_end().to_owned();
            if !kind.is_empty() {
                out.push(' ');
                out.push_str(&kind);
            }
            out.push_str(" (the value is not shown)");
            if !expected.is_empty() {
                out.push_str(", expected ");
                out.push_str(expected);
            }
            return out;
        }
    }
    // Anything else in double quotes is the file's text.
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    for c in message.chars() {
        if c == '"' {
            if !quoted {
                out.push_str("\"…\"");
            }
            quoted = !quoted;
        } else if !quoted {
            out.push(c);
        }
    }
    out
}
