//! Secrets planted everywhere an operator might put them (the auth token, an API secret, a
//! proxy's and an API URL's password, the OTP, a token pasted as a file path, a secret under
//! the wrong TOML key) never come back out: not in any `--help`, not from `check` (passing or
//! refusing), a refused start, a refused reload, nor the daemon's log at `RUST_LOG=trace`.

use std::path::Path;
use std::time::Duration;

use crate::common::*;

const PROXY_PW: &str = "pr0xyPassw0rd-7c1e55";
const URL_PW: &str = "urlPassw0rd-4d2a66";
/// A token pasted as the value of `auth_token_file`.
const PASTED: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a0";
/// A secret put under the wrong key (`deadline_ms`).
const TOML_SECRET: &str = "5b4a39281706f5e4d3c2b1a09f8e7d6c";
/// An OTP no timestamp or counter would spell by chance.
const PLANTED_OTP: &str = "k9Xq2Zr7";
/// A caller token (the caller tokens file's), also pasted as the file's path.
const CALLER_TOKEN: &str = "callertok-3e9d1a7b5c2f8e0d4a6b";

/// The state store's password and its keys' secret, and a key too short to take.
const STATE_PW: &str = "st4tePassw0rd-81c2d9";
const STATE_KEY: &str = "st4teKey-0b1c2d3e4f5a6978";
const SHORT_KEY: &str = "sh0rtK3y";

const PLANTED: [&str; 11] = [
    CALLER_TOKEN,
    STATE_PW,
    STATE_KEY,
    SHORT_KEY,
    TOKEN,
    API_SECRET,
    PROXY_PW,
    URL_PW,
    PASTED,
    TOML_SECRET,
    PLANTED_OTP,
];

fn assert_clean(what: &str, text: &str) {
    for secret in PLANTED {
        assert!(
            !text.contains(secret),
            "{what} shows the planted secret {secret:?}:\n{text}"
        );
    }
}

fn output(cmd: &mut std::process::Command) -> (Option<i32>, String) {
    let out = cmd.output().expect("run otp-sidecar");
    (
        out.status.code(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

/// Every option that may hold a secret, set in the environment.
fn secret_env(cmd: &mut std::process::Command) -> &mut std::process::Command {
    cmd.env("TWILIO_ACCOUNT_SID", AC)
        .env("TWILIO_AUTH_TOKEN", TOKEN)
        .env("TWILIO_API_SECRET", API_SECRET)
        .env(
            "OTP_SIDECAR_PROXY",
            format!("http://user:{PROXY_PW}@proxy.example:3128"),
        )
        .env(
            "OTP_SIDECAR_TWILIO_API_URL",
            format!("https://user:{URL_PW}@api.twilio.com"),
        )
        .env(
            "OTP_SIDECAR_LOOKUP_API_URL",
            format!("https://user:{URL_PW}@lookups.twilio.com"),
        )
        .env(
            "OTP_SIDECAR_VERIFY_API_URL",
            format!("https://user:{URL_PW}@verify.twilio.com"),
        )
        .env(
            "OTP_SIDECAR_STATE",
            format!("redis://u:{URL_PW}@127.0.0.1:6379/0"),
        )
        .env("OTP_SIDECAR_STATE_PASSWORD", STATE_PW)
        .env("OTP_SIDECAR_STATE_KEY", STATE_KEY)
        .env("OTP_SIDECAR_BODY_TEMPLATE", format!("{PASTED} {{otp}}"))
        .env("OTP_SIDECAR_DEADLINE_MS", TOML_SECRET)
        .env("OTP_SIDECAR_UNIX", format!("/run/{PASTED}.sock"))
        .env("OTP_SIDECAR_CALLER_TOKENS_FILE", CALLER_TOKEN)
}

/// A caller tokens file in `dir` holding the planted token; its path.
fn tokens_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("callers");
    std::fs::write(&path, format!("# the pool\nbigip-a {CALLER_TOKEN}\n")).unwrap();
    path
}

#[test]
fn no_help_shows_an_env_value() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["check", "--help"],
        &["send", "--help"],
        &["confirm", "--help"],
        &["ping", "--help"],
        &["help", "serve"],
        &["serve", "-h"],
    ] {
        let (status, out) = output(secret_env(&mut command()).args(args));
        assert_eq!(status, Some(0), "{args:?}: {out}");
        assert!(out.contains("Usage"), "{args:?}: {out}");
        assert_clean(&format!("{args:?}"), &out);
    }
}

