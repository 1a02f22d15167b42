//! Fraud guards: the optional context map (advice that never blocks an OTP) and the rate
//! limits per phone, IP, user and in all.

use std::time::Duration;

use crate::common::*;
use rmpv::Value;

#[tokio::test]
async fn the_phone_limit_refuses_then_resets_after_its_window() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().arg("--rate-limit-phone=2/2s"),
    );
    let mut client = daemon.unix_client().await;
    for _ in 0..2 {
        assert_eq!(
            client.send_otp(OTP, PHONE, "ACME").await.unwrap(),
            Ok(SID.into())
        );
    }
    assert_eq!(
        client.send_otp(OTP, PHONE, "ACME").await.unwrap(),
        Err("ERR rate_limited: retry in 1 s".into())
    );
    // Refused means not sent; another number is not affected.
    assert_eq!(sends(&twilio).await.len(), 2);
    assert_eq!(
        client.send_otp(OTP, "+31687654321", "ACME").await.unwrap(),
        Ok(SID.into())
    );
    // One more is allowed once its share of the window has passed.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        client.send_otp(OTP, PHONE, "ACME").await.unwrap(),
        Ok(SID.into())
    );
    let line = daemon.wait_for_log("reason=\"rate_limited\"");
    assert!(
        line.contains("limit=\"phone\"") && line.contains("+31*****5678"),
        "{line}"
    );
    assert!(!daemon.log().contains(OTP));
}

#[tokio::test]
async fn ip_and_user_limits_read_the_context_map() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args(["--rate-limit-ip=2/1m", "--rate-limit-user=3/1m"]),
    );
    let mut client = daemon.unix_client().await;
    let phones = [
        "+31600000001",
        "+31600000002",
        "+31600000003",
        "+31600000004",
    ];

    // One address, different phones and users: the third is refused.
    let from_ip = |user: &str| context(&[("ip", "192.0.2.7%1"), ("user", user)]);
    assert!(send_with(&mut client, phones[0], from_ip("a"))
        .await
        .is_ok());
    assert!(send_with(&mut client, phones[1], from_ip("b"))
        .await
        .is_ok());
    let refused = send_with(&mut client, phones[2], from_ip("c")).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.starts_with("ERR rate_limited: retry in ")),
        "{refused:?}"
    );

    // One user from different addresses: the fourth is refused (the third address's send
    // above was refused, so it charged nothing).
    for (i, phone) in phones.iter().enumerate().take(2) {
        let ctx = context(&[("ip", &format!("198.51.100.{i}")), ("user", "carol")]);
        assert!(send_with(&mut client, phone, ctx).await.is_ok());
    }
    let ctx = context(&[("ip", "198.51.100.9"), ("user", "carol")]);
    assert!(send_with(&mut client, phones[2], ctx).await.is_ok());
    let ctx = context(&[("ip", "198.51.100.10"), ("user", "carol")]);
    assert!(send_with(&mut client, phones[3], ctx).await.is_err());

    // Without a context only the phone and global limits apply; nil means no context.
    assert!(client
        .send_otp(OTP, phones[0], "ACME")
        .await
        .unwrap()
        .is_ok());
    assert!(send_with(&mut client, phones[1], Value::Nil).await.is_ok());
    assert_eq!(sends(&twilio).await.len(), 2 + 3 + 2);
    daemon.wait_for_log("limit=\"ip\"");
    daemon.wait_for_log("limit=\"user\"");
}

#[tokio::test]
async fn the_global_ceiling_applies_to_every_phone() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args(["--rate-limit-global=2/1m", "--metrics=127.0.0.1:0"]),
    );
    let mut client = daemon.unix_client().await;
    for phone in ["+31600000001", "+31600000002"] {
        assert!(client.send_otp(OTP, phone, "ACME").await.unwrap().is_ok());
    }
    let reply = client.send_otp(OTP, "+31600000003", "ACME").await.unwrap();
    let refused = reply.unwrap_err();
    assert!(refused.starts_with("ERR rate_limited: "), "{refused}");
    assert_retry_in(&refused, 25..=30);
    assert_eq!(sends(&twilio).await.len(), 2);

    let addr = log_field(&daemon.ready, "metrics").unwrap();
    let (_, text) = scrape(&addr, "/metrics").await;
    for line in [
        r#"otp_sidecar_rate_limited_total{limit="global"} 1"#,
        r#"otp_sidecar_calls_total{method="sendOTP",outcome="error",reason="rate_limited"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
}

