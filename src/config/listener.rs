//! Who may call: TLS on the TCP listener (with a client CA, mutual TLS), caller tokens, and
//! the rule that a non-loopback `--tcp` authenticates its callers one of those ways unless
//! told not to. The files are read here, so a reload reads them again and a bad one refuses
//! the reload.

use std::sync::Arc;

use anyhow::{bail, Result};

use super::options::Options;
use crate::call::callers::Callers;
use crate::server::{Tls, TlsFiles, UnixGroup};

/// The listeners' authentication, read from its files.
pub(super) struct Auth {
    pub tls: Option<Tls>,
    pub callers: Option<Arc<Callers>>,
}

/// `unix_group`: a group this host knows (by name, or a number).
pub(super) fn unix_group(given: Option<&str>) -> Result<Option<UnixGroup>> {
    let Some(name) = given else { return Ok(None) };
    let fine = |c: char| c.is_ascii_alphanumeric() || "._-$".contains(c);
    if name.is_empty() || name.len() > 64 || !name.chars().all(fine) {
        bail!("unix_group {name:?} is not a group name or number (1-64 letters, digits, . _ - $)");
    }
    UnixGroup::lookup(name).map(Some)
}

pub(super) fn resolve(o: &Options, warnings: &mut Vec<String>) -> Result<Auth> {
    let tls = match (&o.tls_cert, &o.tls_key) {
        (Some(cert), Some(key)) => Some(Tls::load(&TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: o.tls_client_ca.clone(),
        })?),
        (None, None) if o.tls_client_ca.is_some() => {
            bail!("tls_client_ca needs tls_cert and tls_key: client certificates are asked for in a TLS handshake")
        }
        (None, None) => None,
        (Some(_), None) => bail!("tls_cert needs tls_key, the certificate's private key"),
        (None, Some(_)) => bail!("tls_key needs tls_cert, the certificate it belongs to"),
    };
    let callers = match &o.caller_tokens_file {
        Some(path) => Some(Arc::new(Callers::load(path)?)),
        None => None,
    };
    // The old name of the allow flag (allow_remote_tcp) still counts; the new one wins.
    let allowed = o
        .allow_unauthenticated_tcp
        .or(o.allow_remote_tcp)
        .unwrap_or(false);
    let mutual = tls.as_ref().is_some_and(Tls::mutual);
    match o.tcp {
        Some(addr) if !addr.ip().is_loopback() => {
            if !mutual && callers.is_none() && !allowed {
                bail!(
                    "--tcp {addr} is not a loopback address, so its callers must be \
                     authenticated: give --tls-client-ca (with --tls-cert and --tls-key) so \
                     that only holders of a client certificate from that CA connect, or \
                     --caller-tokens-file so that every call must carry a caller's token, or \
                     pass --allow-unauthenticated-tcp (formerly --allow-remote-tcp) to listen \
                     there anyway, behind a firewall"
                );
            }
            if callers.is_some() && tls.is_none() {
                warnings.push(format!(
                    "caller tokens cross the network to --tcp {addr} in clear: add --tls-cert \
                     and --tls-key"
                ));
            }
        }
        Some(_) => {}
        None if tls.is_some() => warnings.push(
            "tls_cert is set but there is no --tcp listener (TLS applies to TCP only; the \
             Unix socket stays plain)"
                .to_owned(),
        ),
        None => {}
    }
    Ok(Auth { tls, callers })
}
