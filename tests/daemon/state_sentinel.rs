//! A store run highly available: a primary, a replica and three `redis-sentinel`s on loopback.
//! The primary is killed; the daemons follow the promoted replica by themselves.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::store::{free_port, RedisServer};
use crate::common::*;
use crate::state::{is_limited, on_store, send, until_state, PASSWORD};

struct Sentinel {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    fn start(primary_port: u16) -> Sentinel {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor otp 127.0.0.1 {primary_port} 2\n\
                 sentinel auth-pass otp {PASSWORD}\n\
                 sentinel down-after-milliseconds otp 400\n\
                 sentinel failover-timeout otp 2000\n",
                dir.path().display()
            ),
        )
        .expect("sentinel.conf");
        let child = Command::new("redis-sentinel")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-sentinel runs (Debian's redis-sentinel; .ci/run installs it)");
        Sentinel {
            child,
            port,
            _dir: dir,
        }
    }

    /// Where this Sentinel says the primary is (its port).
    fn primary(&self) -> Option<u16> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).ok()?;
        let mut conn = client.get_connection().ok()?;
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg("otp")
            .query(&mut conn)
            .ok()?;
        Some(port)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_daemons_follow_sentinel_to_the_promoted_replica() {
    let mut primary = RedisServer::start(Some(PASSWORD));
    let replica = RedisServer::replica_of(&primary);
    let sentinels: Vec<Sentinel> = (0..3).map(|_| Sentinel::start(primary.port)).collect();
    // Every Sentinel knows the primary before the daemons ask.
    poll_until(
        Duration::from_secs(10),
        || {
            sentinels
                .iter()
                .all(|s| s.primary() == Some(primary.port))
                .then_some(())
        },
        || "the Sentinels do not know the primary".to_owned(),
    );
    let nodes: Vec<String> = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    let url = format!("redis+sentinel://{}/otp/0", nodes.join(","));
    let twilio = twilio_answering(created(SID)).await;
    let args = [
        "--rate-limit-phone=2/1h",
        "--state-timeout-ms=400",
        "--deadline-ms=3000",
    ];
    let first = on_store(&twilio.uri(), &url, &args);
    let second = on_store(&twilio.uri(), &url, &args);
    until_state(&first, "redis ok").await;
    until_state(&second, "redis ok").await;
    assert!(send(&first, PHONE, &[]).await.is_ok());
    assert!(send(&second, PHONE, &[]).await.is_ok());
    assert!(is_limited(&send(&first, PHONE, &[]).await), "shared");
    // The replica holds what the primary had (the failover must not forget the limits).
    poll_until(
        Duration::from_secs(5),
        || {
            replica
                .dump()
                .iter()
                .any(|(k, _)| k.starts_with("otp-sidecar:rate:phone:"))
                .then_some(())
        },
        || "the replica has no limits".to_owned(),
    );

    primary.kill();
    // Calls go on meanwhile, each answered within its store budget (falling back).
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    while sentinels[0].primary() != Some(replica.port) {
        assert!(started.elapsed() < Duration::from_secs(20), "no failover");
        let call = Instant::now();
        let reply = send(&first, "+31687654321", &[]).await;
        slowest = slowest.max(call.elapsed());
        assert!(reply.is_ok() || is_limited(&reply), "{reply:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Within the store budget (400 ms), with room for the rest of the call; a call that
    // waited for a connection to be made would take up to its 2 s.
    assert!(slowest < Duration::from_millis(800), "{slowest:?}");

    // Followed, without a restart or a reload: shared again, on the new primary.
    until_state(&first, "redis ok").await;
    until_state(&second, "redis ok").await;
    let phone = "+31611112222";
    assert!(send(&first, phone, &[]).await.is_ok());
    assert!(send(&second, phone, &[]).await.is_ok());
    let third = send(&first, phone, &[]).await;
    assert!(is_limited(&third), "shared again: {third:?}");
    assert!(replica
        .dump()
        .iter()
        .any(|(k, _)| k.starts_with("otp-sidecar:rate:phone:")));
}
