//! sendOTP against a mock Twilio on loopback, through a real daemon on real sockets.

use std::time::{Duration, Instant};

use crate::common::*;
use base64::Engine as _;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

#[tokio::test]
async fn sends_exactly_what_twilio_expects_and_replies_the_sid_over_both_sockets() {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .and(header("authorization", basic(AC, TOKEN).as_str()))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .respond_with(created(SID))
        .expect(2)
        .mount(&twilio)
        .await;
    let daemon = Daemon::start(&twilio.uri(), Options::default());

    let reply = daemon.send("+14155550100").await;
    assert_eq!(reply, Ok(SID.to_owned()));
    let reply = daemon
        .tcp_client()
        .await
        .send_otp(OTP, PHONE, "+14155550100")
        .await
        .unwrap();
    assert_eq!(reply, Ok(SID.to_owned()));

    let requests = sends(&twilio).await;
    let mut fields = form(&requests[0]);
    fields.sort();
    assert_eq!(
        fields,
        vec![
            ("Body".to_owned(), format!("Your OTP is: {OTP}")),
            ("From".to_owned(), "+14155550100".to_owned()),
            ("ProvideFeedback".to_owned(), "true".to_owned()),
            ("RiskCheck".to_owned(), "enable".to_owned()),
            ("To".to_owned(), PHONE.to_owned()),
        ]
    );
}

#[tokio::test]
async fn messaging_service_sender_validity_period_and_template() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default()
            .arg("--validity-period=300")
            .env("OTP_SIDECAR_BODY_TEMPLATE", "{otp} is your ACME code"),
    );
    let mg = "MG0123456789abcdef0123456789abcdef";
    let reply = daemon.send(mg).await;
    assert_eq!(reply, Ok(SID.to_owned()));
    let mut fields = form(&sends(&twilio).await[0]);
    fields.sort();
    assert_eq!(
        fields,
        vec![
            ("Body".to_owned(), format!("{OTP} is your ACME code")),
            ("MessagingServiceSid".to_owned(), mg.to_owned()),
            ("ProvideFeedback".to_owned(), "true".to_owned()),
            ("RiskCheck".to_owned(), "enable".to_owned()),
            ("To".to_owned(), PHONE.to_owned()),
            ("ValidityPeriod".to_owned(), "300".to_owned()),
        ]
    );
}

#[tokio::test]
async fn api_key_auth_keeps_the_account_sid_in_the_url() {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .and(header("authorization", basic(SK, API_SECRET).as_str()))
        .respond_with(created(SID))
        .expect(1)
        .mount(&twilio)
        .await;
    let daemon = Daemon::start(&twilio.uri(), Options::api_key());
    let reply = daemon.send("ACME").await;
    assert_eq!(reply, Ok(SID.to_owned()));
}

#[tokio::test]
async fn twilio_error_becomes_err_twilio_with_its_code() {
    let twilio = twilio_answering(twilio_error(
        400,
        21211,
        "Invalid 'To' Phone Number: +3161234XXXX",
    ))
    .await;
    let daemon = Daemon::start(&twilio.uri(), Options::default());
    let reply = daemon.send("ACME").await;
    assert_eq!(
        reply,
        Err("ERR twilio 21211: Invalid 'To' Phone Number: +3161234XXXX".to_owned())
    );
    assert_eq!(sends(&twilio).await.len(), 1);
}

#[tokio::test]
async fn a_twilio_message_starting_with_sms_never_reaches_the_caller_as_sm() {
    let twilio = twilio_answering(twilio_error(
        400,
        21408,
        "SMS is not enabled for the region",
    ))
    .await;
    let daemon = Daemon::start(&twilio.uri(), Options::default());
    let reply = daemon
        .tcp_client()
        .await
        .send_otp(OTP, PHONE, "ACME")
        .await
        .unwrap();
    let error = reply.unwrap_err();
    assert!(error.starts_with("ERR twilio 21408: SMS"), "{error}");
}

#[tokio::test]
async fn a_hanging_twilio_gives_err_timeout_at_the_deadline_and_the_daemon_stays_healthy() {
    let twilio = twilio_answering(created(SID).set_delay(Duration::from_secs(30))).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default().arg("--deadline-ms=400"));
    let mut client = daemon.unix_client().await;
    let started = Instant::now();
    let reply = client.send_otp(OTP, PHONE, "ACME").await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(
        reply,
        Err("ERR timeout: no answer within 400 ms".to_owned())
    );
    // Behaviour, not speed: the reply comes at the deadline, well before ILX's 3 s.
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
    assert_eq!(
        client.call("ping", vec![]).await.unwrap(),
        Ok("pong".into())
    );
    // A slow answer is never retried: a second SMS is worse than an error.
    assert_eq!(sends(&twilio).await.len(), 1);
}

