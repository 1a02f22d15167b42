//! An E.164 number as the numbering plan files it — calling code, national number, region —
//! read straight from the plan's tables. The number-type filter and the country budgets run
//! on every call, so they skip the full parser (which normalises text these numbers, already
//! E.164, never have): the region is chosen the way the parser chooses it.
//!
//! The plan's patterns are compiled here once each, anchored, the first time a number needs
//! them: the parser's own regexes sit behind a locked cache keyed by the pattern's text,
//! which hashes kilobytes of pattern on every match (three quarters of a call's filter).

use std::sync::{LazyLock, OnceLock};

use phonenumber::metadata::{Descriptor, Descriptors, Metadata, DATABASE};
use phonenumber::Type;
use regex::{Regex, RegexBuilder};

/// A number's place in the plan.
pub struct Filed<'a> {
    pub code: u16,
    pub national: &'a str,
    /// The region whose plan holds it; `None` when no region of its calling code claims it.
    region: Option<&'static Region>,
}

impl Filed<'_> {
    /// Its country as ISO 3166 alpha-2 (`None` for a non-geographic code or no region).
    pub fn country(&self) -> Option<&'static str> {
        alpha2(self.region?)
    }

    /// Its country, or for a number no region of a shared calling code claims, the code's
    /// main country (+44 to GB, +1 to US), as the pumping guard counts it.
    pub fn country_or_main(&self) -> Option<&'static str> {
        let main = || PLAN.get(usize::from(self.code))?.first().copied();
        alpha2(self.region.or_else(main)?)
    }

    /// Its calling code (44 for `+44`).
    pub fn calling_code(&self) -> Option<u16> {
        Some(self.code)
    }

    /// Whether its region's plan files it as `number_type` (false without a region, or for a
    /// type the plan does not describe there).
    pub fn is(&self, number_type: Type) -> bool {
        let Some(kind) = Kind::of(number_type) else {
            return false;
        };
        self.region
            .is_some_and(|region| region.matches(kind, self.national))
    }
}

/// Files `e164` (`+` and digits); `None` when its calling code is unknown.
pub fn file(e164: &str) -> Option<Filed<'_>> {
    let digits = e164.strip_prefix('+')?;
    for len in 1..=3 {
        let (code, national) = digits.split_at_checked(len)?;
        let Ok(code) = code.parse::<u16>() else {
            return None;
        };
        if let Some(regions) = PLAN.get(usize::from(code)).filter(|r| !r.is_empty()) {
            return Some(Filed {
                code,
                national,
                region: region(regions, national),
            });
        }
    }
    None
}

/// The regions of each calling code (0-999), in the parser's order: the main one first.
static PLAN: LazyLock<Vec<Vec<&'static Region>>> = LazyLock::new(|| {
    (0..1000u16)
        .map(|code| {
            let regions = DATABASE.by_code(&code).unwrap_or_default();
            // Leaked once: as many as the plan has regions, for the life of the process.
            regions
                .into_iter()
                .map(|meta| &*Box::leak(Box::new(Region::new(meta))))
                .collect()
        })
        .collect()
});

/// A region's id when it is a country's two letters (not `001`, a non-geographic code).
fn alpha2(region: &Region) -> Option<&'static str> {
    let id = region.meta.id();
    (id.len() == 2 && id.bytes().all(|b| b.is_ascii_uppercase())).then_some(id)
}