/// sendOTP of the standard OTP with a context written as raw MessagePack: a str that is not
/// UTF-8 cannot be built with rmpv, which writes one as bin.
async fn send_raw_context(daemon: &Daemon, phone: &str, context: &[u8]) -> Result<Value, String> {
    use futures_util::StreamExt;
    use otp_sidecar::rpc::{Incoming, MsgpackCodec};
    use rmp::encode::{write_array_len, write_str, write_uint};
    use tokio::io::AsyncWriteExt;
    let mut frame = Vec::new();
    write_array_len(&mut frame, 4).unwrap();
    write_uint(&mut frame, 0).unwrap();
    write_uint(&mut frame, 7).unwrap();
    write_str(&mut frame, "sendOTP").unwrap();
    write_array_len(&mut frame, 4).unwrap();
    for text in [OTP, phone, "ACME"] {
        write_str(&mut frame, text).unwrap();
    }
    frame.extend_from_slice(context);
    let mut stream = tokio::net::UnixStream::connect(&daemon.unix).await.unwrap();
    stream.write_all(&frame).await.unwrap();
    let mut framed = tokio_util::codec::Framed::new(stream, MsgpackCodec::default());
    let reply = tokio::time::timeout(Duration::from_secs(5), framed.next())
        .await
        .expect("a reply within 5 s")
        .expect("connection open")
        .expect("a valid frame");
    match Incoming::parse(reply) {
        Ok(Incoming::Response(r)) => r.outcome,
        other => panic!("not a response: {other:?}"),
    }
}

/// `{key: str of these bytes}`, raw.
fn raw_map(key: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_map_len(&mut out, 1).unwrap();
    rmp::encode::write_str(&mut out, key).unwrap();
    rmp::encode::write_str_len(&mut out, bytes.len() as u32).unwrap();
    out.extend_from_slice(bytes);
    out
}

