//! Phone numbers as directories hold them (`+31 (0)6-1234 5678`, `06 12345678`), read as the
//! E.164 every later check, limit key and log line uses (masked by `mask`).

use std::borrow::Cow;

use phonenumber::country::Id;

use crate::error::CallError;
use crate::twilio::is_e164;

/// What a refused phone is told, unless a national form needs `default_region`.
const NOT_E164: &str = "phone must be E.164, like +14155550100";

/// The most characters and digits a number as written may have (room for separators, an
/// international prefix like `011` and a `(0)`); the E.164 it becomes has at most 15 digits.
const MAX_PHONE_TEXT: usize = 64;
const MAX_PHONE_DIGITS: usize = 20;

/// The recipient as E.164, from the number as a directory holds it.
///
/// Strict E.164 is taken as is (no parsing: the hot path). Otherwise only ASCII digits, one
/// leading `+` and separators (spaces, dashes, dots, brackets, `/`) are accepted, and Google's
/// libphonenumber (the `phonenumber` crate) reads the digits: a `+` number loses its
/// separators and a trunk prefix such as the `(0)` of `+31 (0)6…`; a national number
/// (`06 12345678`) or one with an international prefix (`0031…` from NL, `011 31…` from the
/// US) is read as dialled in `region` and must be a valid number for its country.
pub fn phone(phone: &str, region: Option<Id>) -> Result<Cow<'_, str>, CallError> {
    if is_e164(phone) {
        return Ok(Cow::Borrowed(phone));
    }
    normalize_phone(phone, region).map(Cow::Owned)
}

fn normalize_phone(raw: &str, region: Option<Id>) -> Result<String, CallError> {
    let refused = || CallError::InvalidPhone(NOT_E164.into());
    let text = raw.trim_matches(is_phone_space);
    let (plus, rest) = match text.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if text.len() > MAX_PHONE_TEXT {
        return Err(refused());
    }
    let mut digits = String::with_capacity(MAX_PHONE_DIGITS + 1);
    if plus {
        digits.push('+');
    }
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            c if is_phone_separator(c) => {}
            _ => return Err(refused()),
        }
    }
    let count = digits.len() - usize::from(plus);
    if count == 0 || count > MAX_PHONE_DIGITS {
        return Err(refused());
    }
    if plus {
        // A country code libphonenumber does not know (or a number it finds too short) keeps
        // its digits as written, as strict E.164 would.
        let e164 = match phonenumber::parse(None, &digits) {
            Ok(number) => e164_of(&number),
            Err(_) => digits,
        };
        return if is_e164(&e164) {
            Ok(e164)
        } else {
            Err(refused())
        };
    }
    let Some(region) = region else {
        return Err(CallError::InvalidPhone(format!(
            "{NOT_E164} (set default_region to accept national numbers)"
        )));
    };
    match phonenumber::parse(Some(region), &digits) {
        Ok(number) if phonenumber::is_valid(&number) => {
            let e164 = e164_of(&number);
            if is_e164(&e164) {
                return Ok(e164);
            }
        }
        _ => {}
    }
    Err(CallError::InvalidPhone(format!(
        "phone is neither E.164 (like +14155550100) nor a valid number as dialled in {}",
        region.as_ref()
    )))
}

/// `+` calling code national number (the national number keeps a leading zero that belongs
/// to it, as in Italy's +39 06…). Formatted by hand: the crate's formatter fails on a code it
/// has no metadata for.
fn e164_of(number: &phonenumber::PhoneNumber) -> String {
    format!("+{}{}", number.code().value(), number.national())
}

/// Space around a number: ASCII, and the no-break and thin spaces office tools put in.
fn is_phone_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{a0}' | '\u{2009}' | '\u{202f}')
}

