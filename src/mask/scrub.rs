//! Twilio's own text, made fit for a caller and a log: it names the number it refuses (`The
//! 'To' number +14155550001 is not a valid phone number.`), so every number in it is masked
//! by the log's rule before the text goes anywhere.
//!
//! A number here is a run that starts where no letter or digit stands before it, with `+`,
//! `(` or a digit, goes on over digits and the separators `space - . ( )`, ends at its last
//! digit, is not followed by a letter or `_`, and holds at least six digits. Twilio's error
//! codes (five digits, `21211`), the digits of a docs URL's path (`/errors/21211`) and a SID's
//! hex (letters around it) are left as they are.

use std::borrow::Cow;

use super::{mask_national, mask_phone};

/// The fewest digits a run needs to be taken for a phone number.
const MIN_DIGITS: usize = 6;

/// `text` with every number in it masked (borrowed when there is none).
pub fn scrub_numbers(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    // Bytes of `text` already copied to `out`.
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let starts = matches!(bytes[i], b'+' | b'(' | b'0'..=b'9')
            && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric() && bytes[i - 1] != b'+');
        if !starts {
            i += 1;
            continue;
        }
        let (end, digits) = run_at(bytes, i);
        let followed_by_word = bytes
            .get(end)
            .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_');
        if digits.len() < MIN_DIGITS || followed_by_word {
            i = end.max(i + 1);
            continue;
        }
        // The mask starts where the number's first `+` or digit does (an opening bracket
        // before it stays, as a closing one after the last digit does).
        let first = i + bytes[i..].iter().take_while(|b| **b == b'(').count();
        out.push_str(&text[copied..first]);
        if bytes[first] == b'+' {
            out.push_str(&mask_phone(&format!("+{digits}")));
        } else {
            out.push_str(&mask_national(&digits));
        }
        copied = end;
        i = end;
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// From `start`: the end of the run (just past its last digit) and its digits. A `+` counts
/// only first, before a digit.
fn run_at(bytes: &[u8], start: usize) -> (usize, String) {
    let mut digits = String::new();
    let mut end = start;
    for (k, b) in bytes.iter().enumerate().skip(start) {
        match b {
            b'0'..=b'9' => {
                digits.push(char::from(*b));
                end = k + 1;
            }
            b'+' if k == start => {}
            b' ' | b'-' | b'.' | b'(' | b')' => {}
            _ => break,
        }
    }
    (end, digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_numbers_and_keeps_codes_urls_and_sids() {
        for (text, want) in [
            (
                "The 'To' number +14155550001 is not a valid phone number.",
                "The 'To' number +1******0001 is not a valid phone number.",
            ),
            (
                "Unable to create record: 'To' (415) 555-0100 is unverified",
                "Unable to create record: 'To' (******0100 is unverified",
            ),
            ("Number: 0031 6 1234 5678.", "Number: *********5678."),
            ("To=+31612345678&From=+1555", "To=+31*****5678&From=+1555"),
            (
                "Error 21211, see https://www.twilio.com/docs/errors/21211",
                "Error 21211, see https://www.twilio.com/docs/errors/21211",
            ),
            (
                "SID AC0123456789abcdef0123456789abcdef and VA1234567890",
                "SID AC0123456789abcdef0123456789abcdef and VA1234567890",
            ),
            ("batch 1234567abc", "batch 1234567abc"),
            (
                "Le num\u{e9}ro \u{ab} +33612345678 \u{bb}",
                "Le num\u{e9}ro \u{ab} +33*****5678 \u{bb}",
            ),
            ("12345", "12345"),
            ("", ""),
            ("+", "+"),
            ("((((", "(((("),
        ] {
            assert_eq!(scrub_numbers(text), want, "{text}");
        }
    }

    #[test]
    fn never_leaves_six_digits_in_a_row() {
        let text = "a +1 415 555 0100 b 4155550100 c +4915112345678) d";
        let scrubbed = scrub_numbers(text);
        let squeezed: String = scrubbed.chars().filter(|c| !" -.()".contains(*c)).collect();
        let longest = squeezed
            .split(|c: char| !c.is_ascii_digit())
            .map(str::len)
            .max();
        assert!(longest < Some(6), "{scrubbed}");
    }
}
