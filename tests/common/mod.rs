//! The harness: a real daemon process on a temp Unix socket and 127.0.0.1:0, its log
//! captured, and a wiremock Twilio on loopback.
// The test binary (tests/daemon) uses every item: build it without this line to check. The
// benches flood and warm_start include this file by #[path] and use only a few.
#![allow(dead_code)]

pub mod proxy;
mod read;
pub mod store;
pub mod tls;

pub use read::*;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use otp_sidecar::client::{Client, Endpoint};
use tempfile::TempDir;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub const AC: &str = "ACfeedfacefeedfacefeedfacefeedface";
pub const TOKEN: &str = "authtoken-8f1d2c3b4a5e6f7a8b9c0d1e";
pub const SK: &str = "SK0123456789abcdef0123456789abcdef";
pub const API_SECRET: &str = "apisecret-0a9b8c7d6e5f4a3b2c1d0e9f";
pub const SID: &str = "SM0123456789abcdef0123456789abcdef";
pub const PHONE: &str = "+31612345678";
pub const OTP: &str = "918273";

pub fn messages_path() -> String {
    format!("/2010-04-01/Accounts/{AC}/Messages.json")
}

/// A sendOTP context map (`ip`, `user`, `locale`…).
pub fn context(pairs: &[(&str, &str)]) -> rmpv::Value {
    rmpv::Value::Map(
        pairs
            .iter()
            .map(|(k, v)| (rmpv::Value::from(*k), rmpv::Value::from(*v)))
            .collect(),
    )
}

/// sendOTP of the standard OTP with a fourth argument; the reply as the caller sees it.
pub async fn send_with(
    client: &mut Client,
    phone: &str,
    ctx: rmpv::Value,
) -> Result<rmpv::Value, String> {
    let params = vec![OTP.into(), phone.into(), "ACME".into(), ctx];
    client.call("sendOTP", params).await.expect("answered")
}

/// A Twilio stand-in that answers every Messages POST with `response`.
pub async fn twilio_answering(response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

/// A Twilio stand-in that answers `special`'s way where it matches, and 201 otherwise.
pub async fn twilio_except(special: Mock) -> MockServer {
    let server = MockServer::start().await;
    special.with_priority(1).mount(&server).await;
    Mock::given(method("POST"))
        .respond_with(created(SID))
        .mount(&server)
        .await;
    server
}

pub fn created(sid: &str) -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(serde_json::json!({
        "sid": sid, "status": "queued", "account_sid": AC, "to": PHONE,
    }))
}

pub fn twilio_error(status: u16, code: u32, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(serde_json::json!({
        "code": code, "message": message, "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status,
    }))
}

/// The form fields of a request Twilio received.
pub fn form(request: &wiremock::Request) -> Vec<(String, String)> {
    url::form_urlencoded::parse(&request.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub struct Daemon {
    child: Child,
    pub dir: TempDir,
    pub unix: PathBuf,
    pub tcp: SocketAddr,
    /// The line that said the daemon is ready.
    pub ready: String,
    /// Socket activation: the caller whose connection started the daemon; it sent a ping
    /// (msgid 1) before the daemon ran.
    pub first_caller: Option<std::os::unix::net::UnixStream>,
    log: Arc<Mutex<Vec<String>>>,
}

/// How to start a daemon: extra args and env on top of the harness's own.
#[derive(Default, Clone)]
pub struct Options {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Leave out the default auth-token credentials.
    pub no_credentials: bool,
    /// Start under `systemd-socket-activate`, which binds the sockets and passes them in.
    pub socket_activated: bool,
    /// Keep the default rate limits (the harness turns them off otherwise).
    pub rate_limits_on: bool,
    /// Start under `prlimit --nofile=N:N`: the daemon's open-file limit, soft and hard.
    pub max_open_files: Option<u64>,
}

impl Options {
    /// Authenticates with an API key (SK… and its secret) instead of the auth token.
    pub fn api_key() -> Self {
        Options {
            no_credentials: true,
            ..Default::default()
        }
        .env("TWILIO_ACCOUNT_SID", AC)
        .env("TWILIO_API_KEY", SK)
        .env("TWILIO_API_SECRET", API_SECRET)
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
}

pub fn command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_otp-sidecar"));
    strip_inherited(&mut cmd);
    // `check` refuses what `serve` would, a missing socket directory among it; the default
    // /run/otp-sidecar does not exist on a test host, so point the default at one that does.
    cmd.env("OTP_SIDECAR_UNIX", default_unix_for_tests());
    cmd
}

/// A socket path in a directory that exists, for commands given no `--unix`.
pub fn default_unix_for_tests() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("otp-sidecar-test-{}.sock", std::process::id()))
}

