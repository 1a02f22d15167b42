//! What is kept of a code: HMAC-SHA256(key, phone ‖ 0 ‖ code). Without the key it cannot be
//! turned back into the code by trying every one of a million; compared in constant time.

use aws_lc_rs::hmac;
use subtle::ConstantTimeEq;

/// The HMAC of one code for one phone.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 32]);

impl std::fmt::Debug for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mac(…)")
    }
}

impl Mac {
    /// Equal in time that does not depend on where the two differ.
    pub fn matches(&self, other: &Mac) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// Lower-case hex: how the shared store holds it.
    pub fn hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 15)]));
        }
        out
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The codes' key, and what is made with it.
pub struct Keyed {
    key: hmac::Key,
}

impl Keyed {
    pub fn new(secret: &[u8]) -> Keyed {
        Keyed {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The HMAC of `code` sent to `phone` (E.164): the 0 byte keeps `+1` ‖ `23…` apart from
    /// `+12` ‖ `3…`.
    pub fn code(&self, phone: &str, code: &str) -> Mac {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(phone.as_bytes());
        context.update(&[0]);
        context.update(code.as_bytes());
        let mut mac = [0u8; 32];
        mac.copy_from_slice(context.sign().as_ref());
        Mac(mac)
    }

    /// The in-memory book's key for `phone`: a keyed hash, so no number is held in clear.
    pub fn slot(&self, phone: &str) -> u64 {
        let tag = hmac::sign(&self.key, &[b"slot\0", phone.as_bytes()].concat());
        let mut first = [0u8; 8];
        first.copy_from_slice(&tag.as_ref()[..8]);
        u64::from_le_bytes(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mac_binds_key_phone_and_code() {
        let a = Keyed::new(b"0123456789abcdef0123456789abcdef");
        let b = Keyed::new(b"another key, also long enough...");
        let mac = a.code("+31612345678", "123456");
        assert!(mac.matches(&a.code("+31612345678", "123456")));
        assert!(!mac.matches(&b.code("+31612345678", "123456")), "keyed");
        assert!(!mac.matches(&a.code("+31612345679", "123456")), "phone");
        assert!(!mac.matches(&a.code("+31612345678", "123457")), "code");
        assert!(
            !a.code("+1", "23456").matches(&a.code("+12", "3456")),
            "separated"
        );
        assert_eq!(mac.hex().len(), 64);
        assert!(!mac.hex().contains("123456"));
        assert_ne!(a.slot("+31612345678"), a.slot("+31612345679"));
    }
}
