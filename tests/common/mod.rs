//! The harness: a real daemon process on a temp Unix socket and 127.0.0.1:0, its log
//! captured, and a wiremock Twilio on loopback.
#![allow(dead_code)] // each test file uses a different part of it

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
    log: Arc<Mutex<Vec<String>>>,
}

/// How to start a daemon: extra args and env on top of the harness's own.
#[derive(Default, Clone)]
pub struct Options {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Leave out the default auth-token credentials.
    pub no_credentials: bool,
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
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
}

pub fn command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_otp-sidecar"));
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
    cmd
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
        let mut cmd = command();
        cmd.arg("serve")
            .arg("--unix")
            .arg(&unix)
            .args(["--tcp", "127.0.0.1:0", "--twilio-api-url", api])
            .args(&options.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if !options.no_credentials {
            cmd.env("TWILIO_ACCOUNT_SID", AC)
                .env("TWILIO_AUTH_TOKEN", TOKEN);
        }
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn otp-sidecar");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line
                    .split("tcp=")
                    .nth(1)
                    .filter(|_| line.contains(" ready "))
                {
                    let addr = addr
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = ready_tx.send(addr);
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let started = Instant::now();
        loop {
            match ready_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(addr) => match addr.parse() {
                    Ok(tcp) => {
                        return Ok(Daemon {
                            child,
                            dir,
                            unix,
                            tcp,
                            log,
                        })
                    }
                    Err(_) => break, // an unreadable address in the ready line: fail below
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

    /// Waits (up to 5 s) for a log line containing `needle`.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if let Some(line) = self
                .log
                .lock()
                .expect("log lock")
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no log line with {needle:?} in:\n{}", self.log());
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

/// A file of this repository.
pub fn repo_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The messages a Twilio stand-in was asked to send (the POSTs; keep-warm GETs left out).
pub async fn sends(server: &MockServer) -> Vec<wiremock::Request> {
    let all = server.received_requests().await.expect("recording is on");
    all.into_iter()
        .filter(|r| r.method == wiremock::http::Method::POST)
        .collect()
}
