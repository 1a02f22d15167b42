//! An E.164 number as the numbering plan files it — calling code, national number, region —
//! read straight from the plan's tables. The number-type filter and the country budgets run
//! on every call, so they skip the full parser (which normalises text these numbers, already
//! E.164, never have): the region is chosen the way the parser chooses it.

use phonenumber::metadata::{Metadata, DATABASE};

/// A number's place in the plan.
pub struct Filed<'a> {
    pub code: u16,
    pub national: &'a str,
    /// The region whose plan holds it; `None` when no region of its calling code claims it.
    pub region: Option<&'static Metadata>,
}

impl Filed<'_> {
    /// Its country as ISO 3166 alpha-2 (`None` for a non-geographic code or no region).
    pub fn country(&self) -> Option<&'static str> {
        let id = self.region?.id();
        (id.len() == 2 && id.bytes().all(|b| b.is_ascii_uppercase())).then_some(id)
    }

    /// Its calling code (44 for `+44`).
    pub fn calling_code(&self) -> Option<u16> {
        Some(self.code)
    }
}

/// Files `e164` (`+` and digits); `None` when its calling code is unknown.
pub fn file(e164: &str) -> Option<Filed<'_>> {
    let digits = e164.strip_prefix('+')?;
    let database: &'static phonenumber::metadata::Database = &DATABASE;
    for len in 1..=3 {
        let (code, national) = digits.split_at_checked(len)?;
        let Ok(code) = code.parse::<u16>() else {
            return None;
        };
        if let Some(regions) = database.by_code(&code) {
            return Some(Filed {
                code,
                national,
                region: region(regions, national),
            });
        }
    }
    None
}

/// As the parser chooses among the regions sharing a code: the only one; else the first whose
/// leading digits start the number or, without leading digits, whose plan knows the number.
fn region(regions: Vec<&'static Metadata>, national: &str) -> Option<&'static Metadata> {
    if let [only] = regions.as_slice() {
        return Some(*only);
    }
    regions.into_iter().find(|m| match m.leading_digits() {
        Some(pattern) => pattern
            .find(national)
            .is_some_and(|found| found.start() == 0),
        None => knows(m, national),
    })
}

/// Whether the plan files `national` under any type (the parser's "not Unknown").
fn knows(m: &Metadata, national: &str) -> bool {
    let d = m.descriptors();
    d.general().is_match(national)
        && [
            d.premium_rate(),
            d.toll_free(),
            d.shared_cost(),
            d.voip(),
            d.personal_number(),
            d.pager(),
            d.uan(),
            d.voicemail(),
            d.fixed_line(),
            d.mobile(),
        ]
        .into_iter()
        .flatten()
        .any(|desc| desc.is_match(national))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_country_as_the_parser() {
        for phone in [
            "+447700900123",
            "+447797700123",
            "+31612345678",
            "+14155550100",
            "+16135550123",
            "+12684601234",
            "+4915112345678",
            "+79123456789",
            "+77012345678",
            "+80012345678",
            "+999123456",
            "+3",
        ] {
            let parsed = phonenumber::parse(None, phone).ok();
            let want = parsed.as_ref().and_then(|n| n.country().id());
            let got = file(phone).and_then(|f| f.country());
            assert_eq!(got, want.as_ref().map(|id| id.as_ref()), "{phone}");
        }
    }
}