/// What people and directories put between digits.
fn is_phone_separator(c: char) -> bool {
    is_phone_space(c)
        || matches!(
            c,
            '-' | '\u{2010}'..='\u{2015}' | '\u{2212}' | '.' | '(' | ')' | '[' | ']' | '/'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbers as directories and people write them, the country they are dialled in (if it
    /// matters), and the E.164 they are.
    const PHONES: &[(&str, Option<Id>, &str)] = &[
        // NL
        ("+31612345678", None, "+31612345678"),
        ("+31 6 1234 5678", None, "+31612345678"),
        ("+31 (0)6-1234 5678", None, "+31612345678"),
        ("+31 (0)6-12345678", None, "+31612345678"),
        ("+31 06 12345678", None, "+31612345678"),
        ("  +31.6.12.34.56.78 ", None, "+31612345678"),
        ("06 12345678", Some(Id::NL), "+31612345678"),
        ("06-12345678", Some(Id::NL), "+31612345678"),
        ("0031612345678", Some(Id::NL), "+31612345678"),
        ("00 31 6 12 34 56 78", Some(Id::NL), "+31612345678"),
        ("020 123 4567", Some(Id::NL), "+31201234567"),
        // DE
        ("+49 (0)151 2345 6789", None, "+4915123456789"),
        ("+49 30 1234567", None, "+49301234567"),
        ("0151 23456789", Some(Id::DE), "+4915123456789"),
        ("030/1234567", Some(Id::DE), "+49301234567"),
        ("0049 30 1234567", Some(Id::DE), "+49301234567"),
        // GB
        ("+44 (0)7400 123456", None, "+447400123456"),
        ("+44 20 7946 0958", None, "+442079460958"),
        ("07400 123456", Some(Id::GB), "+447400123456"),
        ("(020) 7946 0958", Some(Id::GB), "+442079460958"),
        // FR
        ("+33 (0)6 12 34 56 78", None, "+33612345678"),
        ("06 12 34 56 78", Some(Id::FR), "+33612345678"),
        ("06.12.34.56.78", Some(Id::FR), "+33612345678"),
        ("00 33 1 42 68 53 00", Some(Id::FR), "+33142685300"),
        // US
        ("+1 (415) 555-0100", None, "+14155550100"),
        ("+1 415.555.0100", None, "+14155550100"),
        ("(201) 555-0123", Some(Id::US), "+12015550123"),
        ("1 (201) 555-0123", Some(Id::US), "+12015550123"),
        ("201-555-0123", Some(Id::US), "+12015550123"),
        ("011 31 6 12345678", Some(Id::US), "+31612345678"),
        // The US prefix is 011: 00 is not an international prefix there.
        // JP
        ("+81 90-1234-5678", None, "+819012345678"),
        ("090-1234-5678", Some(Id::JP), "+819012345678"),
        ("03-1234-5678", Some(Id::JP), "+81312345678"),
        ("010 81 90 1234 5678", Some(Id::JP), "+819012345678"),
        // IN
        ("+91 98765 43210", None, "+919876543210"),
        ("098765 43210", Some(Id::IN), "+919876543210"),
        ("98765-43210", Some(Id::IN), "+919876543210"),
        // IT keeps the zero that is part of its numbers.
        ("+39 06 6982 1234", None, "+390669821234"),
        ("06 6982 1234", Some(Id::IT), "+390669821234"),
        // A national number dialled from elsewhere: the region's international prefix.
        ("0031 6 12345678", Some(Id::DE), "+31612345678"),
        ("00 44 7400 123456", Some(Id::FR), "+447400123456"),
        // The region does not change a + number.
        ("+44 7400 123456", Some(Id::NL), "+447400123456"),
        // A calling code libphonenumber does not know keeps its digits.
        ("+999 123 456", None, "+999123456"),
    ];

    #[test]
    fn phones_are_read_as_directories_hold_them() {
        assert!(PHONES.len() >= 20);
        for (written, region, want) in PHONES {
            let got = phone(written, *region).map(Cow::into_owned);
            assert_eq!(got.as_deref(), Ok(*want), "{written:?} in {region:?}");
        }
        // Already E.164: the same string, not a copy.
        assert!(matches!(phone("+31612345678", None), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn garbage_is_still_not_a_phone() {
        let hint = "ERR invalid_phone: phone must be E.164, like +14155550100 \
                    (set default_region to accept national numbers)";
        for national in ["06 12345678", "0031612345678", "0612", "612345678"] {
            assert_eq!(phone(national, None).unwrap_err().to_string(), hint);
        }
        let plain = "ERR invalid_phone: phone must be E.164, like +14155550100";
        for bad in [
            "",
            "   ",
            "+",
            "+ ",
            "+31 6 12ab",
            "+1 800 FLOWERS",
            "+31 6 1234 5678 ext 12",
            "++31612345678",
            "+31+612345678",
            "+31612345678+",
            "+1234567890123456",
            "+1 234 567 890 123 456",
            "+0612345678",
            "+٣١٦١٢٣٤٥٦٧٨",
            "tel:+31612345678",
            "+31\n612345678",
            "+31 6 12345678; DROP",
            &format!("+31{}612345678", " ".repeat(80)),
            &"1".repeat(25),
        ] {
            for region in [None, Some(Id::NL)] {
                let e = phone(bad, region).unwrap_err();
                assert_eq!(e.reason(), "invalid_phone", "{bad:?}");
                if region.is_none() && !bad.chars().all(|c| c.is_ascii_digit()) {
                    assert_eq!(e.to_string(), plain, "{bad:?}");
                }
            }
        }
        // With a region, a national form must be a valid number there.
        let invalid = "ERR invalid_phone: phone is neither E.164 (like +14155550100) nor a \
                       valid number as dialled in NL";
        for bad in ["0612", "06 1234", "918273", "0031 6 12", "06 12345678 9"] {
            assert_eq!(
                phone(bad, Some(Id::NL)).unwrap_err().to_string(),
                invalid,
                "{bad}"
            );
        }
        // From the US, 00 is no international prefix.
        assert!(phone("0031612345678", Some(Id::US)).is_err());
    }

    #[test]
    fn e164_rules() {
        for good in ["+1", "+31612345678", "+123456789012345"] {
            assert!(is_e164(good), "{good}");
        }
        for bad in [
            "31612345678",
            "+0612345678",
            "+1234567890123456",
            "+",
            "+31 6 1234",
            "+3161234567a",
            "++3161234567",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
        assert_eq!(phone("0612", None).unwrap_err().reason(), "invalid_phone");
    }
}
