//! Finds where one MessagePack value ends in a growing buffer, without decoding it.
//!
//! MessagePack has no length prefix, so a stream decoder must know whether a whole value has
//! arrived before it decodes. The scanner walks type headers only, keeps its place between calls
//! (a frame that trickles in byte by byte is scanned once, not once per byte), and refuses a
//! frame as soon as its declared sizes pass the cap — before those bytes are ever buffered —
//! or it declares more values than a message can use: a decoded value takes tens of bytes
//! where a nil takes one, so a cap on bytes alone would let a frame of nils decode to 30
//! times its size.
//!
//! `rmp::decode::MessageLen` (rmp 0.8.15) does a similar walk but is no substitute: it takes
//! 0xc1 for a value, panics (`todo!()`) on every ext marker, caps each container's length but
//! not the values of a whole frame, and reports a broken limit as `Truncated` on the call that
//! finds it (`ParseError`, with no reason, only on the next call). The unit tests below pin
//! each of those properties here.

use std::fmt;

/// Why a frame was refused. Any of these closes the connection that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The value would be larger than the cap (declared or already buffered).
    TooLarge { cap: usize },
    /// Nested deeper than any MessagePack-RPC message needs.
    TooDeep { max: usize },
    /// A byte that is not a MessagePack type marker (0xc1).
    BadMarker(u8),
    /// More values (array elements, map keys and values, at any depth) than [`MAX_VALUES`].
    TooMany { max: usize },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { cap } => write!(f, "frame larger than {cap} bytes"),
            FrameError::TooDeep { max } => write!(f, "frame nested deeper than {max} levels"),
            FrameError::BadMarker(b) => write!(f, "invalid MessagePack marker 0x{b:02x}"),
            FrameError::TooMany { max } => write!(f, "frame holds more than {max} values"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Nesting allowed in one frame. A request with a context map is 3 deep; 32 leaves room
/// for any sane client and keeps the decoder's recursion shallow.
pub const MAX_DEPTH: usize = 32;

/// Values allowed in one frame, counting every array element and map key and value at any
/// depth. A `sendOTP` request is 8 plus two per context key, so 1024 leaves room for a context
/// of 500 keys, and bounds the decoded tree of any frame to some 50 KiB beyond its bytes.
pub const MAX_VALUES: usize = 1024;

/// Scan progress through the frame at the front of a buffer.
#[derive(Debug)]
pub struct FrameScanner {
    cap: usize,
    /// Offset of the next header to read; may run past the buffer while a payload is missing.
    pos: usize,
    /// Values still to read at each open nesting level (innermost last).
    pending: Vec<u64>,
    /// Values the frame has declared so far (its containers' elements).
    values: u64,
}

/// The size of one value's header, its payload, and how many child values follow it.
struct Header {
    header_len: usize,
    payload_len: u64,
    children: u64,
}

impl FrameScanner {
    pub fn new(cap: usize) -> Self {
        FrameScanner {
            cap,
            pos: 0,
            pending: vec![1],
            values: 0,
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Continue scanning `buf` (the same buffer as last time, possibly longer).
    /// `Ok(Some(n))`: the first `n` bytes are one complete value; the scanner is reset for the
    /// next frame. `Ok(None)`: more bytes are needed.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        loop {
            while self.pending.last() == Some(&0) {
                self.pending.pop();
            }
            if self.pending.is_empty() {
                if self.pos > buf.len() {
                    return self.incomplete(buf);
                }
                let len = self.pos;
                self.reset();
                return Ok(Some(len));
            }
            let Some(header) = read_header(buf.get(self.pos..).unwrap_or_default())? else {
                return self.incomplete(buf);
            };
            let end = (self.pos as u64)
                .saturating_add(header.header_len as u64)
                .saturating_add(header.payload_len);
            if end > self.cap as u64 {
                return Err(FrameError::TooLarge { cap: self.cap });
            }
            // Every child takes at least one byte, so a count past the cap can never fit.
            if header.children > (self.cap as u64).saturating_sub(end) {
                return Err(FrameError::TooLarge { cap: self.cap });
            }
            // Refused from the container's header, before its elements are buffered.
            self.values = self.values.saturating_add(header.children);
            if self.values > MAX_VALUES as u64 {
                return Err(FrameError::TooMany { max: MAX_VALUES });
            }
            if let Some(top) = self.pending.last_mut() {
                *top -= 1;
            }
            self.pos = end as usize;
            if header.children > 0 {
                if self.pending.len() >= MAX_DEPTH {
                    return Err(FrameError::TooDeep { max: MAX_DEPTH });
                }
                self.pending.push(header.children);
            }
        }
    }

    fn incomplete(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        // The frame is not complete yet it already fills the cap: it can only be larger.
        if buf.len() >= self.cap {
            Err(FrameError::TooLarge { cap: self.cap })
        } else {
            Ok(None)
        }
    }

    fn reset(&mut self) {
        self.pos = 0;
        self.values = 0;
        self.pending.clear();
        self.pending.push(1);
    }
}

/// Reads the header at the front of `b`; `Ok(None)` when the header itself is cut short.
fn read_header(b: &[u8]) -> Result<Option<Header>, FrameError> {
    let Some(&marker) = b.first() else {
        return Ok(None);
    };
    let fixed = |header_len: usize| Header {
        header_len,
        payload_len: 0,
        children: 0,
    };
    // A header whose size field takes `n` bytes after the marker (and `extra` type bytes).
    let sized = |n: usize, extra: usize, children_per: u64, is_container: bool| {
        let field = b.get(1..1 + n)?;
        let value = field.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
        Some(if is_container {
            Header {
                header_len: 1 + n,
                payload_len: 0,
                children: value * children_per,
            }
        } else {
            Header {
                header_len: 1 + n + extra,
                payload_len: value,
                children: 0,
            }
        })
    };
    let header = match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Some(fixed(1)),
        0x80..=0x8f => Some(Header {
            header_len: 1,
            payload_len: 0,
            children: u64::from(marker & 0x0f) * 2,
        }),
        0x90..=0x9f => Some(Header {
            header_len: 1,
            payload_len: 0,
            children: u64::from(marker & 0x0f),
        }),
        0xa0..=0xbf => Some(Header {
            header_len: 1,
            payload_len: u64::from(marker & 0x1f),
            children: 0,
        }),
        0xc1 => return Err(FrameError::BadMarker(marker)),
        0xc4 | 0xd9 => sized(1, 0, 0, false),
        0xc5 | 0xda => sized(2, 0, 0, false),
        0xc6 | 0xdb => sized(4, 0, 0, false),
        0xc7 => sized(1, 1, 0, false),
        0xc8 => sized(2, 1, 0, false),
        0xc9 => sized(4, 1, 0, false),
        0xca => Some(fixed(5)),
        0xcb => Some(fixed(9)),
        0xcc | 0xd0 => Some(fixed(2)),
        0xcd | 0xd1 => Some(fixed(3)),
        0xce | 0xd2 => Some(fixed(5)),
        0xcf | 0xd3 => Some(fixed(9)),
        0xd4 => Some(fixed(3)),
        0xd5 => Some(fixed(4)),
        0xd6 => Some(fixed(6)),
        0xd7 => Some(fixed(10)),
        0xd8 => Some(fixed(18)),
        0xdc => sized(2, 0, 1, true),
        0xdd => sized(4, 0, 1, true),
        0xde => sized(2, 0, 2, true),
        0xdf => sized(4, 0, 2, true),
    };
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(v: &rmpv::Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).expect("encode to Vec");
        out
    }

    fn sample_values() -> Vec<rmpv::Value> {
        use rmpv::Value as V;
        vec![
            V::Nil,
            V::Boolean(true),
            V::from(5),
            V::from(-3),
            V::from(300),
            V::from(-40000),
            V::from(u64::MAX),
            V::from(i64::MIN),
            V::F32(1.5),
            V::F64(2.5),
            V::from("short"),
            V::from("x".repeat(40)),
            V::from("y".repeat(300)),
            V::from("z".repeat(70000)),
            V::Binary(vec![1, 2, 3]),
            V::Binary(vec![9; 300]),
            V::Ext(1, vec![1]),
            V::Ext(2, vec![1, 2, 3]),
            V::Ext(3, vec![0; 16]),
            V::Ext(4, vec![0; 300]),
            V::Array((0..20).map(V::from).collect()),
            V::Map(vec![(V::from("k"), V::Array(vec![V::Nil; 3]))]),
            V::Map((0..20).map(|i| (V::from(i), V::from(i))).collect()),
        ]
    }

    #[test]
    fn finds_the_exact_length_of_every_type() {
        for v in sample_values() {
            let bytes = encode(&v);
            let mut s = FrameScanner::new(1 << 20);
            let mut buf = bytes.clone();
            buf.extend_from_slice(&[0x91, 0x01]); // the start of the next frame
            assert_eq!(s.scan(&buf), Ok(Some(bytes.len())), "value {v:?}");
        }
    }

    #[test]
    fn resumes_byte_by_byte() {
        for v in sample_values() {
            let bytes = encode(&v);
            let mut s = FrameScanner::new(1 << 20);
            for n in 0..bytes.len() {
                assert_eq!(s.scan(&bytes[..n]), Ok(None), "prefix {n} of {v:?}");
            }
            assert_eq!(s.scan(&bytes), Ok(Some(bytes.len())));
            // Reset: the next frame scans from the start.
            assert_eq!(s.scan(&[0xc0]), Ok(Some(1)));
        }
    }

    #[test]
    fn refuses_declared_sizes_over_the_cap_before_buffering() {
        let mut s = FrameScanner::new(1024);
        // str32 declaring 4 GiB: refused from its 5-byte header alone.
        assert_eq!(
            s.scan(&[0xdb, 0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::TooLarge { cap: 1024 })
        );
        let mut s = FrameScanner::new(1024);
        // array32 declaring 2^32-1 elements.
        assert_eq!(
            s.scan(&[0xdd, 0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::TooLarge { cap: 1024 })
        );
        let mut s = FrameScanner::new(1024);
        // map16 of 600 pairs = 1200 values, at least 1200 bytes.
        assert_eq!(
            s.scan(&[0xde, 0x02, 0x58]),
            Err(FrameError::TooLarge { cap: 1024 })
        );
    }

    #[test]
    fn refuses_an_incomplete_frame_that_fills_the_cap() {
        let mut s = FrameScanner::new(16);
        let mut buf = vec![0xdc, 0x00, 0x0f]; // array16 of 15 fixints: 18 bytes
        buf.extend_from_slice(&[1; 13]);
        assert_eq!(s.scan(&buf), Err(FrameError::TooLarge { cap: 16 }));
    }

    #[test]
    fn accepts_a_frame_exactly_at_the_cap() {
        let v = rmpv::Value::from("a".repeat(13)); // 1 + 13 bytes
        let bytes = encode(&v);
        let mut s = FrameScanner::new(bytes.len());
        assert_eq!(s.scan(&bytes), Ok(Some(bytes.len())));
    }

    #[test]
    fn refuses_frames_declaring_more_values_than_a_message_uses() {
        let cap = 16 << 20;
        // [0, 1, "ping", [nil x 16M]]: refused from the array's header.
        let mut s = FrameScanner::new(cap);
        assert_eq!(
            s.scan(b"\x94\x00\x01\xa4ping\xdd\x00\xf4\x24\x00"),
            Err(FrameError::TooMany { max: MAX_VALUES })
        );
        // Many small arrays add up: 40 arrays of 30 nils.
        let v = rmpv::Value::Array(vec![rmpv::Value::Array(vec![rmpv::Value::Nil; 30]); 40]);
        let mut s = FrameScanner::new(cap);
        assert_eq!(
            s.scan(&encode(&v)),
            Err(FrameError::TooMany { max: MAX_VALUES })
        );
        // Exactly at the limit is fine, and the count starts again for the next frame.
        let v = rmpv::Value::Array(vec![rmpv::Value::Nil; MAX_VALUES]);
        let bytes = encode(&v);
        let mut s = FrameScanner::new(cap);
        assert_eq!(s.scan(&bytes), Ok(Some(bytes.len())));
        assert_eq!(s.scan(&bytes), Ok(Some(bytes.len())));
    }

    #[test]
    fn refuses_deep_nesting_and_bad_markers() {
        let mut s = FrameScanner::new(1 << 16);
        assert_eq!(
            s.scan(&[0x91; 100]),
            Err(FrameError::TooDeep { max: MAX_DEPTH })
        );
        let mut s = FrameScanner::new(1 << 16);
        assert_eq!(
            s.scan(&[0x92, 0x01, 0xc1]),
            Err(FrameError::BadMarker(0xc1))
        );
    }

    #[test]
    fn resumes_without_reading_scanned_bytes_again() {
        let mut s = FrameScanner::new(1 << 16);
        assert_eq!(s.scan(&[0x92, 0x01]), Ok(None));
        // Bytes 0 and 1 were scanned last time: garbage there now is never looked at, so the
        // frame's end comes from the third byte alone.
        assert_eq!(s.scan(&[0xc1, 0xc1, 0x02]), Ok(Some(3)));
        // A str's payload is skipped by offset: the scanner waits for it without reading it.
        let mut s = FrameScanner::new(1 << 16);
        assert_eq!(s.scan(&[0x92, 0xa4]), Ok(None));
        assert_eq!(s.scan(&[0x92, 0xa4, 0xc1, 0xc1]), Ok(None));
        assert_eq!(
            s.scan(&[0x92, 0xa4, 0xc1, 0xc1, 0xc1, 0xc1, 0x07]),
            Ok(Some(7))
        );
    }

    /// Fed one byte at a time, a frame is refused by the very call that brings the byte
    /// breaking a limit, with `Ok(None)` before it: a client that stops sending there cannot
    /// hold the connection open.
    fn refused_at(bytes: &[u8], at: usize, error: FrameError) {
        let mut s = FrameScanner::new(1 << 20);
        for n in 0..at {
            assert_eq!(s.scan(&bytes[..n]), Ok(None), "prefix {n}");
        }
        assert_eq!(s.scan(&bytes[..at]), Err(error));
    }

    #[test]
    fn refuses_in_the_call_that_brings_the_offending_byte() {
        // [0, 10, str32 of 4 GiB]: refused from the last byte of the str's size field.
        refused_at(
            &[0x93, 0x00, 0x0a, 0xdb, 0xff, 0xff, 0xff, 0xff],
            8,
            FrameError::TooLarge { cap: 1 << 20 },
        );
        // Nested arrays: refused from the 32nd header, which declares a 33rd level.
        refused_at(&[0x91; 40], 32, FrameError::TooDeep { max: MAX_DEPTH });
        // [nil, 0xc1]: refused from the marker.
        refused_at(&[0x92, 0xc0, 0xc1], 3, FrameError::BadMarker(0xc1));
        // 40 arrays of 30 nils, every one far under any per-container limit a request
        // allows (a context of 500 keys is a map of 1000 values): refused from the header
        // of the 33rd, which brings the frame to 40 + 33 * 30 = 1030 values.
        let mut many = vec![0xdc, 0x00, 40];
        for _ in 0..40 {
            many.extend_from_slice(&[0xdc, 0x00, 30]);
            many.extend_from_slice(&[0xc0; 30]);
        }
        refused_at(
            &many,
            3 + 32 * 33 + 3,
            FrameError::TooMany { max: MAX_VALUES },
        );
    }

    #[test]
    fn accepts_every_ext_type() {
        // fixext 1/2/4/8/16, ext8/16/32 (the timestamp types among them).
        let mut frames: Vec<Vec<u8>> = [(0xd4, 1), (0xd5, 2), (0xd6, 4), (0xd7, 8), (0xd8, 16)]
            .into_iter()
            .map(|(marker, n)| [vec![marker, 0xff], vec![0; n]].concat())
            .collect();
        frames.push(vec![0xc7, 0x01, 0x05, 0xaa]);
        frames.push(vec![0xc8, 0x00, 0x01, 0x05, 0xaa]);
        frames.push(vec![0xc9, 0x00, 0x00, 0x00, 0x01, 0x05, 0xaa]);
        for frame in frames {
            let mut s = FrameScanner::new(1 << 16);
            assert_eq!(s.scan(&frame), Ok(Some(frame.len())), "{frame:02x?}");
        }
    }

    #[test]
    fn error_texts_are_stable() {
        // These end up in the log line of the connection they close.
        assert_eq!(
            FrameError::TooLarge { cap: 65536 }.to_string(),
            "frame larger than 65536 bytes"
        );
        assert_eq!(
            FrameError::TooDeep { max: MAX_DEPTH }.to_string(),
            "frame nested deeper than 32 levels"
        );
        assert_eq!(
            FrameError::BadMarker(0xc1).to_string(),
            "invalid MessagePack marker 0xc1"
        );
        assert_eq!(
            FrameError::TooMany { max: MAX_VALUES }.to_string(),
            "frame holds more than 1024 values"
        );
    }
}
