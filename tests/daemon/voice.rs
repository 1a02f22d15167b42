//! Voice: a call that reads the code out (Calls API, inline TwiML), asked for by the caller or
//! the configuration, and the fallback from SMS to a call, against a mock Twilio on loopback.

use crate::common::*;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CA: &str = "CA0123456789abcdef0123456789abcdef";
const FROM: &str = "+14155550100";

fn calls_path() -> String {
    format!("/2010-04-01/Accounts/{AC}/Calls.json")
}

fn call_created() -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(serde_json::json!({
        "sid": CA, "status": "queued", "account_sid": AC, "to": PHONE,
    }))
}

/// A Twilio stand-in: Calls answered with `CA`, Messages with `messages`.
async fn twilio(messages: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(calls_path()))
        .respond_with(call_created())
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .respond_with(messages)
        .mount(&server)
        .await;
    server
}

/// The paths of the POSTs Twilio received, in order.
async fn posted(server: &MockServer) -> Vec<String> {
    sends(server)
        .await
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect()
}

#[tokio::test]
async fn a_caller_asking_for_voice_gets_a_call_that_reads_the_code_twice() {
    let twilio = twilio(created(SID)).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default());
    let mut client = daemon.unix_client().await;

    let params = vec![
        OTP.into(),
        PHONE.into(),
        FROM.into(),
        context(&[("channel", "voice")]),
    ];
    let reply = client.call("sendOTP", params).await.unwrap();
    assert_eq!(reply, Ok(CA.into()));

    let requests = sends(&twilio).await;
    assert_eq!(requests.len(), 1);
    let call = &requests[0];
    assert_eq!(call.url.path(), calls_path());
    assert_eq!(
        (
            field(call, "To").expect("To in the form"),
            field(call, "From").expect("From in the form")
        ),
        (PHONE.to_owned(), FROM.to_owned())
    );
    let say = "<Say language=\"en-US\">Your code is 9, 1, 8, 2, 7, 3.</Say>";
    assert_eq!(
        field(call, "Twiml").expect("Twiml in the form"),
        format!("<Response>{say}<Pause length=\"1\"/>{say}</Response>")
    );
    assert_eq!(
        field(call, "TimeLimit").expect("TimeLimit in the form"),
        "60"
    );
    assert!(!daemon.log().contains(OTP));
}

#[tokio::test]
async fn voice_by_configuration_with_its_own_caller_id_language_and_text() {
    let twilio = twilio(created(SID)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args([
            "--channel=voice",
            "--voice-from=+3197010000000",
            "--voice-language=nl-NL",
            "--voice-template=Uw code is {digits}.",
        ]),
    );
    // An alphanumeric sender cannot place a call; voice_from does.
    assert_eq!(daemon.send("ACME").await, Ok(CA.to_owned()));
    // The caller can still ask for an SMS.
    let mut client = daemon.unix_client().await;
    let reply = send_with(&mut client, PHONE, context(&[("channel", "sms")])).await;
    assert_eq!(reply, Ok(SID.into()));

    let requests = sends(&twilio).await;
    assert_eq!(
        field(&requests[0], "From").expect("From in the form"),
        "+3197010000000"
    );
    let twiml = field(&requests[0], "Twiml").expect("Twiml in the form");
    assert!(
        twiml.contains("<Say language=\"nl-NL\">Uw code is 9, 1, 8, 2, 7, 3.</Say>"),
        "{twiml}"
    );
    assert_eq!(requests[1].url.path(), messages_path());
}

#[tokio::test]
async fn voice_without_a_caller_number_is_refused_before_anything_is_sent() {
    let twilio = twilio(created(SID)).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default().arg("--channel=voice"));
    let reply = daemon.send("ACME").await.unwrap_err();
    assert!(
        reply.starts_with("ERR bad_request: a voice call needs a caller ID number"),
        "{reply}"
    );
    assert!(sends(&twilio).await.is_empty());
}

#[tokio::test]
async fn an_sms_twilio_refuses_for_a_landline_falls_back_to_a_call_only_when_asked() {
    let not_mobile = || twilio_error(400, 21614, "'To' number is not a valid mobile number");
    let mock = twilio(not_mobile()).await;
    let with = Daemon::start(&mock.uri(), Options::default().arg("--voice-fallback"));
    assert_eq!(with.send(FROM).await, Ok(CA.to_owned()));
    assert_eq!(posted(&mock).await, vec![messages_path(), calls_path()]);

    let mock = twilio(not_mobile()).await;
    let without = Daemon::start(&mock.uri(), Options::default());
    assert_eq!(
        without.send(FROM).await,
        Err("ERR twilio 21614: 'To' number is not a valid mobile number".to_owned())
    );
    assert_eq!(posted(&mock).await, vec![messages_path()]);
}

