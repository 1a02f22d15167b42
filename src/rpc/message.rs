//! MessagePack-RPC messages: parsing decoded values into requests, encoding replies.
//!
//! Request `[0, msgid, method, params]`, response `[1, msgid, error, result]`,
//! notification `[2, method, params]` (https://github.com/msgpack-rpc/msgpack-rpc/blob/master/spec.md).

use std::io;

use rmpv::{Integer, Value};

use super::method::Method;

const REQUEST: u64 = 0;
const RESPONSE: u64 = 1;
const NOTIFICATION: u64 = 2;

/// Something that writes itself as one MessagePack value.
pub trait Encode {
    fn encode<W: io::Write>(&self, w: &mut W) -> io::Result<()>;
}

/// One incoming message, as the server sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Request(Request),
    /// A request whose msgid is known but whose method or params are unusable: it still
    /// deserves an `ERR bad_request` reply, and the connection stays open.
    Malformed {
        msgid: Integer,
        detail: String,
    },
    Notification {
        method: Method,
    },
    /// A response sent to us; the server issues no requests, so it is ignored.
    Response(Response),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Echoed back as it came: the spec says uint32, but any integer is answered.
    pub msgid: Integer,
    pub method: Method,
    pub params: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub msgid: Integer,
    /// `Ok(result)` goes out with a nil error; `Err(text)` with a nil result.
    pub outcome: Result<Value, String>,
}

