//! A rate, "N per window" (`3/10m`, `200/1d`): how the rate limits and the country budgets
//! are written.

use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};

/// "N per window", or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub window: Duration,
}

impl FromStr for Rate {
    type Err = anyhow::Error;

    /// `3/10m`, `10/1h`, `100/30s`, `200/1d` (shown as `200/24h`: what instances compare).
    fn from_str(text: &str) -> anyhow::Result<Rate> {
        let (count, window) = text
            .split_once('/')
            .with_context(|| format!("rate {text:?} is not N/WINDOW, like 3/10m"))?;
        let count: u32 = count
            .trim()
            .parse()
            .with_context(|| format!("rate {text:?}: {count:?} is not a count"))?;
        let window = window.trim();
        let (number, unit) = window.split_at(window.len().saturating_sub(1));
        let number: u64 = number
            .parse()
            .with_context(|| format!("rate {text:?}: window must be like 30s, 10m or 1h"))?;
        let seconds = match unit {
            "s" => number,
            "m" => number * 60,
            "h" => number * 3600,
            "d" => number * 86_400,
            _ => bail!("rate {text:?}: window must end in s, m, h or d"),
        };
        if count == 0 || !(1..=86_400).contains(&seconds) {
            bail!("rate {text:?}: need a count of at least 1 and a window of 1 s to 1 d");
        }
        Ok(Rate {
            count,
            window: Duration::from_secs(seconds),
        })
    }
}

impl std::fmt::Display for Rate {
    /// The form it is written in: `3/10m`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.window.as_secs();
        match s {
            _ if s.is_multiple_of(3600) => write!(f, "{}/{}h", self.count, s / 3600),
            _ if s.is_multiple_of(60) => write!(f, "{}/{}m", self.count, s / 60),
            _ => write!(f, "{}/{s}s", self.count),
        }
    }
}