#[tokio::test]
async fn other_sms_failures_and_senders_that_cannot_call_never_fall_back() {
    for (answer, sender, want) in [
        (
            twilio_error(400, 21211, "Invalid 'To' Phone Number"),
            FROM,
            "ERR twilio 21211: Invalid 'To' Phone Number",
        ),
        // Accepted or not, a 500 is never followed by a second delivery.
        (
            ResponseTemplate::new(500),
            FROM,
            "ERR unavailable: Twilio answered HTTP 500",
        ),
        (
            twilio_error(400, 21614, "not a mobile number"),
            "ACME",
            "ERR twilio 21614: not a mobile number",
        ),
    ] {
        let twilio = twilio(answer).await;
        let daemon = Daemon::start(&twilio.uri(), Options::default().arg("--voice-fallback"));
        assert_eq!(daemon.send(sender).await, Err(want.to_owned()));
        assert_eq!(posted(&twilio).await, vec![messages_path()], "{want}");
    }
}

#[tokio::test]
async fn a_number_lookup_calls_a_landline_gets_a_call_instead_of_a_text() {
    let twilio = twilio(created(SID)).await;
    for (phone, line_type) in [(PHONE, "landline"), ("+31612340000", "mobile")] {
        Mock::given(method("GET"))
            .and(path(format!("/v2/PhoneNumbers/{phone}")))
            .and(query_param("Fields", "line_type_intelligence"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "phone_number": phone,
                "line_type_intelligence": { "type": line_type, "error_code": null },
            })))
            .mount(&twilio)
            .await;
    }
    let lookup = format!("--lookup-api-url={}", twilio.uri());
    let with = Daemon::start(
        &twilio.uri(),
        Options::default().args(["--lookup", "--voice-fallback", &lookup]),
    );
    let mut client = with.unix_client().await;
    assert_eq!(
        client.send_otp(OTP, PHONE, FROM).await.unwrap(),
        Ok(CA.to_owned())
    );
    assert_eq!(
        client.send_otp(OTP, "+31612340000", FROM).await.unwrap(),
        Ok(SID.to_owned())
    );
    assert_eq!(posted(&twilio).await, vec![calls_path(), messages_path()]);

    // Without the fallback a landline is texted like any other number.
    let without = Daemon::start(
        &twilio.uri(),
        Options::default().args(["--lookup", &lookup]),
    );
    assert_eq!(without.send(FROM).await, Ok(SID.to_owned()));
}

#[tokio::test]
async fn a_dry_run_call_answers_a_made_up_ca_sid() {
    let twilio = twilio(created(SID)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args(["--dry-run", "--channel=voice"]),
    );
    let sid = daemon.send(FROM).await.unwrap();
    assert!(is_sid(&sid, "CA"), "{sid}");
    // What a real run would refuse, a dry run refuses too.
    let refused = daemon.send("ACME").await.unwrap_err();
    assert!(
        refused.starts_with("ERR bad_request: a voice call needs"),
        "{refused}"
    );
    assert!(sends(&twilio).await.is_empty());
}

#[test]
fn check_reports_the_channel_and_bad_voice_settings_stop_the_start() {
    let (passed, stdout, stderr) = check(&[
        "--channel=voice",
        "--voice-fallback",
        "--voice-from=+3197010000000",
        "--voice-language=nl-NL",
    ]);
    assert!(passed, "{stderr}");
    assert!(
        stdout.contains(
            "channel:      voice (calls from +3197010000000, in nl-NL, fallback to a call on)"
        ),
        "{stdout}"
    );

    for (arg, needle) in [
        ("--voice-from=ACME", "voice_from"),
        ("--voice-template=no code", "voice_template"),
        ("--voice-language=en US", "voice_language"),
        ("--channel=fax", "channel"),
    ] {
        check_refuses(&[arg], needle);
    }
}

#[tokio::test]
async fn a_call_answered_without_a_valid_ca_sid_is_an_error_placed_once() {
    for sid in ["CAabc", SID, "CA0123456789abcdef0123456789abcdeff"] {
        let twilio = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(calls_path()))
            .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
                "sid": sid, "status": "queued", "to": PHONE,
            })))
            .mount(&twilio)
            .await;
        let daemon = Daemon::start(
            &twilio.uri(),
            Options::default().arg(format!("--voice-from={FROM}")),
        );
        let mut client = daemon.unix_client().await;
        let reply = send_with(&mut client, PHONE, context(&[("channel", "voice")])).await;
        assert_eq!(
            reply,
            Err("ERR internal: Twilio answered without a valid SID".to_owned()),
            "{sid}"
        );
        assert_eq!(posted(&twilio).await, vec![calls_path()], "{sid}");
    }
}
