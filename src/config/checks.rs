//! Checks shared by every part's options: URLs (and their redaction), CA files, booleans.

use std::path::Path;

use anyhow::{bail, Context, Result};
use url::Url;

/// Reads a CA file and checks it holds at least one PEM certificate and that every one is a
/// certificate rustls can trust (as the Twilio client will, at start and at reload — and in
/// dry-run mode and `check`, which build no client).
pub(super) fn read_ca(path: &Path) -> Result<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let pem =
        std::fs::read(path).with_context(|| format!("cannot read CA file {}", path.display()))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        bail!("CA file {} holds no PEM certificate", path.display());
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let added = cert
            .map_err(|e| anyhow::anyhow!("{e}"))
            .and_then(|der| roots.add(der).map_err(|e| anyhow::anyhow!("{e}")));
        if let Err(e) = added {
            bail!(
                "CA file {}: certificate {} is not a valid certificate ({e})",
                path.display(),
                i + 1
            );
        }
    }
    if roots.is_empty() {
        bail!("CA file {} holds no valid certificate", path.display());
    }
    Ok(pem)
}

/// An http:// or https:// URL. Errors never quote a value that does not parse (it may be a
/// secret pasted under the wrong key) and show any other with its user name and password
/// redacted.
pub(super) fn parse_http_url(what: &str, text: &str) -> Result<Url> {
    let url = match Url::parse(text) {
        Ok(url) => url,
        // The parser's reason names no part of the value.
        Err(e) => bail!("{what} is not a URL ({e}; the value is not shown)"),
    };
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        bail!(
            "{what} must be an http:// or https:// URL, not {}",
            redact_url(text)
        );
    }
    Ok(url)
}

/// A Twilio API base URL: no user name or password in it (the credentials go in their own
/// header), and https:// unless it is loopback (a mock) or `allow_insecure` says otherwise.
pub(super) fn parse_api_url(what: &str, text: &str, allow_insecure: bool) -> Result<Url> {
    let url = parse_http_url(what, text)?;
    if !url.username().is_empty() || url.password().is_some() {
        bail!(
            "{what} must not carry a user name or password (the Twilio credentials come from \
             TWILIO_* variables, [credentials] or $CREDENTIALS_DIRECTORY), not {}",
            redact_url(text)
        );
    }
    if url.scheme() == "http" && !allow_insecure && !is_loopback_host(&url) {
        bail!(
            "{what} {} is plain http:// to a host that is not loopback: the Twilio credentials \
             would cross the network in clear; use https://, or pass \
             --allow-insecure-twilio-url if that network is trusted",
            redact_url(text)
        );
    }
    Ok(url)
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => {
            name.eq_ignore_ascii_case("localhost")
                || name.to_ascii_lowercase().ends_with(".localhost")
        }
        None => false,
    }
}

/// `text` with anything between `://` and the last `@` replaced by `***`: the user name and
/// password of a URL, whether it parses or not.
pub fn redact_url(text: &str) -> String {
    let (scheme, rest) = match text.find("://") {
        Some(i) => text.split_at(i + 3),
        None => ("", text),
    };
    match rest.rfind('@') {
        Some(at) => format!("{scheme}***{}", &rest[at..]),
        None => text.to_owned(),
    }
}

/// The one parser of every boolean option, flag or env var: `1/0`, `yes/no`, `on/off`,
/// `true/false`, in any case. (Empty env vars are dropped before parsing: they count as unset.)
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "on" | "true" => Ok(true),
        "0" | "no" | "off" | "false" => Ok(false),
        _ => Err("expected one of 1/0, yes/no, on/off, true/false".to_owned()),
    }
}

/// `--template nl=TEXT` as a pair.
pub(super) fn locale_template(arg: &str) -> Result<(String, String), String> {
    arg.split_once('=')
        .map(|(locale, text)| (locale.to_owned(), text.to_owned()))
        .ok_or_else(|| "expected LOCALE=TEXT, e.g. nl=Uw code is {otp}".to_owned())
}

/// The file's `[templates]` table as pairs, in the table's order.
pub(super) fn locale_table<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<(String, String)>, D::Error> {
    let table: std::collections::BTreeMap<String, String> = serde::Deserialize::deserialize(d)?;
    Ok(table.into_iter().collect())
}
