//! A state store having a bad day, on a real `redis-server`: paused and resumed, demoted to a
//! replica, out of memory, a password changed under the daemon, instances that disagree; and
//! a fake store answering huge or wrongly typed replies.

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use crate::common::store::RedisServer;
use crate::common::*;
use crate::state::{health, on_store, send, twilio_with_any_lookup, until_state, KEY, PASSWORD};

fn store_warnings(daemon: &Daemon) -> usize {
    daemon
        .log()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("state store") && l.contains("episode"))
        .count()
}

#[tokio::test]
async fn calls_refused_while_the_store_was_paused_are_not_charged_when_it_resumes() {
    let redis = RedisServer::start(Some(PASSWORD));
    let twilio = twilio_answering(created(SID)).await;
    let daemon = on_store(
        &twilio.uri(),
        &redis.url(),
        &[
            "--rate-limit-phone=3/1h",
            "--state-failure=closed",
            "--deny-countries=BE",
        ],
    );
    until_state(&daemon, "redis ok").await;
    // A first send (another number) loads the script, so the ones queued behind the pause
    // run it rather than being answered NOSCRIPT.
    assert!(send(&daemon, "+31687654321", &[]).await.is_ok());
    redis.signal("STOP");
    for _ in 0..12 {
        let reply = send(&daemon, PHONE, &[]).await;
        // The store's own words never reach the caller.
        assert_eq!(reply, Err("ERR unavailable: state store".to_owned()));
    }
    redis.signal("CONT");
    until_state(&daemon, "redis ok").await;
    // The 12 scripts queued behind the pause ran after their calls' deadlines: none charged.
    let reply = send(&daemon, PHONE, &[]).await;
    assert!(reply.as_deref().is_ok_and(|s| is_sid(s, "SM")), "{reply:?}");
    // A guard's refusal is not Twilio's failure either.
    let blocked = send(&daemon, "+32470123456", &[]).await;
    assert_eq!(blocked, Err("ERR blocked: country".to_owned()));
    // Neither the store's refusals nor the guard's made Twilio look unhealthy.
    assert_eq!(health(&daemon, "status").await, "ok");
    assert!(!daemon.log().contains("612345678"));
}

