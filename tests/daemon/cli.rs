//! The `otp-sidecar` command as an operator uses it: send, ping, check, and startup errors.

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use crate::common::*;

fn run(args: &[&str]) -> Output {
    command().args(args).output().expect("run otp-sidecar")
}

#[test]
fn send_exit_codes_follow_the_reply() {
    let daemon = dry_daemon();
    let unix = daemon.unix.to_str().unwrap();
    let out = run(&["send", OTP, PHONE, "ACME", "--unix", unix]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("SM"), "{}", text(&out.stdout));

    let tcp = daemon.tcp.to_string();
    let out = run(&["send", OTP, "0612345678", "ACME", "--tcp", &tcp]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).starts_with("ERR invalid_phone: "));

    let missing = daemon.dir.path().join("missing.sock");
    let out = run(&[
        "send",
        OTP,
        PHONE,
        "ACME",
        "--unix",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot connect"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&["send", OTP]);
    assert_eq!(out.status.code(), Some(2), "bad usage");
}

/// Each of `lines` is a whole line of `report`.
fn expect_lines(report: &str, lines: &[&str]) {
    for line in lines {
        assert!(report.lines().any(|l| l == *line), "{line:?} in:\n{report}");
    }
}

#[test]
fn ping_answers_or_says_why_not() {
    let daemon = dry_daemon();
    let unix = daemon.unix.to_str().unwrap();
    // A dry-run send reaches no Twilio: the report's last exchange stays empty.
    assert_eq!(
        run(&["send", OTP, PHONE, "ACME", "--unix", unix])
            .status
            .code(),
        Some(0)
    );
    let out = run(&["ping", "--unix", unix]);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    expect_lines(
        &report,
        &[
            "status: ok",
            "mode: dry_run",
            "last_twilio: nil",
            "connections: 1", // its own
            "in_flight: 0",   // health is answered inline, without a call slot
        ],
    );
    assert!(report.contains(&format!("version: {}", env!("CARGO_PKG_VERSION"))));

    // Twilio cannot be reached: the warm-up says so, and ping reports it (exit 1).
    let cut_off = Daemon::start(&format!("http://{}", dead_address()), Options::default());
    let out = run(&["ping", "--unix", cut_off.unix.to_str().unwrap()]);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    expect_lines(
        &report,
        &[
            "status: degraded",
            "mode: twilio",
            "last_twilio.kind: warm",
            "last_twilio.healthy: false",
            "last_twilio.detail: unavailable",
        ],
    );

    let out = run(&["ping", "--tcp", &dead_address().to_string()]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_validates_without_printing_secrets() {
    let out = command()
        .args(["check", "--twilio-api-url", "http://127.0.0.1:9"])
        .env("TWILIO_ACCOUNT_SID", AC)
        .env("TWILIO_AUTH_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("configuration OK") && stdout.contains(AC),
        "{stdout}"
    );
    assert!(!stdout.contains(TOKEN));

    let out = run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no Twilio credentials"),
        "{}",
        text(&out.stderr)
    );

    let out = command()
        .args(["check", "--deadline-ms", "10"])
        .env("TWILIO_ACCOUNT_SID", AC)
        .env("TWILIO_AUTH_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("deadline_ms"));
}

/// Every option `serve --help` lists, with the text clap prints for it (the lines up to the
/// next option), its `[env: …]`, `[default: …]` and `[possible values: …]` notes removed.
fn options_and_explanations(help: &str) -> Vec<(String, String)> {
    let option = regex_lite::Regex::new(r"^ {2,6}(?:-\w, )?(--[a-z0-9-]+)").unwrap();
    let notes =
        regex_lite::Regex::new(r"\[(?:env|default|possible values|aliases): [^\]]*\]").unwrap();
    let mut found: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        if let Some(c) = option.captures(line) {
            // What follows the name on its line is the placeholder of its value, not prose;
            // explanations are indented deeper than the names.
            found.push((c[1].to_owned(), String::new()));
        } else if let Some((_, text)) = found.last_mut() {
            text.push(' ');
            text.push_str(line.trim());
        }
    }
    for (_, text) in &mut found {
        *text = notes.replace_all(text, "").trim().to_owned();
    }
    found
}

#[test]
fn help_explains_every_option() {
    let out = run(&["serve", "--help"]);
    let help = text(&out.stdout);
    let options = options_and_explanations(&help);
    // Names an operator looks for, so that a parse of the help that finds nothing fails too.
    for needle in [
        "--unix",
        "--tcp",
        "--deadline-ms",
        "--dry-run",
        "--config",
        "--help",
    ] {
        assert!(
            options.iter().any(|(name, _)| name == needle),
            "{needle} missing from serve --help:\n{help}"
        );
    }
    assert!(
        options.len() >= 40,
        "only {} options in:\n{help}",
        options.len()
    );
    // An option whose only text is its env var or default is not explained.
    let bare: Vec<&str> = options
        .iter()
        .filter(|(_, text)| text.split_whitespace().count() < 2)
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(
        bare.is_empty(),
        "options without an explanation: {bare:?}\n{help}"
    );
    assert!(help.contains("OTP_SIDECAR_DEADLINE_MS"), "{help}");
    let top = text(&run(&["--help"]).stdout);
    for command in ["serve", "send", "confirm", "ping", "check"] {
        assert!(
            top.contains(command),
            "{command} missing from --help:\n{top}"
        );
    }
}

#[test]
fn the_unix_socket_is_mode_0660_and_removed_on_sigterm() {
    let daemon = dry_daemon();
    let unix = daemon.unix.clone();
    let mode = std::fs::metadata(&unix).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let status = daemon.terminate();
    assert!(status.success(), "{status}");
    assert!(!unix.exists());
}

#[test]
fn startup_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let in_missing_dir = dir.path().join("nope/otp.sock");
    let out = command()
        .args([
            "serve",
            "--dry-run",
            "--unix",
            in_missing_dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("does not exist"),
        "{}",
        text(&out.stderr)
    );

    let socket = dir.path().join("otp.sock");
    let out = command()
        .args([
            "serve",
            "--dry-run",
            "--unix",
            socket.to_str().unwrap(),
            "--tcp",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--allow-remote-tcp"),
        "{}",
        text(&out.stderr)
    );

    let not_a_socket = dir.path().join("file.sock");
    std::fs::write(&not_a_socket, "keep me").unwrap();
    let out = command()
        .args([
            "serve",
            "--dry-run",
            "--unix",
            not_a_socket.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a socket"));
    assert_eq!(std::fs::read_to_string(&not_a_socket).unwrap(), "keep me");
}

#[test]
fn a_stale_socket_is_replaced_but_a_live_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("otp.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // leaves a stale file
    assert!(path.exists());
    let serve = |path: &std::path::Path| {
        command()
            .args(["serve", "--dry-run", "--unix", path.to_str().unwrap()])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = serve(&path);
    let started = std::time::Instant::now();
    while run(&["ping", "--unix", path.to_str().unwrap()])
        .status
        .code()
        != Some(0)
    {
        assert!(
            started.elapsed().as_secs() < 10,
            "daemon never answered on the stale path"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let second = serve(&path).wait_with_output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(
        text(&second.stderr).contains("in use"),
        "{}",
        text(&second.stderr)
    );
    first.kill().unwrap();
    first.wait().unwrap();
}

#[test]
fn the_example_config_is_valid() {
    // The example's placeholder secrets are overridden from the environment; every key and
    // value in the file must still parse and validate.
    let out = command()
        .arg("check")
        .arg("--config")
        .arg(repo_file("examples/otp-sidecar.toml"))
        .env("TWILIO_ACCOUNT_SID", AC)
        .env("TWILIO_API_KEY", SK)
        .env("TWILIO_API_SECRET", API_SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("deadline:     2500 ms"));
}

/// Booleans: 1/0, yes/no, on/off, true/false in any case; an env var beats the file, a flag
/// beats both; an empty env var counts as unset. Seen through `dry_run`: without credentials
/// `check` passes only in a dry run.
#[test]
fn booleans_take_every_spelling_and_follow_the_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let file_true = dir.path().join("dry.toml");
    std::fs::write(&file_true, "dry_run = true\n").unwrap();
    let dry = |env: Option<&str>, file: bool, flag: Option<&str>| {
        let mut cmd = command();
        cmd.arg("check");
        if file {
            cmd.arg("--config").arg(&file_true);
        }
        if let Some(flag) = flag {
            cmd.arg(flag);
        }
        if let Some(value) = env {
            cmd.env("OTP_SIDECAR_DRY_RUN", value);
        }
        cmd.output().unwrap().status.success()
    };
    for yes in ["1", "yes", "YES", "on", "On", "true", "TRUE"] {
        assert!(dry(Some(yes), false, None), "OTP_SIDECAR_DRY_RUN={yes}");
    }
    for no in ["0", "no", "No", "off", "OFF", "false", "False"] {
        assert!(!dry(Some(no), false, None), "OTP_SIDECAR_DRY_RUN={no}");
        assert!(
            !dry(Some(no), true, None),
            "env {no} must beat the file's true"
        );
    }
    assert!(
        dry(Some(""), true, None),
        "an empty env var is unset: the file's true holds"
    );
    assert!(dry(None, true, None));
    assert!(
        dry(Some("false"), true, Some("--dry-run")),
        "a flag beats the env"
    );
    assert!(
        !dry(Some("true"), false, Some("--dry-run=off")),
        "a flag beats the env"
    );
    let out = command()
        .args(["check"])
        .env("OTP_SIDECAR_DRY_RUN", "maybe")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("yes/no"),
        "{}",
        text(&out.stderr)
    );
}

/// `check` refuses what `serve` would, with the same reason.
#[test]
fn check_refuses_what_serve_would() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("auth_token");
    std::fs::write(&empty, "").unwrap();
    let config = dir.path().join("otp-sidecar.toml");
    std::fs::write(
        &config,
        format!(
            "[credentials]\naccount_sid = \"{AC}\"\nauth_token_file = \"{}\"\n",
            empty.display()
        ),
    )
    .unwrap();
    let bad_pem = dir.path().join("ca.pem");
    std::fs::write(&bad_pem, "not a certificate\n").unwrap();
    let sock = dir.path().join("otp.sock");
    let sock = sock.to_str().unwrap();
    let cases: [(Vec<&str>, &str); 4] = [
        (
            vec!["--unix", "/nonexistent-dir/otp.sock"],
            "directory /nonexistent-dir does not exist",
        ),
        (
            vec!["--unix", sock, "--config", config.to_str().unwrap()],
            // The source named: the key, the file and its line.
            "auth_token_file in",
        ),
        (
            vec![
                "--unix",
                sock,
                "--twilio-ca-file",
                bad_pem.to_str().unwrap(),
            ],
            "holds no PEM certificate",
        ),
        (
            vec!["--unix", sock, "--twilio-api-url", "http://api.example.com"],
            "--allow-insecure-twilio-url",
        ),
    ];
    for (args, reason) in cases {
        for subcommand in ["check", "serve"] {
            let mut cmd = command();
            cmd.arg(subcommand).args(&args);
            if !args.contains(&"--config") {
                cmd.env("TWILIO_ACCOUNT_SID", AC)
                    .env("TWILIO_AUTH_TOKEN", TOKEN);
            }
            let out = cmd.output().unwrap();
            assert_eq!(out.status.code(), Some(1), "{subcommand} {args:?}");
            let stderr = text(&out.stderr);
            assert!(stderr.contains(reason), "{subcommand} {args:?}: {stderr}");
            if reason == "auth_token_file in" {
                assert!(
                    stderr.contains("line 3") && stderr.contains("is empty"),
                    "{stderr}"
                );
            }
        }
    }
    // Loopback http stays allowed (mocks), and the explicit allow lets a trusted network through.
    let (passed, _, stderr) = check(&[
        "--unix",
        sock,
        "--twilio-api-url",
        "http://api.example.com",
        "--allow-insecure-twilio-url",
    ]);
    assert!(passed, "{stderr}");
}

/// A deadline past ILX::call's 3000 ms is allowed but warned about.
#[test]
fn a_deadline_over_ilx_timeout_is_warned_about() {
    let (passed, _, stderr) = check(&["--deadline-ms", "4000"]);
    assert!(passed, "{stderr}");
    assert!(
        stderr.contains("over ILX::call's default 3000 ms"),
        "{stderr}"
    );
    let (passed, _, stderr) = check(&["--deadline-ms", "2500"]);
    assert!(passed);
    assert!(!stderr.contains("3000 ms"), "{stderr}");
}

/// A deadline that leaves no room for the first guess of an answer's time is warned about.
#[test]
fn a_deadline_under_the_first_answer_time_guess_is_warned_about() {
    let (passed, _, stderr) = check(&["--deadline-ms", "250"]);
    assert!(passed, "{stderr}");
    assert!(
        stderr.contains("deadline_ms 250 leaves no room for the 250 ms"),
        "{stderr}"
    );
    let (passed, _, stderr) = check(&["--deadline-ms", "251"]);
    assert!(passed);
    assert!(!stderr.contains("leaves no room"), "{stderr}");
}

/// `uptime_s` counts from the daemon's start, not from the first `health` call.
#[test]
fn uptime_counts_from_the_start() {
    let daemon = dry_daemon();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let out = run(&["ping", "--unix", daemon.unix.to_str().unwrap()]);
    let report = text(&out.stdout);
    let uptime: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("uptime_s: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no uptime_s in:\n{report}"));
    assert!(uptime >= 2, "{report}");
}

/// A reader that goes away (`otp-sidecar ping | grep -q ok`) costs no panic: the status stays.
#[test]
fn a_closed_stdout_is_no_panic() {
    let daemon = dry_daemon();
    for args in [
        vec!["ping", "--unix", daemon.unix.to_str().unwrap()],
        vec![
            "send",
            OTP,
            PHONE,
            "ACME",
            "--unix",
            daemon.unix.to_str().unwrap(),
        ],
        vec!["--help"],
    ] {
        // The reader end is closed before the child gets to write (it starts up first).
        let mut child = command()
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
    }
}

/// `serve` with a port in use for `flag` (`--tcp`, `--metrics`): the start fails (exit 1)
/// and leaves no Unix socket file behind.
fn a_port_in_use_leaves_no_socket_file(flag: &str) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("otp.sock");
    let out = command()
        .args(["serve", "--dry-run", "--unix"])
        .arg(&sock)
        .arg(flag)
        .arg(taken.local_addr().unwrap().to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(!sock.exists(), "the socket file was left behind");
}

#[test]
fn a_failed_tcp_bind_leaves_no_socket_file() {
    a_port_in_use_leaves_no_socket_file("--tcp");
}

#[test]
fn a_failed_metrics_bind_leaves_no_socket_file() {
    a_port_in_use_leaves_no_socket_file("--metrics");
}

/// Latencies in the log are whole microseconds (3 decimals of ms), not raw floats.
#[test]
fn log_latencies_are_rounded_to_microseconds() {
    let daemon = Daemon::start(
        "http://127.0.0.1:9",
        Options::default().args(["--dry-run", "--log-format=json"]),
    );
    for _ in 0..5 {
        run(&[
            "send",
            OTP,
            PHONE,
            "ACME",
            "--unix",
            daemon.unix.to_str().unwrap(),
        ]);
    }
    daemon.wait_for_log("latency_ms");
    let latency = regex_lite::Regex::new(r#""latency_ms":([0-9.eE+-]+)"#).unwrap();
    let log = daemon.log();
    let mut seen = 0;
    for value in latency.captures_iter(&log).map(|c| c[1].to_owned()) {
        let decimals = value.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 3 && !value.contains('e'), "latency_ms {value}");
        seen += 1;
    }
    assert!(seen > 0, "{log}");
}

/// `serve --help` gives every option's range, the same the configuration enforces.
#[test]
fn help_shows_every_range() {
    let help = text(&run(&["serve", "--help"]).stdout);
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for range in [
        "(100-60000)",
        "(64-16777216)",
        "1-36000 s",
        "(1-36000)",
        "(1-64)",
        "0-3600 s",
        "(1-100000)",
        "(1-10000)",
        "0-86400 s",
        "2-10000000",
        "(0-2592000)",
        "1-1000;",
        "(1-86400 s)",
    ] {
        assert!(help.contains(range), "{range} not in serve --help:\n{help}");
    }
}
