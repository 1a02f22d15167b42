//! The typed call: an `rpc::Request` (its method already matched) parsed once, at the edge,
//! into checked values borrowed from its params, context and caller token included.
//! Everything after this works on [`Call`], never on raw params.
//!
//! The checks run in the contract's order (the caller token when a tokens file is configured,
//! then arity, otp, phone, sender; the context is advice and never refuses), so the first
//! rejection is the one the README documents. Each rejection says, where it is made, what the
//! call's log line may show.
//!
//! The phone number, sender and SID rules stay pure functions of `guard::phone` and `twilio`:
//! they are the number plan's and Twilio's formats, which config and the Twilio clients read
//! too. The OTP's rule is the request's alone, so it lives here.

use std::borrow::Cow;
use std::sync::Arc;

use phonenumber::country::Id;
use rmpv::Value;

use super::callers::{Callers, NO_CALLER};
use crate::error::CallError;
use crate::guard::phone;
use crate::guard::validate::{self, Context};
use crate::rpc::{Method, Request};
use crate::twilio::{is_sid, messages, Sender};

/// A one-time password: 4–12 ASCII letters or digits. Never logged, never echoed.
#[derive(Debug, Clone, Copy)]
pub struct Otp<'a>(&'a str);

impl<'a> Otp<'a> {
    /// 4–12 ASCII letters or digits: what APM's OTP generator and most policies produce.
    fn parse(otp: &'a str) -> Result<Otp<'a>, CallError> {
        let ok = (4..=12).contains(&otp.len()) && otp.bytes().all(|b| b.is_ascii_alphanumeric());
        if ok {
            Ok(Otp(otp))
        } else {
            // Never echo the OTP back, not even a bad one: it lands in the policy's session log.
            Err(CallError::BadRequest(
                "otp must be 4 to 12 letters or digits".into(),
            ))
        }
    }

    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

/// A recipient as E.164, normalised from the number as the directory held it (borrowed when
/// it already was E.164).
#[derive(Debug, Clone)]
pub struct Phone<'a>(Cow<'a, str>);

impl Phone<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `sendOTP(otp, phone, sender[, context])`, checked.
#[derive(Debug)]
pub struct SendOtp<'a> {
    pub otp: Otp<'a>,
    pub phone: Phone<'a>,
    pub sender: Sender,
    pub context: Context<'a>,
}

/// `issueOTP(phone, sender[, context])`, checked: the daemon draws the code.
#[derive(Debug)]
pub struct IssueOtp<'a> {
    pub phone: Phone<'a>,
    pub sender: Sender,
    pub context: Context<'a>,
}

/// `checkOTP(phone, code[, context])`. The code is any string: one of the wrong shape is a
/// wrong code (it counts as a guess), never echoed.
#[derive(Debug)]
pub struct CheckOtp<'a> {
    pub phone: Phone<'a>,
    pub code: &'a str,
}