/// Config files `check`, `serve` and a reload must refuse, each with a planted secret.
fn refused_configs(dir: &Path) -> Vec<(&'static str, String)> {
    let token = dir.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let creds = format!("[credentials]\nauth_token_file = '{}'\n", token.display());
    let short = dir.join("state-key");
    std::fs::write(&short, format!("{SHORT_KEY}\n")).unwrap();
    // A line with the token and one field too many, and a token alone on a line.
    let bad_tokens = dir.join("callers-bad");
    std::fs::write(
        &bad_tokens,
        format!("bigip-a {CALLER_TOKEN}\n{CALLER_TOKEN}\n"),
    )
    .unwrap();
    vec![
        (
            "state: the URL carries a password",
            format!("state = 'redis://u:{URL_PW}@127.0.0.1:6379/0'\n{creds}"),
        ),
        (
            "is shorter than 16 characters",
            format!(
                "state = 'redis://127.0.0.1:6379/0'\n{creds}state_key_file = '{}'\n",
                short.display()
            ),
        ),
        (
            "proxy is not a URL",
            format!("proxy = 'http://u:{PROXY_PW}@[::1'\n{creds}"),
        ),
        (
            "proxy must be an http:// URL",
            format!("proxy = 'https://u:{PROXY_PW}@proxy.example:3128'\n{creds}"),
        ),
        (
            "lookup_api_url must not carry a user name or password",
            format!("lookup_api_url = 'https://u:{URL_PW}@lookups.twilio.com'\n{creds}"),
        ),
        (
            "cannot read auth_token_file",
            format!("[credentials]\nauth_token_file = '{PASTED}'\n"),
        ),
        (
            "key deadline_ms: invalid type: string",
            format!("deadline_ms = '{TOML_SECRET}'\n{creds}"),
        ),
        (
            "callers-bad:2: expected `name token`",
            format!("caller_tokens_file = '{}'\n{creds}", bad_tokens.display()),
        ),
        (
            "cannot read caller_tokens_file (the value is not shown",
            format!("caller_tokens_file = '{CALLER_TOKEN}'\n{creds}"),
        ),
    ]
}

#[test]
fn check_and_a_refused_start_show_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("otp-sidecar.toml");
    let socket = dir.path().join("otp.sock");

    // A passing check, with a proxy password, a token file and an API secret in play.
    std::fs::write(
        &config,
        format!(
            "proxy = 'http://u:{PROXY_PW}@proxy.example:3128'\nunix = '{}'\n\
             caller_tokens_file = '{}'\n",
            socket.display(),
            tokens_file(dir.path()).display()
        ),
    )
    .unwrap();
    let (status, out) = output(
        command()
            .args(["check", "--config"])
            .arg(&config)
            .env("TWILIO_ACCOUNT_SID", AC)
            .env("TWILIO_API_KEY", SK)
            .env("TWILIO_API_SECRET", API_SECRET),
    );
    assert_clean("a passing check", &out);
    assert_eq!(status, Some(0), "{out}");
    let passed = out;

    for (why, toml) in refused_configs(dir.path()) {
        std::fs::write(&config, toml).unwrap();
        for subcommand in ["check", "serve"] {
            let (status, out) = output(
                command()
                    .arg(subcommand)
                    .arg("--config")
                    .arg(&config)
                    .arg("--unix")
                    .arg(&socket)
                    .env("TWILIO_ACCOUNT_SID", AC),
            );
            assert_clean(&format!("{subcommand} refusing ({why})"), &out);
            assert_eq!(status, Some(1), "{subcommand} ({why}): {out}");
            assert!(out.contains(why), "{subcommand}: {why:?} in {out}");
        }
    }
    assert!(!socket.exists());
    // The proxy is shown, its password is not.
    assert!(
        passed.contains("proxy:        http://***@proxy.example:3128"),
        "{passed}"
    );
}

