//! Caller tokens: every send needs one, and a SIGHUP re-reads them and the certificate.

use crate::common::*;
use crate::offbox::*;
use std::time::Duration;

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
    assert!(
        !format!("{confirm:?}").contains("unauthorized"),
        "{confirm:?}"
    );

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

    let metrics = metrics_of(&daemon).await.1;
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
