//! Caller tokens: with a tokens file configured, every call that sends or checks anything
//! (sendOTP, confirmOTP) must carry one of its tokens as `context.token`, or it is answered
//! `ERR unauthorized` before anything else happens (nothing sent, no limit charged). The
//! caller's name, never its token, goes into the call's log line and metrics.
//!
//! The file: one `name token` per line; blank lines and lines starting with `#` are skipped.
//! No error ever quotes a line's contents (a token may be on it), only the file and line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::error::CallError;
use crate::guard::validate::Token;

/// Tokens are 16–128 printable ASCII characters.
pub const MIN_TOKEN: usize = 16;
pub const MAX_TOKEN: usize = 128;
/// Caller names are 1–64 of `A-Z a-z 0-9 . _ -`: they become a metric label.
const MAX_NAME: usize = 64;
/// The metric label of a call that named no caller (no token, or one not accepted).
pub const NO_CALLER: &str = "none";

/// The callers of the tokens file.
pub struct Callers {
    path: PathBuf,
    callers: Vec<Caller>,
}

struct Caller {
    name: Arc<str>,
    /// The token, zero-padded to [`MAX_TOKEN`] so every comparison reads the same bytes.
    token: [u8; MAX_TOKEN],
    len: u32,
}

impl std::fmt::Debug for Callers {
    /// The file and the names: never a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callers")
            .field("path", &self.path)
            .field("names", &self.names().collect::<Vec<_>>())
            .finish()
    }
}

impl Callers {
    /// Reads the tokens file; a malformed line is refused by file and line number.
    pub fn load(path: &Path) -> Result<Callers> {
        let at = crate::error::shown_path(path);
        let text =
            std::fs::read(path).with_context(|| format!("cannot read caller_tokens_file {at}"))?;
        Callers::parse(path, &text)
    }

