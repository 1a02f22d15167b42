//! Secret files others can read: the TLS key, the caller tokens file and every file
//! `[credentials]` (or a `[[failover]]` entry's) names. Each one readable by others, or by a
//! group other than the daemon's own, becomes a warning (`serve` logs it once at start, `check`
//! prints it): its mode and owner, never a byte of it.
//!
//! A group-readable file whose group is the daemon's own is the usual layout (`root:otp-sidecar`,
//! mode 640) and passes. Files in `$CREDENTIALS_DIRECTORY` are not looked at: systemd writes them
//! mode 400, owned by the service's user, on a mount only that service sees, so their mode says
//! nothing about the source file (which systemd reads as root) and a warning would be noise.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::credentials::CredentialFiles;
use super::options::Options;

/// A warning for each secret file `o` names that others may read.
pub(super) fn warnings(o: &Options, credentials_directory: Option<&Path>) -> Vec<String> {
    let mut files: Vec<(&str, &Path)> = Vec::new();
    if let Some(key) = &o.tls_key {
        files.push(("tls_key", key));
    }
    if let Some(tokens) = &o.caller_tokens_file {
        files.push(("caller_tokens_file", tokens));
    }
    credential_files(&o.credentials, &mut files);
    for provider in &o.failover {
        if let Some(credentials) = &provider.credentials {
            credential_files(credentials, &mut files);
        }
    }
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut warnings = Vec::new();
    for (key, path) in files {
        let under_systemd = credentials_directory.is_some_and(|dir| path.starts_with(dir));
        if under_systemd || seen.iter().any(|p| p == path) {
            continue;
        }
        seen.push(path.to_owned());
        // A file that cannot be read is refused (or ignored) where it is read.
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        if let Some(who) = readers(&meta, own_group()) {
            warnings.push(format!(
                "{key} {} is readable by {who} (mode {:04o}, owner uid {} gid {}): make it \
                 readable by the daemon's user only (chmod 600, or 640 with the daemon's group)",
                crate::error::shown_path(path),
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid(),
            ));
        }
    }
    warnings
}

/// Who besides its owner (and the daemon's own group) may read a file with `meta`.
fn readers(meta: &std::fs::Metadata, own_group: u32) -> Option<&'static str> {
    let mode = meta.mode();
    let others = mode & 0o004 != 0;
    let group = mode & 0o040 != 0 && meta.gid() != own_group;
    match (group, others) {
        (true, true) => Some("its group and others"),
        (true, false) => Some("its group"),
        (false, true) => Some("others"),
        (false, false) => None,
    }
}

fn own_group() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}

fn credential_files<'a>(c: &'a CredentialFiles, files: &mut Vec<(&'static str, &'a Path)>) {
    for (key, path) in [
        ("account_sid_file", &c.account_sid_file),
        ("auth_token_file", &c.auth_token_file),
        ("api_key_file", &c.api_key_file),
        ("api_secret_file", &c.api_secret_file),
        ("state_password_file", &c.state_password_file),
        ("state_key_file", &c.state_key_file),
        ("alert_secret_file", &c.alert_secret_file),
        ("codes_key_file", &c.codes_key_file),
    ] {
        if let Some(path) = path {
            files.push((key, path.get_ref()));
        }
    }
}
