//! The options of the budgets and filters against SMS pumping, and of Twilio's own fraud
//! signals: one block, flattened into [`Options`](super::Options) (same flags, env vars and
//! top-level file keys as any other option), kept apart so the options file stays readable.
//!
//! The table options (`country_budgets`, `verify_tags`, `verify_rate_limits`) are a TOML table
//! in the file and `KEY=VALUE,KEY=VALUE` on the command line and in the environment; both
//! become that one text, which the part that uses it parses.

use clap::Args;
use serde::{Deserialize, Serialize};

use super::checks::parse_bool;
use crate::guard::number_type::DEFAULT_BLOCKED_NUMBER_TYPES;

#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
pub struct FraudOptions {
    /// Sends per country, as CODE=N/WINDOW pairs (+44=200/1d,NL=100/1d,*=50/1d): a calling
    /// code or ISO country, and * for each country the table does not name (each its own
    /// budget). Windows up to 1d. In the file, a table. [default: off]
    #[arg(long, env = "OTP_SIDECAR_COUNTRY_BUDGETS", value_name = "TABLE")]
    #[serde(default, deserialize_with = "table_text")]
    pub country_budgets: Option<String>,

    /// Number types refused from the numbering plan alone (free, no lookup), comma-separated:
    /// premium_rate, shared_cost, uan, pager, toll_free, voip, personal_number; or none.
    #[arg(long, env = "OTP_SIDECAR_BLOCK_NUMBER_TYPES", value_name = "LIST", value_delimiter = ',', default_value = DEFAULT_BLOCKED_NUMBER_TYPES)]
    pub block_number_types: Option<Vec<String>>,

    /// With --lookup, also ask Lookup for its SMS pumping risk score (a paid field) and refuse
    /// scores at or above this (0-100). [default: off]
    #[arg(long, env = "OTP_SIDECAR_BLOCK_PUMPING_RISK", value_name = "SCORE")]
    pub block_pumping_risk: Option<u64>,

    /// Ask Twilio's SMS Pumping Protection to check each message (Messages' RiskCheck=enable);
    /// false sends RiskCheck=disable.
    #[arg(long, env = "OTP_SIDECAR_RISK_CHECK", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", default_value = "true", value_parser = parse_bool)]
    pub risk_check: Option<bool>,

    /// Verify mode: tags recorded with each verification, KEY=VALUE pairs (up to 10, no
    /// personal data: Twilio keeps them). In the file, a table. [default: none]
    #[arg(long, env = "OTP_SIDECAR_VERIFY_TAGS", value_name = "TABLE")]
    #[serde(default, deserialize_with = "table_text")]
    pub verify_tags: Option<String>,

    /// Verify mode: the Verify service's rate limits to feed, as ip=UNIQUE_NAME and/or
    /// user=UNIQUE_NAME (the context's ip or user sent as RateLimits[UNIQUE_NAME]). In the
    /// file, a table. [default: none]
    #[arg(long, env = "OTP_SIDECAR_VERIFY_RATE_LIMITS", value_name = "TABLE")]
    #[serde(default, deserialize_with = "table_text")]
    pub verify_rate_limits: Option<String>,
}

/// A table option as its one text: the file's table as `KEY=VALUE,…` (in the table's order),
/// or that text as given (from a layer below, or a file that writes it so).
fn table_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Text(String),
        Table(toml::Table),
    }
    let Some(given) = Option::<Given>::deserialize(d)? else {
        return Ok(None);
    };
    let table = match given {
        Given::Text(text) => return Ok(Some(text)),
        Given::Table(table) => table,
    };
    let mut pairs = Vec::with_capacity(table.len());
    for (key, value) in table {
        let value = match value {
            toml::Value::String(text) => text,
            toml::Value::Integer(n) => n.to_string(),
            _ => {
                return Err(serde::de::Error::custom(
                    "a value of this table must be text",
                ))
            }
        };
        if [&key, &value].iter().any(|s| s.contains([',', '='])) {
            return Err(serde::de::Error::custom(
                "a key or value of this table may not hold ',' or '='",
            ));
        }
        pairs.push(format!("{key}={value}"));
    }
    Ok(Some(pairs.join(",")))
}

/// `KEY=VALUE,KEY=VALUE` as pairs, trimmed; `name` names the option in errors. Blank is none.
pub fn pairs(text: &str, name: &str) -> anyhow::Result<Vec<(String, String)>> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| anyhow::anyhow!("{name}: expected KEY=VALUE pairs, like +44=200/1d"))
        })
        .collect()
}
