//! Talking to systemd: readiness and state notifications, the watchdog, and sockets passed in
//! by socket activation. Each is a no-op when systemd did not ask for it.

use std::os::fd::{FromRawFd, OwnedFd};

use anyhow::{bail, Context, Result};
use sd_notify::NotifyState;

use crate::server::Inherited;

/// Takes the sockets of `LISTEN_FDS` (if they are meant for this process).
pub fn inherited_listeners() -> Result<Vec<Inherited>> {
    let fds = sd_notify::listen_fds().context("bad LISTEN_FDS / LISTEN_PID")?;
    let mut listeners = Vec::with_capacity(fds.len());
    for fd in fds {
        // SAFETY: systemd hands these descriptors to this process alone (LISTEN_PID matched),
        // and nothing else in the process has taken them.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let socket = socket2::Socket::from(owned);
        let addr = socket
            .local_addr()
            .with_context(|| format!("passed descriptor {fd} is not a socket"))?;
        if socket.r#type()? != socket2::Type::STREAM {
            bail!("passed descriptor {fd} is not a stream socket (use ListenStream=)");
        }
        socket.set_nonblocking(true)?;
        let fd: OwnedFd = socket.into();
        listeners.push(if addr.is_unix() {
            Inherited::Unix(fd.into())
        } else if addr.as_socket().is_some() {
            Inherited::Tcp(fd.into())
        } else {
            bail!("passed descriptor {fd:?} is neither a Unix nor an IP socket");
        });
    }
    Ok(listeners)
}

/// READY=1 with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// RELOADING=1, stamped as systemd 253+ wants for Type=notify-reload.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// STOPPING=1 with a status line.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// If systemd set a watchdog, pings it at half the interval for as long as the runtime
/// runs: a stuck runtime stops the pings and systemd restarts the service.
pub fn spawn_watchdog() -> Option<std::time::Duration> {
    let interval = sd_notify::watchdog_enabled()? / 2;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    });
    Some(interval)
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}
