//! The tokio_util codec for MessagePack-RPC: frames in, values out; messages in, bytes out.

use std::io;

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::message::Encode;
use super::scan::{FrameError, FrameScanner};

/// The default cap on one frame, in bytes (also the most one connection buffers).
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;

/// Why a connection's byte stream could not be read. Either closes that connection.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("undecodable MessagePack: {0}")]
    Decode(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Splits a byte stream into whole MessagePack values and encodes outgoing messages.
#[derive(Debug)]
pub struct MsgpackCodec {
    scanner: FrameScanner,
}

impl MsgpackCodec {
    pub fn new(max_frame: usize) -> Self {
        MsgpackCodec {
            scanner: FrameScanner::new(max_frame),
        }
    }
}

impl Default for MsgpackCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl Decoder for MsgpackCodec {
    type Item = rmpv::Value;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<rmpv::Value>, CodecError> {
        let Some(len) = self.scanner.scan(src)? else {
            // Ask for room for the rest of a frame up to the cap, not more.
            let want = self.scanner.cap().saturating_sub(src.len()).min(8 * 1024);
            src.reserve(want);
            return Ok(None);
        };
        let frame = src.split_to(len);
        // The scanner has vouched for the structure and depth; this only fails on values
        // the scanner does not judge (none today), so it is a protocol error, not a panic.
        let mut reader = frame.reader();
        rmpv::decode::read_value(&mut reader)
            .map(Some)
            .map_err(|e| CodecError::Decode(e.to_string()))
    }
}

impl<T: Encode> Encoder<T> for MsgpackCodec {
    type Error = CodecError;

    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), CodecError> {
        item.encode(&mut dst.writer())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_many_frames_from_one_read_and_keeps_the_tail() {
        let mut codec = MsgpackCodec::default();
        let mut buf = BytesMut::new();
        for i in 0..3 {
            rmpv::encode::write_value(
                &mut (&mut buf).writer(),
                &rmpv::Value::Array(vec![
                    2.into(),
                    "m".into(),
                    rmpv::Value::Array(vec![i.into()]),
                ]),
            )
            .expect("encode");
        }
        buf.put_u8(0x93); // start of a fourth frame
        for _ in 0..3 {
            assert!(codec.decode(&mut buf).expect("valid").is_some());
        }
        assert!(codec.decode(&mut buf).expect("partial").is_none());
        assert_eq!(&buf[..], &[0x93]);
    }

    #[test]
    fn oversized_frame_is_an_error() {
        let mut codec = MsgpackCodec::new(8);
        let mut buf = BytesMut::from(&[0xa9u8, b'1', b'2'][..]); // fixstr of 9 bytes: 10 total
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::Frame(FrameError::TooLarge { cap: 8 }))
        ));
    }
}
