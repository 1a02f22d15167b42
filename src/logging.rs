//! Log setup. Third-party crates (hyper, rustls, h2) are held at INFO and above
//! whatever RUST_LOG says: their debug and trace output can show request bodies and headers,
//! which carry the OTP and the credentials.
//!
//! Under systemd (stderr connected to the journal) lines carry no timestamp, which journald
//! adds, and start with a `<N>` syslog priority, so `journalctl -p warning` works.
//!
//! On the runtime thread of the default single-threaded runtime, lines wait in a buffer that
//! is written when the runtime is about to go idle (or holds [`MAX_PENDING`] bytes): a call's
//! reply then leaves before its log line instead of after it, and lines logged together leave
//! in one write.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing::{Level, Metadata};
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

/// How log lines look.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// Our own targets, which are written never to carry secrets.
fn is_ours(meta: &Metadata<'_>) -> bool {
    meta.target().starts_with("otp_sidecar")
}

/// Logs to stderr. `RUST_LOG` picks the level, default info.
pub fn init(format: LogFormat) {
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let safe = filter_fn(|meta| is_ours(meta) || *meta.level() <= Level::INFO);
    let filter = env.and(safe);
    let journal = stderr_is_journal();
    let writer = Stderr { journal };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(false);
    // A panic's own message must not overtake the lines logged before it.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush_pending();
        report(info);
    }));
    // A second init (tests calling into the library) is harmless: keep the first.
    let _ = match (format, journal) {
        (LogFormat::Json, _) => tracing_subscriber::registry()
            .with(fmt.json().flatten_event(true).with_filter(filter))
            .try_init(),
        (LogFormat::Human, true) => tracing_subscriber::registry()
            .with(fmt.without_time().with_filter(filter))
            .try_init(),
        (LogFormat::Human, false) => tracing_subscriber::registry()
            .with(fmt.with_filter(filter))
            .try_init(),
    };
}

/// systemd sets JOURNAL_STREAM to the device and inode of the stream it connected.
fn stderr_is_journal() -> bool {
    let Ok(expected) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(meta) => expected == format!("{}:{}", meta.dev(), meta.ino()),
        Err(_) => false,
    }
}

/// stderr, with the syslog priority prefix when it is the journal.
#[derive(Clone, Copy)]
struct Stderr {
    journal: bool,
}

/// Buffered lines past this many bytes are written at once, idle or not.
const MAX_PENDING: usize = 16 * 1024;

thread_local! {
    /// Whether this thread's lines wait for [`flush_pending`].
    static DEFER: Cell<bool> = const { Cell::new(false) };
    static PENDING: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// From now on this thread's lines wait for [`flush_pending`], which the caller must arrange
/// to run whenever the thread goes idle (the runtime's park hook) and before it ends.
pub fn defer_on_this_thread() {
    DEFER.set(true);
}

/// Writes the lines this thread has buffered.
pub fn flush_pending() {
    PENDING.with(|pending| {
        // Busy only when a panic hit mid-line: the panic hook then leaves it.
        let Ok(mut pending) = pending.try_borrow_mut() else {
            return;
        };
        if !pending.is_empty() {
            // Nowhere to report a failed write to stderr.
            let _ = std::io::stderr().lock().write_all(&pending);
            pending.clear();
        }
    });
}

/// One formatted event, written in one piece (or buffered whole).
struct Line {
    prefix: &'static str,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if DEFER.get() {
            let full = PENDING.with_borrow_mut(|pending| {
                pending.extend_from_slice(self.prefix.as_bytes());
                pending.extend_from_slice(buf);
                pending.len() >= MAX_PENDING
            });
            if full {
                flush_pending();
            }
            return Ok(buf.len());
        }
        if self.prefix.is_empty() {
            std::io::stderr().lock().write_all(buf)?;
            return Ok(buf.len());
        }
        let mut line = Vec::with_capacity(self.prefix.len() + buf.len());
        line.extend_from_slice(self.prefix.as_bytes());
        line.extend_from_slice(buf);
        std::io::stderr().lock().write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { prefix: "" }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        if !self.journal {
            return Line { prefix: "" };
        }
        // sd-daemon(3) priorities.
        let prefix = match *meta.level() {
            Level::ERROR => "<3>",
            Level::WARN => "<4>",
            Level::INFO => "<6>",
            _ => "<7>",
        };
        Line { prefix }
    }
}