/// What `confirmOTP` names: the number the code went to, or the verification's SID.
#[derive(Debug)]
pub enum Confirmed<'a> {
    Phone(Phone<'a>),
    Verification(&'a str),
}

/// A request the daemon knows how to run.
#[derive(Debug)]
pub enum Call<'a> {
    SendOtp(SendOtp<'a>),
    ConfirmOtp(Confirmed<'a>),
    /// `deliveryStatus(SM…)`: the message's SID, checked.
    DeliveryStatus(&'a str),
    IssueOtp(IssueOtp<'a>),
    CheckOtp(CheckOtp<'a>),
    Probe(Probe),
}

/// The calls that send and check nothing and await nothing (monitors call them): answered
/// at once by a plain function, without a task, a call slot or a caller token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Ping,
    Health,
}

/// A request rejected before it ran: the error, and what its log line shows (`None`: it gets
/// no line, as a malformed call of an unknown shape does not).
pub struct Rejected {
    pub error: CallError,
    pub shown: Option<Target>,
}

impl Rejected {
    fn unlogged(error: CallError) -> Rejected {
        Rejected { error, shown: None }
    }

    /// A refusal of a call whose phone number was valid: the log shows it (masked).
    fn to(phone: Phone<'_>, error: CallError) -> Rejected {
        Rejected {
            error,
            shown: Some(Target::Phone(phone.0.into_owned())),
        }
    }
}

/// A request parsed: who it is charged to, and the call or why it was rejected.
pub struct Parsed<'a> {
    /// With a tokens file, for the methods that need a token: the caller its token names, or
    /// `none` when the token was refused (then `call` is that refusal).
    pub caller: Option<Arc<str>>,
    pub call: Result<Call<'a>, Rejected>,
}

/// Where the call's context map (holding `token`) is among its params, for the methods
/// that need a caller token when a tokens file is configured; `None` for `ping`, `health`
/// (which send and check nothing: monitors may call them) and unknown methods.
fn context_at(method: &Method) -> Option<usize> {
    match method {
        Method::SendOtp => Some(3),
        Method::ConfirmOtp | Method::DeliveryStatus => Some(1),
        Method::IssueOtp | Method::CheckOtp => Some(2),
        Method::Ping | Method::Health | Method::Unknown(_) => None,
    }
}

impl<'a> Call<'a> {
    /// Parses `request` in one pass; `region` reads national numbers, `callers` (the tokens
    /// file, when configured) checks the caller token.
    pub fn parse(
        request: &'a Request,
        region: Option<Id>,
        callers: Option<&Callers>,
    ) -> Parsed<'a> {
        let params = request.params.as_slice();
        // The context is read once, its token with it. It is advice and never blocks an
        // OTP; the caller token is the one deliberate exception, and only when a tokens file
        // is configured: checked first, so an unknown caller learns nothing of its arguments
        // and is charged to no limit.
        let context = context_at(&request.method).map(|at| validate::context(params.get(at)));
        let caller = match (callers, &context) {
            (Some(callers), Some(context)) => match callers.identify(context.token) {
                Ok(name) => Some(name),
                Err(error) => {
                    return Parsed {
                        caller: Some(NO_CALLER.into()),
                        call: Err(Rejected {
                            error,
                            shown: Some(Target::Shown("-".into())),
                        }),
                    }
                }
            },
            _ => None,
        };
        let call = match &request.method {
            Method::SendOtp => {
                send_otp(params, region, context.unwrap_or_default()).map(Call::SendOtp)
            }
            Method::ConfirmOtp => confirm_otp(params, region).map(Call::ConfirmOtp),
            Method::DeliveryStatus => delivery_status(params).map(Call::DeliveryStatus),
            Method::IssueOtp => {
                issue_otp(params, region, context.unwrap_or_default()).map(Call::IssueOtp)
            }
            Method::CheckOtp => check_otp(params, region).map(Call::CheckOtp),
            Method::Ping => Probe::Ping.parse(params).map(Call::Probe),
            Method::Health => Probe::Health.parse(params).map(Call::Probe),
            Method::Unknown(name) => Err(Rejected::unlogged(CallError::BadRequest(format!(
                "unknown method '{}' (known: sendOTP, confirmOTP, ping, health)",
                name.chars().take(40).collect::<String>()
            )))),
        };
        Parsed { caller, call }
    }
}

impl Probe {
    /// The probe `request` names, checked; `None` when it names another method.
    pub fn of(request: &Request) -> Option<Result<Probe, CallError>> {
        let probe = match request.method {
            Method::Ping => Probe::Ping,
            Method::Health => Probe::Health,
            _ => return None,
        };
        Some(
            probe
                .parse(&request.params)
                .map_err(|rejected| rejected.error),
        )
    }

    fn parse(self, params: &[Value]) -> Result<Probe, Rejected> {
        let name = match self {
            Probe::Ping => "ping",
            Probe::Health => "health",
        };
        arity(name, params, 0).map(|()| self)
    }
}

/// sendOTP's arguments; `context` is its fourth, already read.
fn send_otp<'a>(
    params: &'a [Value],
    region: Option<Id>,
    context: Context<'a>,
) -> Result<SendOtp<'a>, Rejected> {
    with_context(params, 3, "sendOTP takes 3 arguments")?;
    let raw_phone = string_param(params, 1, "phone");
    let written_with_plus = raw_phone
        .as_ref()
        .is_ok_and(|raw| raw.trim_start().starts_with('+'));
    let phone = raw_phone.and_then(|p| phone::phone(p, region));
    // Only a valid number is logged (masked, as E.164): a caller that swapped its arguments
    // would otherwise put most of an OTP into the log. An OTP is never a `+` number, but may
    // read as a national one: so with a bad OTP only a `+` number is shown.
    let otp = match string_param(params, 0, "otp").and_then(Otp::parse) {
        Ok(otp) => otp,
        Err(error) => {
            let shown = match &phone {
                Ok(p) if written_with_plus => Target::Phone(p.to_string()),
                _ => Target::invalid(),
            };
            return Err(Rejected {
                error,
                shown: Some(shown),
            });
        }
    };
    let phone = match phone {
        Ok(p) => Phone(p),
        Err(error) => {
            return Err(Rejected {
                error,
                shown: Some(Target::invalid()),
            })
        }
    };
    let sender = match sender_param(params, 2) {
        Ok(sender) => sender,
        Err(error) => return Err(Rejected::to(phone, error)),
    };
    Ok(SendOtp {
        otp,
        phone,
        sender,
        context,
    })
}