#[tokio::test]
async fn an_odd_context_never_blocks_an_otp() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default()
            .args([
                "--rate-limit-user=1/1h",
                "--rate-limit-ip=1/1h",
                "--metrics=127.0.0.1:0",
                "--template=es=Su código: {otp}",
            ])
            .env("RUST_LOG", "otp_sidecar=debug"),
    );
    let mut client = daemon.unix_client().await;
    let one = |key: Value, value: Value| Value::Map(vec![(key, value)]);
    // Each on a number of its own; each is sent, once, as an SMS with the default text.
    let cases: Vec<(Value, &str)> = vec![
        (Value::from("192.0.2.7"), "context"),
        (Value::Array(vec!["192.0.2.7".into()]), "context"),
        (context(&[("ip", "not an address")]), "ip"),
        (one("ip".into(), 5.into()), "ip"),
        (one("user".into(), 42.into()), "user"),
        (context(&[("locale", "en-US,en;q=0.9")]), "locale"),
        (context(&[("locale", "es-ñ")]), "locale"),
        (
            one("locale".into(), Value::Binary(b"es-\xf1".to_vec())),
            "locale",
        ),
        (context(&[("channel", "fax")]), "channel"),
        (one("channel".into(), Value::Boolean(true)), "channel"),
        (one("attempt".into(), 3.into()), "other"),
        (one(5.into(), "x".into()), "other"),
    ];
    for (i, (ctx, field)) in cases.iter().enumerate() {
        let phone = format!("+316000002{i:02}");
        let reply = send_with(&mut client, &phone, ctx.clone()).await;
        assert_eq!(reply, Ok(SID.into()), "{field}: {ctx}");
        let sent = sends(&twilio).await;
        assert_eq!(sent.len(), i + 1, "{ctx}: exactly one POST");
        let fields = form(sent.last().unwrap());
        let got = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(got("To"), Some(phone.clone()));
        assert_eq!(got("Body").as_deref(), Some("Your OTP is: 918273"), "{ctx}");
    }
    // A bad ip is no IP key: two such calls are not limited by the IP limit (1/1h).
    for phone in ["+31600000301", "+31600000302"] {
        let ctx = context(&[("ip", "10.0.0.1, 10.0.0.2")]);
        assert_eq!(send_with(&mut client, phone, ctx).await, Ok(SID.into()));
    }

    // A Latin-1 user (a str that is not UTF-8) is sent to and is still its user limit's key
    // (1/1h): the second is refused, and so is the same name as bin.
    let juergen = raw_map("user", b"J\xfcrgen");
    assert_eq!(
        send_raw_context(&daemon, "+31600000401", &juergen).await,
        Ok(SID.into())
    );
    let again = send_raw_context(&daemon, "+31600000402", &juergen).await;
    assert!(
        again
            .as_ref()
            .is_err_and(|e| e.starts_with("ERR rate_limited: retry in ")),
        "{again:?}"
    );
    let as_bin = one("user".into(), Value::Binary(b"J\xfcrgen".to_vec()));
    let third = send_with(&mut client, "+31600000403", as_bin).await;
    assert!(third.is_err_and(|e| e.starts_with("ERR rate_limited")));
    // Another Latin-1 name is another key.
    let other = raw_map("user", b"Ren\xe9e");
    assert_eq!(
        send_raw_context(&daemon, "+31600000404", &other).await,
        Ok(SID.into())
    );
    // A Latin-1 locale is dropped: the default template.
    let locale = raw_map("locale", b"es-\xf1");
    assert_eq!(
        send_raw_context(&daemon, "+31600000405", &locale).await,
        Ok(SID.into())
    );
    let posts = sends(&twilio).await;
    assert_eq!(posts.len(), cases.len() + 2 + 3);
    let body = form(posts.last().unwrap());
    assert!(
        body.contains(&("Body".into(), "Your OTP is: 918273".into())),
        "{body:?}"
    );

    // Only the required arguments refuse a call.
    let params: Vec<Value> = vec![
        OTP.into(),
        PHONE.into(),
        "ACME".into(),
        Value::Nil,
        Value::Nil,
    ];
    assert_eq!(
        client.call("sendOTP", params).await.unwrap(),
        Err("ERR bad_request: sendOTP takes 3 arguments and an optional context map, got 5".into())
    );

    let (_, text) = scrape(&log_field(&daemon.ready, "metrics").unwrap(), "/metrics").await;
    for want in [
        r#"otp_sidecar_context_ignored_total{field="context"} 2"#,
        r#"otp_sidecar_context_ignored_total{field="ip"} 4"#,
        r#"otp_sidecar_context_ignored_total{field="user"} 5"#,
        r#"otp_sidecar_context_ignored_total{field="locale"} 4"#,
        r#"otp_sidecar_context_ignored_total{field="channel"} 2"#,
        r#"otp_sidecar_context_ignored_total{field="other"} 2"#,
        r#"otp_sidecar_calls_total{method="sendOTP",outcome="ok",reason=""} 17"#,
    ] {
        assert!(text.lines().any(|l| l == want), "{want} in:\n{text}");
    }
    // Logged at debug, the locale replaced; never the user's name nor the OTP.
    let line = daemon.wait_for_log("context locale: not UTF-8; ignored (the default template)");
    assert!(line.contains("value=\"es-\u{fffd}\""), "{line}");
    let line = daemon.wait_for_log("context user: not UTF-8");
    assert!(
        line.contains("field=\"user\"") && !line.contains("value"),
        "{line}"
    );
    let log = daemon.log();
    for secret in [OTP, "rgen", "Ren"] {
        assert!(!log.contains(secret), "{secret} in:\n{log}");
    }
}

#[tokio::test]
async fn limits_are_on_by_default() {
    let out = command().args(["check", "--dry-run"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rate limits:  phone 3/10m, ip 10/10m, user 5/10m, global 600/1m"),
        "{text}"
    );
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options {
            rate_limits_on: true,
            ..Default::default()
        },
    );
    let mut client = daemon.unix_client().await;
    for _ in 0..3 {
        assert!(client.send_otp(OTP, PHONE, "ACME").await.unwrap().is_ok());
    }
    let refused = client
        .send_otp(OTP, PHONE, "ACME")
        .await
        .unwrap()
        .unwrap_err();
    assert!(refused.starts_with("ERR rate_limited: "), "{refused}");
    assert_retry_in(&refused, 190..=200);
}

