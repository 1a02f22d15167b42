//! Shared state on a real `redis-server`: two daemons count one set of limits and share one
//! Lookup cache, the store's keys name nobody, and a store that dies, comes back or answers
//! slowly costs each call at most its own timeout (falling back, or refusing, as configured).

use std::time::{Duration, Instant};

use crate::common::store::{delaying_proxy, RedisServer};
use crate::common::*;

pub(crate) const KEY: &str = "state-key-5f0c1e9a7b3d2c4e8a6b";
pub(crate) const PASSWORD: &str = "redis-password-7c3e9a1f5b2d";

/// A daemon on `url` (the store's password and key from the environment) with `args`.
pub(crate) fn on_store(twilio: &str, url: &str, args: &[&str]) -> Daemon {
    let options = Options::default()
        .args(["--state", url])
        .args(args.iter().copied())
        .env("OTP_SIDECAR_STATE_KEY", KEY)
        .env("OTP_SIDECAR_STATE_PASSWORD", PASSWORD);
    Daemon::start(twilio, options)
}

/// sendOTP of the standard code to `phone` with `pairs` as context: the SID or the ERR text.
pub(crate) async fn send(
    daemon: &Daemon,
    phone: &str,
    pairs: &[(&str, &str)],
) -> Result<String, String> {
    let mut client = daemon.unix_client().await;
    send_with(&mut client, phone, context(pairs))
        .await
        .map(|v| v.as_str().unwrap_or_default().to_owned())
}

/// What `health` says under `key` (`state`, `status`).
pub(crate) async fn health(daemon: &Daemon, key: &str) -> String {
    let mut client = daemon.unix_client().await;
    let report = client.call("health", vec![]).await.unwrap().unwrap();
    let entry = report
        .as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v.as_str().unwrap_or_default().to_owned());
    entry.unwrap_or_default()
}

