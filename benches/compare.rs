//! otp-sidecar against the stack it replaces, in one run on one machine.
//!
//! Everything talks to the same fast Twilio stand-in (nginx answering a fixed 201):
//! - the floor: HTTP straight to the mock with wrk, 1 in flight;
//! - otp-sidecar over Unix and TCP: latency at 1 in flight, throughput and p99 at 64 in
//!   flight (8 connections x 8 pipelined), ready time, RSS idle and after the run;
//! - Node.js + the official twilio package behind a MessagePack-RPC server, measured the same;
//! - then paired rounds, the measures the targets are judged by: each round takes the floor
//!   (wrk, 1 s), otp-sidecar's p50 right after it, and both servers' throughput back to back,
//!   so that the machine's drift (±25% between minutes here) hits both sides of a
//!   comparison alike; the targets use the median round.
//!
//! Run with `bash benches/run.sh` (installs nginx, wrk and the Node packages first).
//! `cargo test --all-targets` also runs this target, without `--bench`: it then does nothing.

#[path = "support/mod.rs"]
mod support;
use support::{free_port, Proc};

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use otp_sidecar::client::{Client, Endpoint, Stream};
use otp_sidecar::rpc::{Incoming, MsgpackCodec, Request};
use tokio_util::codec::Framed;

#[path = "compare/relay.rs"]
mod relay;
#[path = "compare/store.rs"]
mod store;

const AC: &str = "ACfeedfacefeedfacefeedfacefeedface";
const SID: &str = "SM0123456789abcdef0123456789abcdef";
/// What otp-sidecar posts for the bench's call, and an Authorization of its size: the floor
/// (wrk) and the bare relay send the same request.
const FORM: &str = "To=%2B31612345678&From=%2B14155550100&Body=Your+OTP+is%3A+918273";
const AUTHORIZATION: &str = "Basic QUNmZWVkOnRva2Vu";
const LATENCY_CALLS: usize = 5_000;
const WARMUP_CALLS: usize = 500;
const THROUGHPUT_CALLS: usize = 20_000;
const ROUNDS: usize = 7;
const ROUND_LATENCY_CALLS: usize = 1_000;
const ROUND_THROUGHPUT_CALLS: usize = 4_000;
const INSTRUCTION_CALLS: usize = 2_000;
const CONNECTIONS: usize = 8;
const PIPELINE: usize = 8;

