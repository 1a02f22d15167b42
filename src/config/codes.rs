//! issueOTP's settings: the code's length and alphabet, its lifetime, the wrong codes allowed,
//! and the key its HMACs are made with.

use std::time::Duration;

use anyhow::{bail, Result};
use aws_lc_rs::hmac;
use clap::Args;
use serde::{Deserialize, Serialize};

use super::credentials::{Sources, CODES_KEY};
use super::Options;
use crate::codes::{Settings, DEFAULT_LIFETIME};
use crate::state::StoreSettings;
use crate::twilio::credentials::Secret;

const DIGITS: &str = "0123456789";

/// The codes' options: a block of the options type (flattened into it, as flags, env vars
/// and file keys of their own).
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
pub struct CodesOptions {
    /// issueOTP: characters per code (4-10). [default: 6]
    #[arg(long, env = "OTP_SIDECAR_CODE_LENGTH", value_name = "N")]
    pub code_length: Option<u64>,

    /// issueOTP: the characters codes are drawn from, 10-62 distinct ASCII letters or digits.
    /// [default: 0123456789]
    #[arg(long, env = "OTP_SIDECAR_CODE_ALPHABET", value_name = "CHARS")]
    pub code_alphabet: Option<String>,

    /// checkOTP: wrong codes (1-100) that lock a number until its codes expire. [default: 5]
    #[arg(long, env = "OTP_SIDECAR_MAX_ATTEMPTS", value_name = "N")]
    pub max_attempts: Option<u64>,
}

/// `state`: the shared store, whose instances must agree on the key.
pub(super) fn settings(
    o: &Options,
    secrets: &Sources,
    state: Option<&StoreSettings>,
) -> Result<Settings> {
    let alphabet = o.codes.code_alphabet.as_deref().unwrap_or(DIGITS).trim();
    let mut seen = [false; 128];
    let distinct = alphabet.bytes().all(|b| {
        let fresh = b.is_ascii_alphanumeric() && !seen[usize::from(b & 127)];
        seen[usize::from(b & 127)] = true;
        fresh
    });
    if !distinct || !(10..=62).contains(&alphabet.len()) {
        bail!("code_alphabet must be 10 to 62 distinct ASCII letters or digits");
    }
    let (key, key_from) = match (secrets.codes_key()?, state) {
        (Some(key), _) => (Some(key), "OTP_SIDECAR_CODES_KEY"),
        // Every instance of a pool already shares the state key: the codes key is derived
        // from it (a keyed hash under another name), so issuing on one and checking on
        // another works without a second secret to distribute.
        (None, Some(store)) => (
            Some(derived(&store.key)),
            "derived from OTP_SIDECAR_STATE_KEY",
        ),
        // Memory only: a key drawn at start, so issueOTP works out of the box.
        (None, None) => (None, "drawn at start (this instance's codes only)"),
    };
    Ok(Settings {
        length: usize::try_from(o.codes.code_length.unwrap_or(6)).unwrap_or(6),
        alphabet: alphabet.as_bytes().to_vec(),
        lifetime: o
            .otp_lifetime_secs
            .map_or(DEFAULT_LIFETIME, |s| Duration::from_secs(s.into())),
        max_attempts: u32::try_from(o.codes.max_attempts.unwrap_or(5)).unwrap_or(5),
        key,
        key_from,
    })
}

/// The codes key made from the state key when no `OTP_SIDECAR_CODES_KEY` is given.
fn derived(state_key: &Secret) -> Secret {
    let key = hmac::Key::new(hmac::HMAC_SHA256, state_key.expose().as_bytes());
    let tag = hmac::sign(&key, CODES_KEY.as_bytes());
    Secret::new(
        tag.as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    )
}