/// Waits (up to 5 s) until `health` says `state: wanted`.
pub(crate) async fn until_state(daemon: &Daemon, wanted: &str) {
    let started = Instant::now();
    loop {
        let state = health(daemon, "state").await;
        if state == wanted {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "state is {state:?}, not {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn is_limited(reply: &Result<String, String>) -> bool {
    matches!(reply, Err(e) if e.starts_with("ERR rate_limited"))
}

#[tokio::test]
async fn two_daemons_count_one_set_of_limits() {
    let redis = RedisServer::start(Some(PASSWORD));
    let twilio = twilio_answering(created(SID)).await;
    let limits = [
        "--rate-limit-phone=3/1h",
        "--rate-limit-ip=2/1h",
        "--rate-limit-user=2/1h",
    ];
    let first = on_store(&twilio.uri(), &redis.url(), &limits);
    let second = on_store(&twilio.uri(), &redis.url(), &limits);
    assert_eq!(health(&first, "state").await, "redis ok");

    // Per phone: three through the first, the fourth through the second is refused.
    for _ in 0..3 {
        let reply = send(&first, "+31 (0)6-1234 5678", &[]).await;
        assert!(reply.as_deref().is_ok_and(|s| is_sid(s, "SM")), "{reply:?}");
    }
    let fourth = send(&second, PHONE, &[]).await;
    assert!(is_limited(&fourth), "{fourth:?}");

    // Per IP and per user, each with a number of its own.
    let ip = [("ip", "198.51.100.7")];
    assert!(send(&first, "+31612000001", &ip).await.is_ok());
    assert!(send(&second, "+31612000002", &ip).await.is_ok());
    let third = send(&first, "+31612000003", &ip).await;
    assert!(is_limited(&third), "{third:?}");
    let user = [("user", "José Müller")];
    assert!(send(&second, "+31612000004", &user).await.is_ok());
    assert!(send(&first, "+31612000005", &user).await.is_ok());
    let third = send(&second, "+31612000006", &user).await;
    assert!(is_limited(&third), "{third:?}");
    assert_eq!(sends(&twilio).await.len(), 7, "refused sends reach nobody");

    // The store holds the limits, under the prefix, and names nobody.
    let dump = redis.dump();
    assert!(dump.len() >= 5, "{dump:?}");
    for (key, value) in &dump {
        assert!(
            key.starts_with("otp-sidecar:rate:")
                || key.starts_with("otp-sidecar:sent:")
                || key.starts_with("otp-sidecar:pump:")
                || key == "otp-sidecar:instances"
                // Each message's delivery status (issue 26), by keyed hash of its SID.
                || key.starts_with("otp-sidecar:delivery:"),
            "{key}"
        );
        let text = format!("{key} {}", String::from_utf8_lossy(value));
        for clear in [
            "612345678",
            "612000",
            "198.51.100.7",
            "Jos",
            "Müller",
            "M\\u00fc",
        ] {
            assert!(!text.contains(clear), "{clear} in {text}");
        }
    }
}

/// A Twilio stand-in with Messages and a Lookup answer for any number.
pub(crate) async fn twilio_with_any_lookup() -> wiremock::MockServer {
    use wiremock::matchers::{method, path_regex};
    let server = twilio_answering(created(SID)).await;
    wiremock::Mock::given(method("GET"))
        .and(path_regex("^/v2/PhoneNumbers/"))
        .respond_with(
            wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "phone_number": PHONE, "valid": true, "country_code": "NL",
                "line_type_intelligence": {
                    "type": "mobile", "mobile_country_code": "204",
                    "mobile_network_code": "08", "carrier_name": "Test", "error_code": null
                }
            })),
        )
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn the_lookup_cache_is_shared_also_over_a_unix_socket() {
    let redis = RedisServer::start(Some(PASSWORD));
    let twilio = twilio_with_any_lookup().await;
    let lookup = format!("--lookup-api-url={}", twilio.uri());
    let args = ["--lookup", lookup.as_str()];
    let first = on_store(&twilio.uri(), &redis.url(), &args);
    let unix = format!("unix://{}", redis.unix_path().display());
    let second = on_store(&twilio.uri(), &unix, &args);

    assert!(send(&first, PHONE, &[]).await.is_ok());
    assert_eq!(lookups(&twilio).await, 1);
    // The answer is written to the store off the call's path: give it a moment.
    let cached = poll_until(
        Duration::from_secs(5),
        || {
            let dump = redis.dump();
            dump.iter()
                .find(|(k, _)| k.starts_with("otp-sidecar:lookup:"))
                .cloned()
        },
        || "no Lookup answer in the store".to_owned(),
    );
    assert!(!String::from_utf8_lossy(&cached.1).contains("612345678"));
    assert!(send(&second, PHONE, &[]).await.is_ok());
    assert_eq!(
        lookups(&twilio).await,
        1,
        "the second daemon asked Lookup again"
    );
    assert!(send(&second, "+31687654321", &[]).await.is_ok());
    assert_eq!(lookups(&twilio).await, 2);
    assert_eq!(sends(&twilio).await.len(), 3);
}

