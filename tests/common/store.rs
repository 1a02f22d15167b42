//! A real `redis-server` on a free loopback port (Debian's package; `.ci/run` installs it),
//! which a test can kill and start again on the same port, read every key of, and put a
//! delaying proxy in front of.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    pub dir: TempDir,
    password: Option<String>,
    /// Extra arguments (TLS), kept for a restart.
    extra: Vec<String>,
    /// Further arguments on the plain port (a replica's `--replicaof`), kept for a restart.
    more: Vec<String>,
}

impl RedisServer {
    /// No persistence: a restart comes back empty, as a store that lost its data would.
    pub fn start(password: Option<&str>) -> RedisServer {
        Self::start_with(password, Vec::new())
    }

    pub fn start_with(password: Option<&str>, extra: Vec<String>) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            password: password.map(str::to_owned),
            extra,
            more: Vec::new(),
        };
        server.run();
        server
    }

    /// A replica of `primary` (same password), on a port of its own.
    pub fn replica_of(primary: &RedisServer) -> RedisServer {
        let password = primary.password.clone();
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            more: vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary.port.to_string(),
            ],
            password,
            extra: Vec::new(),
        };
        if let Some(password) = &server.password {
            server
                .more
                .extend(["--masterauth".into(), password.clone()]);
        }
        server.run();
        server
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server: a store that hangs, then resumes.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal}");
    }

    /// Runs one command over a connection of its own; the answer as text, or the error's.
    pub fn command(&self, args: &[&str]) -> String {
        let mut conn = self.connection().expect("redis connection");
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        match cmd.query::<redis::Value>(&mut conn) {
            Ok(value) => format!("{value:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// redis://127.0.0.1:PORT/0 (the password is never in a URL the daemon sees).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn unix_path(&self) -> std::path::PathBuf {
        self.dir.path().join("redis.sock")
    }

    fn run(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args([
                "--unixsocket".into(),
                self.unix_path().display().to_string(),
            ])
            .args(["--unixsocketperm", "700"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.args(&self.more);
        if self.extra.is_empty() {
            cmd.args(["--port", &self.port.to_string()]);
        } else {
            cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                .args(&self.extra);
        }
        if let Some(password) = &self.password {
            cmd.args(["--requirepass", password]);
        }
        let child = cmd
            .spawn()
            .expect("redis-server runs (apt-get install redis-server; .ci/run does)");
        self.child = Some(child);
        let started = Instant::now();
        while !self.answers() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not come up on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers(&self) -> bool {
        let socket = std::os::unix::net::UnixStream::connect(self.unix_path());
        socket.is_ok() && self.connection().is_some()
    }

    /// Killed at once (SIGKILL): what a crashed or unplugged store looks like.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.unix_path());
    }

    /// Back on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    /// A plain connection over the Unix socket (the TCP port may speak TLS).
    pub fn connection(&self) -> Option<redis::Connection> {
        let mut url = format!("unix://{}", self.unix_path().display());
        if let Some(password) = &self.password {
            url.push_str(&format!("?pass={password}"));
        }
        redis::Client::open(url).ok()?.get_connection().ok()
    }

    /// Every key and its value (a hash's as `field=value` lines), found with SCAN.
    pub fn dump(&self) -> Vec<(String, Vec<u8>)> {
        let mut conn = self.connection().expect("redis connection");
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query(&mut conn)
                .expect("SCAN");
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.into_iter()
            .map(|key| {
                let kind: String = redis::cmd("TYPE").arg(&key).query(&mut conn).expect("TYPE");
                let value: Vec<u8> = if kind == "hash" {
                    let all: Vec<(String, String)> = redis::cmd("HGETALL")
                        .arg(&key)
                        .query(&mut conn)
                        .expect("HGETALL");
                    let lines: Vec<String> = all.iter().map(|(f, v)| format!("{f}={v}")).collect();
                    lines.join("\n").into_bytes()
                } else {
                    redis::cmd("GET").arg(&key).query(&mut conn).expect("GET")
                };
                (key, value)
            })
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A TCP proxy to `upstream` that holds every chunk of the answer for `delay`: a store that
/// answers, slowly. Runs on a thread of its own.
pub fn delaying_proxy(upstream: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    std::thread::spawn(move || {
        runtime.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    });
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = server_read.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        tokio::time::sleep(delay).await;
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        })
    });
    addr
}
