//! The rate limiter's memory under a flood of distinct phone numbers: 100,000 sends (dry run),
//! each to a new number, through the default limits; RSS before, after, and after a second
//! 100,000 (the key cap holds it flat).
//!
//! Run with `cargo bench --bench flood`; the README's "Fraud defence" section quotes it.
//! `cargo test --all-targets` also runs this target, without `--bench`: it then does nothing.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::Instant;

use common::{Daemon, Options, OTP};

const PHONES: u32 = 100_000;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("flood: a benchmark; run it with `cargo bench --bench flood`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // The default limits, but no global ceiling (it would refuse most of the flood before
    // the per-phone keys are made) and the default key cap.
    let daemon = Daemon::start(
        "http://127.0.0.1:9",
        Options {
            rate_limits_on: true,
            ..Default::default()
        }
        .args(["--dry-run", "--rate-limit-global=off"]),
    );
    let idle = daemon.rss_kib();
    let mut rows = vec![("idle".to_owned(), idle)];
    for round in 0..2u32 {
        let started = Instant::now();
        runtime.block_on(async {
            let mut client = daemon.unix_client().await;
            for n in 0..PHONES {
                let phone = format!("+1555{:07}", round * PHONES + n);
                let reply = client
                    .send_otp(OTP, &phone, "ACME")
                    .await
                    .expect("answered");
                assert!(reply.is_ok(), "{reply:?}");
            }
        });
        rows.push((
            format!(
                "after {} distinct phones ({:.1} s)",
                (round + 1) * PHONES,
                started.elapsed().as_secs_f64()
            ),
            daemon.rss_kib(),
        ));
    }
    println!("| daemon (release, dry run, default limits, global off) | RSS |");
    println!("| --- | --- |");
    for (what, kib) in rows {
        println!("| {what} | {:.1} MiB |", kib as f64 / 1024.0);
    }
}
