//! The Monday-08:00 login storm: what reaches the caller in time when Twilio is a real
//! network away and limits how many POSTs it takes at once.
//!
//! - Twilio: a stand-in over TLS (storm/mock.rs) that creates a message and answers 201
//!   250 ms after the POST arrived and, like Twilio's account concurrency limit, answers
//!   429 / code 20429 to a POST that arrives while 100 are in flight; it counts the
//!   connections it accepts and records every message it creates.
//! - The caller (storm/caller.rs): 40 connections over the Unix socket × 50 pipelined
//!   sendOTP calls = 2,000 in flight, 12,000 calls in all (OTP_STORM_CALLS), each reply timed
//!   from when its request was written. A reply after 3 s came too late: the ILX caller
//!   had given up, and a SID it carries is a message sent for nothing ("wasted").
//! - Runs: otp-sidecar with its defaults (rate limits off) with the mock's ALPN offering h2
//!   and http/1.1, then http/1.1 alone; then the Node.js ILX stack (benches/node/baseline.js)
//!   with 4,000 calls (OTP_STORM_NODE_CALLS), since it answers slowly.
//!
//! Run with `cargo bench --bench storm` (`bash benches/run.sh storm` installs the Node
//! packages first; without them the Node row says so). The table is printed and written to
//! target/bench-storm.md. OTP_BENCH_DAEMON runs another build of the daemon; OTP_STORM_RUNS
//! picks runs (h2,http1,node); OTP_STORM_CAP_SECS caps each run (120); OTP_STORM_429_MS
//! delays the stand-in's 429s (0, as the stand-in did); OTP_STORM_H2_STREAMS sets
//! the streams an h2 connection may carry (100, the account's limit).
//! `cargo test --all-targets` also runs this target, without `--bench`: it then does nothing.

#[path = "support/mod.rs"]
mod support;
use support::{free_port, Proc};

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

#[path = "storm/caller.rs"]
mod caller;
#[path = "storm/mock.rs"]
mod mock;

use mock::{Alpn, Mock, Shape};

const AC: &str = "ACfeedfacefeedfacefeedfacefeedface";
const TOKEN: &str = "authtoken-8f1d2c3b4a5e6f7a8b9c0d1e";
/// The ILX caller's patience.
const IN_TIME: Duration = Duration::from_secs(3);
/// The daemon's default --deadline-ms.
const DEADLINE: Duration = Duration::from_millis(2500);
const REPLY_SLACK: Duration = Duration::from_millis(50);
const MAX_CONNECTIONS: usize = 110;
const MAX_RSS_BYTES: u64 = 32_000_000;
/// What the limit allows: LIMIT in flight, each for LATENCY.
fn allowed_per_second() -> f64 {
    mock::LIMIT as f64 / mock::LATENCY.as_secs_f64()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("storm: a benchmark; run it with `cargo bench --bench storm`");
        return;
    }
    if let Err(e) = run() {
        eprintln!("storm: {e:#}");
        std::process::exit(1);
    }
}

fn env_number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v}")),
        Err(_) => Ok(default),
    }
}

/// The mock holds up to one descriptor per daemon connection: lift the soft limit to the hard.
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// A `VmXxx:` line of /proc/PID/status, in KiB.
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?
        .parse()
        .context("a number of kB")
}

fn daemon_path() -> PathBuf {
    std::env::var_os("OTP_BENCH_DAEMON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_otp-sidecar")))
}

fn node_modules() -> PathBuf {
    std::env::var_os("OTP_SIDECAR_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/otp-sidecar-bench")
        })
        .join("node_modules")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Server {
    Sidecar,
    Node,
}

