//! The typed call: an `rpc::Request` parsed once, at the edge, into checked values borrowed
//! from its params. Everything after this works on [`Call`], never on raw params.
//!
//! The checks run in the contract's order (arity, otp, phone, sender, then the context, which
//! is advice and never refuses), so the first refusal is the one the README documents.

use std::borrow::Cow;

use phonenumber::country::Id;
use rmpv::Value;

use crate::error::CallError;
use crate::guard::phone;
use crate::guard::validate::{self, Context};
use crate::rpc::Request;
use crate::twilio::{is_sid, messages, Sender};

/// A one-time password: 4–12 ASCII letters or digits. Never logged, never echoed.
#[derive(Debug, Clone, Copy)]
pub struct Otp<'a>(&'a str);

impl<'a> Otp<'a> {
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
    Ping,
    Health,
}

/// A request refused before it ran: the error, and what its log line shows (`None`: it gets
/// no line, as a malformed call of an unknown shape does not).
pub struct Refused {
    pub error: CallError,
    pub shown: Option<Target>,
}

impl Refused {
    fn unlogged(error: CallError) -> Refused {
        Refused { error, shown: None }
    }
}

/// The methods, as the metric label and the log line name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    SendOtp,
    ConfirmOtp,
    Ping,
    Health,
    Unknown,
}

impl Method {
    pub fn of(name: &str) -> Method {
        match name {
            "sendOTP" => Method::SendOtp,
            "confirmOTP" => Method::ConfirmOtp,
            "ping" => Method::Ping,
            "health" => Method::Health,
            _ => Method::Unknown,
        }
    }

    /// Where the call's context map (holding `token`) is among its params, for the methods
    /// that need a caller token when a tokens file is configured; `None` for `ping`, `health`
    /// (which send and check nothing: monitors may call them) and unknown methods.
    pub fn token_at(self) -> Option<usize> {
        match self {
            Method::SendOtp => Some(3),
            Method::ConfirmOtp => Some(1),
            Method::Ping | Method::Health | Method::Unknown => None,
        }
    }

    /// The `method` label of `otp_sidecar_calls_total`.
    pub fn label(self) -> &'static str {
        match self {
            Method::SendOtp => "sendOTP",
            Method::ConfirmOtp => "confirmOTP",
            Method::Ping => "ping",
            Method::Health => "health",
            Method::Unknown => "unknown",
        }
    }
}

impl<'a> Call<'a> {
    /// Parses `request` as `method` (from [`Method::of`] its name); `region` reads national
    /// numbers.
    pub fn parse(
        method: Method,
        request: &'a Request,
        region: Option<Id>,
    ) -> Result<Call<'a>, Refused> {
        let params = request.params.as_slice();
        match method {
            Method::SendOtp => send_otp(params, region).map(Call::SendOtp),
            Method::ConfirmOtp => confirm_otp(params, region).map(Call::ConfirmOtp),
            Method::Ping => arity("ping", params, 0).map(|()| Call::Ping),
            Method::Health => arity("health", params, 0).map(|()| Call::Health),
            Method::Unknown => Err(Refused::unlogged(CallError::BadRequest(format!(
                "unknown method '{}' (known: sendOTP, confirmOTP, ping, health)",
                request.method.chars().take(40).collect::<String>()
            )))),
        }
    }
}

fn send_otp(params: &[Value], region: Option<Id>) -> Result<SendOtp<'_>, Refused> {
    if !(3..=4).contains(&params.len()) {
        return Err(Refused::unlogged(CallError::BadRequest(format!(
            "sendOTP takes 3 arguments and an optional context map, got {}",
            params.len()
        ))));
    }
    let raw_phone = string_param(params, 1, "phone");
    let written_with_plus = raw_phone
        .as_ref()
        .is_ok_and(|raw| raw.trim_start().starts_with('+'));
    let phone = raw_phone.and_then(|p| phone::phone(p, region));
    // Only a valid number is logged (masked, as E.164): a caller that swapped its arguments
    // would otherwise put most of an OTP into the log. An OTP is never a `+` number, but may
    // read as a national one: so with a bad OTP only a `+` number is shown.
    let otp = match string_param(params, 0, "otp").and_then(validate::otp) {
        Ok(otp) => Otp(otp),
        Err(error) => {
            let shown = match &phone {
                Ok(p) if written_with_plus => Target::Phone(p.to_string()),
                _ => Target::invalid(),
            };
            return Err(Refused {
                error,
                shown: Some(shown),
            });
        }
    };
    let phone = match phone {
        Ok(p) => Phone(p),
        Err(error) => {
            return Err(Refused {
                error,
                shown: Some(Target::invalid()),
            })
        }
    };
    let sender = string_param(params, 2, "sender")
        .and_then(|s| messages::sender(s).map_err(|reason| CallError::BadRequest(reason.into())));
    let sender = match sender {
        Ok(sender) => sender,
        Err(error) => {
            return Err(Refused {
                error,
                shown: Some(Target::Phone(phone.0.into_owned())),
            })
        }
    };
    // Advice, never a refusal: what it could not use is noted and left out.
    let context = validate::context(params.get(3));
    Ok(SendOtp {
        otp,
        phone,
        sender,
        context,
    })
}

fn confirm_otp(params: &[Value], region: Option<Id>) -> Result<Confirmed<'_>, Refused> {
    // The optional second argument is a context map, read only for its `token`.
    let target = match (params.len(), params.first(), params.get(1)) {
        (1, Some(Value::String(s)), _)
        | (2, Some(Value::String(s)), Some(Value::Map(_) | Value::Nil)) => {
            s.as_str().unwrap_or_default()
        }
        _ => {
            return Err(Refused::unlogged(CallError::BadRequest(
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
        Err(Refused::unlogged(CallError::BadRequest(
            "confirmOTP needs an E.164 phone number or a VE… verification SID".into(),
        )))
    }
}

fn arity(method: &str, params: &[Value], n: usize) -> Result<(), Refused> {
    if params.len() == n {
        Ok(())
    } else {
        Err(Refused::unlogged(CallError::BadRequest(format!(
            "{method} takes {n} arguments, got {}",
            params.len()
        ))))
    }
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
