//! The ILX side of the storm: CONNECTIONS connections over the Unix socket, each keeping
//! PIPELINE sendOTP requests in flight (distinct msgids, answers matched by msgid) until the
//! run's calls have all been sent and answered, or the cap is reached. Frames are encoded by
//! hand with rmpv, so the bench does not depend on the daemon's own codec. Every reply is
//! timed from the moment its request was written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rmpv::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const CONNECTIONS: usize = 40;
pub const PIPELINE: usize = 50;
pub const OTP: &str = "123456";
pub const SENDER: &str = "+15005550006";

/// One answered call.
pub struct Reply {
    /// From the request written to the reply read.
    pub elapsed: Duration,
    /// The message SID, or the error text.
    pub outcome: Result<String, String>,
}

pub struct Outcome {
    pub replies: Vec<Reply>,
    /// Calls written and never answered before the cap.
    pub unanswered: usize,
    /// Calls written.
    pub sent: usize,
    /// From the first request to the last reply (or to the cap).
    pub duration: Duration,
    pub cap_reached: bool,
}

/// Runs the storm against the server listening on `socket`: `calls` in all.
pub async fn storm(socket: &Path, calls: usize, cap: Duration) -> Result<Outcome> {
    let budget = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let stop = tokio::time::Instant::from_std(started + cap);
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let (socket, budget) = (socket.to_owned(), budget.clone());
        tasks.push(tokio::spawn(async move {
            connection(socket, c, budget, calls, stop).await
        }));
    }
    let mut outcome = Outcome {
        replies: Vec::with_capacity(calls),
        unanswered: 0,
        sent: 0,
        duration: Duration::ZERO,
        cap_reached: false,
    };
    let mut last = started;
    for task in tasks {
        let done = task.await??;
        outcome.replies.extend(done.replies);
        outcome.unanswered += done.unanswered;
        outcome.sent += done.sent;
        outcome.cap_reached |= done.cap_reached;
        last = last.max(done.last);
    }
    outcome.duration = if outcome.cap_reached {
        cap
    } else {
        last - started
    };
    Ok(outcome)
}

struct Done {
    replies: Vec<Reply>,
    unanswered: usize,
    sent: usize,
    cap_reached: bool,
    last: Instant,
}

fn request(msgid: u32, phone: &str) -> Vec<u8> {
    let value = Value::Array(vec![
        Value::from(0),
        Value::from(msgid),
        Value::from("sendOTP"),
        Value::Array(vec![
            Value::from(OTP),
            Value::from(phone),
            Value::from(SENDER),
        ]),
    ]);
    let mut frame = Vec::with_capacity(64);
    rmpv::encode::write_value(&mut frame, &value).expect("encode to a Vec");
    frame
}

/// One reply's msgid and outcome, from `[1, msgid, error, result]`.
fn response(value: Value) -> Result<(u32, Result<String, String>)> {
    let Value::Array(parts) = value else {
        bail!("not an array: {value}");
    };
    let [kind, msgid, error, result] = <[Value; 4]>::try_from(parts)
        .map_err(|p| anyhow::anyhow!("{} elements, not 4", p.len()))?;
    if kind.as_u64() != Some(1) {
        bail!("not a response: type {kind}");
    }
    let msgid = msgid
        .as_u64()
        .and_then(|m| u32::try_from(m).ok())
        .context("msgid")?;
    let text = |v: &Value| match v.as_str() {
        Some(s) => s.to_owned(),
        None => v.to_string(),
    };
    let outcome = if !error.is_nil() {
        Err(text(&error))
    } else if result.as_str().is_some_and(|s| s.starts_with("SM")) {
        Ok(text(&result))
    } else {
        Err(text(&result))
    };
    Ok((msgid, outcome))
}

/// Whether a decode error only says the frame is not all here yet.
fn incomplete(e: &rmpv::decode::Error) -> bool {
    match e {
        rmpv::decode::Error::InvalidMarkerRead(io) | rmpv::decode::Error::InvalidDataRead(io) => {
            io.kind() == std::io::ErrorKind::UnexpectedEof
        }
        _ => false,
    }
}

async fn connection(
    socket: PathBuf,
    index: usize,
    budget: Arc<AtomicUsize>,
    calls: usize,
    stop: tokio::time::Instant,
) -> Result<Done> {
    let stream = tokio::net::UnixStream::connect(&socket)
        .await
        .with_context(|| format!("connect to {}", socket.display()))?;
    let (mut rd, mut wr) = stream.into_split();
    let phone = format!("+1555{:07}", 1_000 + index);
    let mut pending: HashMap<u32, Instant> = HashMap::with_capacity(PIPELINE);
    let mut done = Done {
        replies: Vec::new(),
        unanswered: 0,
        sent: 0,
        cap_reached: false,
        last: Instant::now(),
    };
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut next_id = 0u32;
    loop {
        while pending.len() < PIPELINE
            && budget
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < calls).then_some(n + 1)
                })
                .is_ok()
        {
            wr.write_all(&request(next_id, &phone)).await?;
            pending.insert(next_id, Instant::now());
            next_id = next_id.wrapping_add(1);
            done.sent += 1;
        }
        if pending.is_empty() {
            break;
        }
        let read = tokio::select! {
            read = rd.read_buf(&mut buf) => read?,
            _ = tokio::time::sleep_until(stop) => {
                done.cap_reached = true;
                break;
            }
        };
        if read == 0 {
            bail!(
                "the server closed connection {index} with {} calls unanswered",
                pending.len()
            );
        }
        let mut consumed = 0;
        loop {
            let mut rest = &buf[consumed..];
            let before = rest.len();
            match rmpv::decode::read_value(&mut rest) {
                Ok(value) => {
                    consumed += before - rest.len();
                    let now = Instant::now();
                    let (msgid, outcome) = response(value)?;
                    let sent = pending
                        .remove(&msgid)
                        .with_context(|| format!("a reply to msgid {msgid}, never sent"))?;
                    done.replies.push(Reply {
                        elapsed: now - sent,
                        outcome,
                    });
                    done.last = now;
                }
                Err(e) if incomplete(&e) => break,
                Err(e) => bail!("undecodable reply: {e}"),
            }
        }
        buf.drain(..consumed);
    }
    done.unanswered = pending.len();
    Ok(done)
}