#[tokio::test]
async fn a_store_that_takes_no_writes_is_degraded_warned_once_and_fallen_back_from() {
    let redis = RedisServer::start(Some(PASSWORD));
    let twilio = twilio_answering(created(SID)).await;
    let daemon = on_store(&twilio.uri(), &redis.url(), &["--rate-limit-phone=2/1h"]);
    until_state(&daemon, "redis ok").await;

    // A primary demoted in a failover: PING answers, every write is READONLY.
    let dead = dead_address();
    let port = dead.port().to_string();
    redis.command(&["REPLICAOF", "127.0.0.1", &port]);
    until_state(&daemon, "degraded (local fallback)").await;
    assert_eq!(health(&daemon, "status").await, "degraded");
    for n in 0..3 {
        let reply = send(&daemon, PHONE, &[]).await;
        assert_eq!(n < 2, reply.is_ok(), "call {n} (limited here): {reply:?}");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(health(&daemon, "state").await, "degraded (local fallback)");
    assert_eq!(store_warnings(&daemon), 1, "{}", daemon.log());

    redis.command(&["REPLICAOF", "NO", "ONE"]);
    until_state(&daemon, "redis ok").await;

    // Out of memory, with writes refused (noeviction): a new episode, warned once.
    redis.command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    redis.command(&["CONFIG", "SET", "maxmemory", "1"]);
    until_state(&daemon, "degraded (local fallback)").await;
    let reply = send(&daemon, "+31687654321", &[]).await;
    assert!(reply.is_ok(), "{reply:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(health(&daemon, "state").await, "degraded (local fallback)");
    assert_eq!(store_warnings(&daemon), 2, "{}", daemon.log());
    redis.command(&["CONFIG", "SET", "maxmemory", "0"]);
    until_state(&daemon, "redis ok").await;
}

#[tokio::test]
async fn a_password_fixed_on_the_server_is_picked_up_without_a_reload() {
    // The server wants another password than the daemon's.
    let redis = RedisServer::start(Some("server-side-password-31c9d"));
    let twilio = twilio_answering(created(SID)).await;
    let daemon = on_store(&twilio.uri(), &redis.url(), &[]);
    until_state(&daemon, "degraded (local fallback)").await;
    redis.command(&["CONFIG", "SET", "requirepass", PASSWORD]);
    until_state(&daemon, "redis ok").await;
    assert!(send(&daemon, PHONE, &[]).await.is_ok());
    assert!(!daemon.log().contains(PASSWORD));
}

#[tokio::test]
async fn a_call_spends_state_timeout_on_the_store_in_all() {
    let redis = RedisServer::start(Some(PASSWORD));
    let twilio = twilio_with_any_lookup().await;
    let lookup = format!("--lookup-api-url={}", twilio.uri());
    let daemon = on_store(
        &twilio.uri(),
        &redis.url(),
        &[
            "--lookup",
            lookup.as_str(),
            "--state-timeout-ms=400",
            "--deadline-ms=5000",
            "--rate-limit-phone=5/1h",
        ],
    );
    until_state(&daemon, "redis ok").await;
    redis.signal("STOP");
    // The limits' script and the Lookup cache's GET: 400 ms for both, not 400 ms each.
    let started = Instant::now();
    let reply = send(&daemon, PHONE, &[]).await;
    let took = started.elapsed();
    redis.signal("CONT");
    assert!(reply.is_ok(), "{reply:?}");
    assert!(took < Duration::from_millis(700), "{took:?}");
}

#[tokio::test]
async fn instances_that_disagree_are_told() {
    let redis = RedisServer::start(Some(PASSWORD));
    let twilio = twilio_answering(created(SID)).await;
    let first = on_store(&twilio.uri(), &redis.url(), &["--rate-limit-phone=3/10m"]);
    let second = on_store(&twilio.uri(), &redis.url(), &["--rate-limit-phone=10/10m"]);
    let disagree = |daemon: &Daemon| {
        poll_until(
            Duration::from_secs(5),
            || {
                let log = daemon.log();
                log.contains("other rate limits").then_some(log)
            },
            || "no warning of other limits".to_owned(),
        )
    };
    disagree(&first);
    disagree(&second);
    let agreement = health(&first, "state_agreement").await;
    assert!(agreement.contains("phone=10/10m"), "{agreement}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(first.count_log("other rate limits"), 1, "warned once");

    // check --online says so too (and is not counted as an instance itself).
    let out = command()
        .args([
            "check",
            "--online",
            "--dry-run",
            "--unix",
            "/tmp/otp-agree.sock",
        ])
        .args(["--state", &redis.url(), "--rate-limit-phone=3/10m"])
        .env("OTP_SIDECAR_STATE_KEY", KEY)
        .env("OTP_SIDECAR_STATE_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("other rate limits"), "{text}");
    drop(second);

    // Another key on the same prefix shares nothing: told apart from other limits.
    let options = Options::default()
        .args(["--state", &redis.url(), "--rate-limit-phone=3/10m"])
        .env("OTP_SIDECAR_STATE_KEY", "another-state-key-0a9b8c7d6e")
        .env("OTP_SIDECAR_STATE_PASSWORD", PASSWORD);
    let third = Daemon::start(&twilio.uri(), options);
    poll_until(
        Duration::from_secs(5),
        || {
            third
                .log()
                .contains("another OTP_SIDECAR_STATE_KEY")
                .then_some(())
        },
        || third.log(),
    );
    let started = Instant::now();
    loop {
        let agreement = health(&first, "state_agreement").await;
        if agreement.contains("OTP_SIDECAR_STATE_KEY") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{agreement}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !third.log().contains("another-state-key"),
        "the key itself never shows"
    );
}

/// How a fake store answers the scripts.
#[derive(Clone, Copy)]
enum Hostile {
    /// Declares a 1 GB string and starts sending it.
    HugeString,
    /// Declares 10 M integers and sends them.
    HugeArray,
    /// A string where the script's array belongs.
    WrongType,
}

/// A loopback server speaking just enough RESP: OK to the handshake, an INFO without cluster,
/// and `hostile` to any script.
fn fake_store(hostile: Hostile) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            std::thread::spawn(move || answer_as(hostile, client));
        }
    });
    addr
}