/// issueOTP's arguments; `context` is its third, already read.
fn issue_otp<'a>(
    params: &'a [Value],
    region: Option<Id>,
    context: Context<'a>,
) -> Result<IssueOtp<'a>, Rejected> {
    with_context(params, 2, "issueOTP takes 2 arguments (phone, sender)")?;
    let phone = first_phone(params, region)?;
    match sender_param(params, 1) {
        Ok(sender) => Ok(IssueOtp {
            phone,
            sender,
            context,
        }),
        Err(error) => Err(Rejected::to(phone, error)),
    }
}

/// checkOTP's arguments (its third, the context, was read for its token).
fn check_otp(params: &[Value], region: Option<Id>) -> Result<CheckOtp<'_>, Rejected> {
    with_context(params, 2, "checkOTP takes 2 arguments (phone, code)")?;
    let phone = first_phone(params, region)?;
    match string_param(params, 1, "code") {
        Ok(code) => Ok(CheckOtp { phone, code }),
        Err(error) => Err(Rejected::to(phone, error)),
    }
}

/// The phone number a method takes first; a refusal logs it as invalid, never as sent.
fn first_phone(params: &[Value], region: Option<Id>) -> Result<Phone<'_>, Rejected> {
    string_param(params, 0, "phone")
        .and_then(|p| phone::phone(p, region))
        .map(Phone)
        .map_err(|error| Rejected {
            error,
            shown: Some(Target::invalid()),
        })
}

fn confirm_otp(params: &[Value], region: Option<Id>) -> Result<Confirmed<'_>, Rejected> {
    // The optional second argument is a context map, read (in `Call::parse`) for its `token`.
    let target = match (params.len(), params.first(), params.get(1)) {
        (1, Some(Value::String(s)), _)
        | (2, Some(Value::String(s)), Some(Value::Map(_) | Value::Nil)) => {
            s.as_str().unwrap_or_default()
        }
        _ => {
            return Err(Rejected::unlogged(CallError::BadRequest(
                "confirmOTP takes 1 argument: the phone number or the VE… SID (and an \
                 optional context map)"
                    .into(),
            )))
        }
    };
    // The number as sendOTP was given it (the iRule passes the same attribute), as E.164.
    if let Ok(phone) = phone::phone(target, region) {
        Ok(Confirmed::Phone(Phone(phone)))
    } else if is_sid(target, "VE") {
        Ok(Confirmed::Verification(target))
    } else {
        Err(Rejected::unlogged(CallError::BadRequest(
            "confirmOTP needs an E.164 phone number or a VE… verification SID".into(),
        )))
    }
}

