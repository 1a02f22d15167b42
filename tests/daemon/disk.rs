//! Secrets on disk: a TLS key, caller tokens file or credentials file others can read is
//! named at start (once, WARN) and by `check` (a line each), by mode and owner and never by
//! content; a file in `$CREDENTIALS_DIRECTORY` is systemd's and is left alone. And a tokens
//! file written by a Windows editor (byte-order mark, CRLF) is read as any other.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;

const CALLER_TOKEN: &str = "tok-disk-7a1b2c3d4e5f60718293a4b5";

/// A file holding `text` with `mode`.
fn write(path: &Path, text: &str, mode: u32) -> PathBuf {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_owned()
}

/// The files of one layout, the flags naming them, the lines expected about them.
struct Layout {
    _dir: tempfile::TempDir,
    args: Vec<String>,
    credentials_directory: PathBuf,
    /// What each warned-about file's line must hold.
    warned: Vec<String>,
    /// Paths no line may name.
    quiet: Vec<PathBuf>,
    key_pem: String,
}

fn layout() -> Layout {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let leaf = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let key_pem = leaf.signing_key.serialize_pem();
    let cert = write(&d.join("server.pem"), &leaf.cert.pem(), 0o644);
    let key = write(&d.join("server.key"), &key_pem, 0o644);
    let tokens = write(
        &d.join("tokens"),
        &format!("bigip-a {CALLER_TOKEN}\n"),
        0o604,
    );
    let auth_token = write(&d.join("auth_token"), TOKEN, 0o640);
    // The daemon's own group may read it (`root:otp-sidecar 640`): no warning.
    let state_password = write(&d.join("state_password"), "st4te-pw-0123456789", 0o640);
    // Another group's reader is warned about where the test may hand the file to one.
    let other_group = std::os::unix::fs::chown(&auth_token, None, Some(1)).is_ok();
    let creds = d.join("credentials");
    std::fs::create_dir(&creds).unwrap();
    // systemd's copy (the config may name it by path, as `%d/…` in a unit does): left alone.
    let systemd_key = write(
        &creds.join("OTP_SIDECAR_STATE_KEY"),
        "st4te-key-0123456789abcdef",
        0o644,
    );
    let config = write(
        &d.join("otp.toml"),
        &format!(
            "[credentials]\naccount_sid = '{AC}'\nauth_token_file = '{}'\n\
             state_password_file = '{}'\nstate_key_file = '{}'\n",
            auth_token.display(),
            state_password.display(),
            systemd_key.display()
        ),
        0o644,
    );
    let mut warned = vec![
        format!(
            "tls_key {} is readable by others (mode 0644, owner uid ",
            key.display()
        ),
        format!(
            "caller_tokens_file {} is readable by others (mode 0604, owner uid ",
            tokens.display()
        ),
    ];
    let mut quiet = vec![cert.clone(), state_password, systemd_key, config.clone()];
    if other_group {
        warned.push(format!(
            "auth_token_file {} is readable by its group (mode 0640, owner uid ",
            auth_token.display()
        ));
    } else {
        quiet.push(auth_token);
    }
    let args = vec![
        format!("--config={}", config.display()),
        format!("--tls-cert={}", cert.display()),
        format!("--tls-key={}", key.display()),
        format!("--caller-tokens-file={}", tokens.display()),
    ];
    Layout {
        _dir: dir,
        args,
        credentials_directory: creds,
        warned,
        quiet,
        key_pem,
    }
}

