//! SIGHUP: the configuration read again and the serving parts rebuilt and swapped in; a bad
//! configuration is refused and the running one stays.

use std::sync::Arc;

use crate::config::{Options, Settings};
use crate::metrics::METRICS;
use crate::server::LiveSwap;

use super::build::build;
use super::systemd;
use super::tasks::{prepare, SharedParts};

/// Re-reads the configuration from `options` (the flags and env vars the daemon started with).
pub async fn reload(options: &Options, shared: &LiveSwap, parts: &SharedParts) {
    systemd::reloading();
    let running = parts.load_full();
    let outcome = Settings::resolve(options, &|name| std::env::var(name).ok())
        .and_then(|new| build(&new, Some(&running)));
    let outcome = match outcome {
        Ok((live, new)) => prepare(&new).await.map(|()| (live, new)),
        Err(e) => Err(e),
    };
    match outcome {
        Ok((live, new)) => {
            for what in needs_restart(&running.settings, &new.settings) {
                tracing::warn!("{what} changed: it takes effect at the next restart");
            }
            crate::alerts::configure(&new.settings.alerts);
            shared.store(Arc::new(live));
            parts.store(Arc::new(new));
            tracing::info!("SIGHUP: configuration reloaded");
            METRICS.count_reload(true);
        }
        Err(e) => {
            // One line, however many the parser's message has.
            let why = format!("{e:#}")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            tracing::error!("SIGHUP: reload refused, the running configuration stays: {why}");
            METRICS.count_reload(false);
        }
    }
    systemd::ready("serving");
}

/// Settings that belong to the listeners and the runtime, which a reload leaves alone.
fn needs_restart(old: &Settings, new: &Settings) -> Vec<&'static str> {
    [
        ("unix", old.unix != new.unix),
        ("unix_group", old.unix_group != new.unix_group),
        ("tcp", old.tcp != new.tcp),
        ("threads", old.threads != new.threads),
        ("metrics", old.metrics != new.metrics),
        ("log_format", old.log_format != new.log_format),
        ("keep_warm_secs", old.keep_warm != new.keep_warm),
        (
            "the status callback listener",
            old.delivery.callback != new.delivery.callback,
        ),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}