/// deliveryStatus's SID (and an optional context map, read for its token).
fn delivery_status(params: &[Value]) -> Result<&str, Rejected> {
    match (params.len(), params.first(), params.get(1)) {
        (1, Some(Value::String(s)), _)
        | (2, Some(Value::String(s)), Some(Value::Map(_) | Value::Nil))
            if s.as_str().is_some_and(|sid| is_sid(sid, "SM")) =>
        {
            Ok(s.as_str().unwrap_or_default())
        }
        _ => Err(Rejected::unlogged(CallError::BadRequest(
            "deliveryStatus takes 1 argument: the message's SID (SM…), and an optional \
             context map"
                .into(),
        ))),
    }
}

fn arity(method: &str, params: &[Value], n: usize) -> Result<(), Rejected> {
    if params.len() == n {
        Ok(())
    } else {
        Err(Rejected::unlogged(CallError::BadRequest(format!(
            "{method} takes {n} arguments, got {}",
            params.len()
        ))))
    }
}

/// `n` arguments and an optional context map after them; `takes` says what the `n` are.
fn with_context(params: &[Value], n: usize, takes: &str) -> Result<(), Rejected> {
    if (n..=n + 1).contains(&params.len()) {
        return Ok(());
    }
    Err(Rejected::unlogged(CallError::BadRequest(format!(
        "{takes} and an optional context map, got {}",
        params.len()
    ))))
}

/// The sender argument at `i`: a From number or name, or a Messaging Service SID.
fn sender_param(params: &[Value], i: usize) -> Result<Sender, CallError> {
    string_param(params, i, "sender")
        .and_then(|s| messages::sender(s).map_err(|reason| CallError::BadRequest(reason.into())))
}

fn string_param<'a>(params: &'a [Value], i: usize, name: &str) -> Result<&'a str, CallError> {
    match params.get(i) {
        Some(Value::String(s)) => s
            .as_str()
            .ok_or_else(|| CallError::BadRequest(format!("{name} is not valid UTF-8"))),
        _ => Err(CallError::BadRequest(format!("{name} must be a string"))),
    }
}

pub enum Target {
    /// An E.164 number; masked when the line is written.
    Phone(String),
    /// Shown as is: a VE… SID, or a placeholder for a number not fit to show.
    Shown(String),
}

impl Target {
    /// What stands for a number not fit to show.
    pub fn invalid() -> Target {
        Target::Shown("(invalid)".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otp_rules() {
        for good in ["1234", "123456", "ABCdef123456"] {
            assert!(Otp::parse(good).is_ok(), "{good}");
        }
        for bad in ["123", "1234567890123", "12 34", "12-34", "١٢٣٤", ""] {
            assert!(Otp::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_context_is_read_once_and_its_first_token_counts() {
        let request = |method: &str, params: Vec<Value>| Request {
            msgid: 1.into(),
            method: method.into(),
            params,
        };
        let context = Value::Map(vec![
            ("token".into(), "the-first-token-counts".into()),
            ("token".into(), "tok-aaaaaaaaaaaaaaaaaaaaaaaa".into()),
            ("user".into(), "alice".into()),
        ]);
        let send = request(
            "sendOTP",
            vec![
                "123456".into(),
                "+31612345678".into(),
                "ACME".into(),
                context,
            ],
        );
        let Parsed { caller, call } = Call::parse(&send, None, None);
        let Ok(Call::SendOtp(send)) = call else {
            panic!("sendOTP parses without a tokens file");
        };
        assert!(caller.is_none());
        assert_eq!(send.context.user.as_deref(), Some("alice"));
        assert_eq!(
            send.context.token,
            validate::Token::Text(b"the-first-token-counts")
        );
        // A probe has no context and no caller: nothing is read past its arity.
        let ping = request("ping", vec![]);
        let Parsed { caller, call } = Call::parse(&ping, None, None);
        assert!(caller.is_none() && matches!(call, Ok(Call::Probe(Probe::Ping))));
        assert!(Probe::of(&request("ping", vec![1.into()])).is_some_and(|p| p.is_err()));
        assert!(Probe::of(&request("sendOTP", vec![])).is_none());
    }
}