impl Layout {
    /// `text` names each warned-about file on exactly one line and no other file.
    fn assert_named_once(&self, text: &str) {
        for want in &self.warned {
            let lines: Vec<&str> = text.lines().filter(|l| l.contains(want.as_str())).collect();
            assert_eq!(lines.len(), 1, "one line with {want:?} in:\n{text}");
        }
        assert_eq!(
            text.lines()
                .filter(|l| l.contains("is readable by"))
                .count(),
            self.warned.len(),
            "{text}"
        );
        for path in &self.quiet {
            let shown = path.display().to_string();
            assert!(
                !text
                    .lines()
                    .any(|l| l.contains(&format!("{shown} is readable"))),
                "{shown} named in:\n{text}"
            );
        }
        for secret in [CALLER_TOKEN, TOKEN, "PRIVATE KEY"] {
            assert!(!text.contains(secret), "{secret} leaked into:\n{text}");
        }
        assert!(!text.contains(self.key_pem.lines().nth(1).unwrap()));
    }
}

#[test]
fn check_names_each_secret_file_others_can_read() {
    let files = layout();
    let out = command()
        .arg("check")
        .args(&files.args)
        .env("CREDENTIALS_DIRECTORY", &files.credentials_directory)
        .env("TWILIO_AUTH_TOKEN", TOKEN)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    files.assert_named_once(&stderr);
    for line in stderr.lines().filter(|l| l.contains("is readable by")) {
        assert!(line.starts_with("otp-sidecar: warning: "), "{line}");
    }

    // Once the files are private, nothing is said.
    for path in files.args.iter().filter_map(|a| a.split_once('=')) {
        let path = Path::new(path.1);
        if path.extension().is_none_or(|e| e != "pem" && e != "toml") {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    let (passed, _, stderr) = check(&files.args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(passed, "{stderr}");
    let exposed: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("tls_key ") || l.contains("caller_tokens_file "))
        .collect();
    assert!(exposed.is_empty(), "{stderr}");
}

#[tokio::test]
async fn the_daemon_warns_once_at_start_about_each_secret_file_others_can_read() {
    let twilio = twilio_answering(created(SID)).await;
    let files = layout();
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args(files.args.clone()).env(
            "CREDENTIALS_DIRECTORY",
            files.credentials_directory.to_str().unwrap(),
        ),
    );
    // A call, and a reload: still one line a file.
    let ctx = context(&[("token", CALLER_TOKEN)]);
    let mut client = daemon.unix_client().await;
    assert_eq!(send_with(&mut client, PHONE, ctx).await, Ok(SID.into()));
    daemon.signal("HUP");
    daemon.wait_for_log("configuration reloaded");
    let log = daemon.log();
    files.assert_named_once(&log);
    for line in log.lines().filter(|l| l.contains("is readable by")) {
        assert!(line.contains("WARN"), "{line}");
    }
}

#[tokio::test]
async fn a_tokens_file_with_a_byte_order_mark_and_crlf_is_read() {
    let twilio = twilio_answering(created(SID)).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = write(
        &dir.path().join("tokens"),
        &format!("\u{feff}bigip-a {CALLER_TOKEN}\r\n# the other one\r\nbigip-b tok-b-0a1b2c3d4e5f60718293\r\n"),
        0o600,
    );
    let arg = format!("--caller-tokens-file={}", tokens.display());
    let (passed, stdout, stderr) = check(&["--dry-run", &arg]);
    assert!(passed, "{stdout}{stderr}");
    let daemon = Daemon::start(&twilio.uri(), Options::default().arg(&arg));
    let mut client = daemon.unix_client().await;
    for (token, want) in [
        (CALLER_TOKEN, Ok(rmpv::Value::from(SID))),
        ("tok-b-0a1b2c3d4e5f60718293", Ok(SID.into())),
    ] {
        let ctx = context(&[("token", token)]);
        assert_eq!(send_with(&mut client, PHONE, ctx).await, want);
    }
    let ctx = context(&[("token", "tok-nobody-0a1b2c3d4e5f6071")]);
    assert!(send_with(&mut client, PHONE, ctx).await.is_err());
    // A call's log line is written after its reply.
    poll_until(
        Duration::from_secs(5),
        || {
            let log = daemon.log();
            (log.contains("caller=\"bigip-a\"") || log.contains("caller=bigip-a")).then_some(())
        },
        || daemon.log(),
    );
}