#[tokio::test]
async fn too_many_requests_then_created_is_retried_once() {
    let twilio = twilio_except(
        Mock::given(method("POST"))
            .respond_with(
                twilio_error(429, 20429, "Too Many Requests").insert_header("retry-after", "1"),
            )
            .up_to_n_times(1),
    )
    .await;
    let daemon = Daemon::start(&twilio.uri(), Options::default());
    let started = Instant::now();
    let reply = daemon.send("ACME").await;
    assert_eq!(reply, Ok(SID.to_owned()));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(sends(&twilio).await.len(), 2);
}

#[tokio::test]
async fn retry_after_beyond_the_deadline_is_not_waited_for() {
    let twilio = twilio_answering(
        twilio_error(429, 20429, "Too Many Requests").insert_header("retry-after", "30"),
    )
    .await;
    let daemon = Daemon::start(&twilio.uri(), Options::default());
    let started = Instant::now();
    let reply = daemon.send("ACME").await;
    assert_eq!(reply, Err("ERR twilio 20429: Too Many Requests".to_owned()));
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert_eq!(sends(&twilio).await.len(), 1);
}

#[tokio::test]
async fn a_server_error_is_sent_once_and_not_retried() {
    let twilio =
        twilio_answering(ResponseTemplate::new(500).set_body_string("upstream broke")).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default());
    let reply = daemon.send("ACME").await;
    assert_eq!(
        reply,
        Err("ERR unavailable: Twilio answered HTTP 500".to_owned())
    );
    assert_eq!(sends(&twilio).await.len(), 1);
}

#[tokio::test]
async fn nothing_listening_gives_err_unavailable_within_the_deadline() {
    let api = format!("http://{}", dead_address());
    let daemon = Daemon::start(&api, Options::default());
    let started = Instant::now();
    let reply = daemon.send("ACME").await;
    let error = reply.unwrap_err();
    assert!(error.starts_with("ERR unavailable: "), "{error}");
    assert!(started.elapsed() < Duration::from_millis(2500));
}

#[tokio::test]
async fn invalid_input_is_refused_and_twilio_is_not_called() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default());
    let mut client = daemon.unix_client().await;
    let cases = [
        ((OTP, "0612345678", "ACME"), "ERR invalid_phone: "),
        ((OTP, "+31 6 12ab", "ACME"), "ERR invalid_phone: "),
        (("97", PHONE, "ACME"), "ERR bad_request: otp"),
        (("97531975319753", PHONE, "ACME"), "ERR bad_request: otp"),
        ((OTP, PHONE, "ACME Bank Ltd"), "ERR bad_request: sender"),
        ((OTP, PHONE, ""), "ERR bad_request: sender"),
    ];
    for ((otp, phone, sender), want) in cases {
        let error = client
            .send_otp(otp, phone, sender)
            .await
            .unwrap()
            .unwrap_err();
        assert!(error.starts_with(want), "{otp} {phone} {sender}: {error}");
        assert!(!error.contains(otp), "the OTP is never echoed: {error}");
    }
    assert_eq!(sends(&twilio).await.len(), 0);
}

#[tokio::test]
async fn dry_run_replies_sm_sids_and_sends_nothing() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options {
            no_credentials: true,
            ..Default::default()
        }
        .arg("--dry-run"),
    );
    assert!(daemon.log().contains("DRY RUN"), "dry-run says so at start");
    let mut client = daemon.tcp_client().await;
    let a = client.send_otp(OTP, PHONE, "ACME").await.unwrap().unwrap();
    let b = client.send_otp(OTP, PHONE, "ACME").await.unwrap().unwrap();
    for sid in [&a, &b] {
        assert!(is_sid(sid, "SM"), "{sid}");
    }
    assert_ne!(a, b);
    assert_eq!(sends(&twilio).await.len(), 0);
}

