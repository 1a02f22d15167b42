//! The free filters against SMS pumping: per-country budgets (in memory and in a shared
//! store, as one more scope of the rate limits) and the number-type filter of the numbering
//! plan. Refused sends reach nobody.

use crate::common::store::RedisServer;
use crate::common::*;
use crate::state::{on_store, send, KEY};

const UK: &str = "+447700900123";
const UK_OTHER: &str = "+447700900456";
const DE: &str = "+4915112345678";
const BE: &str = "+32470123456";

#[tokio::test]
async fn country_budgets_cap_named_countries_and_every_other_country_on_its_own() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args([
            "--country-budgets=+44=2/1d, *=1/1d",
            "--metrics=127.0.0.1:0",
        ]),
    );
    let reply = |phone: &'static str| send(&daemon, phone, &[]);
    // +44: two, whichever numbers; the third is refused.
    assert_eq!(reply(UK).await, Ok(SID.into()));
    assert_eq!(reply(UK_OTHER).await, Ok(SID.into()));
    let refused = Err("ERR rate_limited: country budget".to_owned());
    assert_eq!(reply(UK).await, refused);
    assert_eq!(reply(UK_OTHER).await, refused);
    // Every other country has a budget of its own: one each.
    assert_eq!(reply(DE).await, Ok(SID.into()));
    assert_eq!(reply(BE).await, Ok(SID.into()));
    assert_eq!(reply(DE).await, refused);
    assert_eq!(reply(PHONE).await, Ok(SID.into()));
    assert_eq!(sends(&twilio).await.len(), 5, "refused sends reach nobody");

    let line = daemon.wait_for_log("reason=\"rate_limited\"");
    assert!(line.contains("limit=\"country\""), "{line}");
    // Each exhaustion episode told once (two refusals to +44, one to DE), by the budget's name.
    assert_eq!(daemon.count_log_once("country budget exhausted", 2), 2);
    let told = daemon.wait_for_log("country budget exhausted");
    assert!(told.contains("budget=+44"), "{told}");
    let (_, text) = scrape(&log_field(&daemon.ready, "metrics").unwrap(), "/metrics").await;
    let want = r#"otp_sidecar_rate_limited_total{limit="country"} 3"#;
    assert!(text.lines().any(|l| l == want), "{want} in:\n{text}");
}

#[tokio::test]
async fn country_budgets_from_the_file_and_a_bad_table_refused_at_start() {
    let twilio = twilio_answering(created(SID)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "country_budgets = { \"+44\" = \"1/1d\" }\n").unwrap();
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().arg(format!("--config={}", file.display())),
    );
    let mut client = daemon.unix_client().await;
    assert_eq!(
        client.send_otp(OTP, UK, "ACME").await.unwrap(),
        Ok(SID.into())
    );
    assert_eq!(
        client.send_otp(OTP, UK, "ACME").await.unwrap(),
        Err("ERR rate_limited: country budget".into())
    );
    // A country outside a table without `*` has no budget.
    for _ in 0..3 {
        assert_eq!(
            client.send_otp(OTP, DE, "ACME").await.unwrap(),
            Ok(SID.into())
        );
    }
    for bad in ["+44=1/2d", "XX=1/1d", "+44"] {
        let refused = Daemon::try_start(
            &twilio.uri(),
            Options::default().env("OTP_SIDECAR_COUNTRY_BUDGETS", bad),
        );
        let log = refused.err().expect("refused");
        assert!(log.contains("country_budgets"), "{bad}: {log}");
    }
}

#[tokio::test]
async fn two_daemons_share_a_country_budget_in_the_store() {
    let redis = RedisServer::start(Some(crate::state::PASSWORD));
    let twilio = twilio_answering(created(SID)).await;
    let args = ["--country-budgets=+44=3/1d"];
    let first = on_store(&twilio.uri(), &redis.url(), &args);
    let second = on_store(&twilio.uri(), &redis.url(), &args);
    for daemon in [&first, &second, &first] {
        let reply = send(daemon, UK, &[]).await;
        assert!(reply.as_deref().is_ok_and(|s| is_sid(s, "SM")), "{reply:?}");
    }
    assert_eq!(
        send(&second, UK_OTHER, &[]).await,
        Err("ERR rate_limited: country budget".into())
    );
    assert_eq!(sends(&twilio).await.len(), 3);
    // The budget's key is a keyed hash, like every other limit's: no country in clear.
    let dump = redis.dump();
    assert!(
        dump.iter()
            .any(|(k, _)| k.starts_with("otp-sidecar:rate:country:")),
        "{dump:?}"
    );
    assert!(dump
        .iter()
        .all(|(k, _)| !k.contains("+44") && !k.contains(KEY)));
}

