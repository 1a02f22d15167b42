//! A bound on what the store may send: every reply is scanned as it arrives (RESP2 and RESP3
//! framing only, no values kept) and the connection is failed as soon as one reply declares or
//! reaches more than [`MAX_REPLY`] bytes, an aggregate of more than [`MAX_ELEMENTS`] elements,
//! or deeper nesting than [`MAX_DEPTH`]. redis-rs has no such option and would otherwise buffer
//! whatever a broken or hostile store (or anyone on a plain `redis://` path) declares: a 1 GB
//! bulk string, an array of 10 M integers. Our replies are a few dozen bytes.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest reply accepted, framing included.
pub const MAX_REPLY: usize = 64 * 1024;
/// The most elements one aggregate (array, set, map pair, push) may declare.
pub const MAX_ELEMENTS: i64 = 1024;
/// The deepest nesting of aggregates.
pub const MAX_DEPTH: usize = 8;
/// A type line's length number never needs more.
const MAX_HEADER: usize = 24;

/// A stream whose replies are scanned and bounded; writes pass through.
pub struct Bounded<S> {
    inner: S,
    scan: Scanner,
}

impl<S> Bounded<S> {
    pub fn new(inner: S) -> Bounded<S> {
        Bounded {
            inner,
            scan: Scanner::default(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Bounded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let this = &mut *self;
        this.scan
            .feed(&buf.filled()[before..])
            .map_err(|why| io::Error::new(io::ErrorKind::InvalidData, why))?;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Bounded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    /// `$`, `!`, `=`: a length, then that many bytes and CRLF.
    Bulk,
    /// `*`, `~`, `>` (one element per count) and `%` (two).
    Aggregate(i64),
    /// `|`: an attribute map, then the value it describes.
    Attribute,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Mode {
    /// The next byte is a type.
    #[default]
    Type,
    /// A length or count line.
    Header(Header),
    /// A simple line (`+`, `-`, `:`, `,`, `#`, `_`, `(`) up to LF.
    Line,
    /// Bytes of a bulk string still to come, CRLF included.
    Skip(usize),
}

/// Where the scan stands in the stream of replies.
#[derive(Default)]
struct Scanner {
    mode: Mode,
    /// The length line read so far.
    header: Vec<u8>,
    /// Elements still to come in each open aggregate, innermost last.
    open: Vec<i64>,
    /// Bytes of the reply being read.
    used: usize,
}

impl Scanner {
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), &'static str> {
        while let Some((&byte, rest)) = bytes.split_first() {
            if let Mode::Skip(left) = self.mode {
                let n = left.min(bytes.len());
                self.count(n)?;
                bytes = &bytes[n..];
                self.mode = Mode::Skip(left - n);
                if left == n {
                    self.value_done();
                }
                continue;
            }
            self.count(1)?;
            bytes = rest;
            match self.mode {
                Mode::Type => {
                    self.mode = match byte {
                        b'$' | b'!' | b'=' => Mode::Header(Header::Bulk),
                        b'*' | b'~' | b'>' => Mode::Header(Header::Aggregate(1)),
                        b'%' => Mode::Header(Header::Aggregate(2)),
                        b'|' => Mode::Header(Header::Attribute),
                        b'+' | b'-' | b':' | b',' | b'#' | b'_' | b'(' => Mode::Line,
                        _ => return Err("the state store sent something that is not RESP"),
                    };
                    self.header.clear();
                }
                Mode::Line => {
                    if byte == b'\n' {
                        self.value_done();
                    }
                }
                Mode::Header(kind) => {
                    if byte != b'\n' {
                        if self.header.len() >= MAX_HEADER {
                            return Err("the state store sent an overlong length");
                        }
                        self.header.push(byte);
                        continue;
                    }
                    let n = parse_length(&self.header)?;
                    self.header_done(kind, n)?;
                }
                Mode::Skip(_) => {}
            }
        }
        Ok(())
    }

    fn count(&mut self, n: usize) -> Result<(), &'static str> {
        self.used += n;
        if self.used > MAX_REPLY {
            return Err("the state store sent a reply over 64 KiB");
        }
        Ok(())
    }

    fn header_done(&mut self, kind: Header, n: i64) -> Result<(), &'static str> {
        if n == -1 {
            self.value_done(); // a null
            return Ok(());
        }
        if n < 0 {
            return Err("the state store sent a negative length");
        }
        match kind {
            Header::Bulk => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if n > MAX_REPLY {
                    return Err("the state store declared a string over 64 KiB");
                }
                self.mode = Mode::Skip(n + 2);
            }
            Header::Aggregate(_) | Header::Attribute if n > MAX_ELEMENTS => {
                return Err("the state store declared an aggregate over 1024 elements");
            }
            Header::Aggregate(per) => {
                if n == 0 {
                    self.value_done();
                } else {
                    self.open_aggregate(n * per)?;
                }
            }
            Header::Attribute => self.open_aggregate(2 * n + 1)?,
        }
        Ok(())
    }

    fn open_aggregate(&mut self, elements: i64) -> Result<(), &'static str> {
        if self.open.len() >= MAX_DEPTH {
            return Err("the state store sent aggregates nested too deep");
        }
        self.open.push(elements);
        self.mode = Mode::Type;
        Ok(())
    }

    /// One value is complete: it counts against its aggregate, and a complete top-level
    /// reply starts the count anew.
    fn value_done(&mut self) {
        self.mode = Mode::Type;
        while let Some(left) = self.open.last_mut() {
            *left -= 1;
            if *left > 0 {
                return;
            }
            self.open.pop();
        }
        self.used = 0;
    }
}