#[tokio::test]
async fn trace_logs_never_carry_the_otp_or_secrets_and_mask_the_phone() {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(created(SID))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .respond_with(twilio_error(400, 21614, "To number is not a mobile number"))
        .mount(&twilio)
        .await;
    let daemon = Daemon::start(&twilio.uri(), Options::api_key().env("RUST_LOG", "trace"));
    let mut client = daemon.unix_client().await;
    assert!(client.send_otp(OTP, PHONE, "ACME").await.unwrap().is_ok());
    assert!(client.send_otp(OTP, PHONE, "ACME").await.unwrap().is_err());
    // Arguments swapped by a buggy caller: the OTP sits where the phone should be.
    assert!(client.send_otp(PHONE, OTP, "ACME").await.unwrap().is_err());
    daemon.wait_for_log("reason=\"bad_request\"");
    let log = daemon.log();
    assert!(log.contains("+31*****5678"), "masked phone logged:\n{log}");
    assert!(
        log.contains(SID) && log.contains("twilio_code=21614"),
        "outcomes logged:\n{log}"
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{SK}:{API_SECRET}"));
    // Each line without its timestamp, whose microseconds hold any four digits now and then
    // (`23:29:44.851827Z` once held the OTP's middle four).
    let untimed: Vec<&str> = log
        .lines()
        .map(|line| match line.split_once(' ') {
            Some((time, rest)) if time.ends_with('Z') && time.contains('T') => rest,
            _ => line,
        })
        .collect();
    for secret in [OTP, &OTP[1..5], API_SECRET, encoded.as_str(), PHONE] {
        assert!(
            !untimed.iter().any(|line| line.contains(secret)),
            "{secret} leaked into the log:\n{log}"
        );
    }
}

#[tokio::test]
async fn twilio_is_reached_through_a_proxy_from_the_flag_or_the_environment() {
    // The API host does not resolve: only a proxy can deliver the request, in absolute form.
    let api = "http://twilio.invalid";
    for via_env in [false, true] {
        let proxy = twilio_answering(created(SID)).await;
        // Credentials in the proxy URL go on each request, as Proxy-Authorization.
        let proxy_url = proxy.uri().replace("http://", "http://squid:s3cret@");
        // Plain http:// to a host off loopback needs the explicit allow.
        let options = if via_env {
            Options::default().env("HTTP_PROXY", &proxy_url)
        } else {
            Options::default().arg(format!("--proxy={proxy_url}"))
        }
        .arg("--allow-insecure-twilio-url");
        let daemon = Daemon::start(api, options);
        let reply = daemon.send("ACME").await;
        assert_eq!(reply, Ok(SID.to_owned()), "via_env={via_env}");
        let seen = sends(&proxy).await;
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].url.host_str(), Some("twilio.invalid"));
        assert_eq!(
            seen[0]
                .headers
                .get("proxy-authorization")
                .and_then(|v| v.to_str().ok()),
            Some(basic("squid", "s3cret").as_str())
        );
    }
}

#[tokio::test]
async fn https_goes_through_a_connect_tunnel_with_the_proxy_credentials_and_no_proxy_is_honoured() {
    let twilio = crate::common::tls::TlsTwilio::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &twilio.ca_pem).unwrap();
    // The certificate names twilio.invalid, which never resolves: only the tunnel gets there.
    let api = format!("https://twilio.invalid:{}", twilio.addr.port());
    let ca_flag = format!("--twilio-ca-file={}", ca.display());

    for via_env in [false, true] {
        let proxy = crate::common::proxy::ConnectProxy::start(twilio.addr).await;
        let with_credentials = proxy.url.replace("http://", "http://squid:s3cret@");
        let options = if via_env {
            Options::default()
                .arg(ca_flag.clone())
                .env("HTTPS_PROXY", &with_credentials)
        } else {
            Options::default().args([ca_flag.clone(), format!("--proxy={with_credentials}")])
        };
        let daemon = Daemon::start(&api, options);
        assert_eq!(
            daemon.send("ACME").await,
            Ok(SID.to_owned()),
            "via_env={via_env}"
        );
        let tunnels = proxy.tunnels();
        assert!(!tunnels.is_empty(), "via_env={via_env}");
        for tunnel in tunnels {
            assert_eq!(
                tunnel.target,
                format!("twilio.invalid:{}", twilio.addr.port())
            );
            assert_eq!(
                tunnel.authorization.as_deref(),
                Some(basic("squid", "s3cret").as_str())
            );
        }
    }
    assert!(twilio.posts() >= 2);

    // NO_PROXY names the API host: the daemon goes direct (and cannot resolve it).
    let proxy = crate::common::proxy::ConnectProxy::start(twilio.addr).await;
    let daemon = Daemon::start(
        &api,
        Options::default()
            .args([ca_flag.clone(), format!("--proxy={}", proxy.url)])
            .env("NO_PROXY", "twilio.invalid"),
    );
    let reply = daemon.send("ACME").await.unwrap_err();
    assert!(reply.starts_with("ERR unavailable: "), "{reply}");
    assert!(proxy.tunnels().is_empty());
}

/// What a caller gets for any 2xx that does not name the message it created.
const NO_VALID_SID: &str = "ERR internal: Twilio answered without a valid SID";