#[test]
fn a_refused_reload_shows_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("otp-sidecar.toml");
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let good = format!("[credentials]\nauth_token_file = '{}'\n", token.display());
    std::fs::write(&config, &good).unwrap();
    let options = Options {
        no_credentials: true,
        ..Default::default()
    }
    .env("TWILIO_ACCOUNT_SID", AC)
    .args([
        "--keep-warm-secs",
        "0",
        "--config",
        config.to_str().unwrap(),
    ]);
    let daemon = Daemon::start("http://127.0.0.1:9", options);
    let cases = refused_configs(dir.path());
    for (n, (why, toml)) in cases.iter().enumerate() {
        std::fs::write(&config, toml).unwrap();
        daemon.signal("HUP");
        poll_until(
            Duration::from_secs(5),
            || (daemon.count_log("reload refused") > n).then_some(()),
            || format!("no refusal for {why:?} in:\n{}", daemon.log()),
        );
        assert_clean(&format!("a refused reload ({why})"), &daemon.log());
    }
    let log = daemon.log();
    for (why, _) in &cases {
        assert!(log.contains(why), "{why:?} in:\n{log}");
    }
    assert_clean("a refused reload", &log);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_log_at_trace_shows_no_secret() {
    let twilio = twilio_answering(created(SID)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("otp-sidecar.toml");
    std::fs::write(
        &config,
        format!(
            "body_template = 'Code {{otp}}'\ncaller_tokens_file = '{}'\n",
            tokens_file(dir.path()).display()
        ),
    )
    .unwrap();
    let token = || context(&[("token", CALLER_TOKEN)]);
    // The limits are kept in a real store that wants a password.
    let redis = crate::common::store::RedisServer::start(Some(STATE_PW));
    // The proxy is configured (with its password) but the loopback mock is reached directly.
    let options = Options::api_key()
        .env("RUST_LOG", "trace")
        .env("OTP_SIDECAR_STATE", &redis.url())
        .env("OTP_SIDECAR_STATE_PASSWORD", STATE_PW)
        .env("OTP_SIDECAR_STATE_KEY", STATE_KEY)
        .env("OTP_SIDECAR_RATE_LIMIT_PHONE", "5/1m")
        .env("NO_PROXY", "127.0.0.1")
        .args([
            "--proxy",
            &format!("http://u:{PROXY_PW}@127.0.0.1:9"),
            "--config",
            config.to_str().unwrap(),
        ]);
    let mut daemon = Daemon::start(&twilio.uri(), options);
    let mut client = daemon.unix_client().await;
    let reply = client
        .call(
            "sendOTP",
            vec![PLANTED_OTP.into(), PHONE.into(), "ACME".into(), token()],
        )
        .await
        .expect("answered");
    assert_eq!(reply, Ok(SID.into()), "{}", daemon.log());
    // An unauthorized call, whose token is the planted one with a byte changed.
    let wrong = CALLER_TOKEN.replace('3', "4");
    let refused = client
        .call(
            "sendOTP",
            vec![
                PLANTED_OTP.into(),
                PHONE.into(),
                "ACME".into(),
                context(&[("token", &wrong)]),
            ],
        )
        .await
        .expect("answered");
    assert!(refused.is_err());
    // A refused call and a reload go through the log too.
    let refused = client
        .call(
            "sendOTP",
            vec![PLANTED_OTP.into(), "0612".into(), "ACME".into(), token()],
        )
        .await
        .expect("answered");
    assert!(refused.is_err());
    daemon.signal("HUP");
    daemon.wait_for_log("configuration reloaded");
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit().code(), Some(0));
    let body = form(&sends(&twilio).await[0]);
    assert!(body.contains(&("Body".into(), format!("Code {PLANTED_OTP}"))));
    let log = daemon.log();
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "{log}");
    assert!(log.contains("state store"), "{log}");
    assert_clean("the log at trace", &log);
    assert!(!redis.dump().is_empty(), "the store was used");
}

#[tokio::test]
async fn a_store_refusing_the_password_shows_neither_it_nor_the_key() {
    let redis = crate::common::store::RedisServer::start(Some("the-right-one-0f9e8d7c"));
    let twilio = twilio_answering(created(SID)).await;
    let options = Options::default()
        .env("RUST_LOG", "trace")
        .env("OTP_SIDECAR_STATE_PASSWORD", STATE_PW)
        .env("OTP_SIDECAR_STATE_KEY", STATE_KEY)
        .args(["--state", &redis.url(), "--rate-limit-phone=5/1m"]);
    let daemon = Daemon::start(&twilio.uri(), options);
    assert!(daemon.send("ACME").await.is_ok(), "local fallback sends");
    let warning = daemon.wait_for_log("state store");
    assert!(
        warning.contains("WRONGPASS") || warning.contains("AuthenticationFailed"),
        "{warning}"
    );
    assert_clean("a refused store password", &daemon.log());
}
