//! The first OTP after a start, with and without the warm Twilio connection: a TLS stand-in
//! with its own test CA (tests/common/tls.rs), the daemon restarted for each sample, the
//! first and the tenth call timed from the caller's side.
//!
//! Run with `cargo bench --bench warm_start`; the README's "Operating" section quotes it.
//! `cargo test --all-targets` also runs this target, without `--bench`: it then does nothing.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::{Duration, Instant};

use common::tls::TlsTwilio;
use common::{Daemon, Options, OTP, PHONE};

const RESTARTS: usize = 15;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("warm_start: a benchmark; run it with `cargo bench --bench warm_start`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "| Twilio connection | first call p50 | tenth call p50 | TLS handshakes in 10 calls |"
    );
    println!("| --- | --- | --- | --- |");
    for (label, extra) in [
        ("warm (default)", None),
        ("cold (--keep-warm-secs=0)", Some("--keep-warm-secs=0")),
    ] {
        let (mut first, mut tenth, mut handshakes) = (Vec::new(), Vec::new(), 0);
        for _ in 0..RESTARTS {
            let twilio = TlsTwilio::start();
            let dir = tempfile::tempdir().expect("dir");
            let ca = dir.path().join("ca.pem");
            std::fs::write(&ca, &twilio.ca_pem).expect("write CA");
            let mut options = Options::default().arg(format!("--twilio-ca-file={}", ca.display()));
            if let Some(flag) = extra {
                options = options.arg(flag);
            }
            let daemon = Daemon::start(&twilio.url, options);
            let before = twilio.connections();
            let times = runtime.block_on(async {
                let mut client = daemon.unix_client().await;
                let mut times = Vec::new();
                for _ in 0..10 {
                    let started = Instant::now();
                    let reply = client.send_otp(OTP, PHONE, "ACME").await.expect("call");
                    times.push(started.elapsed());
                    assert!(reply.is_ok(), "{reply:?}");
                }
                times
            });
            handshakes += twilio.connections() - before;
            first.push(times[0]);
            tenth.push(times[9]);
        }
        println!(
            "| {label} | {} | {} | {:.1} per start |",
            show(median(&mut first)),
            show(median(&mut tenth)),
            handshakes as f64 / RESTARTS as f64
        );
    }
    println!(
        "\n{RESTARTS} starts each; release build; TLS stand-in on loopback (rustls, ECDSA P-256)."
    );
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn show(d: Duration) -> String {
    if d >= Duration::from_millis(1) {
        format!("{:.2} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{} µs", d.as_micros())
    }
}