fn main() {
    if let Some(spec) = std::env::var_os(relay::ENV) {
        // Re-run by start_relay as the bare relay; runs until killed.
        let spec = spec.to_string_lossy().into_owned();
        let result = spec
            .split_once(' ')
            .context("OTP_BENCH_RELAY: SOCKET PORT")
            .and_then(|(socket, port)| relay::serve(Path::new(socket), port.parse()?));
        if let Err(e) = result {
            eprintln!("relay: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!("compare: a benchmark; run it with `bash benches/run.sh`");
        return;
    }
    if let Err(e) = run() {
        eprintln!("compare: {e:#}");
        std::process::exit(1);
    }
}

fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) -> Result<Duration> {
    let started = Instant::now();
    while !ready() {
        if started.elapsed() > limit {
            bail!("{what} not ready within {limit:?}");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(started.elapsed())
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

/// nginx answering every request with Twilio's 201 and a fixed SID, keep-alive forever.
fn start_mock(dir: &Path) -> Result<(Proc, u16)> {
    let port = free_port()?;
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            // One process: killing it leaves no orphaned worker holding our pipes.
            "master_process off;\ndaemon off;\npid {d}/nginx.pid;\nerror_log stderr warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n\
             keepalive_requests 100000000;\n keepalive_timeout 300s;\n\
             server {{\n  listen 127.0.0.1:{port};\n  location / {{\n\
             default_type application/json;\n\
             return 201 '{{\"sid\":\"{SID}\",\"status\":\"queued\",\"account_sid\":\"{AC}\"}}';\n\
             }}\n }}\n}}\n"
        ),
    )?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start nginx (apt-get install nginx-light)")?;
    let proc = Proc(child);
    wait_until("nginx", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    })?;
    Ok((proc, port))
}

/// p50 and p99 from wrk's latency distribution, 1 connection, POSTing what otp-sidecar posts.
fn direct_http(dir: &Path, port: u16, seconds: u32) -> Result<(Duration, Duration)> {
    let script = dir.join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\n\
             wrk.body = \"{FORM}\"\n\
             wrk.headers[\"Content-Type\"] = \"application/x-www-form-urlencoded\"\n\
             wrk.headers[\"Authorization\"] = \"{AUTHORIZATION}\"\n"
        ),
    )?;
    let url = format!("http://127.0.0.1:{port}/2010-04-01/Accounts/{AC}/Messages.json");
    let out = Command::new("wrk")
        .args(["-t1", "-c1", &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(&script)
        .arg(&url)
        .output()
        .context("run wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let pick = |pct: &str| -> Result<Duration> {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(pct))
            .with_context(|| format!("no {pct} line in wrk output:\n{text}"))?;
        parse_wrk_duration(line.split_whitespace().nth(1).context("wrk value")?)
    };
    Ok((pick("50%")?, pick("99%")?))
}

fn parse_wrk_duration(s: &str) -> Result<Duration> {
    let (number, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        bail!("unknown wrk duration {s}")
    };
    Ok(Duration::from_secs_f64(number.parse::<f64>()? * scale))
}

/// A MessagePack-RPC server under test, listening on both sockets.
struct Target {
    proc: Proc,
    unix: PathBuf,
    tcp: SocketAddr,
    ready: Duration,
    rss_idle_kib: u64,
}

impl Target {
    fn start(mut cmd: Command, unix: PathBuf, tcp: SocketAddr) -> Result<Target> {
        let started = Instant::now();
        let proc = Proc(cmd.spawn().context("start target")?);
        wait_until("target", Duration::from_secs(30), || {
            std::os::unix::net::UnixStream::connect(&unix).is_ok()
                && TcpStream::connect(tcp).is_ok()
        })?;
        let ready = started.elapsed();
        std::thread::sleep(Duration::from_millis(200));
        let rss_idle_kib = rss_kib(proc.0.id())?;
        Ok(Target {
            proc,
            unix,
            tcp,
            ready,
            rss_idle_kib,
        })
    }

    fn endpoints(&self) -> [(&'static str, Endpoint); 2] {
        [
            ("unix", Endpoint::Unix(self.unix.clone())),
            ("tcp", Endpoint::Tcp(self.tcp)),
        ]
    }
}

fn credentials(cmd: &mut Command) {
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TWILIO_ACCOUNT_SID", AC)
        .env("TWILIO_AUTH_TOKEN", "authtoken-8f1d2c3b4a5e6f7a8b9c0d1e");
    // The daemon's own settings pass through (OTP_SIDECAR_THREADS, or any option to measure
    // with and without, e.g. OTP_SIDECAR_DELIVERY_STATUS=off).
    for (name, value) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OTP_SIDECAR_") {
            cmd.env(name, value);
        }
    }
}

/// `launcher`: a program the daemon runs under (callgrind), or none; `env`: settings on top
/// (the shared store's), and the socket's name.
fn start_sidecar(
    dir: &Path,
    api: &str,
    launcher: &[String],
    env: &[(&str, String)],
    name: &str,
) -> Result<Target> {
    let unix = dir.join(format!("{name}.sock"));
    let tcp: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    // OTP_BENCH_DAEMON: another build of the daemon, to compare two versions in one setup.
    let daemon = std::env::var_os("OTP_BENCH_DAEMON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_otp-sidecar")));
    let mut cmd = match launcher.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(daemon);
            cmd
        }
        None => Command::new(daemon),
    };
    credentials(&mut cmd);
    // The bench sends 51,000 OTPs to one number: the per-phone and global limits would
    // refuse nearly all of them (the Node.js stack has no limits to turn off).
    cmd.env("OTP_SIDECAR_RATE_LIMIT_PHONE", "off")
        .env("OTP_SIDECAR_RATE_LIMIT_GLOBAL", "off");
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.arg("serve")
        .arg("--unix")
        .arg(&unix)
        .args(["--tcp", &tcp.to_string(), "--twilio-api-url", api])
        // Production logging (info, one line a call), written where journald would read it.
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Target::start(cmd, unix, tcp)
}

