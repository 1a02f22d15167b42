//! The daemon's Messages request, checked against Twilio's published OpenAPI spec by Prism
//! (a spec-validating mock): Prism answers 201 with the spec's example only when the path,
//! auth and every form field conform, and 422/401 otherwise.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;

pub(crate) struct Prism(Child);

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One of Twilio's specs, vendored in `tests/twilio-oai/` (MIT, with Twilio's LICENSE).
fn spec(name: &str) -> std::path::PathBuf {
    let spec = repo_file("tests/twilio-oai").join(name);
    assert!(
        spec.is_file(),
        "Twilio's spec is missing at {}",
        spec.display()
    );
    spec
}

/// Starts Prism on a free loopback port; waits (up to 90 s: the spec is large) until it listens.
/// `errors`: also fail when Prism's own answer breaks the spec (the Lookup spec's example
/// does: nulls where it declares objects), not only when the request does.
pub(crate) fn start_prism(spec_name: &str, errors: bool) -> (Prism, String) {
    let port = dead_address().port();
    let mut child = Command::new(witness_dir().join("node_modules/.bin/prism"))
        .arg("mock")
        .args(errors.then_some("--errors"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .arg(spec(spec_name))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start prism");
    let stdout = child.stdout.take().expect("piped");
    let prism = Prism(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("Prism is listening") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(90))
        .expect("Prism did not start within 90 s");
    (prism, format!("http://127.0.0.1:{port}"))
}

#[tokio::test]
async fn messages_requests_conform_to_twilios_openapi_spec() {
    let (_prism, api) = start_prism("twilio_api_v2010.json", true);

    // Prism really validates: a request without To is refused, one without auth too.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("{api}{}", messages_path());
    let refused = http
        .post(&url)
        .basic_auth(AC, Some(TOKEN))
        .form(&[("Body", "x"), ("From", "+14155550100")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 422);
    let refused = http
        .post(&url)
        .form(&[("To", PHONE), ("Body", "x"), ("From", "+14155550100")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);

    let auth_token = Daemon::start(&api, Options::default().arg("--validity-period=300"));
    let api_key = Daemon::start(&api, Options::api_key());
    for (daemon, sender) in [
        (&auth_token, "+14155550100"),
        (&auth_token, "ACME"),
        (&auth_token, "MG0123456789abcdef0123456789abcdef"),
        (&api_key, "+14155550100"),
    ] {
        let reply = daemon.send(sender).await;
        // The spec's example SID: Prism accepted the request as conforming.
        assert_eq!(
            reply,
            Ok("SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_owned()),
            "sender {sender}"
        );
    }

    // confirmOTP's Message Feedback (Outcome=confirmed on the SID sent): Prism takes it.
    let feedback = Daemon::start(&api, Options::default().arg("--metrics=127.0.0.1:0"));
    assert!(feedback.send("ACME").await.is_ok());
    let confirmed = feedback
        .unix_client()
        .await
        .call("confirmOTP", vec![PHONE.into()])
        .await
        .unwrap();
    assert_eq!(confirmed, Ok("SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into()));
    for _ in 0..250 {
        let (_, metrics) = metrics_of(&feedback).await;
        if metrics.contains("otp_sidecar_message_feedback_total{result=\"ok\"} 1") {
            return;
        }
        assert!(!metrics.contains("result=\"failed\""), "{}", feedback.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("Prism never took the Feedback:\n{}", feedback.log());
}

#[tokio::test]
async fn lookup_requests_conform_to_twilios_openapi_spec() {
    let (_prism, lookups) = start_prism("twilio_lookups_v2.json", false);

    // Prism really validates: without auth 401, on a wrong path 404.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("{lookups}/v2/PhoneNumbers/{PHONE}?Fields=line_type_intelligence");
    assert_eq!(http.get(&url).send().await.unwrap().status().as_u16(), 401);
    let wrong = format!("{lookups}/v2/PhoneNumber/{PHONE}");
    let status = http
        .get(&wrong)
        .basic_auth(AC, Some(TOKEN))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 404);

    // Fail closed: the send goes out only if Prism accepted the Lookup request.
    let twilio = twilio_answering(created(SID)).await;
    for options in [Options::default(), Options::api_key()] {
        let daemon = Daemon::start(
            &twilio.uri(),
            options.args([
                "--lookup".to_owned(),
                format!("--lookup-api-url={lookups}"),
                "--lookup-failure=closed".to_owned(),
            ]),
        );
        assert_eq!(daemon.send("ACME").await, Ok(SID.to_owned()));
    }
    assert_eq!(sends(&twilio).await.len(), 2);
}

#[tokio::test]
async fn verify_requests_conform_to_twilios_openapi_spec() {
    let (_prism, verify) = start_prism("twilio_verify_v2.json", true);
    let va = "VA0123456789abcdef0123456789abcdef";
    let example = "VEaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    // Prism really validates: no Channel, a Status outside the enum, a malformed service SID.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let start = format!("{verify}/v2/Services/{va}/Verifications");
    let post = |url: String, form: &'static [(&'static str, &'static str)]| {
        http.post(url).basic_auth(AC, Some(TOKEN)).form(form).send()
    };
    let refused = post(start.clone(), &[("To", PHONE)]).await.unwrap();
    assert_eq!(refused.status().as_u16(), 422);
    let refused = post(format!("{start}/{PHONE}"), &[("Status", "done")])
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 422);
    let wrong_service = format!("{verify}/v2/Services/VA123/Verifications");
    let refused = post(wrong_service, &[("To", PHONE), ("Channel", "sms")])
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 422);

    let options = |o: Options| {
        o.args([
            "--verify-service-sid".to_owned(),
            va.to_owned(),
            format!("--verify-api-url={verify}"),
        ])
    };
    for daemon in [
        Daemon::start(&verify, options(Options::default())),
        Daemon::start(&verify, options(Options::api_key())),
    ] {
        let mut client = daemon.unix_client().await;
        for ctx in [
            context(&[]),
            context(&[("locale", "pt_BR"), ("channel", "voice")]),
        ] {
            // The spec's example SID: Prism accepted the request as conforming.
            assert_eq!(send_with(&mut client, PHONE, ctx).await, Ok(example.into()));
        }
        for target in [PHONE, example] {
            // Prism answers with the spec's first example, a canceled verification: the
            // request conformed (else 422), and the daemon does not call that approved.
            let reply = client
                .call("confirmOTP", vec![target.into()])
                .await
                .expect("answered");
            assert_eq!(
                reply,
                Err(format!(
                    "ERR internal: Twilio left verification {example} canceled, not approved"
                )),
                "{target}"
            );
        }
    }
}

#[tokio::test]
async fn calls_requests_conform_to_twilios_openapi_spec() {
    let (_prism, api) = start_prism("twilio_api_v2010.json", true);

    // Prism really validates: a call without From is refused.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("{api}/2010-04-01/Accounts/{AC}/Calls.json");
    let refused = http
        .post(&url)
        .basic_auth(AC, Some(TOKEN))
        .form(&[("To", PHONE), ("Twiml", "<Response/>")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 422);

    for options in [Options::default(), Options::api_key()] {
        let daemon = Daemon::start(&api, options.arg("--channel=voice"));
        // The spec's example SID: Prism accepted the request as conforming.
        assert_eq!(
            daemon.send("+14155550100").await,
            Ok("CAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_owned())
        );
    }
}

#[tokio::test]
async fn delivery_requests_conform_to_twilios_openapi_spec() {
    let (_prism, api) = start_prism("twilio_api_v2010.json", true);
    let sid = "SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    // Prism really validates the fetch: a SID of another resource is refused.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let refused = http
        .get(format!(
            "{api}/2010-04-01/Accounts/{AC}/Messages/CAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.json"
        ))
        .basic_auth(AC, Some(TOKEN))
        .send()
        .await
        .unwrap();
    assert!(refused.status().is_client_error(), "{}", refused.status());

    // StatusCallback on the create (callback mode), accepted as conforming.
    let port = crate::common::store::free_port();
    let callbacks = Daemon::start(
        &api,
        Options::default().args([
            "--delivery-status=callback",
            &format!("--delivery-callback-url=http://127.0.0.1:{port}/twilio/status"),
            &format!("--delivery-callback-listen=127.0.0.1:{port}"),
        ]),
    );
    assert_eq!(callbacks.send("+14155550100").await, Ok(sid.to_owned()));

    // The poll's GET of the message, with both credential kinds: the spec's example
    // answers `sent`, which only an accepted fetch can have told the daemon.
    for options in [Options::default(), Options::api_key()] {
        let daemon = Daemon::start(&api, options);
        assert_eq!(daemon.send("+14155550100").await, Ok(sid.to_owned()));
        let mut client = daemon.unix_client().await;
        let mut status = rmpv::Value::Nil;
        for _ in 0..100 {
            status = client
                .call("deliveryStatus", vec![sid.into()])
                .await
                .unwrap()
                .unwrap();
            if status.as_str() != Some("queued") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(status.as_str(), Some("sent"), "{}", daemon.log());
    }
}
