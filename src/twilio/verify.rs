//! Twilio Verify v2: APM's code goes out as the verification's `CustomCode` (so Twilio's
//! Fraud Guard and per-number limits apply), and once APM has checked the code, the approval
//! goes back to Twilio as the feedback Fraud Guard learns from.

use hyper::Uri;
use tokio::time::Instant;
use url::Url;

use super::fraud::VerifySignals;
use super::{is_sid, Channel, Error};
use crate::twilio::{Kind, TwilioClient};

pub const DEFAULT_VERIFY_URL: &str = "https://verify.twilio.com";

/// Twilio's answer to an unknown `Locale` (and to an unknown service, where the retry
/// without a locale fails the same way).
const NOT_FOUND: u16 = 404;

/// Locales Verify knows with a region; for every other tag only the language is sent.
const REGIONAL_LOCALES: [&str; 4] = ["en-GB", "pt-BR", "zh-CN", "zh-HK"];

/// One Verify service (`VA…`) and where its verifications live.
#[derive(Debug, Clone)]
pub struct VerifyService {
    service_sid: String,
    /// `{api}/v2/Services/{VA}/Verifications`.
    verifications: Url,
    verifications_uri: Uri,
    /// What each verification tells Fraud Guard besides the number (boxed: seldom set, and
    /// the backend's variants stay alike in size).
    signals: Box<VerifySignals>,
}

impl VerifyService {
    pub fn new(api: &Url, service_sid: &str) -> anyhow::Result<Self> {
        if !is_sid(service_sid, "VA") {
            anyhow::bail!("verify_service_sid must be VA followed by 32 hex digits");
        }
        let mut verifications = api.clone();
        verifications
            .path_segments_mut()
            .map_err(|()| anyhow::anyhow!("verify_api_url cannot be a base URL"))?
            .pop_if_empty()
            .extend(["v2", "Services", service_sid, "Verifications"]);
        Ok(VerifyService {
            service_sid: service_sid.to_owned(),
            verifications_uri: Uri::try_from(verifications.as_str())?,
            verifications,
            signals: Box::default(),
        })
    }

    /// The service with the tags and rate limit names its verifications carry.
    pub fn with_signals(self, signals: VerifySignals) -> Self {
        VerifyService {
            signals: Box::new(signals),
            ..self
        }
    }

    pub fn service_sid(&self) -> &str {
        &self.service_sid
    }

    /// The service itself, `{api}/v2/Services/{VA}` (what `check --online` asks for).
    pub fn service_url(&self) -> Url {
        let mut url = self.verifications.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop();
        }
        url
    }
}

impl TwilioClient {
    /// Starts a verification that carries its code; returns its `VE…` SID.
    pub async fn start_verification(
        &self,
        verification: &Verification<'_>,
        deadline: Instant,
    ) -> Result<String, Error> {
        let uri = &verification.service.verifications_uri;
        let locale = verification.locale.and_then(verify_locale);
        let form = |locale: Option<&str>| {
            let mut form = form_urlencoded::Serializer::new(String::with_capacity(96));
            form.append_pair("To", verification.to)
                .append_pair("Channel", verification.channel.verify_name())
                .append_pair("CustomCode", verification.code);
            if let Some(locale) = locale {
                form.append_pair("Locale", locale);
            }
            let signals = &verification.service.signals;
            if let Some(ip) = verification.device_ip {
                form.append_pair("DeviceIp", &ip.to_string());
            }
            if let Some(tags) = &signals.tags {
                form.append_pair("Tags", tags);
            }
            if let Some(limits) = signals.rate_limits(verification.device_ip, verification.user) {
                form.append_pair("RateLimits", &limits);
            }
            form.finish()
        };
        let started = self
            .post(uri, form(locale.as_deref()), Kind::Verification, deadline)
            .await;
        let resource = match started {
            // Twilio's advice for a locale it does not know: ask again without one, and let
            // it choose by the number's country. A 404 created nothing, so this sends once.
            Err(Error::Rejected {
                status: NOT_FOUND, ..
            }) if locale.is_some() => {
                tracing::debug!("Verify does not know the locale; asking again without it");
                self.post(uri, form(None), Kind::Verification, deadline)
                    .await?
            }
            other => other?,
        };
        Ok(resource.sid)
    }

