//! The pumping simulation (issue 25 §2): 500 sends to one number range that nobody confirms,
//! among normal traffic to other countries of which 80 % is confirmed. With
//! `pumping_mode = enforce` the range is throttled after `pumping_min_sends` and a handful,
//! and no converting send is ever refused; in `monitor` mode nothing is refused, but the
//! episode is logged once and counted. Run with `-- --nocapture` to see the figures the README
//! quotes: `cargo test --test daemon pumping:: -- --nocapture`.

use crate::common::store::RedisServer;
use crate::common::*;
use crate::state::{on_store, send, PASSWORD};

/// What a run came to.
#[derive(Debug, Default)]
struct Figures {
    /// Sends to the pumped range that went out (each an SMS paid for).
    pumped_sent: usize,
    /// Sends to the pumped range refused (SMS saved).
    pumped_refused: usize,
    /// Sends to the pumped range before the first refusal.
    before_throttle: Option<usize>,
    converting_sent: usize,
    converting_refused: usize,
}

/// A normal number: round the three countries, every one its own.
fn normal(n: usize) -> String {
    match n % 3 {
        0 => format!("+316{:08}", 10_000_000 + n * 7919 % 89_999_999),
        1 => format!("+4915{:09}", 100_000_000 + n * 104_729 % 899_999_999),
        _ => format!("+1415{:07}", 2_000_000 + n * 7_727 % 7_999_999),
    }
}

/// 500 pumped sends, each followed by one normal send (confirmed 4 times in 5), spread over
/// `daemons` in turn.
async fn simulate(daemons: &[&Daemon]) -> Figures {
    let mut figures = Figures::default();
    for n in 0..500 {
        let daemon = daemons[n % daemons.len()];
        let pumped = format!("+23276123{:03}", n);
        match send(daemon, &pumped, &[]).await {
            Ok(_) => figures.pumped_sent += 1,
            Err(e) => {
                assert_eq!(e, "ERR blocked: pumping");
                figures.pumped_refused += 1;
                figures.before_throttle.get_or_insert(n);
            }
        }
        let phone = normal(n);
        match send(daemon, &phone, &[]).await {
            Ok(_) => {
                figures.converting_sent += 1;
                if n % 5 != 0 {
                    // Confirmed through the other instance, once the record is there (it is
                    // written after the reply; a user takes seconds to type the code).
                    let other = daemons[(n + 1) % daemons.len()];
                    let mut client = other.unix_client().await;
                    let mut tries = 0;
                    let confirmed = loop {
                        let reply = client
                            .call("confirmOTP", vec![phone.as_str().into()])
                            .await
                            .unwrap();
                        tries += 1;
                        if reply.is_ok() || tries == 100 {
                            break reply;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    };
                    assert!(confirmed.is_ok(), "{confirmed:?}");
                }
            }
            Err(e) => {
                eprintln!("a converting send refused: {e}");
                figures.converting_refused += 1;
            }
        }
    }
    println!(
        "pumping simulation ({} daemons): {figures:?}",
        daemons.len()
    );
    figures
}

const ENFORCE: [&str; 2] = ["--pumping-mode=enforce", "--metrics=127.0.0.1:0"];

#[tokio::test]
async fn a_pumped_range_is_throttled_and_converting_traffic_never_refused() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default().args(ENFORCE));
    let figures = simulate(&[&daemon]).await;
    // 20 sends to learn from, then the trickle's one: nothing more in the minutes it runs.
    assert_eq!(figures.before_throttle, Some(21));
    assert_eq!(figures.pumped_sent, 21);
    assert_eq!(figures.converting_refused, 0);
    assert_eq!(
        daemon.count_log("SMS pumping suspected"),
        2,
        "once per episode: the range and its country\n{}",
        daemon.log()
    );
    let line = daemon.wait_for_log("SMS pumping suspected: range");
    assert!(line.contains("+232*****xxx"), "{line}");
    assert!(!line.contains("76123"), "the range is masked: {line}");
    let (_, metrics) = metrics_of(&daemon).await;
    assert!(
        metrics.contains("otp_sidecar_pumping_throttled{scope=\"range\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("otp_sidecar_blocked_total{rule=\"pumping\"} 479"),
        "{metrics}"
    );
    assert!(
        metrics.contains("otp_sidecar_confirmed_total{country=\"NL\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn monitor_mode_refuses_nothing_but_logs_the_episode_and_counts() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().arg("--metrics=127.0.0.1:0"),
    );
    let figures = simulate(&[&daemon]).await;
    assert_eq!(figures.pumped_sent, 500);
    assert_eq!(figures.converting_refused, 0);
    let line = daemon.wait_for_log("SMS pumping suspected: range");
    assert!(
        line.contains("would be throttled (pumping_mode = monitor)"),
        "{line}"
    );
    assert_eq!(daemon.count_log("SMS pumping suspected"), 2);
    let (_, metrics) = metrics_of(&daemon).await;
    assert!(
        metrics.contains("otp_sidecar_pumping_monitored_total{scope=\"country\"} 479"),
        "{metrics}"
    );
}

#[tokio::test]
async fn two_daemons_sharing_a_store_throttle_the_range_together() {
    let redis = RedisServer::start(Some(PASSWORD));
    let twilio = twilio_answering(created(SID)).await;
    let a = on_store(&twilio.uri(), &redis.url(), &ENFORCE);
    let b = on_store(&twilio.uri(), &redis.url(), &ENFORCE);
    let figures = simulate(&[&a, &b]).await;
    assert_eq!(figures.before_throttle, Some(21));
    assert_eq!(figures.pumped_sent, 21);
    assert_eq!(figures.converting_refused, 0);
    // One episode per scope across both: the instance whose send started it logs it.
    let logged = a.count_log("SMS pumping suspected") + b.count_log("SMS pumping suspected");
    assert_eq!(logged, 2);
    // The store holds no number: every key is a keyed hash or a country code.
    for (key, _) in redis.dump() {
        assert!(!key.contains("76123") && !key.contains("31612"), "{key}");
    }
}
