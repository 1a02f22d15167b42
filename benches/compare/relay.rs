//! The least a process between the caller and Twilio can do: the bench binary re-run as a
//! bare relay. One blocking thread per connection decodes each MessagePack-RPC request,
//! writes one fixed HTTP request to the mock on a kept-alive TCP connection, reads the
//! response, and answers with the SID — no validation, no logging, no deadline, no event loop.
//!
//! It measures what the second hop costs on this machine by itself: relay − floor is the hop,
//! otp-sidecar − relay is the daemon's own work.

use std::io::{Cursor, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use anyhow::{bail, Context, Result};
use rmpv::Value;

use super::{AC, AUTHORIZATION, FORM, SID};

/// Set (to "SOCKET PORT") when the bench binary runs as the relay.
pub const ENV: &str = "OTP_BENCH_RELAY";

/// Serves `socket` until killed, relaying to the mock on 127.0.0.1:`port`.
pub fn serve(socket: &Path, port: u16) -> Result<()> {
    let listener = UnixListener::bind(socket).context("bind the relay socket")?;
    let request = format!(
        "POST /2010-04-01/Accounts/{AC}/Messages.json HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Authorization: {AUTHORIZATION}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{FORM}",
        FORM.len()
    )
    .into_bytes();
    for caller in listener.incoming() {
        let caller = caller?;
        let request = request.clone();
        std::thread::spawn(move || {
            if let Err(e) = relay(caller, port, &request) {
                eprintln!("relay: {e:#}");
            }
        });
    }
    Ok(())
}

fn relay(mut caller: UnixStream, port: u16, request: &[u8]) -> Result<()> {
    let mut upstream = TcpStream::connect(("127.0.0.1", port))?;
    upstream.set_nodelay(true)?;
    let mut inbox = Vec::new();
    let mut response = Vec::new();
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut cursor = Cursor::new(&inbox[..]);
        let Ok(call) = rmpv::decode::read_value(&mut cursor) else {
            // Incomplete: wait for the rest (requests here are small and arrive whole).
            let n = caller.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            inbox.extend_from_slice(&chunk[..n]);
            continue;
        };
        let used = cursor.position() as usize;
        inbox.drain(..used);
        let msgid = call[1].clone();
        upstream.write_all(request)?;
        read_response(&mut upstream, &mut response, &mut chunk)?;
        reply.clear();
        let answer = Value::Array(vec![1.into(), msgid, Value::Nil, SID.into()]);
        rmpv::encode::write_value(&mut reply, &answer)?;
        caller.write_all(&reply)?;
    }
}

/// Reads one whole HTTP response (headers and a Content-Length body) into `response`.
fn read_response(upstream: &mut TcpStream, response: &mut Vec<u8>, chunk: &mut [u8]) -> Result<()> {
    response.clear();
    loop {
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&response[..end])?;
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .context("no Content-Length")?
                .parse()?;
            if response.len() >= end + 4 + length {
                return Ok(());
            }
        }
        let n = upstream.read(chunk)?;
        if n == 0 {
            bail!("the mock closed the connection");
        }
        response.extend_from_slice(&chunk[..n]);
    }
}
