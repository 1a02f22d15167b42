//! Geo rules and the number-validity check, from the number itself (Google's libphonenumber
//! metadata through the `phonenumber` crate): a country allow list, a deny list, and
//! "valid for its country".
//!
//! Off unless configured, and then free of cost for the calls: with no rule set, no number is
//! parsed. Parsing costs tens of microseconds once the region's patterns are compiled (a few
//! milliseconds the first time a region is seen) and loading the numbering plan ~100 ms,
//! which is done before READY when a rule is on.

use std::collections::HashSet;
use std::str::FromStr;

use anyhow::{bail, Context};
use phonenumber::country::Id;

use crate::error::CallError;

/// A country (`NL`) or a calling code (`+44`, which covers every country sharing it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Region {
    Country(Id),
    CallingCode(u16),
}

impl FromStr for Region {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Region> {
        let text = text.trim();
        if let Some(digits) = text.strip_prefix('+') {
            let code: u16 = digits
                .parse()
                .ok()
                .filter(|c| (1..=999).contains(c))
                .with_context(|| format!("{text:?} is not a calling code like +44"))?;
            return Ok(Region::CallingCode(code));
        }
        match Id::from_str(&text.to_ascii_uppercase()) {
            Ok(id) if text.len() == 2 => Ok(Region::Country(id)),
            _ => {
                bail!("{text:?} is neither an ISO 3166 country code (NL) nor a calling code (+31)")
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoRules {
    /// Only these, when set.
    pub allow: Option<HashSet<Region>>,
    pub deny: HashSet<Region>,
    /// Refuse numbers that are not valid for their country.
    pub check_validity: bool,
}

impl GeoRules {
    /// Whether any rule is on (and the numbering plan must be loaded).
    pub fn active(&self) -> bool {
        self.allow.is_some() || !self.deny.is_empty() || self.check_validity
    }

    /// Checks an E.164 number; on refusal, the error and the country it was taken for.
    pub fn check(&self, phone: &str) -> Result<(), (CallError, String)> {
        if !self.active() {
            return Ok(());
        }
        let parsed = phonenumber::parse(None, phone).ok();
        let valid = parsed.as_ref().is_some_and(phonenumber::is_valid);
        let (country, code) = match &parsed {
            Some(number) => (number.country().id(), Some(number.country().code())),
            None => (None, None),
        };
        let name = country.map_or_else(
            || code.map_or_else(|| "unknown".to_owned(), |c| format!("+{c}")),
            |id| id.as_ref().to_owned(),
        );
        if self.check_validity && !valid {
            let error = CallError::InvalidPhone("not a valid number for its country".into());
            return Err((error, name));
        }
        let matches = |set: &HashSet<Region>| {
            country.is_some_and(|id| set.contains(&Region::Country(id)))
                || code.is_some_and(|c| set.contains(&Region::CallingCode(c)))
        };
        let allowed = self.allow.as_ref().is_none_or(matches);
        if !allowed || matches(&self.deny) {
            return Err((CallError::Blocked("country"), name));
        }
        Ok(())
    }
}

/// Loads the numbering plan now (the crate loads it on first use), so that the first call
/// with a number in directory format does not wait for it; and the filter's index of it.
pub fn load_numbering_plan() {
    let started = std::time::Instant::now();
    let _ = phonenumber::parse(None, "+14155550100");
    let _ = super::plan::file("+14155550100");
    tracing::debug!(
        took_ms = started.elapsed().as_millis() as u64,
        "phone numbering plan loaded"
    );
}

/// `default_region`: a country whose national numbers libphonenumber can read (`NL`); blank
/// is none.
pub fn default_region(text: &str) -> anyhow::Result<Option<Id>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let id = match Id::from_str(&text.to_ascii_uppercase()) {
        Ok(id) if text.len() == 2 => id,
        _ => bail!("{text:?} is not an ISO 3166 country code like NL"),
    };
    if phonenumber::metadata::DATABASE.by_id(id.as_ref()).is_none() {
        bail!("{text:?} has no numbering plan in libphonenumber");
    }
    Ok(Some(id))
}

/// Parses a list of regions, `NL, BE, +44`.
pub fn regions(items: &[String]) -> anyhow::Result<HashSet<Region>> {
    items.iter().map(|item| item.parse()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: Option<&[&str]>, deny: &[&str], check_validity: bool) -> GeoRules {
        let list =
            |items: &[&str]| regions(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        GeoRules {
            allow: allow.map(|a| list(a).unwrap()),
            deny: list(deny).unwrap(),
            check_validity,
        }
    }

    fn refusal(rules: &GeoRules, phone: &str) -> Option<(String, String)> {
        rules.check(phone).err().map(|(e, c)| (e.to_string(), c))
    }

    #[test]
    fn regions_parse() {
        assert_eq!("nl".parse::<Region>().unwrap(), Region::Country(Id::NL));
        assert_eq!("+44".parse::<Region>().unwrap(), Region::CallingCode(44));
        for bad in ["XX", "NLD", "+", "+0", "+1000", "", "44"] {
            assert!(bad.parse::<Region>().is_err(), "{bad}");
        }
    }

    #[test]
    fn nothing_configured_checks_nothing() {
        let none = GeoRules::default();
        assert!(!none.active());
        assert!(none.check("+999123456").is_ok());
    }

    #[test]
    fn deny_and_allow_by_country_or_calling_code() {
        let deny = rules(None, &["NL", "+44"], false);
        let blocked = Some(("ERR blocked: country".to_owned(), "NL".to_owned()));
        assert_eq!(refusal(&deny, "+31612345678"), blocked);
        assert!(refusal(&deny, "+447700900123").is_some());
        assert_eq!(refusal(&deny, "+4915112345678"), None);

        let allow = rules(Some(&["BE", "+1"]), &[], false);
        assert_eq!(refusal(&allow, "+14155550100"), None);
        assert!(refusal(&allow, "+31612345678").is_some());
        // A number whose country cannot be told is not in any allow list.
        assert_eq!(
            refusal(&allow, "+999123456"),
            Some(("ERR blocked: country".to_owned(), "unknown".to_owned()))
        );
    }

    #[test]
    fn validity_for_the_country() {
        let valid = rules(None, &[], true);
        assert_eq!(refusal(&valid, "+31612345678"), None);
        assert_eq!(
            refusal(&valid, "+31600000000"),
            Some((
                "ERR invalid_phone: not a valid number for its country".to_owned(),
                "NL".to_owned()
            ))
        );
    }
}
