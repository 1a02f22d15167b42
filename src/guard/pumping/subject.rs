//! What a number is counted under: its country (ISO 3166 alpha-2 from the numbering plan, as
//! the geo rules name it, `ZZ` when unknown) and its range (the number without its last three
//! digits, only ever kept hashed).

use std::str::FromStr;

use phonenumber::country::Id;
use phonenumber::metadata::DATABASE;

use crate::mask::calling_code_len;

/// A country as two ASCII letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Country([u8; 2]);

impl Country {
    pub const UNKNOWN: Country = Country(*b"ZZ");

    /// The country of an E.164 number. A calling code one country has (`+31`) is read from the
    /// table; a shared one (`+1`, `+44`, `+7`) needs the number parsed, which the callers do
    /// once per range.
    pub fn of(phone: &str) -> Country {
        let digits = phone.strip_prefix('+').unwrap_or(phone);
        let code_len = calling_code_len(digits).min(digits.len());
        let Ok(code) = digits[..code_len].parse::<u16>() else {
            return Country::UNKNOWN;
        };
        match DATABASE.region(&code).as_deref() {
            Some([only]) => Country::named(only),
            // A number no country's patterns claim goes to the code's main country (listed
            // first): +44 to GB, +1 to US.
            Some([main, ..]) => phonenumber::parse(None, phone)
                .ok()
                .and_then(|number| number.country().id())
                .map_or_else(|| Country::named(main), |id| Country::named(id.as_ref())),
            _ => Country::UNKNOWN,
        }
    }

    /// `NL` as a country; anything not two ASCII letters is unknown.
    pub fn named(name: &str) -> Country {
        match name.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Country([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
            }
            _ => Country::UNKNOWN,
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("ZZ")
    }

    /// The numbering plan's id, for the geo rules' lists.
    pub fn id(&self) -> Option<Id> {
        Id::from_str(self.as_str()).ok()
    }

    /// Its calling code, for a list that names one (`+44`).
    pub fn calling_code(phone: &str) -> Option<u16> {
        let digits = phone.strip_prefix('+')?;
        digits
            .get(..calling_code_len(digits))
            .and_then(|c| c.parse().ok())
    }
}

/// The range of an E.164 number: all but its last three digits (`+316123456` of
/// `+31612345678`); a number too short to have one is its own range.
pub fn range_of(phone: &str) -> &str {
    match phone.len() {
        len if len > 7 => &phone[..len - 3],
        _ => phone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countries_by_their_code_or_by_the_number() {
        assert_eq!(Country::of("+31612345678").as_str(), "NL");
        assert_eq!(Country::of("+14155550100").as_str(), "US");
        assert_eq!(Country::of("+16137827274").as_str(), "CA");
        assert_eq!(Country::of("+447700900123").as_str(), "GB");
        assert_eq!(Country::of("+441481700123").as_str(), "GG");
        assert_eq!(Country::of("+23276123456").as_str(), "SL");
        assert_eq!(Country::of("+999123").as_str(), "ZZ");
        assert_eq!(Country::named("nl").as_str(), "NL");
        assert_eq!(Country::calling_code("+447700900123"), Some(44));
    }

    #[test]
    fn a_range_is_the_number_without_its_last_three_digits() {
        assert_eq!(range_of("+31612345678"), "+31612345");
        assert_eq!(range_of("+1234"), "+1234");
    }
}