/// 201 bodies whose `sid` is not what Messages creates (`SM` + exactly 32 hex digits).
fn bad_sid_answers() -> Vec<(String, ResponseTemplate)> {
    let hex = |n: usize| {
        "0123456789abcdef"
            .chars()
            .cycle()
            .take(n)
            .collect::<String>()
    };
    let with_sid = |sid: serde_json::Value| {
        ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "sid": sid, "status": "queued", "account_sid": AC, "to": PHONE,
        }))
    };
    let mut answers: Vec<(String, ResponseTemplate)> = [
        "SMabc".to_owned(),
        "SMSisfine".to_owned(),
        format!("SM{}", hex(31)),
        format!("SM{}", hex(33)),
        format!("SM{}", hex(224)),
        format!("SM{}g", hex(31)),
        format!("sm{}", hex(32)),
        // Another API's SID: a call or a verification is not a message.
        format!("CA{}", hex(32)),
        format!("VE{}", hex(32)),
        "ERR".to_owned(),
        String::new(),
    ]
    .into_iter()
    .map(|sid| (format!("sid {sid:?}"), with_sid(sid.into())))
    .collect();
    answers.extend([
        ("sid 42".to_owned(), with_sid(42.into())),
        ("sid null".to_owned(), with_sid(serde_json::Value::Null)),
        ("sid [SM…]".to_owned(), with_sid(serde_json::json!([SID]))),
        (
            "no sid".to_owned(),
            ResponseTemplate::new(201)
                .set_body_json(serde_json::json!({"status": "queued", "to": PHONE})),
        ),
        (
            "a bare SID, not JSON".to_owned(),
            ResponseTemplate::new(201).set_body_string(SID),
        ),
        ("200, empty".to_owned(), ResponseTemplate::new(200)),
    ]);
    answers
}

#[tokio::test]
async fn a_2xx_without_a_valid_message_sid_is_never_a_success_and_never_sent_again() {
    let twilio = MockServer::start().await;
    let daemon = Daemon::start(&twilio.uri(), Options::default());
    for (what, answer) in bad_sid_answers() {
        twilio.reset().await;
        Mock::given(method("POST"))
            .and(path(messages_path()))
            .respond_with(answer)
            .mount(&twilio)
            .await;
        // The bundled client, as a script would use it: the reply line and exit 1.
        let out = command()
            .args(["send", OTP, PHONE, "ACME", "--unix"])
            .arg(&daemon.unix)
            .output()
            .expect("run send");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.trim_end(), NO_VALID_SID, "{what}");
        assert_eq!(out.status.code(), Some(1), "{what}");
        // The message may have gone out: it is never sent again.
        assert_eq!(sends(&twilio).await.len(), 1, "{what}");
    }
    // The same rule on the RPC socket, and a good SID still passes.
    twilio.reset().await;
    Mock::given(method("POST"))
        .respond_with(created(SID))
        .mount(&twilio)
        .await;
    assert_eq!(daemon.send("ACME").await, Ok(SID.to_owned()));
}

#[tokio::test]
async fn a_server_error_saying_20429_is_not_a_429_and_is_sent_once() {
    for status in [500, 502, 503] {
        let twilio = twilio_answering(twilio_error(status, 20429, "Too Many Requests")).await;
        let daemon = Daemon::start(&twilio.uri(), Options::default());
        assert_eq!(
            daemon.send("ACME").await,
            Err("ERR twilio 20429: Too Many Requests".to_owned()),
            "{status}"
        );
        assert_eq!(sends(&twilio).await.len(), 1, "{status}");
    }
    // Only HTTP 429 is waited for: a 400 carrying 20429 is Twilio's final answer too.
    let twilio = twilio_answering(twilio_error(400, 20429, "Too Many Requests")).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default());
    assert!(daemon.send("ACME").await.is_err());
    assert_eq!(sends(&twilio).await.len(), 1);
}

