//! Conversion in every mode (issue 25 §1): confirmOTP in Messages mode answers the SID sent to
//! the number, sends Twilio's Message Feedback once (never delaying or failing the reply), and
//! the sends and confirmations are counted per country.

use std::time::Duration;

use crate::common::*;
use crate::verify::confirm;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn feedback_path(sid: &str) -> String {
    format!("/2010-04-01/Accounts/{AC}/Messages/{sid}/Feedback.json")
}

/// Messages answered with `SID`, Feedback with `feedback`.
async fn twilio_with_feedback(feedback: ResponseTemplate) -> MockServer {
    let twilio = twilio_answering(created(SID)).await;
    Mock::given(method("POST"))
        .and(path(feedback_path(SID)))
        .respond_with(feedback)
        .mount(&twilio)
        .await;
    twilio
}

async fn feedbacks(twilio: &MockServer) -> Vec<wiremock::Request> {
    sends(twilio)
        .await
        .into_iter()
        .filter(|r| r.url.path().ends_with("/Feedback.json"))
        .collect()
}

#[tokio::test]
async fn confirm_otp_in_messages_mode_answers_the_sid_and_sends_feedback_once() {
    let twilio = twilio_with_feedback(ResponseTemplate::new(201).set_body_json(
        serde_json::json!({"account_sid": AC, "message_sid": SID, "outcome": "confirmed"}),
    ))
    .await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().arg("--metrics=127.0.0.1:0"),
    );
    assert_eq!(daemon.send("ACME").await, Ok(SID.to_owned()));
    let create = &sends(&twilio).await[0];
    assert_eq!(field(create, "ProvideFeedback").as_deref(), Some("true"));

    assert_eq!(confirm(&daemon, PHONE).await, Ok(SID.into()));
    // APM running the agent again: the same SID, no second Feedback, no second count.
    assert_eq!(confirm(&daemon, PHONE).await, Ok(SID.into()));
    let feedback = &until_feedback(&twilio).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(feedbacks(&twilio).await.len(), 1, "one Feedback");
    assert_eq!(form(feedback), [("Outcome".into(), "confirmed".into())]);

    let (_, metrics) = metrics_of(&daemon).await;
    assert!(
        metrics.contains("otp_sidecar_sent_total{country=\"NL\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("otp_sidecar_confirmed_total{country=\"NL\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("otp_sidecar_message_feedback_total{result=\"ok\"} 1"),
        "{metrics}"
    );

    // A number nothing was sent to: refused, nothing counted.
    let none = confirm(&daemon, "+31687654321").await.unwrap_err();
    assert!(
        none.starts_with("ERR bad_request: no message was sent"),
        "{none}"
    );
}

/// The first Feedback request, once it reached the mock (it is sent after the reply).
async fn until_feedback(twilio: &MockServer) -> wiremock::Request {
    for _ in 0..250 {
        if let Some(first) = feedbacks(twilio).await.into_iter().next() {
            return first;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no Feedback reached Twilio");
}

#[tokio::test]
async fn a_failed_or_hanging_feedback_never_costs_the_confirmation() {
    for feedback in [
        twilio_error(500, 20500, "Internal Server Error"),
        ResponseTemplate::new(201).set_delay(Duration::from_secs(30)),
    ] {
        let twilio = twilio_with_feedback(feedback).await;
        let daemon = Daemon::start(
            &twilio.uri(),
            Options::default().arg("--metrics=127.0.0.1:0"),
        );
        assert_eq!(daemon.send("ACME").await, Ok(SID.to_owned()));
        // Answered at once with the SID: the Feedback runs after the reply.
        let asked = std::time::Instant::now();
        assert_eq!(confirm(&daemon, PHONE).await, Ok(SID.into()));
        assert!(asked.elapsed() < Duration::from_secs(2));
        daemon.wait_for_log("Message Feedback");
        let (_, metrics) = metrics_of(&daemon).await;
        assert!(
            metrics.contains("otp_sidecar_confirmed_total{country=\"NL\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("otp_sidecar_message_feedback_total{result=\"failed\"} 1"),
            "{metrics}"
        );
    }
}