#[tokio::test]
async fn the_numbering_plan_refuses_premium_and_shared_cost_numbers_for_free() {
    // UK premium rate (09…), UK shared cost (0843…), UK pager (076…); a mobile passes.
    let premium = "+449098790000";
    let shared_cost = "+448431234567";
    let pager = "+447640123456";
    let toll_free = "+448001234567";
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().arg("--metrics=127.0.0.1:0"),
    );
    let mut client = daemon.unix_client().await;
    for phone in [premium, shared_cost, pager] {
        assert_eq!(
            client.send_otp(OTP, phone, "ACME").await.unwrap(),
            Err("ERR blocked: number_type".into()),
            "{phone}"
        );
    }
    for phone in [UK, toll_free] {
        assert_eq!(
            client.send_otp(OTP, phone, "ACME").await.unwrap(),
            Ok(SID.into())
        );
    }
    assert_eq!(sends(&twilio).await.len(), 2);
    let line = daemon.wait_for_log("reason=\"blocked\"");
    assert!(line.contains("rule=\"number_type\""), "{line}");
    let (_, text) = scrape(&log_field(&daemon.ready, "metrics").unwrap(), "/metrics").await;
    let want = r#"otp_sidecar_blocked_total{rule="number_type"} 3"#;
    assert!(text.lines().any(|l| l == want), "{want} in:\n{text}");

    // `none` turns it off; toll free when asked for.
    let off = Daemon::start(
        &twilio.uri(),
        Options::default().arg("--block-number-types=none"),
    );
    let mut client = off.unix_client().await;
    assert_eq!(
        client.send_otp(OTP, premium, "ACME").await.unwrap(),
        Ok(SID.into())
    );
    let toll = Daemon::start(
        &twilio.uri(),
        Options::default().env("OTP_SIDECAR_BLOCK_NUMBER_TYPES", "toll_free"),
    );
    let mut client = toll.unix_client().await;
    assert_eq!(
        client.send_otp(OTP, toll_free, "ACME").await.unwrap(),
        Err("ERR blocked: number_type".into())
    );
    assert_eq!(
        client.send_otp(OTP, premium, "ACME").await.unwrap(),
        Ok(SID.into())
    );
    let refused = Daemon::try_start(
        &twilio.uri(),
        Options::default().arg("--block-number-types=premium"),
    );
    let log = refused.err().expect("refused");
    assert!(log.contains("block_number_types"), "{log}");
}

/// Twilio answering Messages with 201 and Lookup, asked for both fields, with `score` for each
/// of `phones`.
async fn twilio_with_risk(phones: &[(&str, u32)]) -> wiremock::MockServer {
    use wiremock::matchers::{method, path, query_param};
    let server = twilio_answering(created(SID)).await;
    for (phone, score) in phones {
        wiremock::Mock::given(method("GET"))
            .and(path(format!("/v2/PhoneNumbers/{phone}")))
            .and(query_param(
                "Fields",
                "line_type_intelligence,sms_pumping_risk",
            ))
            .respond_with(
                wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
                    "phone_number": phone, "valid": true,
                    "line_type_intelligence": {"type": "mobile", "error_code": null},
                    "sms_pumping_risk": {
                        "carrier_risk_category": "high", "number_blocked": false,
                        "sms_pumping_risk_score": score, "error_code": null
                    }
                })),
            )
            .mount(&server)
            .await;
    }
    server
}

#[tokio::test]
async fn lookups_pumping_risk_refuses_scores_at_or_above_the_threshold_and_is_cached() {
    let (risky, edge, fine) = ("+31612000071", "+31612000072", "+31612000073");
    let twilio = twilio_with_risk(&[(risky, 91), (edge, 60), (fine, 59)]).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args([
            "--lookup".to_owned(),
            format!("--lookup-api-url={}", twilio.uri()),
            "--lookup-failure=closed".to_owned(),
            "--block-pumping-risk=60".to_owned(),
            "--metrics=127.0.0.1:0".to_owned(),
        ]),
    );
    let mut client = daemon.unix_client().await;
    let refused = Err("ERR blocked: pumping_risk".to_owned());
    for _ in 0..2 {
        assert_eq!(client.send_otp(OTP, risky, "ACME").await.unwrap(), refused);
        assert_eq!(client.send_otp(OTP, edge, "ACME").await.unwrap(), refused);
        assert_eq!(
            client.send_otp(OTP, fine, "ACME").await.unwrap(),
            Ok(SID.into())
        );
    }
    let requests = twilio.received_requests().await.unwrap();
    let lookups = requests
        .iter()
        .filter(|r| r.url.path().starts_with("/v2/PhoneNumbers/"))
        .count();
    assert_eq!(lookups, 3, "one paid lookup per number, then the cache");
    assert_eq!(sends(&twilio).await.len(), 2);
    let (_, text) = scrape(&log_field(&daemon.ready, "metrics").unwrap(), "/metrics").await;
    let want = r#"otp_sidecar_blocked_total{rule="pumping_risk"} 4"#;
    assert!(text.lines().any(|l| l == want), "{want} in:\n{text}");

    // Without a Lookup the score has no source; past 100 it is no score.
    for args in [
        vec!["--block-pumping-risk=60"],
        vec!["--lookup", "--block-pumping-risk=101"],
    ] {
        let refused = Daemon::try_start(&twilio.uri(), Options::default().args(args.clone()));
        let log = refused.err().expect("refused");
        assert!(log.contains("block_pumping_risk"), "{args:?}: {log}");
    }
}