    /// Tells Twilio the code was right (the feedback Fraud Guard learns from). Returns the
    /// verification's SID.
    pub async fn approve_verification(
        &self,
        approval: &Approval<'_>,
        deadline: Instant,
    ) -> Result<String, Error> {
        let target = approval.target;
        let mut url = approval.service.verifications.clone();
        url.path_segments_mut()
            .map_err(|()| Error::Unmade("verify_api_url cannot be a base URL".into()))?
            .push(target);
        let uri = Uri::try_from(url.as_str()).map_err(|e| Error::Unmade(e.to_string()))?;
        let form = "Status=approved".to_owned();
        let resource = self.post(&uri, form, Kind::Verification, deadline).await?;
        // Asked by SID, the answer must be about that verification.
        if is_sid(target, "VE") && resource.sid != target {
            return Err(Error::Unexpected(format!(
                "Twilio answered about verification {}, not {target}",
                resource.sid
            )));
        }
        match resource.status.as_deref() {
            Some("approved") => Ok(resource.sid),
            other => Err(Error::Unexpected(format!(
                "Twilio left verification {} {}, not approved",
                resource.sid,
                other.unwrap_or("without a status")
            ))),
        }
    }
}

/// What to verify, and how.
#[derive(Debug)]
pub struct Verification<'a> {
    pub service: &'a VerifyService,
    pub to: &'a str,
    pub code: &'a str,
    pub channel: Channel,
    pub locale: Option<&'a str>,
    /// The end user's address (the caller's context `ip`): `DeviceIp`.
    pub device_ip: Option<std::net::IpAddr>,
    /// The end user (the caller's context `user`), for a rate limit that names it.
    pub user: Option<&'a str>,
}

/// A verification whose code APM accepted: `target` is its `VE…` SID or the phone number
/// (Twilio then approves that number's pending verification).
#[derive(Debug)]
pub struct Approval<'a> {
    pub service: &'a VerifyService,
    pub target: &'a str,
}

/// The `Locale` to send for a caller's language tag: Verify's spelling of a regional locale
/// it knows (`pt_br` → `pt-BR`), else the bare language (`nl-NL` → `nl`).
pub fn verify_locale(tag: &str) -> Option<String> {
    let mut parts = tag.split(['-', '_']);
    let language = parts.next()?.to_ascii_lowercase();
    if !(2..=3).contains(&language.len()) || !language.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    if let Some(region) = parts.next() {
        let regional = format!("{language}-{}", region.to_ascii_uppercase());
        if REGIONAL_LOCALES.contains(&regional.as_str()) {
            return Some(regional);
        }
    }
    Some(language)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locales_are_spelled_the_way_verify_knows_them() {
        assert_eq!(verify_locale("pt_br").as_deref(), Some("pt-BR"));
        assert_eq!(verify_locale("en-GB").as_deref(), Some("en-GB"));
        assert_eq!(verify_locale("nl-NL").as_deref(), Some("nl"));
        assert_eq!(verify_locale("DE").as_deref(), Some("de"));
        assert_eq!(verify_locale("x1-YY"), None);
        assert_eq!(verify_locale(""), None);
    }

    #[test]
    fn the_service_sid_is_checked_and_lands_in_the_path() {
        let api = Url::parse("http://127.0.0.1:9/").unwrap();
        assert!(VerifyService::new(&api, "VA123").is_err());
        let va = "VA0123456789abcdef0123456789abcdef";
        let service = VerifyService::new(&api, va).unwrap();
        assert_eq!(
            service.verifications_uri.path(),
            format!("/v2/Services/{va}/Verifications")
        );
    }
}
