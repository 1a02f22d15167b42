//! Drawing a code: characters from the alphabet, each chosen by a byte from the OS CSPRNG,
//! unbiased (a byte that would favour the alphabet's first characters is drawn again).

use std::fmt;

/// A code as drawn: it goes into the message and nowhere else (its `Debug` hides it).
pub struct Code(String);

impl Code {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Code(***)")
    }
}

/// The OS's random bytes failed us (no getrandom(2), no /dev/urandom), or there is no
/// alphabet to draw from (the configuration rules that out): nothing is issued.
#[derive(Debug)]
pub struct NoRandomness;

/// Fills `buf` from the OS CSPRNG (getrandom(2), /dev/urandom on kernels without it).
pub fn random_bytes(buf: &mut [u8]) -> Result<(), NoRandomness> {
    getrandom::fill(buf).map_err(|_| NoRandomness)
}

/// `length` characters of `alphabet` (2 to 256 distinct bytes), each equally likely.
pub fn draw(alphabet: &[u8], length: usize) -> Result<Code, NoRandomness> {
    draw_with(alphabet, length, random_bytes)
}

/// [`draw`] with its source of bytes given (the tests' fixed bytes).
fn draw_with(
    alphabet: &[u8],
    length: usize,
    mut fill: impl FnMut(&mut [u8]) -> Result<(), NoRandomness>,
) -> Result<Code, NoRandomness> {
    if alphabet.is_empty() || alphabet.len() > 256 {
        return Err(NoRandomness);
    }
    let n = alphabet.len();
    // The largest multiple of n that fits a byte: bytes at or past it are drawn again, so
    // each character keeps exactly 256 / n … of the accepted bytes (rejection sampling).
    let accept_below = 256 - (256 % n);
    let mut code = String::with_capacity(length);
    let mut pool = [0u8; 32];
    while code.len() < length {
        fill(&mut pool)?;
        for &byte in &pool {
            if usize::from(byte) < accept_below && code.len() < length {
                code.push(char::from(alphabet[usize::from(byte) % n]));
            }
        }
    }
    Ok(Code(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_length_and_only_the_alphabet() {
        for length in 4..=10 {
            let code = draw(b"0123456789", length).unwrap();
            assert_eq!(code.as_str().len(), length);
            assert!(code.as_str().bytes().all(|b| b.is_ascii_digit()));
        }
        let code = draw(b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789", 10).unwrap();
        assert!(code
            .as_str()
            .bytes()
            .all(|b| b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789".contains(&b)));
        assert_eq!(format!("{code:?}"), "Code(***)");
    }

    #[test]
    fn bytes_past_the_last_whole_multiple_are_drawn_again() {
        // Alphabet of 10: 250..=255 would favour 0..=5, so they are skipped.
        let mut round = 0;
        let code = draw_with(b"0123456789", 4, |buf| {
            round += 1;
            buf.fill(if round == 1 { 250 } else { 7 });
            buf[0] = if round == 1 { 255 } else { 13 };
            Ok(())
        })
        .unwrap();
        assert_eq!(round, 2, "a pool of rejected bytes is drawn again");
        assert_eq!(code.as_str(), "3777");
    }

    #[test]
    fn every_character_equally_likely_over_the_byte_range() {
        // Each accepted byte value once: every digit must come out exactly 25 times.
        let mut counts = [0usize; 10];
        let mut next = 0u16;
        let code = draw_with(b"0123456789", 250, |buf| {
            for b in buf.iter_mut() {
                *b = (next % 256) as u8;
                next += 1;
            }
            Ok(())
        })
        .unwrap();
        for b in code.as_str().bytes() {
            counts[usize::from(b - b'0')] += 1;
        }
        assert_eq!(counts, [25; 10]);
    }
}
