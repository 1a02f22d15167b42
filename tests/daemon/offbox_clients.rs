//! Clients we did not write and our own bundled one, against mutual TLS with a token.

use crate::common::*;
use crate::offbox::*;

/// Python's ssl module (a TLS stack we did not write) with a client certificate, and the
/// msgpack package (PyPI) encoding the request: sendOTP with a token over mutual TLS.
#[tokio::test(flavor = "multi_thread")]
async fn python_ssl_with_a_client_certificate_and_a_token() {
    let witness = witness_dir();
    let twilio = twilio_answering(created(SID)).await;
    let dir = tempfile::tempdir().unwrap();
    let (files, server_ca, client_ca) = Files::mutual(dir.path());
    write_tokens(&files, &format!("bigip-a {TOKEN_A}\n"));
    let client = client_ca.client();
    let (client_cert, client_key, ca_file) = (
        dir.path().join("c.pem"),
        dir.path().join("c.key"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&client_cert, &client.cert).unwrap();
    std::fs::write(&client_key, &client.key).unwrap();
    std::fs::write(&ca_file, server_ca.pem()).unwrap();
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default()
            .args(files.tls_args())
            .arg(files.client_ca_arg())
            .arg(files.tokens_arg()),
    );
    let script = r#"
import socket, ssl, sys, msgpack
host, port, ca, cert, key, token, phone = sys.argv[1:8]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
with socket.create_connection((host, int(port)), timeout=5) as raw:
    with ctx.wrap_socket(raw, server_hostname=host) as s:
        s.sendall(msgpack.packb([0, 7, "sendOTP", ["918273", phone, "ACME", {"token": token}]]))
        u = msgpack.Unpacker(raw=False)
        while True:
            data = s.recv(4096)
            if not data:
                sys.exit("closed")
            u.feed(data)
            for reply in u:
                print(reply[1], reply[2], reply[3])
                sys.exit(0)
"#;
    let run = |token: &str| {
        let out = std::process::Command::new(witness.join("venv/bin/python"))
            .arg("-c")
            .arg(script)
            .args(["127.0.0.1", &daemon.tcp.port().to_string()])
            .arg(&ca_file)
            .arg(&client_cert)
            .arg(&client_key)
            .args([token, PHONE])
            .output()
            .expect("python");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    assert_eq!(run(TOKEN_A).trim(), format!("7 None {SID}"));
    assert!(run("tok-not-this-one-0000000000").contains("ERR unauthorized"));
    assert_eq!(sends(&twilio).await.len(), 1);
}

/// The bundled client's own TLS: `ping`, `send` and their refusals against a daemon that wants
/// a client certificate and a token (the token from the environment only).
#[tokio::test(flavor = "multi_thread")]
async fn the_bundled_client_speaks_mutual_tls_with_a_token() {
    let twilio = twilio_answering(created(SID)).await;
    let dir = tempfile::tempdir().unwrap();
    let (files, server_ca, client_ca) = Files::mutual(dir.path());
    write_tokens(&files, &format!("bigip-a {TOKEN_A}\n"));
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default()
            .args(files.tls_args())
            .arg(files.client_ca_arg())
            .arg(files.tokens_arg()),
    );
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let leaf = client_ca.client();
    let (ca, cert, key) = (
        write("ca.pem", &server_ca.pem()),
        write("client.pem", &leaf.cert),
        write("client.key", &leaf.key),
    );
    let tcp = daemon.tcp.to_string();
    let run = |command: &[&str], tls: &[&str], token: Option<&str>| {
        let mut cmd = crate::common::command();
        cmd.args(command).args(["--tcp", &tcp]).args(tls);
        if let Some(token) = token {
            cmd.env("OTP_SIDECAR_CALLER_TOKEN", token);
        }
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let mtls = [
        "--tls-ca",
        &ca,
        "--tls-client-cert",
        &cert,
        "--tls-client-key",
        &key,
    ];
    let send = ["send", OTP, PHONE, "ACME"];

    let (code, out) = run(&["ping"], &mtls, None);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("status: ok"), "{out}");
    let (code, out) = run(&send, &mtls, Some(TOKEN_A));
    assert_eq!((code, out.trim()), (Some(0), SID), "{out}");
    // No token: refused by the daemon (exit 1), nothing sent.
    let (code, out) = run(&send, &mtls, None);
    assert!(
        code == Some(1) && out.starts_with("ERR unauthorized"),
        "{out}"
    );
    // No client certificate, or plain TCP: the handshake or the connection fails (exit 2).
    let (code, out) = run(&send, &["--tls-ca", &ca], Some(TOKEN_A));
    assert!(code == Some(2) && out.contains("otp-sidecar:"), "{out}");
    let (code, out) = run(&send, &[], Some(TOKEN_A));
    assert_eq!(code, Some(2), "{out}");
    // A server name the certificate does not carry.
    let mut named = mtls.to_vec();
    named.extend(["--tls-server-name", "otp.example"]);
    let (code, out) = run(&["ping"], &named, None);
    assert!(code == Some(2) && out.contains("TLS to tcp:"), "{out}");
    assert_eq!(sends(&twilio).await.len(), 1);
    assert!(!daemon.log().contains(TOKEN_A));
}
