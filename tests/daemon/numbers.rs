//! Phone numbers in what the daemon says: Twilio's refusals name the number, and neither the
//! `ERR` reply nor a log line may repeat it (Messages, Verify, Calls and Lookup); and the log's
//! mask follows the one rule of tests/irules/masks.txt, the iRules' too.

use crate::common::*;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The number Twilio refuses, and how its text writes it.
const REFUSED: &str = "+14155550001";
const VA: &str = "VA0123456789abcdef0123456789abcdef";

/// Whether `text` holds a run of six digits or more (separators aside).
fn holds_a_number(text: &str) -> bool {
    let squeezed: String = text.chars().filter(|c| !" -.()".contains(*c)).collect();
    squeezed
        .split(|c: char| !c.is_ascii_digit())
        .any(|run| run.len() >= 6)
}

/// Each Twilio API answering every request with its own refusal text naming `REFUSED`;
/// Lookup answering a line type of the wrong shape, whose decoding error quotes the number.
async fn refusing_twilio() -> MockServer {
    let server = MockServer::start().await;
    for (path, status, code, text) in [
        (
            r"/Messages\.json$",
            400,
            21211,
            format!("The 'To' number {REFUSED} is not a valid phone number."),
        ),
        (
            r"/Verifications$",
            400,
            60200,
            format!("Invalid parameter `To`: {REFUSED}"),
        ),
        (
            r"/Calls\.json$",
            400,
            13224,
            "The phone number you are attempting to call, (415) 555-0001, is not valid.".into(),
        ),
    ] {
        Mock::given(method("POST"))
            .and(path_regex(path))
            .respond_with(twilio_error(status, code, &text))
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path_regex(r"^/v2/PhoneNumbers/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "phone_number": REFUSED,
            "line_type_intelligence": REFUSED,
        })))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn twilio_refusals_reach_neither_reply_nor_log_with_the_number() {
    let twilio = refusing_twilio().await;
    let api = twilio.uri();
    let lookup = format!("--lookup-api-url={api}");
    let verify = format!("--verify-api-url={api}");
    let cases: [(&str, Vec<&str>, &str); 4] = [
        ("messages", vec![], "ERR twilio 21211: "),
        (
            "verify",
            vec!["--verify-service-sid", VA, &verify],
            "ERR twilio 60200: ",
        ),
        ("calls", vec!["--channel=voice"], "ERR twilio 13224: "),
        (
            "lookup",
            vec!["--lookup", &lookup, "--lookup-failure=closed"],
            "ERR unavailable: Twilio Lookup failed: unreadable answer",
        ),
    ];
    for (api_name, args, want) in cases {
        let daemon = Daemon::start(
            &api,
            Options::default()
                .args(args)
                .env("RUST_LOG", "otp_sidecar=trace"),
        );
        let mut client = daemon.unix_client().await;
        let reply = client
            .send_otp(OTP, REFUSED, "+14155550100")
            .await
            .expect("answered");
        let err = reply.expect_err(api_name);
        assert!(err.starts_with(want), "{api_name}: {err}");
        assert!(
            !holds_a_number(&err),
            "{api_name}: the reply names the number: {err}"
        );
        daemon.wait_for_log("outcome=\"error\"");
        let log = daemon.log();
        for line in log.lines() {
            let squeezed: String = line.chars().filter(|c| !" -.()".contains(*c)).collect();
            assert!(
                !squeezed.contains("5550001"),
                "{api_name}: a log line names the number: {line}"
            );
        }
        assert!(log.contains("+1******0001"), "{api_name}: masked:\n{log}");
    }
}

#[tokio::test]
async fn the_log_masks_every_number_by_the_shared_table() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default().arg("--dry-run"));
    let table = std::fs::read_to_string(repo_file("tests/irules/masks.txt")).unwrap();
    let rows: Vec<(&str, &str)> = table
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .collect();
    assert!(rows.len() >= 10);
    let mut client = daemon.unix_client().await;
    for (phone, _) in &rows {
        let reply = client.send_otp(OTP, phone, "ACME").await.expect("answered");
        assert!(reply.is_ok(), "{phone}: {reply:?}");
    }
    poll_until(
        std::time::Duration::from_secs(5),
        || (daemon.count_log("outcome=\"sent\"") >= rows.len()).then_some(()),
        || daemon.log(),
    );
    let log = daemon.log();
    let logged: Vec<String> = log
        .lines()
        .filter(|l| l.contains("outcome=\"sent\""))
        .filter_map(|l| log_field(l, "phone"))
        .collect();
    let want: Vec<String> = rows.iter().map(|(_, m)| (*m).to_owned()).collect();
    assert_eq!(logged, want, "{log}");
    for (phone, _) in rows.iter().filter(|(p, _)| p.len() > 6) {
        assert!(!log.contains(phone), "{phone} logged whole:\n{log}");
    }
}