    fn parse(path: &Path, text: &[u8]) -> Result<Callers> {
        let at = crate::error::shown_path(path);
        let mut callers: Vec<Caller> = Vec::new();
        let mut lines_of: Vec<usize> = Vec::new();
        // Windows editors start a UTF-8 file with a byte-order mark (and end lines with CRLF,
        // which `trim` takes off): it is not part of the first caller's name.
        let text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
        for (i, line) in text.split(|b| *b == b'\n').enumerate() {
            let n = i + 1;
            let Ok(line) = std::str::from_utf8(line) else {
                bail!("{at}:{n}: not UTF-8 text");
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, token] = fields[..] else {
                bail!(
                    "{at}:{n}: expected `name token` (two fields separated by spaces), found {} \
                     fields",
                    fields.len()
                );
            };
            if !is_name(name) {
                bail!(
                    "{at}:{n}: a caller name must be 1-{MAX_NAME} letters, digits, '.', '_' or \
                     '-', and not \"{NO_CALLER}\""
                );
            }
            if !(MIN_TOKEN..=MAX_TOKEN).contains(&token.len())
                || !token.bytes().all(|b| b.is_ascii_graphic())
            {
                bail!(
                    "{at}:{n}: a token must be {MIN_TOKEN}-{MAX_TOKEN} printable ASCII \
                     characters without spaces"
                );
            }
            let caller = Caller::new(name, token.as_bytes());
            for (earlier, line_no) in callers.iter().zip(&lines_of) {
                if *earlier.name == *name {
                    bail!("{at}:{n}: the caller name is already used on line {line_no}");
                }
                if bool::from(earlier.same_token(&caller.token, caller.len)) {
                    bail!("{at}:{n}: the token is already used on line {line_no}");
                }
            }
            callers.push(caller);
            lines_of.push(n);
        }
        if callers.is_empty() {
            bail!("caller_tokens_file {at} names no caller (one `name token` per line)");
        }
        Ok(Callers {
            path: path.to_owned(),
            callers,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.callers.iter().map(|c| &*c.name)
    }

    /// The caller whose token the call's context carries (read with the rest of the
    /// context); otherwise [`CallError::Unauthorized`], saying what was wrong but never
    /// echoing a token.
    pub fn identify(&self, token: Token<'_>) -> Result<Arc<str>, CallError> {
        let presented = match token {
            Token::Missing => {
                return Err(CallError::Unauthorized(
                    "a caller token is required (context.token)".into(),
                ))
            }
            Token::NotText => {
                return Err(CallError::Unauthorized(
                    "context.token must be a string".into(),
                ))
            }
            Token::Text(bytes) => bytes,
        };
        self.matching(presented)
            .map(|i| self.callers[i].name.clone())
            .ok_or_else(|| CallError::Unauthorized("caller token not accepted".into()))
    }

    /// The index of the caller whose token is `presented`, comparing with every caller's
    /// token in constant time (the same bytes read, no early exit, whichever matches).
    fn matching(&self, presented: &[u8]) -> Option<usize> {
        // Longer than any token could be: no comparison can tell anything about one.
        let len = u32::try_from(presented.len())
            .ok()
            .filter(|_| presented.len() <= MAX_TOKEN)?;
        let mut padded = [0u8; MAX_TOKEN];
        padded[..presented.len()].copy_from_slice(presented);
        let mut found = Choice::from(0);
        let mut index = 0u32;
        for (i, caller) in self.callers.iter().enumerate() {
            let same = caller.same_token(&padded, len);
            index.conditional_assign(&(i as u32), same);
            found |= same;
        }
        bool::from(found).then_some(index as usize)
    }
}

impl Caller {
    fn new(name: &str, token: &[u8]) -> Caller {
        let mut padded = [0u8; MAX_TOKEN];
        padded[..token.len()].copy_from_slice(token);
        Caller {
            name: name.into(),
            token: padded,
            len: token.len() as u32,
        }
    }

    fn same_token(&self, padded: &[u8; MAX_TOKEN], len: u32) -> Choice {
        self.token[..].ct_eq(&padded[..]) & self.len.ct_eq(&len)
    }
}

fn is_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name != NO_CALLER
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::validate::context;
    use rmpv::Value;

    const A: &str = "tok-aaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "tok-bbbbbbbbbbbbbbbbbbbbbbbb";

    fn callers(text: &str) -> Result<Callers> {
        Callers::parse(Path::new("/etc/tokens"), text.as_bytes())
    }

    fn ctx(token: Value) -> Value {
        Value::Map(vec![
            ("ip".into(), "10.0.0.1".into()),
            ("token".into(), token),
        ])
    }

    #[test]
    fn identifies_callers_by_token() {
        let c = callers(&format!("# the pool\n\nbigip-a {A}\n  bigip-b\t{B}  \n")).unwrap();
        assert_eq!(c.names().collect::<Vec<_>>(), ["bigip-a", "bigip-b"]);
        assert_eq!(&*c.identify(Token::Text(B.as_bytes())).unwrap(), "bigip-b");
        fn token(v: Option<&Value>) -> Token<'_> {
            context(v).token
        }
        assert_eq!(
            &*c.identify(token(Some(&ctx(A.into())))).unwrap(),
            "bigip-a"
        );
        let refused = |v: Option<&Value>| c.identify(token(v)).unwrap_err().to_string();
        assert_eq!(
            refused(Some(&ctx("tok-aaaaaaaaaaaaaaaaaaaaaaa".into()))),
            "ERR unauthorized: caller token not accepted"
        );
        assert_eq!(
            refused(Some(&ctx(format!("{A}a").into()))),
            "ERR unauthorized: caller token not accepted"
        );
        assert_eq!(
            refused(Some(&ctx("x".repeat(4000).into()))),
            "ERR unauthorized: caller token not accepted"
        );
        assert!(refused(None).contains("required"));
        assert!(refused(Some(&Value::Nil)).contains("required"));
        assert!(refused(Some(&ctx("".into()))).contains("required"));
        assert!(refused(Some(&ctx(Value::Nil))).contains("required"));
        assert!(refused(Some(&ctx(42.into()))).contains("must be a string"));
        assert!(
            refused(Some(&ctx(Value::Binary(A.as_bytes().to_vec())))).contains("must be a string")
        );
        assert!(format!("{c:?}").contains("bigip-a") && !format!("{c:?}").contains(A));
    }

    #[test]
    fn a_bad_line_is_named_by_line_never_quoted() {
        for (text, needle) in [
            (
                format!("a {A}\n{B}\n"),
                "/etc/tokens:2: expected `name token`",
            ),
            (format!("a {A} extra\n"), "/etc/tokens:1: expected"),
            (format!("none {A}\n"), "/etc/tokens:1: a caller name"),
            (format!("a:b {A}\n"), "/etc/tokens:1: a caller name"),
            (
                "a short-token\n".to_owned(),
                "/etc/tokens:1: a token must be",
            ),
            (
                format!("a {}\n", "x".repeat(129)),
                "/etc/tokens:1: a token must be",
            ),
            (
                format!("a {A}\na {B}\n"),
                "/etc/tokens:2: the caller name is already used on line 1",
            ),
            (
                format!("a {A}\n# c\nb {A}\n"),
                "/etc/tokens:3: the token is already used on line 1",
            ),
            ("# nobody\n".to_owned(), "names no caller"),
        ] {
            let e = format!("{:#}", callers(&text).unwrap_err());
            assert!(e.contains(needle), "{e}");
            assert!(!e.contains("tok-") && !e.contains("short-token"), "{e}");
        }
        let e = format!(
            "{:#}",
            Callers::parse(Path::new("/t"), b"a \xff\xfe\n").unwrap_err()
        );
        assert!(e.contains("/t:1: not UTF-8"), "{e}");
    }
}
