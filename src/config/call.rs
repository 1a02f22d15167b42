//! The call's settings: the deadline (and what it leaves ILX and Twilio), the message
//! templates, the channel and its voice settings, the default region and the callers.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{given, Options, ILX_CALL_TIMEOUT_MS};
use crate::call::callers::Callers;
use crate::call::template::Templates;
use crate::guard::geo::default_region;
use crate::twilio::calls::VoiceSettings;
use crate::twilio::Channel;

/// `callers` as the listener's authentication read them.
pub(super) fn settings(
    o: &Options,
    callers: Option<Arc<Callers>>,
    warnings: &mut Vec<String>,
) -> Result<crate::call::Settings> {
    let deadline = deadline(o, warnings)?;
    let lifetime = o.otp_lifetime_secs;
    let templates = Templates::new(
        &given(o.body_template.clone(), "body_template")?,
        &o.templates,
        o.webotp_domain.as_deref(),
        lifetime.map(|s| Duration::from_secs(s.into())),
    )?;
    let region = match &o.default_region {
        Some(text) => default_region(text).context("default_region")?,
        None => None,
    };
    let channel = match given(o.channel.clone(), "channel")?.as_str() {
        "sms" => Channel::Sms,
        "voice" => Channel::Voice,
        other => bail!("channel must be \"sms\" or \"voice\", not {other:?}"),
    };
    let voice = VoiceSettings {
        from: o.voice_from.clone(),
        language: given(o.voice_language.clone(), "voice_language")?,
        template: given(o.voice_template.clone(), "voice_template")?,
        fallback: o.voice_fallback.unwrap_or(false),
    };
    voice.validate()?;
    Ok(crate::call::Settings {
        deadline,
        templates,
        channel,
        voice,
        region,
        callers,
    })
}

/// `deadline_ms`, with a warning where ILX or the first Twilio estimate leaves it no room.
fn deadline(o: &Options, warnings: &mut Vec<String>) -> Result<Duration> {
    let deadline_ms = given(o.deadline_ms, "deadline_ms")?;
    if deadline_ms > ILX_CALL_TIMEOUT_MS {
        warnings.push(format!(
            "deadline_ms {deadline_ms} is over ILX::call's default {ILX_CALL_TIMEOUT_MS} ms \
             timeout: an ILX caller gives up before a slow call is answered"
        ));
    }
    let deadline = Duration::from_millis(deadline_ms);
    if deadline <= crate::twilio::budget::FIRST_GUESS {
        warnings.push(format!(
            "deadline_ms {deadline_ms} leaves no room for the {} ms a Twilio answer is assumed \
             to take until one has been timed: sends are answered busy except one probe \
             every {} s until the answers teach a shorter time",
            crate::twilio::budget::FIRST_GUESS.as_millis(),
            crate::twilio::budget::PROBE_INTERVAL.as_secs()
        ));
    }
    Ok(deadline)
}
