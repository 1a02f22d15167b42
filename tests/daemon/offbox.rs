//! Off-box pools: the TCP listener over TLS (mutual TLS with a client CA), caller tokens, both
//! re-read on SIGHUP, and the rule that a non-loopback --tcp authenticates its callers.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use otp_sidecar::client::Client;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::common::*;

const TOKEN_A: &str = "tok-a-5e1f0c9d8b7a6f5e4d3c2b1a";
const TOKEN_B: &str = "tok-b-0a1b2c3d4e5f60718293a4b5";

/// A test CA that signs server and client certificates.
pub(crate) struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
pub(crate) struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA"),
        }
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn leaf(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    pub(crate) fn server(&self) -> Leaf {
        self.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth)
    }

    pub(crate) fn client(&self) -> Leaf {
        self.leaf("bigip-a.example", ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// The daemon's TLS files in `dir`: server.pem, server.key and, with a client CA, client-ca.pem.
pub(crate) struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    pub tokens: PathBuf,
}

impl Files {
    pub(crate) fn new(dir: &Path) -> Files {
        Files {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            client_ca: dir.join("client-ca.pem"),
            tokens: dir.join("tokens"),
        }
    }

    pub(crate) fn write_server(&self, leaf: &Leaf) {
        std::fs::write(&self.cert, &leaf.cert).unwrap();
        std::fs::write(&self.key, &leaf.key).unwrap();
    }

    pub(crate) fn tls_args(&self) -> Vec<String> {
        vec![
            format!("--tls-cert={}", self.cert.display()),
            format!("--tls-key={}", self.key.display()),
        ]
    }

    pub(crate) fn client_ca_arg(&self) -> String {
        format!("--tls-client-ca={}", self.client_ca.display())
    }

    fn tokens_arg(&self) -> String {
        format!("--caller-tokens-file={}", self.tokens.display())
    }
}

fn provider() -> Arc<tokio_rustls::rustls::crypto::CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS connection to `addr` trusting `server_ca`, presenting `client` when given.
pub(crate) async fn tls_connect(
    addr: std::net::SocketAddr,
    server_ca: &str,
    client: Option<&Leaf>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(server_ca.as_bytes()) {
        roots.add(cert.expect("CA pem")).expect("CA");
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match client {
        Some(leaf) => {
            let chain = CertificateDer::pem_slice_iter(leaf.cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("chain");
            let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").expect("name");
    TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
}

/// A client over TLS, or the error of its handshake.
pub(crate) async fn tls_client(
    addr: std::net::SocketAddr,
    server_ca: &str,
    client: Option<&Leaf>,
) -> std::io::Result<Client> {
    let stream = tls_connect(addr, server_ca, client).await?;
    Ok(Client::over(Box::new(stream)))
}

/// sendOTP with a context holding `token` (when given) and nothing else.
pub(crate) async fn send_token(
    client: &mut Client,
    token: Option<rmpv::Value>,
) -> Result<String, String> {
    let ctx = match token {
        Some(t) => rmpv::Value::Map(vec![("token".into(), t)]),
        None => rmpv::Value::Map(vec![]),
    };
    send_with(client, PHONE, ctx)
        .await
        .map(|v| v.as_str().unwrap_or_default().to_owned())
}

/// That a TLS client is refused: at the handshake, or (TLS 1.3 sends the client's certificate
/// after the client is done) at its first call, which gets no answer.
async fn assert_refused(addr: std::net::SocketAddr, server_ca: &str, client: Option<&Leaf>) {
    let refused = match tls_client(addr, server_ca, client).await {
        Err(_) => true,
        Ok(mut c) => {
            let call = c.call("ping", vec![]);
            matches!(
                tokio::time::timeout(Duration::from_secs(5), call).await,
                Ok(Err(_))
            )
        }
    };
    assert!(refused, "the client was served");
}

/// A counter's value in a scrape, 0 when absent.
fn counter(metrics: &str, line_start: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn metrics_of(daemon: &Daemon) -> String {
    let addr = log_field(&daemon.ready, "metrics").expect("metrics address");
    scrape(&addr, "/metrics").await.1
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_serves_the_client_cas_certificates_only() {
    let twilio = twilio_answering(created(SID)).await;
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path());
    let (server_ca, client_ca, other_ca) = (
        Ca::new("server CA"),
        Ca::new("client CA"),
        Ca::new("other CA"),
    );
    files.write_server(&server_ca.server());
    std::fs::write(&files.client_ca, client_ca.pem()).unwrap();
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default()
            .args(files.tls_args())
            .arg(files.client_ca_arg())
            .args(["--metrics", "127.0.0.1:0", "--keep-warm-secs", "0"])
            .env("RUST_LOG", "otp_sidecar=debug"),
    );
    let addr = daemon.tcp;

    // A certificate from the client CA: served.
    let mut good = tls_client(addr, &server_ca.pem(), Some(&client_ca.client()))
        .await
        .expect("handshake");
    assert_eq!(
        send_token(&mut good, None).await,
        Ok(SID.to_owned()),
        "{}",
        daemon.log()
    );
    assert_eq!(sends(&twilio).await.len(), 1);

    // No certificate, and another CA's: refused, nothing sent.
    assert_refused(addr, &server_ca.pem(), None).await;
    assert_refused(addr, &server_ca.pem(), Some(&other_ca.client())).await;
    // A self-signed client certificate naming the client CA's subject is no better.
    assert_refused(addr, &server_ca.pem(), Some(&Ca::new("client CA").client())).await;

    // A plain client: the connection is closed, with no MessagePack reply.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"\x94\x00\x01\xa4ping\x90").await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut got)).await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "a plain client was kept open"
    );
    assert_ne!(
        got.first(),
        Some(&0x94),
        "a plain client got a reply: {got:?}"
    );

    // The good connection still works; the Unix socket stays plain.
    assert_eq!(send_token(&mut good, None).await, Ok(SID.to_owned()));
    assert_eq!(daemon.send("ACME").await, Ok(SID.to_owned()));
    assert_eq!(
        sends(&twilio).await.len(),
        3,
        "only the served clients' sends"
    );

    let metrics = metrics_of(&daemon).await;
    let count = |result: &str| {
        counter(
            &metrics,
            &format!("otp_sidecar_tls_handshakes_total{{result=\"{result}\"}}"),
        )
    };
    assert_eq!(count("ok"), 1, "{metrics}");
    assert!(count("bad_client_certificate") >= 2, "{metrics}");
    assert!(count("no_client_certificate") >= 1, "{metrics}");
    assert!(count("not_tls") >= 1, "{metrics}");
    daemon.wait_for_log("TLS handshake failed");
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handshake_that_never_finishes_stops_no_one() {
    let twilio = twilio_answering(created(SID)).await;
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path());
    let server_ca = Ca::new("server CA");
    files.write_server(&server_ca.server());
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args(files.tls_args()).args([
            "--idle-timeout-secs",
            "2",
            "--threads",
            "1",
            "--keep-warm-secs",
            "0",
        ]),
    );
    // Hostile clients: some open TCP and say nothing, one sends half a ClientHello.
    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(tokio::net::TcpStream::connect(daemon.tcp).await.unwrap());
    }
    let mut half = tokio::net::TcpStream::connect(daemon.tcp).await.unwrap();
    half.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        .await
        .unwrap();
    stalled.push(half);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Another client is served at once.
    let started = Instant::now();
    let mut good = tls_client(daemon.tcp, &server_ca.pem(), None)
        .await
        .expect("handshake");
    assert_eq!(send_token(&mut good, None).await, Ok(SID.to_owned()));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );

    // The stalled handshakes are given up on after the (idle-bounded) handshake timeout.
    for mut s in stalled {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(6), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a stalled handshake was kept open");
    }
    daemon.wait_for_log("TLS handshake failed: not finished within 2000 ms");
}

fn write_tokens(files: &Files, text: &str) {
    std::fs::write(&files.tokens, text).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn caller_tokens_gate_every_send() {
    let twilio = twilio_answering(created(SID)).await;
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path());
    write_tokens(
        &files,
        &format!("# the pool\nbigip-a {TOKEN_A}\n\nbigip-b {TOKEN_B}\n"),
    );
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default()
            .arg(files.tokens_arg())
            .args(["--rate-limit-phone=1/1h", "--metrics", "127.0.0.1:0"])
            .env("RUST_LOG", "trace"),
    );
    let mut client = daemon.unix_client().await;
    let unauthorized = |reply: Result<String, String>| {
        let e = reply.expect_err("refused");
        assert!(e.starts_with("ERR unauthorized: "), "{e}");
        e
    };
    // Wrong, missing, of the wrong type, as bytes, no context at all: refused.
    let wrong =
        unauthorized(send_token(&mut client, Some("tok-a-wrong-wrong-wrong-wrong".into())).await);
    assert_eq!(wrong, "ERR unauthorized: caller token not accepted");
    unauthorized(send_token(&mut client, None).await);
    let typed = unauthorized(send_token(&mut client, Some(42.into())).await);
    assert!(typed.contains("must be a string"), "{typed}");
    unauthorized(send_token(&mut client, Some(rmpv::Value::Binary(TOKEN_A.into()))).await);
    let bare = client.send_otp(OTP, PHONE, "ACME").await.unwrap();
    unauthorized(bare);
    // confirmOTP too; ping and health stay open.
    let confirm = client.call("confirmOTP", vec![PHONE.into()]).await.unwrap();
    assert!(confirm.unwrap_err().starts_with("ERR unauthorized"));
    assert_eq!(
        client.call("ping", vec![]).await.unwrap(),
        Ok("pong".into())
    );
    assert!(client.call("health", vec![]).await.unwrap().is_ok());
    assert!(
        sends(&twilio).await.is_empty(),
        "a refused call reached Twilio"
    );

    // The right token: sent, though the phone allows one send an hour (nothing was charged).
    assert_eq!(
        send_token(&mut client, Some(TOKEN_A.into())).await,
        Ok(SID.to_owned())
    );
    assert_eq!(sends(&twilio).await.len(), 1);
    // The limit now applies to a known caller; over TCP the same.
    let mut tcp = daemon.tcp_client().await;
    let limited = send_token(&mut tcp, Some(TOKEN_B.into()))
        .await
        .unwrap_err();
    assert!(limited.starts_with("ERR rate_limited"), "{limited}");
    // confirmOTP with a token gets past the check (and is refused for another reason here).
    let ctx = rmpv::Value::Map(vec![("token".into(), TOKEN_B.into())]);
    let confirm = client
        .call("confirmOTP", vec![PHONE.into(), ctx])
        .await
        .unwrap();
    assert!(confirm.unwrap_err().contains("needs Verify mode"));

    let line = daemon.wait_for_log("outcome=\"sent\"");
    assert!(line.contains("caller=\"bigip-a\""), "{line}");
    let refused = daemon.wait_for_log("reason=\"unauthorized\"");
    assert!(refused.contains("caller=\"none\""), "{refused}");
    daemon.wait_for_log("reason=\"rate_limited\"");
    let log = daemon.log();
    assert!(
        !log.contains(TOKEN_A) && !log.contains(TOKEN_B),
        "a token in the log:\n{log}"
    );

    let metrics = metrics_of(&daemon).await;
    let calls = |caller: &str, outcome: &str| {
        counter(
            &metrics,
            &format!("otp_sidecar_caller_calls_total{{caller=\"{caller}\",method=\"sendOTP\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(calls("bigip-a", "ok"), 1, "{metrics}");
    assert_eq!(calls("bigip-b", "error"), 1, "{metrics}");
    assert_eq!(calls("none", "error"), 5, "{metrics}");
    assert!(metrics.contains("reason=\"unauthorized\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_rereads_the_certificate_and_the_tokens() {
    let twilio = twilio_answering(created(SID)).await;
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path());
    let (old_ca, new_ca) = (Ca::new("old server CA"), Ca::new("new server CA"));
    files.write_server(&old_ca.server());
    write_tokens(&files, &format!("bigip-a {TOKEN_A}\n"));
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default()
            .args(files.tls_args())
            .arg(files.tokens_arg())
            .args(["--keep-warm-secs", "0"]),
    );
    let mut before = tls_client(daemon.tcp, &old_ca.pem(), None)
        .await
        .expect("old CA");
    assert_eq!(
        send_token(&mut before, Some(TOKEN_A.into())).await,
        Ok(SID.to_owned())
    );

    // A certificate from another CA, another caller's token.
    files.write_server(&new_ca.server());
    write_tokens(&files, &format!("# rotated\nbigip-b {TOKEN_B}\n"));
    daemon.signal("HUP");
    daemon.wait_for_log("configuration reloaded");
    assert!(
        tls_connect(daemon.tcp, &old_ca.pem(), None).await.is_err(),
        "the old certificate is still served"
    );
    let mut after = tls_client(daemon.tcp, &new_ca.pem(), None)
        .await
        .expect("new CA");
    let old = send_token(&mut after, Some(TOKEN_A.into()))
        .await
        .unwrap_err();
    assert!(old.starts_with("ERR unauthorized"), "{old}");
    assert_eq!(
        send_token(&mut after, Some(TOKEN_B.into())).await,
        Ok(SID.to_owned())
    );
    // The connection made before the reload keeps its session; its calls take the new tokens.
    let old_conn = send_token(&mut before, Some(TOKEN_A.into()))
        .await
        .unwrap_err();
    assert!(old_conn.starts_with("ERR unauthorized"), "{old_conn}");

    // A bad tokens file: the reload is refused (file:line, no token) and the tokens stay.
    write_tokens(&files, &format!("bigip-b {TOKEN_B}\nbigip-c\n"));
    daemon.signal("HUP");
    let refused = daemon.wait_for_log("reload refused");
    assert!(
        refused.contains(&format!("{}:2:", files.tokens.display())),
        "{refused}"
    );
    assert!(!daemon.log().contains(TOKEN_B), "{}", daemon.log());
    assert_eq!(
        send_token(&mut after, Some(TOKEN_B.into())).await,
        Ok(SID.to_owned())
    );

    // A bad key file: refused too, and the certificate in use stays.
    write_tokens(&files, &format!("bigip-b {TOKEN_B}\n"));
    std::fs::write(
        &files.key,
        "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    daemon.signal("HUP");
    poll_until(
        Duration::from_secs(5),
        || (daemon.count_log("reload refused") >= 2).then_some(()),
        || format!("no second refusal in:\n{}", daemon.log()),
    );
    assert!(daemon.log().contains("tls_key"), "{}", daemon.log());
    let mut still = tls_client(daemon.tcp, &new_ca.pem(), None)
        .await
        .expect("the kept certificate");
    assert_eq!(
        send_token(&mut still, Some(TOKEN_B.into())).await,
        Ok(SID.to_owned())
    );
}

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

/// Python's ssl module (a TLS stack we did not write) with a client certificate, and the
/// msgpack package (PyPI) encoding the request: sendOTP with a token over mutual TLS.
#[tokio::test(flavor = "multi_thread")]
async fn python_ssl_with_a_client_certificate_and_a_token() {
    let witness = witness_dir();
    let twilio = twilio_answering(created(SID)).await;
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path());
    let (server_ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
    files.write_server(&server_ca.server());
    std::fs::write(&files.client_ca, client_ca.pem()).unwrap();
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
    let files = Files::new(dir.path());
    let (server_ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
    files.write_server(&server_ca.server());
    std::fs::write(&files.client_ca, client_ca.pem()).unwrap();
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