#[tokio::test]
async fn a_store_that_dies_falls_back_per_instance_and_is_shared_again_when_back() {
    let mut redis = RedisServer::start(Some(PASSWORD));
    let twilio = twilio_answering(created(SID)).await;
    let args = [
        "--rate-limit-phone=2/1h",
        "--deadline-ms=2000",
        "--metrics=127.0.0.1:0",
    ];
    let first = on_store(&twilio.uri(), &redis.url(), &args);
    let second = on_store(&twilio.uri(), &redis.url(), &args);
    assert!(send(&first, PHONE, &[]).await.is_ok());

    redis.kill();
    // Each instance now limits on its own: two each, every call answered in its deadline.
    for daemon in [&first, &second] {
        for n in 0..3 {
            let started = Instant::now();
            let reply = send(daemon, PHONE, &[]).await;
            assert!(started.elapsed() < Duration::from_millis(2000), "{reply:?}");
            assert_eq!(n < 2, reply.is_ok(), "call {n}: {reply:?}");
        }
        assert_eq!(health(daemon, "state").await, "degraded (local fallback)");
        assert_eq!(health(daemon, "status").await, "degraded");
    }
    let warnings = first
        .log()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("state store"))
        .count();
    assert_eq!(warnings, 1, "one warning per episode:\n{}", first.log());
    assert_eq!(sends(&twilio).await.len(), 5);

    // Back (empty), without a restart of either daemon: shared again.
    redis.restart();
    until_state(&first, "redis ok").await;
    until_state(&second, "redis ok").await;
    assert!(send(&first, "+31687654321", &[]).await.is_ok());
    assert!(send(&second, "+31687654321", &[]).await.is_ok());
    let third = send(&first, "+31687654321", &[]).await;
    assert!(is_limited(&third), "{third:?}");
    first.wait_for_log("answers again");
    let (_, metrics) = metrics_of(&first).await;
    assert!(
        metrics.contains(r#"otp_sidecar_state_fallbacks_total{policy="local"} 3"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn closed_refuses_while_the_store_is_away() {
    let mut redis = RedisServer::start(Some(PASSWORD));
    let twilio = twilio_answering(created(SID)).await;
    let daemon = on_store(
        &twilio.uri(),
        &redis.url(),
        &["--rate-limit-phone=5/1h", "--state-failure=closed"],
    );
    assert!(send(&daemon, PHONE, &[]).await.is_ok());
    redis.kill();
    let reply = send(&daemon, PHONE, &[]).await;
    assert!(
        matches!(&reply, Err(e) if e.starts_with("ERR unavailable: state store")),
        "{reply:?}"
    );
    assert_eq!(sends(&twilio).await.len(), 1, "nothing sent while refusing");
    assert_eq!(health(&daemon, "state").await, "degraded (refusing sends)");
    redis.restart();
    until_state(&daemon, "redis ok").await;
    assert!(send(&daemon, PHONE, &[]).await.is_ok());
}

#[tokio::test]
async fn a_slow_store_costs_a_call_no_more_than_its_timeout() {
    let redis = RedisServer::start(Some(PASSWORD));
    let twilio = twilio_answering(created(SID)).await;
    // Every answer of the store held 2 s: without the timeout a call would wait that long.
    let proxy = delaying_proxy(
        format!("127.0.0.1:{}", redis.port).parse().unwrap(),
        Duration::from_secs(2),
    );
    let daemon = on_store(
        &twilio.uri(),
        &format!("redis://{proxy}/0"),
        &[
            "--rate-limit-phone=5/1h",
            "--state-timeout-ms=50",
            "--deadline-ms=2500",
            "--metrics=127.0.0.1:0",
        ],
    );
    for _ in 0..3 {
        let started = Instant::now();
        let reply = send(&daemon, PHONE, &[]).await;
        let took = started.elapsed();
        assert!(reply.is_ok(), "{reply:?}");
        assert!(took < Duration::from_millis(1000), "{took:?}");
    }
    // Each fell back: timed out, or found no connection (made in the background, slowly).
    let (_, metrics) = metrics_of(&daemon).await;
    assert!(
        metrics.contains(r#"otp_sidecar_state_fallbacks_total{policy="local"} 3"#),
        "{metrics}"
    );
}

/// A CA and a certificate for 127.0.0.1 it signed, as PEM files in `dir`: (ca, cert, key).
fn tls_files(dir: &std::path::Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let files = [
        ("ca.pem", ca.pem()),
        ("cert.pem", cert.pem()),
        ("key.pem", key.serialize_pem()),
    ];
    let mut paths = files.iter().map(|(name, pem)| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    });
    let mut next = || paths.next().unwrap();
    (next(), next(), next())
}

#[tokio::test]
async fn rediss_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(dir.path());
    let tls = vec![
        "--tls-cert-file".to_owned(),
        cert,
        "--tls-key-file".to_owned(),
        key,
        "--tls-auth-clients".to_owned(),
        "no".to_owned(),
    ];
    let redis = RedisServer::start_with(Some(PASSWORD), tls);
    let twilio = twilio_answering(created(SID)).await;
    let url = format!("rediss://127.0.0.1:{}/0", redis.port);
    let trusting = on_store(
        &twilio.uri(),
        &url,
        &["--rate-limit-phone=5/1h", &format!("--state-ca-file={ca}")],
    );
    assert!(send(&trusting, PHONE, &[]).await.is_ok());
    assert_eq!(health(&trusting, "state").await, "redis ok");
    assert!(redis
        .dump()
        .iter()
        .any(|(k, _)| k.starts_with("otp-sidecar:rate:phone:")));
    // Without the CA the store's certificate is not trusted: limited locally, and said so.
    let doubting = on_store(&twilio.uri(), &url, &["--rate-limit-phone=5/1h"]);
    assert!(send(&doubting, PHONE, &[]).await.is_ok());
    assert_eq!(
        health(&doubting, "state").await,
        "degraded (local fallback)"
    );
}

