//! What a number is counted under: its country (ISO 3166 alpha-2 from the numbering plan, as
//! the geo rules name it, `ZZ` when unknown) and its range (the number without its last three
//! digits, only ever kept hashed).

use std::str::FromStr;

use phonenumber::country::Id;

use crate::guard::plan;
use crate::mask::calling_code_len;

/// A country as two ASCII letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Country([u8; 2]);

impl Country {
    pub const UNKNOWN: Country = Country(*b"ZZ");

    /// The country of an E.164 number, filed in the numbering plan as the parser would (a
    /// shared calling code, `+1`, `+44`, `+7`, by the number's own digits); a number no
    /// country's patterns claim goes to the code's main country (listed first): +44 to GB.
    pub fn of(phone: &str) -> Country {
        plan::file(phone)
            .and_then(|filed| filed.country_or_main())
            .map_or(Country::UNKNOWN, Country::named)
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
        // Claimed by no region of its shared code: the code's main country.
        assert_eq!(Country::of("+440000000000").as_str(), "GB");
        assert_eq!(Country::of("+10000000000").as_str(), "US");
        // A non-geographic code has no country.
        assert_eq!(Country::of("+80012345678").as_str(), "ZZ");
        assert_eq!(Country::named("nl").as_str(), "NL");
        assert_eq!(Country::calling_code("+447700900123"), Some(44));
    }

    #[test]
    fn a_range_is_the_number_without_its_last_three_digits() {
        assert_eq!(range_of("+31612345678"), "+31612345");
        assert_eq!(range_of("+1234"), "+1234");
    }
}
