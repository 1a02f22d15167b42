//! The number-type filter: refuses numbers whose type the numbering plan alone tells (Google's
//! libphonenumber metadata, offline, no lookup fee) — premium rate, shared cost, UAN and pager
//! numbers by default: ranges SMS pumping rents, and no phone a person reads a code on.

use std::str::FromStr;

use anyhow::bail;
use phonenumber::Type;

use super::plan::Filed;

use crate::error::CallError;

/// Refused unless configured otherwise (`block_number_types`).
pub const DEFAULT_BLOCKED_NUMBER_TYPES: &str = "premium_rate,shared_cost,uan,pager";

/// The types that may be named, in the option's spelling.
const NAMED: [(&str, Type); 7] = [
    ("premium_rate", Type::PremiumRate),
    ("shared_cost", Type::SharedCost),
    ("uan", Type::Uan),
    ("pager", Type::Pager),
    ("toll_free", Type::TollFree),
    ("voip", Type::Voip),
    ("personal_number", Type::PersonalNumber),
];

/// The types refused; empty: the filter is off and no number is parsed for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NumberTypes(Vec<Type>);

impl FromStr for NumberTypes {
    type Err = anyhow::Error;

    /// `premium_rate, uan` or `none`.
    fn from_str(list: &str) -> anyhow::Result<NumberTypes> {
        let mut types = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "none" {
                continue;
            }
            let Some((_, t)) = NAMED.iter().find(|(n, _)| *n == name) else {
                let known: Vec<&str> = NAMED.iter().map(|(n, _)| *n).collect();
                bail!("{name:?} is not one of {} or none", known.join(", "));
            };
            if !types.contains(t) {
                types.push(*t);
            }
        }
        Ok(NumberTypes(types))
    }
}

impl NumberTypes {
    pub fn active(&self) -> bool {
        !self.0.is_empty()
    }

    /// Refuses `number` when the plan says it is of a refused type. A number the plan cannot
    /// read passes: other rules (validity, the allow list) are for that.
    pub fn check(&self, number: Option<&Filed<'_>>) -> Result<(), CallError> {
        let Some(number) = number.filter(|_| self.active()) else {
            return Ok(());
        };
        // Only the refused types' patterns are matched (the parser's number_type() would try
        // up to ten, mobiles last).
        if self.0.iter().any(|t| number.is(*t)) {
            return Err(CallError::Blocked("number_type"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(types: &str, phone: &str) -> bool {
        let types: NumberTypes = types.parse().unwrap();
        types
            .check(crate::guard::plan::file(phone).as_ref())
            .is_err()
    }

    #[test]
    fn the_plan_tells_premium_and_shared_cost_from_mobiles() {
        let default = DEFAULT_BLOCKED_NUMBER_TYPES;
        // UK premium rate (09…), NL premium (0900…), UK shared cost (0845…), UK pager (076…).
        for phone in [
            "+449098790000",
            "+319001234567",
            "+448431234567",
            "+447640123456",
        ] {
            assert!(refused(default, phone), "{phone}");
        }
        // Mobiles and fixed lines pass; so does a number the plan cannot read.
        for phone in [
            "+447700900123",
            "+31612345678",
            "+14155550100",
            "+999123456",
        ] {
            assert!(!refused(default, phone), "{phone}");
        }
        // Toll free only when asked for.
        assert!(!refused(default, "+448001234567"));
        assert!(refused("toll_free", "+448001234567"));
        assert!(!refused("none", "+449098790000"));
    }

    #[test]
    fn names_are_checked() {
        assert!("premium".parse::<NumberTypes>().is_err());
        assert!(!"none".parse::<NumberTypes>().unwrap().active());
        assert_eq!(
            "uan, uan,pager".parse::<NumberTypes>().unwrap(),
            NumberTypes(vec![Type::Uan, Type::Pager])
        );
    }

    /// What a check costs (not a pass/fail test: run with `cargo test --release --lib
    /// number_type::tests::cost -- --ignored --nocapture`; a test build runs this crate's
    /// own code unoptimised, five times slower).
    #[test]
    #[ignore]
    fn cost_of_a_check() {
        let types: NumberTypes = DEFAULT_BLOCKED_NUMBER_TYPES.parse().unwrap();
        let phones = [
            "+447700900123",
            "+31612345678",
            "+14155550100",
            "+4915112345678",
        ];
        let rounds = 20_000;
        let per = |started: std::time::Instant| started.elapsed() / (rounds * phones.len() as u32);
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            for phone in phones {
                std::hint::black_box(phonenumber::parse(None, phone).ok());
            }
        }
        let parse = per(started);
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            for phone in phones {
                std::hint::black_box(crate::guard::plan::file(phone).map(|f| f.country()));
            }
        }
        let filed = per(started);
        let numbers: Vec<_> = phones.iter().map(|p| crate::guard::plan::file(p)).collect();
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            for number in &numbers {
                let _ = std::hint::black_box(types.check(number.as_ref()));
            }
        }
        let check = per(started);
        println!(
            "per number: the parser {parse:?}; filed in the plan {filed:?}, then the \
             number-type check {check:?}"
        );
    }
}
