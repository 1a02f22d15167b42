//! The one masking rule for a phone number in a log line, the same as both iRules'
//! (`irules/*.tcl`, proc `otp_mask`): the calling code, then a star for each hidden digit of the
//! national number, then its last `shown = min(4, floor(N / 2))` digits, where `N` is the
//! national number's digit count. `+14155550100` → `+1******0100`, `+31612345678` →
//! `+31*****5678`, `+12345678` → `+1****678`.
//!
//! The calling code's length comes from the ITU's E.164 assignments (a small prefix table, not
//! libphonenumber): the iRules need the same table in Tcl 8.4, and the log line stays cheap.
//! A unit test holds the table against libphonenumber's metadata. `scrub` masks the numbers
//! in a text by the same rule.

pub mod scrub;

/// The two-digit calling codes (ITU-T E.164 assignments); `1` and `7` are the one-digit codes,
/// every other code has three digits (spare ones included, as ITU reserves them).
const TWO_DIGIT_CODES: &[&str] = &[
    "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46", "47",
    "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63", "64", "65",
    "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
];

/// How many of `digits` (an E.164 number without its `+`) are the calling code.
pub fn calling_code_len(digits: &str) -> usize {
    match digits.as_bytes().first() {
        Some(b'1' | b'7') => 1,
        _ if digits
            .get(..2)
            .is_some_and(|two| TWO_DIGIT_CODES.contains(&two)) =>
        {
            2
        }
        _ => 3,
    }
}

/// A phone number fit for a log line (see the module's rule). Anything but `+` and ASCII digits
/// (never E.164, which is all a log line is given) is masked whole.
pub fn mask_phone(phone: &str) -> String {
    let Some(digits) = phone.strip_prefix('+') else {
        return "****".into();
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return "****".into();
    }
    let code = calling_code_len(digits).min(digits.len());
    let mut masked = String::with_capacity(phone.len());
    masked.push('+');
    masked.push_str(&digits[..code]);
    push_national(&mut masked, &digits[code..]);
    masked
}

/// Digits written without a `+` (no calling code known): the national rule alone,
/// `0612345678` → `******5678`.
pub fn mask_national(digits: &str) -> String {
    let mut masked = String::with_capacity(digits.len());
    push_national(&mut masked, digits);
    masked
}

/// A star for each hidden digit, then the last `min(4, N / 2)` digits (ASCII digits only).
fn push_national(masked: &mut String, national: &str) {
    let shown = (national.len() / 2).min(4);
    masked.extend(std::iter::repeat_n('*', national.len() - shown));
    masked.push_str(&national[national.len() - shown..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Short and long numbers and their masks, the table both iRules' tests and the daemon's
    /// log test also read.
    const MASKS: &str = include_str!("../../tests/irules/masks.txt");

    #[test]
    fn masks_short_and_long_numbers() {
        let rows = MASKS
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty());
        let mut count = 0;
        for row in rows {
            let (phone, masked) = row.split_once(' ').unwrap();
            assert_eq!(mask_phone(phone), masked, "{phone}");
            count += 1;
        }
        assert!(count >= 10);
    }

    #[test]
    fn masks_anything_else_whole() {
        for bad in ["", "+", "14155550100", "+1415555010a", "+٣١٦١٢٣٤٥٦٧٨"] {
            assert_eq!(mask_phone(bad), "****", "{bad:?}");
        }
    }

    #[test]
    fn never_shows_more_than_half_the_national_number() {
        for len in 1..=15 {
            let phone = format!("+4{}", "5".repeat(len));
            let masked = mask_phone(&phone);
            let shown = masked.chars().skip(3).filter(char::is_ascii_digit).count();
            assert!(shown * 2 < len && shown <= 4, "{phone} → {masked}");
        }
    }

    /// Every calling code libphonenumber knows has the length the table gives it, and every
    /// two-digit code in the table is one libphonenumber knows.
    #[test]
    fn calling_code_table_matches_libphonenumber() {
        let known: std::collections::BTreeSet<String> = phonenumber::metadata::DATABASE
            .iter()
            .map(|meta| meta.country_code().to_string())
            .collect();
        for code in &known {
            assert_eq!(
                calling_code_len(&format!("{code}00000")),
                code.len(),
                "+{code}"
            );
        }
        for code in TWO_DIGIT_CODES {
            assert!(known.contains(*code), "+{code}");
        }
    }
}
