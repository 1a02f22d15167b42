//! MessagePack-RPC: framing, messages (their method matched once) and the codec that joins
//! them.

pub mod codec;
pub mod message;
pub mod method;
pub mod scan;

pub use codec::{CodecError, MsgpackCodec, DEFAULT_MAX_FRAME};
pub use message::{Encode, Incoming, Request, Response};
pub use method::Method;