/// A value that cannot be a MessagePack-RPC message at all: the connection is closed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("not a MessagePack-RPC message: {0}")]
pub struct NotAMessage(pub &'static str);

impl Incoming {
    pub fn parse(value: Value) -> Result<Incoming, NotAMessage> {
        let Value::Array(items) = value else {
            return Err(NotAMessage("expected an array"));
        };
        let mut items = items.into_iter();
        let kind = items
            .next()
            .and_then(|v| v.as_u64())
            .ok_or(NotAMessage("expected a message type"))?;
        match (kind, items.len()) {
            (REQUEST, 3) => {
                let msgid = integer(items.next())?;
                let method = items.next().and_then(method_name);
                let params = items.next();
                Ok(match (method, params) {
                    (Some(method), Some(Value::Array(params))) => Incoming::Request(Request {
                        msgid,
                        method,
                        params,
                    }),
                    (None, _) => Incoming::Malformed {
                        msgid,
                        detail: "method name must be a string".into(),
                    },
                    (Some(_), _) => Incoming::Malformed {
                        msgid,
                        detail: "params must be an array".into(),
                    },
                })
            }
            (NOTIFICATION, 2) => {
                let method = items
                    .next()
                    .and_then(method_name)
                    .ok_or(NotAMessage("notification method must be a string"))?;
                Ok(Incoming::Notification { method })
            }
            (RESPONSE, 3) => {
                let msgid = integer(items.next())?;
                let error = items.next().unwrap_or(Value::Nil);
                let result = items.next().unwrap_or(Value::Nil);
                let outcome = match error {
                    Value::Nil => Ok(result),
                    Value::String(s) => Err(String::from_utf8_lossy(s.as_bytes()).into_owned()),
                    other => Err(other.to_string()),
                };
                Ok(Incoming::Response(Response { msgid, outcome }))
            }
            (REQUEST | RESPONSE | NOTIFICATION, _) => Err(NotAMessage("wrong number of elements")),
            _ => Err(NotAMessage("unknown message type")),
        }
    }
}

fn integer(v: Option<Value>) -> Result<Integer, NotAMessage> {
    match v {
        Some(Value::Integer(i)) => Ok(i),
        _ => Err(NotAMessage("msgid must be an integer")),
    }
}

/// Method names arrive as str or bin (older msgpack encoders have no str type); matched
/// here, once.
fn method_name(v: Value) -> Option<Method> {
    match v {
        Value::String(s) => Some(Method::of(s.as_bytes())),
        Value::Binary(b) => Some(Method::of(&b)),
        _ => None,
    }
}

fn write_err(e: rmp::encode::ValueWriteError) -> io::Error {
    match e {
        rmp::encode::ValueWriteError::InvalidMarkerWrite(e)
        | rmp::encode::ValueWriteError::InvalidDataWrite(e) => e,
    }
}

fn write_integer<W: io::Write>(w: &mut W, i: &Integer) -> io::Result<()> {
    if let Some(u) = i.as_u64() {
        rmp::encode::write_uint(w, u).map_err(write_err)?;
    } else if let Some(s) = i.as_i64() {
        rmp::encode::write_sint(w, s).map_err(write_err)?;
    }
    Ok(())
}

fn write_str<W: io::Write>(w: &mut W, s: &str) -> io::Result<()> {
    rmp::encode::write_str(w, s).map_err(write_err)
}

impl Encode for Response {
    fn encode<W: io::Write>(&self, w: &mut W) -> io::Result<()> {
        rmp::encode::write_array_len(w, 4).map_err(write_err)?;
        rmp::encode::write_uint(w, RESPONSE).map_err(write_err)?;
        write_integer(w, &self.msgid)?;
        match &self.outcome {
            Ok(result) => {
                rmp::encode::write_nil(w)?;
                rmpv::encode::write_value(w, result).map_err(io::Error::other)?;
            }
            Err(error) => {
                write_str(w, error)?;
                rmp::encode::write_nil(w)?;
            }
        }
        Ok(())
    }
}

impl Encode for Request {
    fn encode<W: io::Write>(&self, w: &mut W) -> io::Result<()> {
        rmp::encode::write_array_len(w, 4).map_err(write_err)?;
        rmp::encode::write_uint(w, REQUEST).map_err(write_err)?;
        write_integer(w, &self.msgid)?;
        write_str(w, self.method.name())?;
        rmp::encode::write_array_len(w, self.params.len() as u32).map_err(write_err)?;
        for p in &self.params {
            rmpv::encode::write_value(w, p).map_err(io::Error::other)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(m: &impl Encode) -> Vec<u8> {
        let mut out = Vec::new();
        m.encode(&mut out).expect("encode to Vec");
        out
    }

    #[test]
    fn golden_success_response() {
        let r = Response {
            msgid: 7.into(),
            outcome: Ok(Value::from("SM1")),
        };
        assert_eq!(bytes(&r), [0x94, 0x01, 0x07, 0xc0, 0xa3, b'S', b'M', b'1']);
    }

    #[test]
    fn golden_error_response_echoes_large_and_negative_ids() {
        let r = Response {
            msgid: u64::MAX.into(),
            outcome: Err("ERR x".into()),
        };
        let mut want = vec![0x94, 0x01, 0xcf];
        want.extend_from_slice(&[0xff; 8]);
        want.extend_from_slice(&[0xa5, b'E', b'R', b'R', b' ', b'x', 0xc0]);
        assert_eq!(bytes(&r), want);
        let r = Response {
            msgid: (-1i64).into(),
            outcome: Ok(Value::Nil),
        };
        assert_eq!(bytes(&r), [0x94, 0x01, 0xff, 0xc0, 0xc0]);
    }

    #[test]
    fn parses_requests_with_str_or_bin_method() {
        for method in [Value::from("ping"), Value::Binary(b"ping".to_vec())] {
            let v = Value::Array(vec![0.into(), 3.into(), method, Value::Array(vec![])]);
            assert_eq!(
                Incoming::parse(v),
                Ok(Incoming::Request(Request {
                    msgid: 3.into(),
                    method: Method::Ping,
                    params: vec![],
                }))
            );
        }
    }

    #[test]
    fn bad_method_or_params_keep_the_msgid() {
        let v = Value::Array(vec![0.into(), 9.into(), 5.into(), Value::Array(vec![])]);
        assert!(
            matches!(Incoming::parse(v), Ok(Incoming::Malformed { msgid, .. }) if msgid == 9.into())
        );
        let v = Value::Array(vec![0.into(), 9.into(), "m".into(), Value::Nil]);
        assert!(matches!(Incoming::parse(v), Ok(Incoming::Malformed { .. })));
    }

    #[test]
    fn rejects_what_cannot_be_answered() {
        for v in [
            Value::from(1),
            Value::Array(vec![]),
            Value::Array(vec![
                0.into(),
                "id".into(),
                "m".into(),
                Value::Array(vec![]),
            ]),
            Value::Array(vec![0.into(), 1.into(), "m".into()]),
            Value::Array(vec![7.into(), 1.into(), "m".into(), Value::Array(vec![])]),
            Value::Array(vec![2.into(), 1.into(), Value::Array(vec![])]),
        ] {
            assert!(Incoming::parse(v.clone()).is_err(), "{v}");
        }
    }
}
