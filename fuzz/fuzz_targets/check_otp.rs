//! checkOTP's rules (`otp_sidecar::codes`: the HMAC and the book the daemon keeps in memory,
//! which `state/codes.lua` mirrors) under any sequence of issues, checks and clock steps:
//! a check is never accepted for a code that was not issued to that number within its
//! lifetime, never twice, and never while the number is locked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otp_sidecar::codes::{Entry, Keyed, Verdict};

const LIFETIME: u64 = 300_000_000;
const MAX_ATTEMPTS: u32 = 5;
const PHONES: [&str; 2] = ["+31612345678", "+31612345679"];

fuzz_target!(|data: &[u8]| {
    let keyed = Keyed::new(b"fuzz-codes-key-0123456789abcdef");
    let mut books = [Entry::default(), Entry::default()];
    // What was issued to each number: the code and when it expires.
    let mut issued: [Vec<(Vec<u8>, u64)>; 2] = [Vec::new(), Vec::new()];
    let mut locked_until = [0u64; 2];
    let mut now = 0u64;
    let mut at = 0;
    while at + 2 <= data.len() {
        let (op, arg) = (data[at], data[at + 1]);
        at += 2;
        let who = usize::from(op & 1);
        let phone = PHONES[who];
        match op >> 1 & 3 {
            // issue: the next `arg % 11` bytes, as a code (of any bytes: the rule must hold).
            0 => {
                let n = usize::from(arg % 11).min(data.len() - at);
                let code = data[at..at + n].to_vec();
                at += n;
                let text = String::from_utf8_lossy(&code).into_owned();
                books[who].keep(keyed.code(phone, &text), now, LIFETIME);
                issued[who].push((text.into_bytes(), now + LIFETIME));
            }
            // check the next `arg % 13` bytes.
            1 | 2 => {
                let n = usize::from(arg % 13).min(data.len() - at);
                let text = String::from_utf8_lossy(&data[at..at + n]).into_owned();
                at += n;
                let verdict = books[who].check(&keyed.code(phone, &text), now, MAX_ATTEMPTS);
                match verdict {
                    Verdict::Accepted => {
                        assert!(now >= locked_until[who], "accepted while locked");
                        let live = issued[who]
                            .iter()
                            .any(|(code, expires)| code == text.as_bytes() && *expires > now);
                        assert!(live, "accepted a code never issued (live) to this number");
                        // Every code of the number is spent.
                        issued[who].clear();
                    }
                    Verdict::LockedNow { for_us } => {
                        locked_until[who] = now + for_us;
                        issued[who].clear();
                    }
                    _ => {}
                }
            }
            // the clock moves on, up to 255 s.
            _ => now += u64::from(arg) * 1_000_000,
        }
    }
});
