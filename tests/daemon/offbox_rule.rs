//! The rule that a non-loopback --tcp authenticates its callers (or is told not to).

use crate::common::*;
use crate::offbox::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

/// Starts `serve ARGS…` (dry run, its own socket): `Ok` once it says it is ready, `Err(its
/// output)` when it exits first.
fn serve_starts(args: &[String]) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let mut child = command()
        .arg("serve")
        .arg("--dry-run")
        .arg("--keep-warm-secs=0")
        .arg("--unix")
        .arg(dir.path().join("otp.sock"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = Vec::new();
    let mut ready = false;
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        ready = line.contains(" ready");
        lines.push(line);
        if ready {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    if ready {
        Ok(())
    } else {
        Err(lines.join("\n"))
    }
}

#[test]
fn a_non_loopback_tcp_needs_an_authentication_or_an_allow() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path());
    let ca = Ca::new("server CA");
    files.write_server(&ca.server());
    std::fs::write(&files.client_ca, Ca::new("client CA").pem()).unwrap();
    write_tokens(&files, &format!("bigip-a {TOKEN_A}\n"));
    let remote = "--tcp=0.0.0.0:0".to_owned();
    let choices = [
        "--tls-client-ca",
        "--caller-tokens-file",
        "--allow-unauthenticated-tcp",
    ];

    let (passed, _, stderr) = check(&["--dry-run", &remote]);
    assert!(!passed);
    for choice in choices {
        assert!(stderr.contains(choice), "{stderr}");
    }
    let refused = serve_starts(std::slice::from_ref(&remote)).unwrap_err();
    for choice in choices {
        assert!(refused.contains(choice), "{refused}");
    }
    // TLS without a client CA authenticates no one.
    let tls_only = [remote.clone()]
        .into_iter()
        .chain(files.tls_args())
        .collect::<Vec<_>>();
    assert!(serve_starts(&tls_only)
        .unwrap_err()
        .contains("--tls-client-ca"));

    let mut mutual = tls_only.clone();
    mutual.push(files.client_ca_arg());
    let tokens = vec![remote.clone(), files.tokens_arg()];
    for args in [
        mutual.clone(),
        tokens.clone(),
        vec![remote.clone(), "--allow-unauthenticated-tcp".into()],
        vec![remote.clone(), "--allow-remote-tcp".into()],
    ] {
        serve_starts(&args).unwrap_or_else(|log| panic!("{args:?} did not start:\n{log}"));
    }
    let mut args: Vec<&str> = vec!["--dry-run"];
    args.extend(mutual.iter().map(String::as_str));
    let (passed, out, stderr) = check(&args);
    assert!(passed, "{stderr}");
    assert!(out.contains("client certificates from the CA in"), "{out}");
    let (passed, out, stderr) = check(&["--dry-run", &remote, &files.tokens_arg()]);
    assert!(passed, "{stderr}");
    assert!(out.contains("callers:      1 (bigip-a)"), "{out}");
    assert!(
        stderr.contains("in clear") || out.contains("in clear"),
        "{out}{stderr}"
    );
    assert!(!out.contains(TOKEN_A) && !stderr.contains(TOKEN_A));
}