/// As the parser chooses among the regions sharing a code: the only one; else the first whose
/// leading digits start the number or, without leading digits, whose plan knows the number.
fn region(regions: &[&'static Region], national: &str) -> Option<&'static Region> {
    if let [only] = regions {
        return Some(*only);
    }
    regions
        .iter()
        .copied()
        .find(|r| match r.meta.leading_digits() {
            Some(_) => r.matches(Kind::LeadingDigits, national),
            None => r.knows(national),
        })
}

/// What a region's plan has a pattern for.
#[derive(Debug, Clone, Copy)]
enum Kind {
    General,
    PremiumRate,
    TollFree,
    SharedCost,
    Voip,
    PersonalNumber,
    Pager,
    Uan,
    Voicemail,
    FixedLine,
    Mobile,
    LeadingDigits,
}

/// The types a number may be filed as, in the parser's order (mobiles last).
const TYPES: [Kind; 10] = [
    Kind::PremiumRate,
    Kind::TollFree,
    Kind::SharedCost,
    Kind::Voip,
    Kind::PersonalNumber,
    Kind::Pager,
    Kind::Uan,
    Kind::Voicemail,
    Kind::FixedLine,
    Kind::Mobile,
];

impl Kind {
    fn of(number_type: Type) -> Option<Kind> {
        Some(match number_type {
            Type::PremiumRate => Kind::PremiumRate,
            Type::TollFree => Kind::TollFree,
            Type::SharedCost => Kind::SharedCost,
            Type::Voip => Kind::Voip,
            Type::PersonalNumber => Kind::PersonalNumber,
            Type::Pager => Kind::Pager,
            Type::Uan => Kind::Uan,
            Type::Voicemail => Kind::Voicemail,
            Type::FixedLine => Kind::FixedLine,
            Type::Mobile => Kind::Mobile,
            _ => return None,
        })
    }

    fn descriptor(self, d: &Descriptors) -> Option<&Descriptor> {
        match self {
            Kind::General => Some(d.general()),
            Kind::PremiumRate => d.premium_rate(),
            Kind::TollFree => d.toll_free(),
            Kind::SharedCost => d.shared_cost(),
            Kind::Voip => d.voip(),
            Kind::PersonalNumber => d.personal_number(),
            Kind::Pager => d.pager(),
            Kind::Uan => d.uan(),
            Kind::Voicemail => d.voicemail(),
            Kind::FixedLine => d.fixed_line(),
            Kind::Mobile => d.mobile(),
            Kind::LeadingDigits => None,
        }
    }
}

/// A region's plan and its patterns, each compiled the first time it is matched.
struct Region {
    meta: &'static Metadata,
    patterns: [OnceLock<Option<Pattern>>; 12],
}

/// A pattern as the parser applies it, and the lengths it allows (empty: any).
struct Pattern {
    regex: Regex,
    lengths: &'static [u16],
}

impl Region {
    fn new(meta: &'static Metadata) -> Region {
        Region {
            meta,
            patterns: Default::default(),
        }
    }

    /// Whether the plan knows `national` under any type (the parser's "not Unknown").
    fn knows(&self, national: &str) -> bool {
        self.matches(Kind::General, national)
            && TYPES.iter().any(|&kind| self.matches(kind, national))
    }

    fn matches(&self, kind: Kind, national: &str) -> bool {
        let pattern = self.patterns[kind as usize].get_or_init(|| self.compile(kind));
        pattern.as_ref().is_some_and(|p| {
            (p.lengths.is_empty() || p.lengths.contains(&(national.len() as u16)))
                && p.regex.is_match(national)
        })
    }

    /// Anchored at the start only, as the parser's `Descriptor::is_match` reads a match (the
    /// lengths bound the rest).
    fn compile(&self, kind: Kind) -> Option<Pattern> {
        let (source, lengths) = match kind {
            Kind::LeadingDigits => (self.meta.leading_digits()?.as_str(), &[][..]),
            _ => {
                let d = kind.descriptor(self.meta.descriptors())?;
                (d.national_number().as_str(), d.possible_length())
            }
        };
        // As the parser compiles the plan's text (laid out with whitespace). It compiled the
        // same text when the plan loaded: this cannot fail, and would only match nothing.
        let regex = RegexBuilder::new(&format!("^(?:{source})"))
            .ignore_whitespace(true)
            .build()
            .ok()?;
        Some(Pattern { regex, lengths })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every example number in the plan (each region's, each type's), filed here and by the
    /// parser's own patterns: the same region, and the same verdict for every type.
    #[test]
    fn every_example_number_is_filed_as_the_parser_files_it() {
        let types = [
            Type::PremiumRate,
            Type::TollFree,
            Type::SharedCost,
            Type::Voip,
            Type::PersonalNumber,
            Type::Pager,
            Type::Uan,
            Type::Voicemail,
            Type::FixedLine,
            Type::Mobile,
        ];
        let mut checked = 0;
        for meta in DATABASE.iter() {
            for example in types
                .iter()
                .filter_map(|t| meta.descriptors().get(*t)?.example())
            {
                let phone = format!("+{}{example}", meta.country_code());
                let parsed = phonenumber::parse(None, &phone).ok();
                let want = parsed.as_ref().and_then(|n| n.country().id());
                let filed = file(&phone).expect("a known calling code");
                let got = filed.region.map(|r| r.meta.id());
                if let Some(want) = &want {
                    assert_eq!(got, Some(want.as_ref()), "{phone}");
                }
                let Some(region) = got.and_then(|id| DATABASE.by_id(id)) else {
                    continue;
                };
                for t in types {
                    let parser = region
                        .descriptors()
                        .get(t)
                        .is_some_and(|d| d.is_match(filed.national));
                    assert_eq!(filed.is(t), parser, "{phone} as {t:?}");
                }
                checked += 1;
            }
        }
        assert!(checked > 1000, "{checked} examples");
    }

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