fn answer_as(hostile: Hostile, client: std::net::TcpStream) {
    let mut writer = client.try_clone().expect("clone");
    let mut reader = BufReader::new(client);
    let mut line = String::new();
    loop {
        // A command: *N, then N bulk strings ($len, text); the first names it.
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let Some(count) = line
            .trim()
            .strip_prefix('*')
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let mut words = Vec::new();
        for _ in 0..count * 2 {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            words.push(line.trim().to_owned());
        }
        let name = words
            .get(1)
            .map(|w| w.to_ascii_uppercase())
            .unwrap_or_default();
        let answer: Vec<u8> = match name.as_str() {
            "INFO" => b"$19\r\ncluster_enabled:0\r\n\r\n".to_vec(),
            "EVALSHA" | "EVAL" | "SCRIPT" => match hostile {
                Hostile::WrongType => b"+hello\r\n".to_vec(),
                Hostile::HugeString => {
                    let _ = writer.write_all(b"$1000000000\r\n");
                    let chunk = vec![b'x'; 1 << 20];
                    while writer.write_all(&chunk).is_ok() {}
                    return;
                }
                Hostile::HugeArray => {
                    let _ = writer.write_all(b"*10000000\r\n");
                    let chunk = b":1\r\n".repeat(1 << 18);
                    for _ in 0..40 {
                        if writer.write_all(&chunk).is_err() {
                            return;
                        }
                    }
                    return;
                }
            },
            _ => b"+OK\r\n".to_vec(),
        };
        if writer.write_all(&answer).is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn huge_replies_from_a_fake_store_cost_no_memory() {
    let twilio = twilio_answering(created(SID)).await;
    for hostile in [Hostile::HugeString, Hostile::HugeArray] {
        let store = fake_store(hostile);
        let daemon = on_store(
            &twilio.uri(),
            &format!("redis://{store}/0"),
            &["--rate-limit-phone=50/1h", "--state-timeout-ms=500"],
        );
        for _ in 0..5 {
            let reply = send(&daemon, PHONE, &[]).await;
            assert!(reply.is_ok(), "local fallback: {reply:?}");
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(health(&daemon, "state").await, "degraded (local fallback)");
        let peak_mib = daemon.peak_rss_kib() / 1024;
        eprintln!("peak RSS against a hostile store: {peak_mib} MiB");
        assert!(peak_mib < 64, "peak RSS {peak_mib} MiB");
    }
}

#[tokio::test]
async fn a_wrongly_typed_reply_reaches_the_log_not_the_caller() {
    let twilio = twilio_answering(created(SID)).await;
    let store = fake_store(Hostile::WrongType);
    let daemon = on_store(
        &twilio.uri(),
        &format!("redis://{store}/0"),
        &["--state-failure=closed", "--rate-limit-phone=5/1h"],
    );
    let reply = send(&daemon, PHONE, &[]).await;
    assert_eq!(reply, Err("ERR unavailable: state store".to_owned()));
    daemon.wait_for_log("hello");
    assert_eq!(health(&daemon, "status").await, "degraded");
    assert!(sends(&twilio).await.is_empty());
}

#[test]
fn a_cluster_is_refused_by_check_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::common::store::free_port();
    let mut child = std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--cluster-enabled",
            "yes",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--requirepass", PASSWORD])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server");
    std::thread::sleep(Duration::from_millis(300));
    let out = command()
        .args([
            "check",
            "--online",
            "--dry-run",
            "--unix",
            "/tmp/otp-cluster.sock",
        ])
        .args(["--state", &format!("redis://127.0.0.1:{port}/0")])
        .env("OTP_SIDECAR_STATE_KEY", KEY)
        .env("OTP_SIDECAR_STATE_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // serve refuses to start on it, saying why.
    let options = Options::default()
        .args(["--state", &format!("redis://127.0.0.1:{port}/0")])
        .env("OTP_SIDECAR_STATE_KEY", KEY)
        .env("OTP_SIDECAR_STATE_PASSWORD", PASSWORD);
    let started = Daemon::try_start("http://127.0.0.1:9", options);
    let _ = child.kill();
    let _ = child.wait();
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("is a Redis Cluster node"), "{text}");
    match started {
        Ok(daemon) => panic!("started on a cluster: {}", daemon.log()),
        Err(log) => assert!(log.contains("is a Redis Cluster node"), "{log}"),
    }
}