#[tokio::test]
async fn geo_rules_block_by_country_and_calling_code_before_anything_is_sent() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args([
            "--allow-countries=NL,+1",
            "--deny-countries=US",
            "--metrics=127.0.0.1:0",
        ]),
    );
    let mut client = daemon.unix_client().await;
    // NL allowed; +1 allowed but the US denied; Canada (+1) and Germany not listed.
    assert_eq!(
        client.send_otp(OTP, PHONE, "ACME").await.unwrap(),
        Ok(SID.into())
    );
    for phone in ["+14155550100", "+4915112345678"] {
        assert_eq!(
            client.send_otp(OTP, phone, "ACME").await.unwrap(),
            Err("ERR blocked: country".into()),
            "{phone}"
        );
    }
    assert_eq!(
        client.send_otp(OTP, "+16135550123", "ACME").await.unwrap(),
        Ok(SID.into()),
        "Canada shares +1"
    );
    assert_eq!(sends(&twilio).await.len(), 2);
    let line = daemon.wait_for_log("reason=\"blocked\"");
    assert!(
        line.contains("rule=\"country\"") && line.contains("+1******0100"),
        "{line}"
    );
    let (_, text) = scrape(&log_field(&daemon.ready, "metrics").unwrap(), "/metrics").await;
    let want = r#"otp_sidecar_blocked_total{rule="country"} 2"#;
    assert!(text.lines().any(|l| l == want), "{want} in:\n{text}");
}

#[tokio::test]
async fn numbers_invalid_for_their_country_are_refused_when_asked() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().arg("--check-number-validity"),
    );
    let mut client = daemon.unix_client().await;
    assert_eq!(
        client.send_otp(OTP, "+31600000000", "ACME").await.unwrap(),
        Err("ERR invalid_phone: not a valid number for its country".into())
    );
    assert_eq!(
        client.send_otp(OTP, PHONE, "ACME").await.unwrap(),
        Ok(SID.into())
    );
    assert_eq!(sends(&twilio).await.len(), 1);
    // A bad country code in the configuration is a startup error that names it.
    let refused = Daemon::try_start(&twilio.uri(), Options::default().arg("--deny-countries=XX"));
    let log = refused.err().expect("refused");
    assert!(
        log.contains("deny_countries") && log.contains("\"XX\""),
        "{log}"
    );
}

/// A Twilio stand-in answering Messages with 201 and Lookup for each of `lines`
/// (phone, line type, MCC, MNC).
async fn twilio_with_lookup(lines: &[(&str, &str, &str, &str)]) -> wiremock::MockServer {
    use wiremock::matchers::{method, path, query_param};
    let server = twilio_answering(created(SID)).await;
    for (phone, line_type, mcc, mnc) in lines {
        wiremock::Mock::given(method("GET"))
            .and(path(format!("/v2/PhoneNumbers/{phone}")))
            .and(query_param("Fields", "line_type_intelligence"))
            .respond_with(
                wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
                    "phone_number": phone, "valid": true, "country_code": "NL",
                    "line_type_intelligence": {
                        "type": line_type, "mobile_country_code": mcc,
                        "mobile_network_code": mnc, "carrier_name": "Test", "error_code": null
                    }
                })),
            )
            .mount(&server)
            .await;
    }
    server
}

