//! MessagePack-RPC: framing, messages and the codec that joins them.

pub mod codec;
pub mod message;
pub mod scan;

pub use codec::{CodecError, MsgpackCodec, DEFAULT_MAX_FRAME};
pub use message::{Encode, Incoming, Request, Response};