/// `otp-sidecar check ARGS…` with the test account's credentials in the environment:
/// whether it passed, its stdout and its stderr.
pub fn check(args: &[&str]) -> (bool, String, String) {
    let out = command()
        .arg("check")
        .args(args)
        .env("TWILIO_ACCOUNT_SID", AC)
        .env("TWILIO_AUTH_TOKEN", TOKEN)
        .output()
        .expect("run otp-sidecar check");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// `check ARGS…` fails, saying `needle`.
pub fn check_refuses(args: &[&str], needle: &str) {
    let (passed, _, stderr) = check(args);
    assert!(!passed, "{args:?} passed");
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
}

fn strip_inherited(cmd: &mut Command) {
    for (k, _) in std::env::vars() {
        // The daemon sees only what a test gives it: an inherited proxy, say, would swallow
        // the requests meant for the loopback mock.
        if k.to_ascii_lowercase().ends_with("_proxy")
            || k.starts_with("OTP_SIDECAR_")
            || k.starts_with("TWILIO_")
            || k == "CREDENTIALS_DIRECTORY"
            || k == "RUST_LOG"
        {
            cmd.env_remove(k);
        }
    }
}

/// Connects as soon as the socket exists (which starts a socket-activated daemon) and sends a
/// ping, msgid 1.
fn first_caller(path: &std::path::Path) -> std::os::unix::net::UnixStream {
    use std::io::Write;
    let mut stream = poll_until(
        Duration::from_secs(5),
        || std::os::unix::net::UnixStream::connect(path).ok(),
        || format!("no socket at {}", path.display()),
    );
    stream
        .write_all(b"\x94\x00\x01\xa4ping\x90")
        .expect("send ping");
    stream
}

/// Asks `ready` every few ms until it gives a value; panics with `why()` after `limit`.
pub fn poll_until<T>(
    limit: Duration,
    mut ready: impl FnMut() -> Option<T>,
    why: impl FnOnce() -> String,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = ready() {
            return value;
        }
        assert!(started.elapsed() < limit, "{}", why());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A field of a log line, human (`name=value`) or JSON (`"name":"value"`).
pub fn log_field(line: &str, name: &str) -> Option<String> {
    if line.starts_with('{') {
        let json: serde_json::Value = serde_json::from_str(line).ok()?;
        return json.get(name)?.as_str().map(str::to_owned);
    }
    let value = line.split(&format!(" {name}=")).nth(1)?;
    Some(value.split_whitespace().next()?.to_owned())
}

impl Daemon {
    /// A daemon whose Twilio is `api` (a mock's URI).
    pub fn start(api: &str, options: Options) -> Daemon {
        Self::try_start(api, options).unwrap_or_else(|log| panic!("daemon did not start:\n{log}"))
    }

    /// Starts a daemon; `Err(log)` if it exits or is not ready within 10 s.
    pub fn try_start(api: &str, options: Options) -> Result<Daemon, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let unix = dir.path().join("otp.sock");
        let mut cmd = if options.socket_activated {
            let mut cmd = Command::new("systemd-socket-activate");
            cmd.arg("-l")
                .arg(&unix)
                .arg("-l")
                .arg(dead_address().to_string());
            // It passes on only the environment it is told to.
            let names = options.env.iter().map(|(k, _)| k.as_str());
            for name in names.chain(["TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"]) {
                cmd.arg(format!("--setenv={name}"));
            }
            strip_inherited(&mut cmd);
            cmd.arg(env!("CARGO_BIN_EXE_otp-sidecar"));
            cmd
        } else if let Some(n) = options.max_open_files {
            let mut cmd = Command::new("prlimit");
            cmd.arg(format!("--nofile={n}:{n}"))
                .arg(env!("CARGO_BIN_EXE_otp-sidecar"));
            strip_inherited(&mut cmd);
            cmd
        } else {
            command()
        };
        cmd.arg("serve")
            .arg("--unix")
            .arg(&unix)
            .args(["--tcp", "127.0.0.1:0", "--twilio-api-url", api])
            .args(&options.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Rate limits off unless a test sets them (flags and the config file still win over
        // these): most tests send many OTPs to one phone.
        for limit in ["PHONE", "IP", "USER", "GLOBAL"] {
            if !options.rate_limits_on {
                cmd.env(format!("OTP_SIDECAR_RATE_LIMIT_{limit}"), "off");
            }
        }
        // Likewise resend dedup (the same code to the same phone is sent once): a test that
        // wants it passes --resend-dedup.
        cmd.env("OTP_SIDECAR_RESEND_DEDUP", "false");
        if !options.no_credentials {
            cmd.env("TWILIO_ACCOUNT_SID", AC)
                .env("TWILIO_AUTH_TOKEN", TOKEN);
        }
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn otp-sidecar");
        let first_caller = options.socket_activated.then(|| first_caller(&unix));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(" ready") {
                    let _ = ready_tx.send(line.clone());
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let started = Instant::now();
        loop {
            match ready_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(ready) => match log_field(&ready, "tcp").and_then(|a| a.parse().ok()) {
                    Some(tcp) => {
                        return Ok(Daemon {
                            child,
                            dir,
                            unix,
                            tcp,
                            ready,
                            first_caller,
                            log,
                        })
                    }
                    None => break, // an unreadable address in the ready line: fail below
                },
                Err(_) if started.elapsed() > Duration::from_secs(10) => break,
                Err(_) => {
                    if let Ok(Some(_)) = child.try_wait() {
                        // Let the reader thread catch the last lines.
                        std::thread::sleep(Duration::from_millis(100));
                        break;
                    }
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let text = log.lock().expect("log lock").join("\n");
        Err(text)
    }

    /// Everything the daemon has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// How many log lines contain `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log
            .lock()
            .expect("log lock")
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// How many log lines contain `needle`, once at least `least` do (or 5 s passed): the
    /// log is read from the daemon's stderr by another thread, behind the replies.
    pub fn count_log_once(&self, needle: &str, least: usize) -> usize {
        let started = Instant::now();
        loop {
            let count = self.count_log(needle);
            if count >= least || started.elapsed() > Duration::from_secs(5) {
                return count;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (up to 5 s) for a log line containing `needle`.
    pub fn wait_for_log(&self, needle: &str) -> String {
        poll_until(
            Duration::from_secs(5),
            || {
                let log = self.log.lock().expect("log lock");
                log.iter().find(|l| l.contains(needle)).cloned()
            },
            || format!("no log line with {needle:?} in:\n{}", self.log()),
        )
    }

    pub async fn unix_client(&self) -> Client {
        Client::connect(&Endpoint::Unix(self.unix.clone()))
            .await
            .expect("connect unix")
    }

    /// One sendOTP of the standard OTP and phone over the Unix socket.
    pub async fn send(&self, sender: &str) -> Result<String, String> {
        self.unix_client()
            .await
            .send_otp(OTP, PHONE, sender)
            .await
            .expect("the call is made")
    }

    pub async fn tcp_client(&self) -> Client {
        Client::connect(&Endpoint::Tcp(self.tcp))
            .await
            .expect("connect tcp")
    }

    /// Sends a signal (`"HUP"`, `"TERM"`…).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name}");
    }

    /// Waits (up to 10 s) for the daemon to exit.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let log = self.log.clone();
        let status = poll_until(
            Duration::from_secs(10),
            || self.child.try_wait().expect("wait"),
            || {
                format!(
                    "daemon did not exit:\n{}",
                    log.lock().expect("log lock").join("\n")
                )
            },
        );
        std::thread::sleep(Duration::from_millis(50)); // the last log lines
        status
    }

    /// Resident memory, KiB.
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS")
    }

    /// The most resident memory the daemon ever had, KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.proc_status_kib("VmHWM")
    }

    fn proc_status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().expect("wait");
        std::thread::sleep(Duration::from_millis(50));
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address where nothing listens.
pub fn dead_address() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Where `tests/witness/install.sh` put the third-party clients and Prism.
pub fn witness_dir() -> PathBuf {
    let dir = std::env::var_os("OTP_SIDECAR_WITNESS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/otp-sidecar-witness")
        });
    assert!(
        dir.join("node_modules").is_dir() && dir.join("venv").is_dir(),
        "the witness clients are not installed in {}: run tests/witness/install.sh (bash .ci/run does)",
        dir.display()
    );
    dir
}

/// Whether `s` has a Twilio SID's shape: the two-letter `prefix` (`SM`, `CA`, `VE`…) and 32
/// lowercase hex digits.
/// The N of a reply `ERR rate_limited: retry in N s` (or a lock's), asserted to lie in
/// `range`: a wait counts down from the send that started it, and on a loaded machine a
/// second or more may pass before the refused call.
pub fn assert_retry_in(reply: &str, range: std::ops::RangeInclusive<u64>) {
    let n: Option<u64> = reply
        .split("retry in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok());
    assert!(
        n.is_some_and(|n| range.contains(&n)),
        "{reply}: not in {range:?}"
    );
}

pub fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34
        && s.starts_with(prefix)
        && s.bytes()
            .skip(2)
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A file of this repository.
pub fn repo_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Waits until `n` sends reached the mock (the calls are in flight at the daemon).
pub async fn until_sent(twilio: &MockServer, n: usize) {
    for _ in 0..250 {
        if sends(twilio).await.len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("fewer than {n} sends reached Twilio");
}

/// The messages a Twilio stand-in was asked to send (the POSTs; keep-warm GETs left out).
pub async fn sends(server: &MockServer) -> Vec<wiremock::Request> {
    let all = server.received_requests().await.expect("recording is on");
    all.into_iter()
        .filter(|r| r.method == wiremock::http::Method::POST)
        .collect()
}

/// GET `http://{addr}{path}` (the metrics listener): status and body.
pub async fn scrape(addr: &str, path: &str) -> (u16, String) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = client
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}