#[tokio::test]
async fn lookup_blocks_line_types_and_carriers_and_caches_answers() {
    // Every line type Lookup reports; the defaults block premium, tollFree, sharedCost, uan,
    // pager and voicemail.
    let types = [
        ("mobile", true),
        ("landline", true),
        ("fixedVoip", true),
        ("nonFixedVoip", true),
        ("personal", true),
        ("unknown", true),
        ("tollFree", false),
        ("premium", false),
        ("sharedCost", false),
        ("uan", false),
        ("voicemail", false),
        ("pager", false),
    ];
    let phones: Vec<String> = (1..=types.len() + 1)
        .map(|i| format!("+316000001{i:02}"))
        .collect();
    let mut lines: Vec<(&str, &str, &str, &str)> = types
        .iter()
        .zip(&phones)
        .map(|((line_type, _), phone)| (phone.as_str(), *line_type, "204", "08"))
        .collect();
    // A mobile number on a blocked network.
    let carrier_phone = phones.last().unwrap().as_str();
    lines.push((carrier_phone, "mobile", "204", "04"));
    let twilio = twilio_with_lookup(&lines).await;
    let dir = tempfile::tempdir().unwrap();
    let carriers = dir.path().join("carriers");
    std::fs::write(&carriers, "# a pumped network\n204-04\n").unwrap();
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args([
            "--lookup".to_owned(),
            format!("--lookup-api-url={}", twilio.uri()),
            format!("--block-carriers-file={}", carriers.display()),
            "--metrics=127.0.0.1:0".to_owned(),
        ]),
    );
    let mut client = daemon.unix_client().await;
    for ((line_type, allowed), phone) in types.iter().zip(&phones) {
        let reply = client.send_otp(OTP, phone, "ACME").await.unwrap();
        let want = if *allowed {
            Ok(SID.to_owned())
        } else {
            Err("ERR blocked: line_type".to_owned())
        };
        assert_eq!(reply, want, "{line_type}");
    }
    assert_eq!(
        client.send_otp(OTP, carrier_phone, "ACME").await.unwrap(),
        Err("ERR blocked: carrier".to_owned())
    );
    assert_eq!(
        sends(&twilio).await.len(),
        6,
        "blocked numbers are not sent to"
    );
    // Cached: the same numbers again ask Lookup nothing more.
    assert_eq!(lookups(&twilio).await, 13);
    assert!(client
        .send_otp(OTP, &phones[0], "ACME")
        .await
        .unwrap()
        .is_ok());
    assert!(client
        .send_otp(OTP, &phones[7], "ACME")
        .await
        .unwrap()
        .is_err());
    assert_eq!(lookups(&twilio).await, 13);
    let (_, text) = scrape(&log_field(&daemon.ready, "metrics").unwrap(), "/metrics").await;
    for want in [
        r#"otp_sidecar_blocked_total{rule="line_type"} 7"#,
        r#"otp_sidecar_blocked_total{rule="carrier"} 1"#,
        r#"otp_sidecar_lookups_total{result="answered"} 13"#,
        r#"otp_sidecar_lookups_total{result="cached"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == want), "{want} in:\n{text}");
    }
    let line = daemon.wait_for_log("rule=\"carrier\"");
    assert!(line.contains("+31*****0113"), "{line}");
}