#[test]
fn check_shows_the_store_and_refuses_what_cannot_work() {
    let with_key = |args: &[&str]| {
        let out = command()
            .arg("check")
            .args(["--dry-run", "--unix", "/tmp/otp-state-check.sock"])
            .args(args)
            .env("OTP_SIDECAR_STATE_KEY", KEY)
            .env("OTP_SIDECAR_STATE_PASSWORD", PASSWORD)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, out) = with_key(&[
        "--state",
        "redis://127.0.0.1:6379/2",
        "--state-prefix",
        "pool-a",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains(
            "state:        redis://127.0.0.1:6379/2 (keys under pool-a:, hashed with a shared \
             key, password set; 50 ms per operation, on failure local)"
        ),
        "{out}"
    );
    let (ok, out) = with_key(&[]);
    assert!(
        ok && out.contains("state:        memory (this process only)"),
        "{out}"
    );
    for (args, why) in [
        (
            &["--state", "http://127.0.0.1:6379"][..],
            "state must be memory, redis://",
        ),
        (
            &["--state", "redis://:pw@127.0.0.1:6379"],
            "the URL carries a password",
        ),
        (
            &["--state", "redis://127.0.0.1/0?pass=pw"],
            "the URL carries a password",
        ),
        (&["--state", "nowhere"], "is neither memory nor a URL"),
        (
            &["--state", "redis://127.0.0.1", "--state-failure", "open"],
            "state_failure must be",
        ),
        (
            &["--state", "redis://127.0.0.1", "--state-timeout-ms", "0"],
            "state_timeout_ms",
        ),
        (
            &[
                "--state",
                "redis://127.0.0.1",
                "--state-ca-file",
                "/etc/hosts",
            ],
            "rediss:// store only",
        ),
        (
            &["--state", "redis://127.0.0.1", "--state-prefix", "a b"],
            "state_prefix must be",
        ),
    ] {
        let (ok, out) = with_key(args);
        assert!(!ok && out.contains(why), "{args:?}: {why:?} in {out}");
    }
    // A shared store without the keys' secret would hold plain hashes of phone numbers.
    let out = command()
        .args(["check", "--dry-run", "--state", "redis://127.0.0.1:6379/0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("needs OTP_SIDECAR_STATE_KEY"),
        "{text}"
    );
}

#[tokio::test]
async fn check_online_pings_the_store() {
    let redis = RedisServer::start(Some(PASSWORD));
    let check = |url: String| {
        let out = command()
            .args([
                "check",
                "--online",
                "--dry-run",
                "--unix",
                "/tmp/otp-state-online.sock",
            ])
            .args(["--state", &url])
            .env("OTP_SIDECAR_STATE_KEY", KEY)
            .env("OTP_SIDECAR_STATE_PASSWORD", PASSWORD)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, out) = check(redis.url());
    assert!(ok && out.contains("takes writes"), "{out}");
    let (ok, out) = check(format!("redis://{}/0", dead_address()));
    assert!(!ok && out.contains("state store redis://"), "{out}");
}

#[tokio::test]
async fn a_reload_moves_the_limits_to_the_store_and_back() {
    let redis = RedisServer::start(Some(PASSWORD));
    let twilio = twilio_answering(created(SID)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("otp-sidecar.toml");
    std::fs::write(&config, "rate_limit_phone = '1/1h'\n").unwrap();
    // The file's limit, not the harness's "off" in the environment (which would win).
    let options = Options {
        rate_limits_on: true,
        ..Default::default()
    }
    .args(["--config", config.to_str().unwrap()])
    .env("OTP_SIDECAR_STATE_KEY", KEY)
    .env("OTP_SIDECAR_STATE_PASSWORD", PASSWORD);
    let daemon = Daemon::start(&twilio.uri(), options);
    assert_eq!(health(&daemon, "state").await, "memory");
    let shared = format!("rate_limit_phone = '1/1h'\nstate = '{}'\n", redis.url());
    std::fs::write(&config, &shared).unwrap();
    daemon.signal("HUP");
    daemon.wait_for_log("configuration reloaded");
    assert_eq!(health(&daemon, "state").await, "redis ok");
    assert!(send(&daemon, "+31687654321", &[]).await.is_ok());
    assert!(is_limited(&send(&daemon, "+31687654321", &[]).await));
    let keys: Vec<String> = redis.dump().into_iter().map(|(k, _)| k).collect();
    assert!(
        keys.iter()
            .any(|k| k.starts_with("otp-sidecar:rate:phone:")),
        "{keys:?}"
    );
    // A reload that changes nothing of the store keeps it (and its connection).
    std::fs::write(&config, format!("{shared}body_template = 'Code {{otp}}'\n")).unwrap();
    daemon.signal("HUP");
    poll_until(
        Duration::from_secs(5),
        || (daemon.count_log("configuration reloaded") == 2).then_some(()),
        || daemon.log(),
    );
    assert_eq!(
        daemon.count_log("state shared through"),
        1,
        "{}",
        daemon.log()
    );
    // A reload that changes the limits is not taken for another instance, though its record
    // with the old limits lasts a while.
    std::fs::write(&config, shared.replace("1/1h", "5/1h")).unwrap();
    daemon.signal("HUP");
    poll_until(
        Duration::from_secs(5),
        || (daemon.count_log("configuration reloaded") == 3).then_some(()),
        || daemon.log(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(health(&daemon, "state_agreement").await, "agreed");
    assert_eq!(daemon.count_log("other rate limits"), 0, "{}", daemon.log());
    // And back: without `state` the limits are the process's own again, and the store is
    // neither reported nor written.
    std::fs::write(&config, "rate_limit_phone = '1/1h'\n").unwrap();
    daemon.signal("HUP");
    poll_until(
        Duration::from_secs(5),
        || (daemon.count_log("configuration reloaded") == 4).then_some(()),
        || daemon.log(),
    );
    assert_eq!(health(&daemon, "state").await, "memory");
    let rate_keys = || {
        redis
            .dump()
            .into_iter()
            .filter(|(k, _)| k.starts_with("otp-sidecar:rate:"))
            .count()
    };
    let before = rate_keys();
    assert!(send(&daemon, "+31687654322", &[]).await.is_ok());
    assert!(is_limited(&send(&daemon, "+31687654322", &[]).await));
    assert_eq!(
        rate_keys(),
        before,
        "the store was written after it was dropped"
    );
}