#[tokio::test]
async fn a_dead_proxy_is_named_in_the_reply_and_the_log_without_its_password() {
    let dead = dead_address();
    let password = "pr0xyS3cretPW";
    // The API host does not resolve: everything must go through the (dead) proxy.
    for api in ["http://twilio.invalid", "https://twilio.invalid"] {
        let daemon = Daemon::start(
            api,
            Options::default()
                .arg(format!("--proxy=http://squid:{password}@{dead}"))
                .arg("--allow-insecure-twilio-url")
                .env("RUST_LOG", "trace"),
        );
        let reply = daemon.send("ACME").await.unwrap_err();
        let want = format!("ERR unavailable: proxy {dead} unreachable");
        assert!(reply.starts_with(&want), "{api}: {reply}");
        daemon.wait_for_log("outcome=");
        let log = daemon.log();
        assert!(
            log.contains(&format!("proxy {dead} unreachable")),
            "{api}:\n{log}"
        );
        for secret in [password, "squid:"] {
            assert!(!reply.contains(secret), "{api}: {reply}");
            assert!(!log.contains(secret), "{api}: {secret} in\n{log}");
        }
    }

    // A live proxy that will not open the tunnel (407) is named too, as refusing it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refusing = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
            let _ = conn
                .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
                .await;
        }
    });
    let daemon = Daemon::start(
        "https://twilio.invalid",
        Options::default().arg(format!("--proxy=http://squid:{password}@{refusing}")),
    );
    let reply = daemon.send("ACME").await.unwrap_err();
    let want = format!("ERR unavailable: proxy {refusing} refused the tunnel");
    assert!(reply.starts_with(&want), "{reply}");
    assert!(!reply.contains(password), "{reply}");
    daemon.wait_for_log("Twilio unavailable");
    assert!(!daemon.log().contains(password), "{}", daemon.log());
}

/// Twilio's answer to GET /2010-04-01/Accounts/{AC}.json.
fn account(status: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "sid": AC, "status": status, "friendly_name": "ACME OTP", "type": "Full",
    }))
}

fn account_path() -> String {
    format!("/2010-04-01/Accounts/{AC}.json")
}

/// Nothing `check` prints may carry the token, as such or inside a Basic header.
fn assert_no_token(stdout: &str, stderr: &str) {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{AC}:{TOKEN}"));
    for secret in [TOKEN, encoded.as_str()] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} in\n{stdout}\n{stderr}"
        );
    }
}

#[tokio::test]
async fn check_online_asks_twilio_for_the_account_and_says_whether_the_credentials_work() {
    let twilio = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(account_path()))
        .and(header("authorization", basic(AC, TOKEN).as_str()))
        .respond_with(account("active"))
        .mount(&twilio)
        .await;
    let api = twilio.uri();

    // Offline (the default), nothing is asked.
    let (passed, stdout, stderr) = check(&["--twilio-api-url", &api]);
    assert!(passed, "{stderr}");
    assert!(!stdout.contains("twilio:"), "{stdout}");
    assert!(twilio.received_requests().await.unwrap().is_empty());

    let (passed, stdout, stderr) = check(&["--online", "--twilio-api-url", &api]);
    assert!(passed, "{stdout}\n{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l == "twilio: credentials accepted (account ACfe…ce status active)"),
        "{stdout}"
    );
    assert_no_token(&stdout, &stderr);
    // One GET of the account; nothing sent.
    let seen = twilio.received_requests().await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, wiremock::http::Method::GET);

    // A suspended account takes the credentials but sends nothing: not a pass.
    twilio.reset().await;
    Mock::given(method("GET"))
        .and(path(account_path()))
        .respond_with(account("suspended"))
        .mount(&twilio)
        .await;
    let (passed, stdout, _) = check(&["--online", "--twilio-api-url", &api]);
    assert!(!passed, "{stdout}");
    assert!(stdout.contains("status suspended"), "{stdout}");
}

#[tokio::test]
async fn check_online_fails_on_refused_credentials_bad_answers_and_no_twilio() {
    let twilio = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(account_path()))
        .respond_with(twilio_error(401, 20003, "Authenticate"))
        .mount(&twilio)
        .await;
    let api = twilio.uri();
    let (passed, stdout, stderr) = check(&["--online", "--twilio-api-url", &api]);
    assert!(!passed, "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l == "twilio: credentials refused (HTTP 401, code 20003)"),
        "{stdout}"
    );
    assert_no_token(&stdout, &stderr);

    // A 200 that does not name the account proves nothing.
    twilio.reset().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>portal</html>"))
        .mount(&twilio)
        .await;
    let (passed, stdout, _) = check(&["--online", "--twilio-api-url", &api]);
    assert!(!passed, "{stdout}");
    assert!(
        stdout.contains("twilio: unexpected answer (HTTP 200 without a valid account SID)"),
        "{stdout}"
    );

    // Nothing listening: the line names where Twilio was looked for.
    let dead = dead_address();
    let (passed, stdout, stderr) =
        check(&["--online", "--twilio-api-url", &format!("http://{dead}")]);
    assert!(!passed, "{stdout}");
    assert!(
        stdout.contains(&format!("twilio: unreachable at {dead}")),
        "{stdout}\n{stderr}"
    );
    assert_no_token(&stdout, &stderr);
}
