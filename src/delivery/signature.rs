//! Twilio's request signature (`X-Twilio-Signature`): HMAC-SHA1, keyed by the account's auth
//! token, over the full URL Twilio posted to followed by every POST parameter, sorted by name,
//! as name then value; base64. (An API key cannot check it: only the auth token signs.)

use aws_lc_rs::{constant_time, hmac};
use base64::Engine as _;

/// The signature Twilio sends for a POST of `params` to `url`.
pub fn signature(token: &str, url: &str, params: &[(String, String)]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, token.as_bytes());
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut context = hmac::Context::with_key(&key);
    context.update(url.as_bytes());
    for (name, value) in sorted {
        context.update(name.as_bytes());
        context.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(context.sign().as_ref())
}

/// Whether `given` is the signature of `params` posted to `url`, compared in constant time.
pub fn verify(token: &str, url: &str, params: &[(String, String)], given: &str) -> bool {
    let expected = signature(token, url, params);
    constant_time::verify_slices_are_equal(expected.as_bytes(), given.trim().as_bytes()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(caller: &str) -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", caller),
            ("Digits", "1234"),
            ("From", caller),
            ("To", "+18005551212"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into_iter()
        .rev()
        .collect()
    }

    #[test]
    fn twilios_documented_examples() {
        // Twilio's signature-validation examples (auth token 12345, this URL and these
        // parameters), in both versions of its snippets.
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            signature("12345", url, &params("+14158675309")),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert_eq!(
            signature("12345", url, &params("+14158675310")),
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        );
        assert!(verify(
            "12345",
            url,
            &params("+14158675310"),
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        ));
        assert!(!verify(
            "12346",
            url,
            &params("+14158675310"),
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        ));
        assert!(!verify(
            "12345",
            url,
            &params("+14158675309"),
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        ));
    }
}
