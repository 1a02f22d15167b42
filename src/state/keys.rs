//! Key names in the shared store. A store is often run by another team and backed up
//! elsewhere, so no key holds a phone number, an address or a user name in clear: each is a
//! keyed hash (HMAC-SHA256, truncated to 128 bits) under a secret every instance shares.
//! Without that secret the names cannot be reversed by trying every number of a country.

use aws_lc_rs::hmac;

use crate::twilio::credentials::Secret;

pub struct Keys {
    prefix: String,
    hmac: hmac::Key,
}

impl Keys {
    pub fn new(prefix: &str, secret: &Secret) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
            hmac: hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes()),
        }
    }

    /// `{prefix}:{kind}:{32 hex digits}`. The kind is hashed too, so the same number under
    /// two kinds gives two unrelated names.
    pub fn hashed(&self, kind: &str, value: &[u8]) -> String {
        let mut context = hmac::Context::with_key(&self.hmac);
        context.update(kind.as_bytes());
        context.update(&[0]);
        context.update(value);
        let tag = context.sign();
        let mut name = String::with_capacity(self.prefix.len() + kind.len() + 34);
        name.push_str(&self.prefix);
        name.push(':');
        name.push_str(kind);
        name.push(':');
        for byte in &tag.as_ref()[..16] {
            name.push(char::from(HEX[usize::from(byte >> 4)]));
            name.push(char::from(HEX[usize::from(byte & 15)]));
        }
        name
    }

    /// `{prefix}:{kind}`, for what has no subject (the global limit).
    pub fn plain(&self, kind: &str) -> String {
        format!("{}:{kind}", self.prefix)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_keyed_namespaced_and_reveal_nothing() {
        let a = Keys::new("otp-sidecar", &Secret::new("one shared secret"));
        let b = Keys::new("otp-sidecar", &Secret::new("another secret"));
        let name = a.hashed("rate:phone", b"+31612345678");
        assert!(name.starts_with("otp-sidecar:rate:phone:"), "{name}");
        assert_eq!(name.len(), "otp-sidecar:rate:phone:".len() + 32);
        assert!(!name.contains("31612345678"));
        assert_eq!(name, a.hashed("rate:phone", b"+31612345678"), "stable");
        assert_ne!(name, b.hashed("rate:phone", b"+31612345678"), "keyed");
        assert_ne!(
            name[name.len() - 32..],
            a.hashed("lookup", b"+31612345678")[name.len() - 32..],
            "the kind is part of the hash"
        );
        assert_eq!(a.plain("rate:global"), "otp-sidecar:rate:global");
    }
}