/// The bare relay (see relay.rs): this binary re-run, in front of the mock.
fn start_relay(dir: &Path, port: u16) -> Result<(Proc, Endpoint)> {
    let socket = dir.join("relay.sock");
    let child = Command::new(std::env::current_exe()?)
        .env(relay::ENV, format!("{} {port}", socket.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start the relay")?;
    let proc = Proc(child);
    wait_until("relay", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    })?;
    Ok((proc, Endpoint::Unix(socket)))
}

fn start_node(dir: &Path, api: &str, node_path: &Path) -> Result<Target> {
    let unix = dir.join("node.sock");
    let tcp: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/node/baseline.js");
    let mut cmd = Command::new("node");
    credentials(&mut cmd);
    cmd.arg(script)
        .arg(api)
        .arg(tcp.port().to_string())
        .arg(&unix)
        .env("NODE_PATH", node_path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    Target::start(cmd, unix, tcp)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// p50 and p99 of `calls` sequential calls on one connection, after the warm-up.
async fn latency(endpoint: &Endpoint, calls: usize) -> Result<(Duration, Duration)> {
    let mut client = Client::connect(endpoint).await?;
    let mut samples = Vec::with_capacity(calls);
    for i in 0..WARMUP_CALLS + calls {
        let started = Instant::now();
        let reply = client
            .send_otp("918273", "+31612345678", "+14155550100")
            .await?;
        if i >= WARMUP_CALLS {
            samples.push(started.elapsed());
        }
        if reply.as_deref() != Ok(SID) {
            bail!("unexpected reply {reply:?}");
        }
    }
    samples.sort();
    Ok((percentile(&samples, 0.50), percentile(&samples, 0.99)))
}

/// Calls per second and p99 with CONNECTIONS x PIPELINE calls in flight, `calls` in all.
async fn throughput(endpoint: &Endpoint, calls: usize) -> Result<(f64, Duration)> {
    let per_connection = calls / CONNECTIONS;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let endpoint = endpoint.clone();
        tasks.push(tokio::spawn(async move {
            pipelined(&endpoint, per_connection).await
        }));
    }
    let mut samples = Vec::with_capacity(calls);
    for task in tasks {
        samples.extend(task.await??);
    }
    let elapsed = started.elapsed();
    samples.sort();
    Ok((
        samples.len() as f64 / elapsed.as_secs_f64(),
        percentile(&samples, 0.99),
    ))
}

async fn connect(endpoint: &Endpoint) -> Result<Framed<Box<dyn Stream>, MsgpackCodec>> {
    let stream: Box<dyn Stream> = match endpoint {
        Endpoint::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
        Endpoint::Tcp(a) => {
            let s = tokio::net::TcpStream::connect(a).await?;
            s.set_nodelay(true)?;
            Box::new(s)
        }
    };
    Ok(Framed::new(stream, MsgpackCodec::default()))
}

/// One connection keeping PIPELINE calls in flight until `calls` have been answered.
async fn pipelined(endpoint: &Endpoint, calls: usize) -> Result<Vec<Duration>> {
    let mut framed = connect(endpoint).await?;
    let mut sent_at: HashMap<u64, Instant> = HashMap::new();
    let mut samples = Vec::with_capacity(calls);
    let mut next_id = 0u64;
    let request = |id: u64| Request {
        msgid: id.into(),
        method: "sendOTP".into(),
        params: vec![
            "918273".into(),
            "+31612345678".into(),
            "+14155550100".into(),
        ],
    };
    while (next_id as usize) < PIPELINE.min(calls) {
        sent_at.insert(next_id, Instant::now());
        framed.send(request(next_id)).await?;
        next_id += 1;
    }
    while samples.len() < calls {
        let value = framed.next().await.context("connection closed")??;
        let Ok(Incoming::Response(response)) = Incoming::parse(value) else {
            bail!("not a response");
        };
        let id = response.msgid.as_u64().context("msgid")?;
        let sent = sent_at.remove(&id).context("unknown msgid")?;
        samples.push(sent.elapsed());
        if response.outcome.as_ref().ok().and_then(|v| v.as_str()) != Some(SID) {
            bail!("unexpected reply {:?}", response.outcome);
        }
        if (next_id as usize) < calls {
            sent_at.insert(next_id, Instant::now());
            framed.send(request(next_id)).await?;
            next_id += 1;
        }
    }
    Ok(samples)
}

#[derive(Default)]
struct Measured {
    ready: Duration,
    rss_idle_kib: u64,
    rss_after_kib: u64,
    calls: usize,
    latency: HashMap<&'static str, (Duration, Duration)>,
    throughput: HashMap<&'static str, (f64, Duration)>,
}

async fn measure(target: &Target) -> Result<Measured> {
    let mut m = Measured {
        ready: target.ready,
        rss_idle_kib: target.rss_idle_kib,
        ..Default::default()
    };
    for (name, endpoint) in target.endpoints() {
        m.latency
            .insert(name, latency(&endpoint, LATENCY_CALLS).await?);
        m.throughput
            .insert(name, throughput(&endpoint, THROUGHPUT_CALLS).await?);
        m.calls += WARMUP_CALLS + LATENCY_CALLS + THROUGHPUT_CALLS;
    }
    m.rss_after_kib = rss_kib(target.proc.0.id())?;
    Ok(m)
}

/// The daemon's instructions per sendOTP call, counted by callgrind over
/// INSTRUCTION_CALLS sequential calls after a warm-up. Unlike a time on this shared VM, the
/// count repeats from run to run, so it shows what a change to the daemon's own work saved.
async fn instructions_per_call(dir: &Path, api: &str) -> Result<u64> {
    let out = dir.join("callgrind.out");
    let launcher = [
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        format!("--callgrind-out-file={}", out.display()),
    ];
    let target = start_sidecar(dir, api, &launcher, &[], "otp-sidecar")
        .context("valgrind (apt-get install valgrind)")?;
    let pid = target.proc.0.id().to_string();
    let control = |option: &str| -> Result<()> {
        let status = Command::new("callgrind_control")
            .args([option, &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "callgrind_control {option} failed");
        Ok(())
    };
    let mut client = Client::connect(&Endpoint::Unix(target.unix.clone())).await?;
    for i in 0..WARMUP_CALLS + INSTRUCTION_CALLS {
        if i == WARMUP_CALLS {
            control("--zero")?;
        }
        // A new code each call, as in a login storm: resend dedup (on by default) must miss
        // and send, not answer from its record.
        let code = format!("{:06}", 100_000 + i);
        let reply = client
            .send_otp(&code, "+31612345678", "+14155550100")
            .await?;
        if reply.as_deref() != Ok(SID) {
            bail!("unexpected reply {reply:?}");
        }
    }
    control("--dump")?;
    let dump = dir.join("callgrind.out.1");
    wait_until("the callgrind dump", Duration::from_secs(30), || {
        dump.exists()
    })?;
    let text = std::fs::read_to_string(&dump)?;
    let total: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("totals: ")
                .or_else(|| l.strip_prefix("summary: "))
        })
        .context("no totals in the callgrind dump")?
        .trim()
        .parse()?;
    Ok(total / INSTRUCTION_CALLS as u64)
}

/// One paired round: the floor, the bare relay's and otp-sidecar's p50 right after it, and
/// both servers' throughput back to back (all over the Unix socket).
struct Round {
    floor: Duration,
    relay: Duration,
    sidecar: Duration,
    sidecar_tput: f64,
    node_tput: f64,
    /// otp-sidecar with its limits in Redis.
    stored: Duration,
    stored_tput: f64,
}

impl Round {
    /// What the target judges: otp-sidecar over the direct call.
    fn added(&self) -> Duration {
        self.sidecar.saturating_sub(self.floor)
    }

    /// What a second process in the path costs by itself on this machine.
    fn hop(&self) -> Duration {
        self.relay.saturating_sub(self.floor)
    }

    /// What otp-sidecar costs beyond the bare relay: its own work.
    fn own(&self) -> Duration {
        self.sidecar.saturating_sub(self.relay)
    }

    fn ratio(&self) -> f64 {
        self.sidecar_tput / self.node_tput
    }

    /// What keeping the limits in Redis adds to a call.
    fn store_cost(&self) -> Duration {
        self.stored.saturating_sub(self.sidecar)
    }

    fn store_ratio(&self) -> f64 {
        self.stored_tput / self.sidecar_tput
    }
}

fn rounds(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    port: u16,
    relay: &Endpoint,
    sidecar: &Endpoint,
    node: &Endpoint,
    stored: &Endpoint,
) -> Result<Vec<Round>> {
    (0..ROUNDS)
        .map(|i| {
            let (floor, _) = direct_http(dir, port, 1)?;
            runtime.block_on(async {
                let p50 = |e| async move { anyhow::Ok(latency(e, ROUND_LATENCY_CALLS).await?.0) };
                // Alternate which goes first, so neither always gets the calmer seconds.
                let (relay_p50, sidecar_p50, stored_p50) = if i % 2 == 0 {
                    (p50(relay).await?, p50(sidecar).await?, p50(stored).await?)
                } else {
                    let stored_p50 = p50(stored).await?;
                    let sidecar_p50 = p50(sidecar).await?;
                    (p50(relay).await?, sidecar_p50, stored_p50)
                };
                Ok(Round {
                    floor,
                    relay: relay_p50,
                    sidecar: sidecar_p50,
                    sidecar_tput: throughput(sidecar, ROUND_THROUGHPUT_CALLS).await?.0,
                    node_tput: throughput(node, ROUND_THROUGHPUT_CALLS).await?.0,
                    stored: stored_p50,
                    stored_tput: throughput(stored, ROUND_THROUGHPUT_CALLS).await?.0,
                })
            })
        })
        .collect()
}

/// The middle value (of an odd count).
fn median<T: PartialOrd + Copy>(mut values: Vec<T>) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    values[values.len() / 2]
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn report(
    floor: (Duration, Duration),
    rust: &Measured,
    node: &Measured,
    stored: &Measured,
    rounds: &[Round],
) -> String {
    let mut out = String::new();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    out.push_str(&format!(
        "Machine: {cores} cores, {cpu}; mock: nginx returning a fixed 201.\n\n\
         | measure | otp-sidecar | Node.js + twilio | Node / otp-sidecar |\n| --- | --- | --- | --- |\n"
    ));
    let row = |out: &mut String, name: String, a: String, b: String, ratio: f64| {
        out.push_str(&format!("| {name} | {a} | {b} | {ratio:.1}× |\n"));
    };
    for t in ["unix", "tcp"] {
        let (r50, r99) = rust.latency[t];
        let (n50, n99) = node.latency[t];
        row(
            &mut out,
            format!("p50 latency, 1 in flight, {t}"),
            us(r50),
            us(n50),
            n50.as_secs_f64() / r50.as_secs_f64(),
        );
        row(
            &mut out,
            format!("p99 latency, 1 in flight, {t}"),
            us(r99),
            us(n99),
            n99.as_secs_f64() / r99.as_secs_f64(),
        );
    }
    for t in ["unix", "tcp"] {
        let (rt, r99) = rust.throughput[t];
        let (nt, n99) = node.throughput[t];
        row(
            &mut out,
            format!("throughput, 64 in flight, {t}"),
            format!("{rt:.0} calls/s"),
            format!("{nt:.0} calls/s"),
            rt / nt,
        );
        row(
            &mut out,
            format!("p99 latency, 64 in flight, {t}"),
            us(r99),
            us(n99),
            n99.as_secs_f64() / r99.as_secs_f64(),
        );
    }
    row(
        &mut out,
        "ready after exec".into(),
        format!("{:.1} ms", rust.ready.as_secs_f64() * 1e3),
        format!("{:.1} ms", node.ready.as_secs_f64() * 1e3),
        node.ready.as_secs_f64() / rust.ready.as_secs_f64(),
    );
    row(
        &mut out,
        "RSS idle".into(),
        mib(rust.rss_idle_kib),
        mib(node.rss_idle_kib),
        node.rss_idle_kib as f64 / rust.rss_idle_kib as f64,
    );
    row(
        &mut out,
        format!("RSS after {} calls", rust.calls),
        mib(rust.rss_after_kib),
        mib(node.rss_after_kib),
        node.rss_after_kib as f64 / rust.rss_after_kib as f64,
    );

    let single = rust.latency["unix"].0.saturating_sub(floor.0);
    out.push_str(&format!(
        "\nFloor, HTTP straight to the mock (wrk, 5 s, 1 in flight): p50 {}, p99 {}. \
         otp-sidecar's p50 above is {} over it (Unix socket).\n",
        us(floor.0),
        us(floor.1),
        us(single)
    ));
    let list = |f: &dyn Fn(&Round) -> String| -> String {
        rounds.iter().map(f).collect::<Vec<_>>().join(", ")
    };
    let added = median(rounds.iter().map(Round::added).collect());
    let tput_ratio = median(rounds.iter().map(Round::ratio).collect());
    let median_of = |f: fn(&Round) -> Duration| us(median(rounds.iter().map(f).collect()));
    out.push_str(&format!(
        "\nPaired rounds ({} × wrk 1 s, then {ROUND_LATENCY_CALLS} calls through the bare relay \
         and {ROUND_LATENCY_CALLS} otp-sidecar calls, then {ROUND_THROUGHPUT_CALLS} calls at 64 in \
         flight to each server; Unix socket):\n\
         - floor p50: {}\n- bare relay p50: {}\n- otp-sidecar p50: {}\n\
         - added, otp-sidecar − floor: {} (median {})\n\
         - of which the hop, bare relay − floor: {} (median {})\n\
         - and otp-sidecar's own work, otp-sidecar − bare relay: {} (median {})\n\
         - throughput, otp-sidecar / Node: {} (median {tput_ratio:.1}×)\n",
        rounds.len(),
        list(&|r| us(r.floor)),
        list(&|r| us(r.relay)),
        list(&|r| us(r.sidecar)),
        list(&|r| us(r.added())),
        us(added),
        list(&|r| us(r.hop())),
        median_of(Round::hop),
        list(&|r| us(r.own())),
        median_of(Round::own),
        list(&|r| format!("{:.1}×", r.ratio())),
    ));
    let (s50, s99) = stored.latency["unix"];
    let (stput, stput99) = stored.throughput["unix"];
    out.push_str(&format!(
        "\nWith the limits in Redis (`--state redis://` on loopback, a phone and a global limit \
         checked and charged by the script on every call), Unix socket: p50 {}, p99 {} at 1 in \
         flight; {stput:.0} calls/s, p99 {} at 64 in flight; RSS {} after {} calls.\n\
         - added by the store, paired rounds: {} (median {})\n\
         - throughput, with the store / in memory: {} (median {:.2}×)\n",
        us(s50),
        us(s99),
        us(stput99),
        mib(stored.rss_after_kib),
        stored.calls,
        list(&|r| us(r.store_cost())),
        median_of(Round::store_cost),
        list(&|r| format!("{:.2}×", r.store_ratio())),
        median(rounds.iter().map(Round::store_ratio).collect()),
    ));
    out.push_str("\nTargets (median round):\n");
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    for (what, ok) in [
        (
            format!("adds at most 50 µs p50 over the direct call: {}", us(added)),
            added <= Duration::from_micros(50),
        ),
        (
            format!(
                "at least 10× the Node.js stack's throughput at 64 in flight: {tput_ratio:.1}×"
            ),
            tput_ratio >= 10.0,
        ),
        (
            format!(
                "RSS at most 16 MB after {} calls: {}",
                rust.calls,
                mib(rust.rss_after_kib)
            ),
            rust.rss_after_kib * 1024 <= 16_000_000,
        ),
        (
            format!(
                "ready in under 50 ms from exec: {:.1} ms",
                rust.ready.as_secs_f64() * 1e3
            ),
            rust.ready < Duration::from_millis(50),
        ),
    ] {
        out.push_str(&format!("- {}: {what}\n", verdict(ok)));
    }
    out
}

fn run() -> Result<()> {
    let node_path = std::env::var_os("OTP_SIDECAR_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/otp-sidecar-bench")
        })
        .join("node_modules");
    if !node_path.join("twilio").is_dir() {
        bail!(
            "the twilio npm package is not in {}: run benches/run.sh",
            node_path.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let (_mock, port) = start_mock(dir.path())?;
    let api = format!("http://127.0.0.1:{port}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if std::env::var_os("OTP_BENCH_CALLGRIND").is_some() {
        let per_call = runtime.block_on(instructions_per_call(dir.path(), &api))?;
        println!("otp-sidecar: {per_call} instructions per sendOTP call (callgrind)");
        return Ok(());
    }
    let floor = if std::env::var_os("OTP_BENCH_ONLY_SIDECAR").is_some() {
        (Duration::ZERO, Duration::ZERO)
    } else {
        eprintln!("compare: floor (wrk, 5 s)…");
        direct_http(dir.path(), port, 5)?
    };

    eprintln!("compare: otp-sidecar…");
    let sidecar = start_sidecar(dir.path(), &api, &[], &[], "otp-sidecar")?;
    let rust = runtime.block_on(measure(&sidecar))?;
    if std::env::var_os("OTP_BENCH_ONLY_SIDECAR").is_some() {
        // For profiling: `perf record -p` the daemon while this runs.
        for t in ["unix", "tcp"] {
            let (p50, p99) = rust.latency[t];
            let (tput, tp99) = rust.throughput[t];
            println!(
                "{t}: p50 {} p99 {} | 64 in flight: {tput:.0} calls/s, p99 {}",
                us(p50),
                us(p99),
                us(tp99)
            );
        }
        return Ok(());
    }

    eprintln!("compare: otp-sidecar with its limits in Redis…");
    let (_redis, redis_url) = store::start_redis(dir.path())?;
    let stored = start_sidecar(
        dir.path(),
        &api,
        &[],
        &store::daemon_env(&redis_url),
        "otp-sidecar-redis",
    )?;
    let in_redis = runtime.block_on(measure(&stored))?;

    eprintln!("compare: Node.js + twilio…");
    let node = start_node(dir.path(), &api, &node_path)?;
    let js = runtime.block_on(measure(&node))?;

    eprintln!("compare: paired rounds…");
    let (_relay, relay_unix) = start_relay(dir.path(), port)?;
    let [(_, sidecar_unix), _] = sidecar.endpoints();
    let [(_, node_unix), _] = node.endpoints();
    let [(_, stored_unix), _] = stored.endpoints();
    let rounds = rounds(
        &runtime,
        dir.path(),
        port,
        &relay_unix,
        &sidecar_unix,
        &node_unix,
        &stored_unix,
    )?;
    drop((sidecar, node, stored));

    let text = report(floor, &rust, &js, &in_redis, &rounds);
    println!("\n{text}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-compare.md");
    std::fs::File::create(&out)?.write_all(text.as_bytes())?;
    eprintln!("compare: written to {}", out.display());
    Ok(())
}