#[tokio::test]
async fn lookup_down_fails_open_or_closed_as_configured() {
    use wiremock::matchers::{method, path_regex};
    let twilio = twilio_answering(created(SID)).await;
    wiremock::Mock::given(method("GET"))
        .and(path_regex("^/v2/PhoneNumbers/"))
        .respond_with(twilio_error(500, 20500, "Internal Server Error"))
        .mount(&twilio)
        .await;
    let slow = twilio_answering(created(SID)).await;
    wiremock::Mock::given(method("GET"))
        .and(path_regex("^/v2/PhoneNumbers/"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&slow)
        .await;
    let start = |mock: &wiremock::MockServer, policy: &str| {
        Daemon::start(
            &mock.uri(),
            Options::default().args([
                "--lookup".to_owned(),
                format!("--lookup-api-url={}", mock.uri()),
                format!("--lookup-failure={policy}"),
                "--deadline-ms=1000".to_owned(),
            ]),
        )
    };
    let open = start(&twilio, "open");
    assert_eq!(open.send("ACME").await, Ok(SID.to_owned()));
    open.wait_for_log("Twilio Lookup failed (HTTP 500); sending unchecked");
    let closed = start(&twilio, "closed");
    assert_eq!(
        closed.send("ACME").await,
        Err("ERR unavailable: Twilio Lookup failed: HTTP 500".to_owned())
    );
    assert_eq!(
        sends(&twilio).await.len(),
        1,
        "only the fail-open daemon sent"
    );

    // A slow Lookup gets half the deadline; the send still fits in the rest.
    let open = start(&slow, "open");
    let started = std::time::Instant::now();
    assert_eq!(open.send("ACME").await, Ok(SID.to_owned()));
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    let closed = start(&slow, "closed");
    let reply = closed.send("ACME").await.unwrap_err();
    assert!(
        reply.starts_with("ERR unavailable: Twilio Lookup failed: no answer within"),
        "{reply}"
    );
}

/// Numbers as directories hold them: `+` numbers lose their spaces, dashes, brackets and
/// `(0)`; national and `00` forms need `default_region`. Twilio's `To` and every limit's key
/// are the normalised E.164.
#[tokio::test]
async fn directory_numbers_are_normalised_before_anything_else() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args(["--default-region=NL", "--rate-limit-phone=1/1h"]),
    );
    let mut client = daemon.unix_client().await;
    let to_of = |request: &wiremock::Request| {
        form(request)
            .into_iter()
            .find(|(k, _)| k == "To")
            .map(|(_, v)| v)
    };
    for (written, e164) in [
        ("06 12345678", "+31612345678"),
        ("+1 (415) 555-0100", "+14155550100"),
        ("0049 30 1234567", "+49301234567"),
        ("+44 (0)7400 123456", "+447400123456"),
    ] {
        let reply = client.send_otp(OTP, written, "ACME").await.unwrap();
        assert_eq!(reply, Ok(SID.to_owned()), "{written}");
        let sent = sends(&twilio).await;
        assert_eq!(
            to_of(sent.last().unwrap()).as_deref(),
            Some(e164),
            "{written}"
        );
    }
    // The same number in other shapes is the same key for the per-phone limit.
    for again in ["+31 (0)6-1234 5678", "0031612345678", "+31612345678"] {
        let reply = client.send_otp(OTP, again, "ACME").await.unwrap();
        assert!(
            reply
                .as_ref()
                .is_err_and(|e| e.starts_with("ERR rate_limited")),
            "{again}: {reply:?}"
        );
    }
    assert_eq!(sends(&twilio).await.len(), 4);
    // The log masks the normalised number.
    daemon.wait_for_log("+31*****5678");

    // Without a region, a + number is still cleaned up, a national one refused with the hint.
    let plain = Daemon::start(&twilio.uri(), Options::default());
    let mut client = plain.unix_client().await;
    let reply = client
        .send_otp(OTP, "+33 (0)6 12 34 56 78", "ACME")
        .await
        .unwrap();
    assert_eq!(reply, Ok(SID.to_owned()));
    assert_eq!(
        to_of(sends(&twilio).await.last().unwrap()).as_deref(),
        Some("+33612345678")
    );
    let reply = client.send_otp(OTP, "06 12345678", "ACME").await.unwrap();
    let err = reply.unwrap_err();
    assert!(
        err.starts_with("ERR invalid_phone:")
            && err.contains("(set default_region to accept national numbers)"),
        "{err}"
    );
    assert_eq!(sends(&twilio).await.len(), 5);
}

/// `check` names the region, and a region that is not an ISO code stops the start.
#[test]
fn check_shows_the_default_region_and_refuses_a_bad_one() {
    let (passed, stdout, stderr) = check(&["--default-region=NL"]);
    assert!(passed, "{stderr}");
    assert!(
        stdout.lines().any(|l| l == "  default_region: NL"),
        "{stdout}"
    );
    let (passed, stdout, _) = check(&[]);
    assert!(passed);
    assert!(
        stdout
            .lines()
            .any(|l| l == "  default_region: none (only +E.164 accepted)"),
        "{stdout}"
    );
    check_refuses(&["--default-region=Netherlands"], "default_region");
}

/// Any number not in strict E.164 needs the numbering plan, which the crate loads on first
/// use (about 90 ms): it is loaded before the daemon says it is ready, also without geo rules
/// or a default region, so the first caller with `+1 (415) 555-0100` does not pay for it.
#[tokio::test]
async fn the_numbering_plan_is_loaded_before_ready() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default()
            .args(["--keep-warm-secs=0"])
            .env("RUST_LOG", "otp_sidecar=debug"),
    );
    // The ready line may reach the log a moment after the socket answers.
    daemon.wait_for_log(&daemon.ready);
    let log = daemon.log();
    let loaded = log.find("phone numbering plan loaded").expect(&log);
    let ready = log.find(&daemon.ready).expect("the ready line");
    assert!(loaded < ready, "{log}");
    let mut client = daemon.unix_client().await;
    let reply = client.send_otp(OTP, "+1 (415) 555-0100", "ACME").await;
    assert_eq!(reply.unwrap(), Ok(SID.to_owned()));
}
