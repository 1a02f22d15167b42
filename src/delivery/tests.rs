//! The follow-up's rules through the tracker itself, against a mock Twilio: a confirmation
//! (mark_confirmed, by phone or SID) before the failure prevents the call; without one the
//! call is placed once.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::*;
use crate::twilio::credentials::{Auth, Credentials};

const AC: &str = "ACfeedfacefeedfacefeedfacefeedface";
const SM: &str = "SM0123456789abcdef0123456789abcdef";
const PHONE: &str = "+31612345678";

struct One(TwilioClient);

impl Clients for One {
    fn client(&self, index: usize) -> Option<&TwilioClient> {
        (index == 0).then_some(&self.0)
    }
}

async fn twilio() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/2010-04-01/Accounts/{AC}/Messages/{SM}.json"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "sid": SM, "status": "undelivered", "error_code": 30003,
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/2010-04-01/Accounts/{AC}/Calls.json")))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "sid": "CA0123456789abcdef0123456789abcdef", "status": "queued",
        })))
        .mount(&server)
        .await;
    server
}

fn sent(server: &MockServer) -> Sent {
    let settings = crate::twilio::Settings {
        api_url: server.uri().parse().unwrap(),
        lookup_url: server.uri().parse().unwrap(),
        proxy: None,
        ca_pem: None,
        connect_timeout: Duration::from_secs(1),
        validity_period: None,
        max_concurrency: 10,
        max_retry_after: Duration::from_secs(1),
        risk_check: true,
    };
    let credentials = Credentials {
        account_sid: AC.into(),
        auth: Auth::AuthToken(Secret::new("token")),
        origin: String::new(),
    };
    Sent {
        sid: SM.into(),
        phone: PHONE.into(),
        clients: Arc::new(One(TwilioClient::new(&settings, &credentials).unwrap())),
        provider: 0,
        follow_up: Some(FollowUp {
            from: "+14155550100".into(),
            twiml: "<Response/>".into(),
        }),
        at: Instant::now(),
    }
}

fn tracker() -> Arc<Tracker> {
    Tracker::new(
        Settings {
            mode: Mode::Poll,
            lifetime: Duration::from_secs(30),
            voice_on_undelivered: true,
            callback: None,
        },
        None,
    )
}

async fn calls(server: &MockServer) -> usize {
    let all = server.received_requests().await.unwrap();
    all.iter()
        .filter(|r| r.url.path().ends_with("/Calls.json"))
        .count()
}

#[tokio::test]
async fn a_confirmation_before_the_failure_prevents_the_call() {
    let (by_phone, by_sid, none) = (twilio().await, twilio().await, twilio().await);
    let (a, b, c) = (sent(&by_phone), sent(&by_sid), sent(&none));
    let (ta, tb, tc) = (tracker(), tracker(), tracker());
    ta.mark_confirmed(PHONE);
    tb.records.set(SM, "queued".into());
    tb.mark_confirmed(SM);
    // Straight through the message's task: the poll at 2 s finds it undelivered 30003.
    tokio::join!(ta.follow(a), tb.follow(b), tc.follow(c));
    assert_eq!(calls(&by_phone).await, 0, "confirmed by phone");
    assert_eq!(calls(&by_sid).await, 0, "confirmed by SID");
    assert_eq!(calls(&none).await, 1, "unconfirmed: one call");
    assert_eq!(
        tc.status(SM).await.as_deref(),
        Some("calling CA0123456789abcdef0123456789abcdef")
    );
}

#[tokio::test]
async fn no_call_once_the_code_has_expired() {
    let server = twilio().await;
    let mut message = sent(&server);
    let tracker = tracker();
    // Sent long enough ago that its code is dead when the failure is learned.
    message.at = Instant::now() - Duration::from_secs(29);
    let fate = Fate::new("undelivered", Some(30003));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    tracker.follow_up(&message, &fate).await;
    assert_eq!(calls(&server).await, 0);
}