/// `123\r` (the LF already taken) as a number.
fn parse_length(line: &[u8]) -> Result<i64, &'static str> {
    let digits = line.strip_suffix(b"\r").unwrap_or(line);
    std::str::from_utf8(digits)
        .ok()
        .and_then(|text| text.parse::<i64>().ok())
        .ok_or("the state store sent a length that is not a number")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> Result<(), &'static str> {
        let mut scanner = Scanner::default();
        for chunk in chunks {
            scanner.feed(chunk)?;
        }
        Ok(())
    }

    #[test]
    fn ordinary_replies_pass_in_any_split() {
        let stream: &[u8] = b"+OK\r\n*3\r\n:0\r\n:0\r\n:1700000000000000\r\n$5\r\nhello\r\n$-1\r\n\
              %2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n*0\r\n-ERR x\r\n\
              |1\r\n+a\r\n:1\r\n,1.5\r\n";
        assert_eq!(scan(&[stream]), Ok(()));
        for at in 0..stream.len() {
            let (a, b) = stream.split_at(at);
            assert_eq!(scan(&[a, b]), Ok(()), "split at {at}");
        }
        // Many small replies never add up: the count starts anew with each.
        let many = b":1\r\n".repeat(100_000);
        assert_eq!(scan(&[&many]), Ok(()));
    }

    #[test]
    fn huge_or_broken_replies_fail_at_once() {
        assert!(scan(&[b"$1000000000\r\n"]).is_err(), "declared 1 GB");
        assert!(scan(&[b"*10000000\r\n"]).is_err(), "declared 10 M elements");
        let big = [b"$65536\r\n".as_slice(), &vec![b'x'; 65536]].concat();
        assert!(scan(&[&big]).is_err());
        let mut line = b"+".to_vec();
        line.extend(std::iter::repeat_n(b'x', MAX_REPLY));
        assert!(scan(&[&line]).is_err(), "a line without end");
        let mut wide = b"*1000\r\n".to_vec();
        for _ in 0..1000 {
            wide.extend_from_slice(b"$100\r\n");
            wide.extend(std::iter::repeat_n(b'y', 100));
            wide.extend_from_slice(b"\r\n");
        }
        assert!(scan(&[&wide]).is_err(), "many elements adding up");
        assert!(scan(&[b"*1\r\n".repeat(9).as_slice()]).is_err(), "too deep");
        assert!(scan(&[b"$-5\r\n"]).is_err());
        assert!(scan(&[b"$12x\r\n"]).is_err());
        assert!(scan(&[b"HTTP/1.1 200 OK\r\n"]).is_err());
    }
}