/// Starts the server under test with the mock's CA trusted; returns it and its Unix socket
/// once that takes connections.
fn start(server: Server, dir: &Path, mock: &Mock) -> Result<(Proc, PathBuf)> {
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &mock.ca_pem)?;
    let log = std::fs::File::create(dir.join("server.log"))?;
    let unix = dir.join("otp.sock");
    let mut cmd = match server {
        Server::Sidecar => {
            let mut cmd = Command::new(daemon_path());
            cmd.arg("serve")
                .arg("--unix")
                .arg(&unix)
                .args(["--twilio-api-url", &mock.url])
                .arg("--twilio-ca-file")
                .arg(&ca)
                .args([
                    "--rate-limit-phone=off",
                    "--rate-limit-ip=off",
                    "--rate-limit-user=off",
                    "--rate-limit-global=off",
                ]);
            cmd
        }
        Server::Node => {
            let mut cmd = Command::new("node");
            cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/node/baseline.js"))
                .arg(&mock.url)
                .arg(free_port()?.to_string())
                .arg(&unix);
            cmd
        }
    };
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TWILIO_ACCOUNT_SID", AC)
        .env("TWILIO_AUTH_TOKEN", TOKEN);
    if server == Server::Node {
        cmd.env("NODE_PATH", node_modules())
            .env("NODE_EXTRA_CA_CERTS", &ca);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    let mut proc = Proc(cmd.spawn().context("start the server")?);
    let started = Instant::now();
    while std::os::unix::net::UnixStream::connect(&unix).is_err() {
        if let Some(status) = proc.0.try_wait()? {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            bail!("the server exited ({status}) before listening:\n{log}");
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the server did not listen within 30 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Let it settle (the daemon's warm-up GET): Monday's daemon has been up all weekend.
    std::thread::sleep(Duration::from_secs(1));
    Ok((proc, unix))
}

/// One row: what a run came to.
struct Measured {
    calls: usize,
    outcome: caller::Outcome,
    in_time_sids: usize,
    created: usize,
    wasted: usize,
    /// SIDs the caller got that the mock never made.
    unknown_sids: usize,
    refused: usize,
    posts: usize,
    peak_in_flight: usize,
    connections: usize,
    h2_connections: usize,
    peak_rss_kib: u64,
}

impl Measured {
    fn per_second(&self) -> f64 {
        self.in_time_sids as f64 / self.outcome.duration.as_secs_f64()
    }

    fn slowest(&self) -> Duration {
        self.outcome
            .replies
            .iter()
            .map(|r| r.elapsed)
            .max()
            .unwrap_or_default()
    }

    fn wasted_share(&self) -> f64 {
        if self.created == 0 {
            0.0
        } else {
            self.wasted as f64 / self.created as f64
        }
    }
}

fn measure(
    runtime: &tokio::runtime::Runtime,
    server: Server,
    alpn: Alpn,
    shape: Shape,
    calls: usize,
    cap: Duration,
) -> Result<Measured> {
    let dir = tempfile::tempdir()?;
    let mock = Mock::start(alpn, shape)?;
    let (proc, unix) = start(server, dir.path(), &mock)?;
    let outcome = runtime.block_on(caller::storm(&unix, calls, cap))?;
    // What the server still has at Twilio is still created: wait for it before counting.
    mock.settle(Duration::from_secs(5));
    let peak_rss_kib = status_kib(proc.0.id(), "VmHWM:")?;
    drop(proc);

    let created = mock.stats.created().len();
    let mut in_time = HashSet::new();
    let mut unknown_sids = 0;
    for reply in &outcome.replies {
        if let Ok(sid) = &reply.outcome {
            match mock::sid_index(sid) {
                Some(n) if n < created => {
                    if reply.elapsed <= IN_TIME {
                        in_time.insert(n);
                    }
                }
                _ => unknown_sids += 1,
            }
        }
    }
    let stats = &mock.stats;
    Ok(Measured {
        calls,
        in_time_sids: in_time.len(),
        created,
        wasted: created - in_time.len(),
        unknown_sids,
        refused: stats.refused.load(Ordering::SeqCst),
        posts: stats.posts.load(Ordering::SeqCst),
        peak_in_flight: stats.peak_in_flight.load(Ordering::SeqCst),
        connections: stats.connections.load(Ordering::SeqCst),
        h2_connections: stats.h2_connections.load(Ordering::SeqCst),
        peak_rss_kib,
        outcome,
    })
}

/// 12345 → "12,345".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(d: Duration) -> String {
    format!("{} ms", thousands(d.as_millis() as usize))
}

fn mb(kib: u64) -> String {
    format!("{:.1} MB", kib as f64 * 1024.0 / 1e6)
}

fn row(label: &str, m: &Measured) -> String {
    let slowest = if m.outcome.unanswered > 0 {
        format!(
            "{} answered; {} unanswered at the cap",
            ms(m.slowest()),
            thousands(m.outcome.unanswered)
        )
    } else {
        ms(m.slowest())
    };
    format!(
        "| {label} | {} in {:.1} s, {:.0}/s | {} of {} ({:.1}%) | {} | {slowest} | {} | {} |\n",
        thousands(m.in_time_sids),
        m.outcome.duration.as_secs_f64(),
        m.per_second(),
        thousands(m.wasted),
        thousands(m.created),
        m.wasted_share() * 100.0,
        thousands(m.refused),
        thousands(m.connections),
        mb(m.peak_rss_kib),
    )
}

fn details(label: &str, m: &Measured) -> String {
    let o = &m.outcome;
    let late = o.replies.iter().filter(|r| r.elapsed > IN_TIME).count();
    let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &o.replies {
        if let Err(text) = &r.outcome {
            *errors.entry(text.as_str()).or_default() += 1;
        }
    }
    let mut errors: Vec<_> = errors.into_iter().collect();
    errors.sort_by_key(|e| std::cmp::Reverse(e.1));
    let mut out = format!(
        "- {label}: {} calls sent of {}, {} answered ({} of them after 3 s){}; Twilio saw {} \
         POSTs, at most {} in flight at once; {} connections, {} of them h2",
        thousands(o.sent),
        thousands(m.calls),
        thousands(o.replies.len()),
        thousands(late),
        if o.cap_reached {
            format!(", the {:.0} s cap reached", o.duration.as_secs_f64())
        } else {
            String::new()
        },
        thousands(m.posts),
        m.peak_in_flight,
        thousands(m.connections),
        thousands(m.h2_connections),
    );
    if m.unknown_sids > 0 {
        out.push_str(&format!(
            "; {} SIDs the mock never made",
            thousands(m.unknown_sids)
        ));
    }
    if errors.is_empty() {
        out.push_str("; no error replies\n");
    } else {
        let shown: Vec<String> = errors
            .iter()
            .take(4)
            .map(|(text, n)| format!("{} × `{}`", thousands(*n), text.replace('`', "'")))
            .collect();
        out.push_str(&format!(
            "; error replies: {}{}\n",
            shown.join(", "),
            if errors.len() > 4 {
                format!(" and {} other texts", errors.len() - 4)
            } else {
                String::new()
            }
        ));
    }
    out
}

fn targets(label: &str, m: &Measured) -> String {
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let allowed = allowed_per_second();
    let slowest = m.slowest();
    let checks = [
        (
            format!("0 POSTs refused by Twilio ({})", thousands(m.refused)),
            m.refused == 0,
        ),
        (
            format!(
                "at most 1% of created messages wasted ({:.1}%)",
                m.wasted_share() * 100.0
            ),
            m.wasted * 100 <= m.created,
        ),
        (
            format!(
                "every reply within the deadline + 50 ms, {} ({}{})",
                ms(DEADLINE + REPLY_SLACK),
                ms(slowest),
                if m.outcome.unanswered > 0 {
                    ", and some never answered"
                } else {
                    ""
                }
            ),
            slowest <= DEADLINE + REPLY_SLACK && m.outcome.unanswered == 0,
        ),
        (
            format!(
                "at least 90% of the {allowed:.0} SIDs/s the limit allows, in time ({:.0}/s, {:.0}%)",
                m.per_second(),
                m.per_second() / allowed * 100.0
            ),
            m.per_second() >= 0.9 * allowed,
        ),
        (
            format!(
                "at most {MAX_CONNECTIONS} connections to Twilio ({})",
                thousands(m.connections)
            ),
            m.connections <= MAX_CONNECTIONS,
        ),
        (
            format!("peak RSS at most 32 MB ({})", mb(m.peak_rss_kib)),
            m.peak_rss_kib * 1024 <= MAX_RSS_BYTES,
        ),
    ];
    let met = checks.iter().filter(|(_, ok)| *ok).count();
    let mut out = format!("\n{label}: {met} of {} targets met\n", checks.len());
    for (what, ok) in checks {
        out.push_str(&format!("- {}: {what}\n", verdict(ok)));
    }
    out
}

fn run() -> Result<()> {
    raise_nofile();
    let calls = env_number("OTP_STORM_CALLS", 12_000)? as usize;
    let node_calls = env_number("OTP_STORM_NODE_CALLS", 4_000)? as usize;
    let cap = Duration::from_secs(env_number("OTP_STORM_CAP_SECS", 120)?);
    let shape = Shape {
        refusal_latency: Duration::from_millis(env_number("OTP_STORM_429_MS", 0)?),
        h2_streams: env_number("OTP_STORM_H2_STREAMS", mock::LIMIT as u64)? as u32,
    };
    let wanted = std::env::var("OTP_STORM_RUNS").unwrap_or_else(|_| "h2,http1,node".into());
    let wanted: Vec<&str> = wanted.split(',').map(str::trim).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    let help = Command::new(daemon_path())
        .args(["serve", "--help"])
        .output()
        .context("otp-sidecar serve --help")?;
    let has_max_concurrency =
        String::from_utf8_lossy(&help.stdout).contains("--twilio-max-concurrency");

    let node_label = if node_calls == calls {
        "Node.js + twilio".to_owned()
    } else {
        format!("Node.js + twilio ({} calls)", thousands(node_calls))
    };
    let runs = [
        (
            "h2",
            "otp-sidecar, h2 offered",
            Server::Sidecar,
            Alpn::H2AndHttp11,
            calls,
        ),
        (
            "http1",
            "otp-sidecar, HTTP/1.1 only",
            Server::Sidecar,
            Alpn::Http11,
            calls,
        ),
        (
            "node",
            node_label.as_str(),
            Server::Node,
            Alpn::H2AndHttp11,
            node_calls,
        ),
    ];
    let mut results = Vec::new();
    for (key, label, server, alpn, calls) in runs {
        if !wanted.contains(&key) {
            continue;
        }
        if server == Server::Node && !node_modules().join("twilio").is_dir() {
            results.push((
                label.to_owned(),
                Err(anyhow::anyhow!(
                    "skipped: the twilio npm package is not in {}; run `bash benches/run.sh storm`",
                    node_modules().display()
                )),
            ));
            continue;
        }
        eprintln!("storm: {label}, {} calls…", thousands(calls));
        let started = Instant::now();
        let measured = measure(&runtime, server, alpn, shape, calls, cap);
        eprintln!(
            "storm: {label} took {:.1} s",
            started.elapsed().as_secs_f64()
        );
        results.push((label.to_owned(), measured));
    }

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut text = format!(
        "Login storm: {} connections × {} pipelined = {} calls in flight over the Unix socket; \
         {} calls (Node: {}); a reply counts if it came within {} s of its request. Twilio \
         stand-in over TLS: every 201 after {} ms, 429 / 20429 to a POST beyond {} in \
         flight (so at most {:.0} SIDs/s), answered after {} ms; h2: {} streams a connection, \
         hyper's other defaults. otp-sidecar: defaults, rate limits off, deadline {} ms{}. {cores} cores.\n\n\
         | run | SIDs back within 3 s | sends wasted | Twilio refused (429) | slowest reply | \
         connections | peak RSS |\n| --- | --- | --- | --- | --- | --- | --- |\n",
        caller::CONNECTIONS,
        caller::PIPELINE,
        thousands(caller::CONNECTIONS * caller::PIPELINE),
        thousands(calls),
        thousands(node_calls),
        IN_TIME.as_secs(),
        mock::LATENCY.as_millis(),
        mock::LIMIT,
        allowed_per_second(),
        shape.refusal_latency.as_millis(),
        shape.h2_streams,
        DEADLINE.as_millis(),
        if has_max_concurrency {
            "; its --twilio-max-concurrency left at its default"
        } else {
            "; it has no --twilio-max-concurrency"
        },
    );
    for (label, measured) in &results {
        match measured {
            Ok(m) => text.push_str(&row(label, m)),
            Err(e) => text.push_str(&format!(
                "| {label} | {} | | | | | |\n",
                format!("{e:#}").replace('\n', " ")
            )),
        }
    }
    text.push_str(
        "\nWasted: messages the stand-in created whose SID did not reach the caller within \
         3 s. Peak RSS: the server's VmHWM (MB = 10^6 bytes). Connections: TCP connections \
         the stand-in accepted, warm-up included.\n\n",
    );
    for (label, measured) in &results {
        if let Ok(m) = measured {
            text.push_str(&details(label, m));
        }
    }
    for (label, measured) in &results {
        if let Ok(m) = measured {
            text.push_str(&targets(label, m));
        }
    }
    println!("\n{text}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-storm.md");
    std::fs::create_dir_all(out.parent().expect("target"))?;
    std::fs::File::create(&out)?.write_all(text.as_bytes())?;
    eprintln!("storm: written to {}", out.display());
    if !results.is_empty() && results.iter().all(|(_, m)| m.is_err()) {
        bail!("no run succeeded");
    }
    Ok(())
}
