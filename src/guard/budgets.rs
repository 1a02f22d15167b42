//! Per-country budgets: "N sends per window" for each country, so that a burst to a country
//! nobody serves is capped even without an allow list. A table of calling codes (`+44`) or
//! ISO countries (`NL`) with `*` for every country it does not name (each its own budget).
//! They are one more scope of the rate limiter (GCRA, bounded keys, the store's one script).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::time::Instant;

use super::geo::Region;
use super::plan::Filed;
use super::rate::Rate;

/// The country of a number nobody can tell (the agreed metric label).
pub const UNKNOWN_COUNTRY: &str = "ZZ";

/// The configured budgets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountryBudgets {
    named: Vec<(Region, Rate)>,
    /// `*`: each country not named gets this budget of its own.
    other: Option<Rate>,
}

/// The budget a number is charged to: its name (`+44`, `NL`, or for `*` the number's own
/// country) and its rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub name: String,
    pub rate: Rate,
}

impl CountryBudgets {
    /// `+44=200/1d,NL=100/1d,*=50/1d` (the table option's text).
    pub fn parse(pairs: &[(String, String)]) -> anyhow::Result<Option<CountryBudgets>> {
        let mut budgets = CountryBudgets {
            named: Vec::new(),
            other: None,
        };
        for (key, rate) in pairs {
            let rate: Rate = rate.parse().with_context(|| format!("budget of {key}"))?;
            if key == "*" {
                budgets.other = Some(rate);
                continue;
            }
            let region: Region = key.parse()?;
            if budgets.named.iter().any(|(r, _)| *r == region) {
                bail!("{key} has two budgets");
            }
            budgets.named.push((region, rate));
        }
        Ok((!budgets.named.is_empty() || budgets.other.is_some()).then_some(budgets))
    }

    /// The budget `number` is charged to: its country's entry, then its calling code's, then
    /// `*`; `None` when none applies.
    pub fn budget_for(&self, number: Option<&Filed<'_>>) -> Option<Budget> {
        let id = number
            .and_then(Filed::country)
            .and_then(|c| c.parse::<phonenumber::country::Id>().ok());
        let code = number.and_then(Filed::calling_code);
        let named = |wanted: Region| self.named.iter().find(|(r, _)| *r == wanted);
        let found = id
            .and_then(|id| named(Region::Country(id)))
            .or_else(|| code.and_then(|c| named(Region::CallingCode(c))));
        if let Some((region, rate)) = found {
            let name = match region {
                Region::Country(id) => id.as_ref().to_owned(),
                Region::CallingCode(code) => format!("+{code}"),
            };
            return Some(Budget { name, rate: *rate });
        }
        self.other.map(|rate| Budget {
            name: id.map_or_else(|| UNKNOWN_COUNTRY.to_owned(), |id| id.as_ref().to_owned()),
            rate,
        })
    }

    /// `+44=200/1d,*=50/1d`: what instances sharing a store compare.
    pub fn describe(&self) -> String {
        let named = self.named.iter().map(|(region, rate)| match region {
            Region::Country(id) => format!("{}={rate}", id.as_ref()),
            Region::CallingCode(code) => format!("+{code}={rate}"),
        });
        let other = self.other.map(|rate| format!("*={rate}"));
        named.chain(other).collect::<Vec<_>>().join(",")
    }
}

/// When each budget's current refusals began to be told, at most this many remembered.
const EPISODES_KEPT: usize = 1024;
/// An episode ends once a budget has refused nothing for this long (or its whole window,
/// when shorter).
const EPISODE_QUIET: Duration = Duration::from_secs(3600);

static EPISODES: Mutex<Option<HashMap<String, Instant>>> = Mutex::new(None);

/// A budget refused a send: tells of it once per episode (through [`budget_exhausted`]).
pub fn refused(budget: &Budget) {
    let now = Instant::now();
    let quiet = EPISODE_QUIET.min(budget.rate.window);
    let Ok(mut episodes) = EPISODES.lock() else {
        return;
    };
    let episodes = episodes.get_or_insert_with(HashMap::new);
    let new = episodes
        .get(&budget.name)
        .is_none_or(|last| now.duration_since(*last) > quiet);
    if episodes.len() >= EPISODES_KEPT && !episodes.contains_key(&budget.name) {
        episodes.clear();
    }
    episodes.insert(budget.name.clone(), now);
    if new {
        budget_exhausted(budget);
    }
}

/// A country budget is spent: the one place an exhaustion episode is told (the seam alerts
/// connect to). Called once per episode, never per refused send.
pub fn budget_exhausted(budget: &Budget) {
    crate::alerts::raise(
        crate::alerts::Kind::CountryBudget,
        &format!("country budget {} ({}) exhausted", budget.name, budget.rate),
    );
    tracing::warn!(
        budget = %budget.name,
        rate = %budget.rate,
        "country budget exhausted: sends to it are refused (ERR rate_limited: country budget) \
         until it refills"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        let pair = |item: &str| match item.split_once('=') {
            Some((k, v)) => (k.trim().to_owned(), v.trim().to_owned()),
            None => (item.trim().to_owned(), String::new()),
        };
        text.split(',')
            .filter(|i| !i.trim().is_empty())
            .map(pair)
            .collect()
    }

    fn budgets(text: &str) -> CountryBudgets {
        CountryBudgets::parse(&pairs(text)).unwrap().unwrap()
    }

    fn name(budgets: &CountryBudgets, phone: &str) -> Option<String> {
        let number = super::super::plan::file(phone);
        budgets.budget_for(number.as_ref()).map(|b| b.name)
    }

    #[test]
    fn a_country_before_its_calling_code_before_the_rest() {
        let b = budgets("+44=200/1d, JE=5/1d, *=50/1d");
        assert_eq!(name(&b, "+447700900123").as_deref(), Some("+44"));
        assert_eq!(name(&b, "+447797700123").as_deref(), Some("JE"));
        assert_eq!(name(&b, "+31612345678").as_deref(), Some("NL"));
        assert_eq!(name(&b, "+4915112345678").as_deref(), Some("DE"));
        assert_eq!(name(&b, "+999123456").as_deref(), Some("ZZ"));
        assert_eq!(b.describe(), "+44=200/24h,JE=5/24h,*=50/24h");
        let only = budgets("NL=10/1h");
        assert_eq!(name(&only, "+4915112345678"), None);
    }

    #[test]
    fn bad_tables() {
        let parse = |text: &str| CountryBudgets::parse(&pairs(text));
        for bad in [
            "+44",
            "+44=200",
            "XX=1/1d",
            "+44=1/2d",
            "NL=1/1d,nl=2/1d",
            "*=0/1d",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse("").unwrap(), None);
    }
}
