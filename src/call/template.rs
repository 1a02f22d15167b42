//! The SMS text: a template per locale (chosen by the caller's `context.locale`), an optional
//! WebOTP / one-time-code autofill line, and what the text costs to send (GSM-7 or UCS-2, and
//! how many segments), checked when the configuration loads.

use std::time::Duration;

use anyhow::{bail, Result};

pub const DEFAULT_TEMPLATE: &str = "Your OTP is: {otp}";
pub const OTP_PLACEHOLDER: &str = "{otp}";
pub const MINUTES_PLACEHOLDER: &str = "{minutes}";
/// Twilio's limit on Body is 1600 characters; leave room for the code and the autofill line.
const MAX_TEMPLATE_CHARS: usize = 1500;
/// The code length used to judge a template's encoding and segments (APM's default is 6).
const SAMPLE_OTP: &str = "123456";

/// One template, checked to carry the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyTemplate(String);

impl BodyTemplate {
    pub fn new(what: &str, text: &str, lifetime: Option<Duration>) -> Result<Self> {
        if !text.contains(OTP_PLACEHOLDER) {
            bail!("{what} must contain {OTP_PLACEHOLDER}");
        }
        if text.chars().count() > MAX_TEMPLATE_CHARS {
            bail!("{what} is longer than {MAX_TEMPLATE_CHARS} characters");
        }
        if text.contains(MINUTES_PLACEHOLDER) && lifetime.is_none() {
            bail!("{what} uses {MINUTES_PLACEHOLDER}: set otp_lifetime_secs too");
        }
        Ok(BodyTemplate(text.to_owned()))
    }
}

/// All templates, the autofill line and the code's lifetime, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Templates {
    default: BodyTemplate,
    /// Lower-case language tags (`nl`, `pt-br`), most specific first is not needed: lookups
    /// try the full tag, then its language.
    locales: Vec<(String, BodyTemplate)>,
    /// `@domain #code` as the last line (WebOTP, and Safari's one-time-code autofill).
    webotp_domain: Option<String>,
    /// The code's lifetime in whole minutes, rounded up, for `{minutes}`.
    minutes: Option<u64>,
}

impl Templates {
    pub fn new(
        default: &str,
        locales: &[(String, String)],
        webotp_domain: Option<&str>,
        lifetime: Option<Duration>,
    ) -> Result<Self> {
        let default = BodyTemplate::new("body_template", default, lifetime)?;
        let mut checked = Vec::with_capacity(locales.len());
        for (tag, text) in locales {
            let tag = normalize_locale(tag)
                .filter(|t| is_language_tag(t))
                .ok_or_else(|| {
                    anyhow::anyhow!("template locale must be a language tag like nl or pt-BR")
                })?;
            if checked.iter().any(|(t, _)| *t == tag) {
                bail!("two templates for locale {tag}");
            }
            let template = BodyTemplate::new(&format!("the template for {tag}"), text, lifetime)?;
            checked.push((tag, template));
        }
        let webotp_domain = match webotp_domain {
            Some(d) if is_domain(d) => Some(d.to_ascii_lowercase()),
            Some(_) => bail!("webotp_domain must be a host name like login.example.com"),
            None => None,
        };
        Ok(Templates {
            default,
            locales: checked,
            webotp_domain,
            minutes: lifetime.map(|l| l.as_secs().div_ceil(60)),
        })
    }

    /// The text for one code: the caller's locale (`nl-NL`, then `nl`), else the default.
    pub fn render(&self, otp: &str, locale: Option<&str>) -> String {
        self.render_with(self.choose(locale), otp)
    }

    fn choose(&self, locale: Option<&str>) -> &BodyTemplate {
        let Some(tag) = locale.and_then(normalize_locale) else {
            return &self.default;
        };
        let language = tag.split('-').next().unwrap_or_default();
        let find = |wanted: &str| {
            self.locales
                .iter()
                .find(|(t, _)| t == wanted)
                .map(|(_, template)| template)
        };
        find(&tag)
            .or_else(|| find(language))
            .unwrap_or(&self.default)
    }

    fn render_with(&self, template: &BodyTemplate, otp: &str) -> String {
        let mut text = template.0.replace(OTP_PLACEHOLDER, otp);
        if let Some(minutes) = self.minutes {
            if text.contains(MINUTES_PLACEHOLDER) {
                text = text.replace(MINUTES_PLACEHOLDER, &minutes.to_string());
            }
        }
        if let Some(domain) = &self.webotp_domain {
            text.push_str("\n\n@");
            text.push_str(domain);
            text.push_str(" #");
            text.push_str(otp);
        }
        text
    }

    /// Each template's name (`default` or its locale) and what it costs with a 6-digit code.
    pub fn costs(&self) -> Vec<(String, Cost)> {
        std::iter::once(("default".to_owned(), &self.default))
            .chain(self.locales.iter().map(|(tag, t)| (tag.clone(), t)))
            .map(|(name, template)| (name, cost(&self.render_with(template, SAMPLE_OTP))))
            .collect()
    }

    /// One line per template that forces UCS-2 or needs more than one segment.
    pub fn warnings(&self) -> Vec<String> {
        self.costs()
            .into_iter()
            .filter(|(_, c)| c.segments > 1 || c.ucs2_because.is_some())
            .map(|(name, c)| format!("template {name}: {c} (each segment is billed)"))
            .collect()
    }
}

/// What one SMS text costs to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cost {
    pub segments: usize,
    /// The first character outside GSM-7, which forces UCS-2 for the whole message.
    pub ucs2_because: Option<char>,
}

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ucs2_because {
            None => write!(f, "GSM-7")?,
            Some(c) => write!(f, "UCS-2 because of {c:?}")?,
        }
        let s = if self.segments == 1 { "" } else { "s" };
        write!(f, ", {} segment{s}", self.segments)
    }
}

/// GSM 03.38's basic character set (one septet each).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\u{1b}ÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                          ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The extension table: an escape plus the character, two septets each.
const GSM7_EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// Segments and encoding: GSM-7 fits 160 septets in one SMS, 153 per part when split;
/// UCS-2 fits 70 UTF-16 units, 67 per part.
pub fn cost(text: &str) -> Cost {
    let mut septets = 0;
    let mut ucs2_because = None;
    for c in text.chars() {
        if GSM7_BASIC.contains(c) {
            septets += 1;
        } else if GSM7_EXTENSION.contains(c) {
            septets += 2;
        } else {
            ucs2_because = Some(c);
            break;
        }
    }
    let (units, single, part) = match ucs2_because {
        None => (septets, 160, 153),
        Some(_) => (text.encode_utf16().count(), 70, 67),
    };
    let segments = if units <= single {
        1
    } else {
        units.div_ceil(part)
    };
    Cost {
        segments,
        ucs2_because,
    }
}

/// `nl_NL` and `NL-nl` both become `nl-nl`; blank is none.
pub fn normalize_locale(tag: &str) -> Option<String> {
    let tag = tag.trim();
    (!tag.is_empty()).then(|| tag.replace('_', "-").to_ascii_lowercase())
}

fn is_language_tag(tag: &str) -> bool {
    tag.len() <= 35
        && tag.split('-').all(|part| {
            (1..=8).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

fn is_domain(d: &str) -> bool {
    d.len() <= 253
        && d.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates(webotp: Option<&str>, lifetime: Option<u64>) -> Templates {
        Templates::new(
            "Your code: {otp}",
            &[
                ("nl".into(), "Uw code: {otp}".into()),
                ("pt_BR".into(), "Seu código: {otp}".into()),
                ("pt".into(), "O seu código: {otp}".into()),
            ],
            webotp,
            lifetime.map(Duration::from_secs),
        )
        .unwrap()
    }

    #[test]
    fn the_locale_picks_the_template_then_its_language_then_the_default() {
        let t = templates(None, None);
        assert_eq!(t.render("1234", Some("nl-NL")), "Uw code: 1234");
        assert_eq!(t.render("1234", Some("NL")), "Uw code: 1234");
        assert_eq!(t.render("1234", Some("pt-BR")), "Seu código: 1234");
        assert_eq!(t.render("1234", Some("pt_br")), "Seu código: 1234");
        assert_eq!(t.render("1234", Some("pt-PT")), "O seu código: 1234");
        assert_eq!(t.render("1234", Some("fr-FR")), "Your code: 1234");
        assert_eq!(t.render("1234", None), "Your code: 1234");
        assert_eq!(t.render("1234", Some(" ")), "Your code: 1234");
    }

    #[test]
    fn webotp_line_and_minutes() {
        let t = Templates::new(
            "{otp} is valid for {minutes} min",
            &[],
            Some("Login.Example.com"),
            Some(Duration::from_secs(301)),
        )
        .unwrap();
        assert_eq!(
            t.render("918273", None),
            "918273 is valid for 6 min\n\n@login.example.com #918273"
        );
    }

    #[test]
    fn bad_configuration_is_refused() {
        let none: &[(String, String)] = &[];
        assert!(Templates::new("no code", none, None, None).is_err());
        assert!(Templates::new("{otp} {minutes}", none, None, None).is_err());
        assert!(Templates::new("{otp}", none, Some("bad domain"), None).is_err());
        assert!(Templates::new("{otp}", none, Some("-x.com"), None).is_err());
        for tag in ["", "en US", "toolonglanguage"] {
            let locales = [(tag.to_owned(), "{otp}".to_owned())];
            assert!(
                Templates::new("{otp}", &locales, None, None).is_err(),
                "{tag:?}"
            );
        }
        let twice = [
            ("nl".to_owned(), "{otp}".to_owned()),
            ("NL".to_owned(), "{otp}".to_owned()),
        ];
        assert!(Templates::new("{otp}", &twice, None, None).is_err());
    }

    #[test]
    fn gsm7_and_ucs2_segments() {
        assert_eq!(cost("Your OTP is: 123456").segments, 1);
        assert_eq!(cost("Your OTP is: 123456").ucs2_because, None);
        // Extension characters take two septets: 80 of them fill one SMS, 81 need two.
        assert_eq!(cost(&"€".repeat(80)).segments, 1);
        assert_eq!(cost(&"€".repeat(81)).segments, 2);
        assert_eq!(cost(&"a".repeat(160)).segments, 1);
        assert_eq!(cost(&"a".repeat(161)).segments, 2);
        assert_eq!(cost(&"a".repeat(306)).segments, 2);
        assert_eq!(cost(&"a".repeat(307)).segments, 3);
        let c = cost("Seu código: 123456");
        assert_eq!((c.ucs2_because, c.segments), (Some('ó'), 1));
        assert_eq!(cost(&"ж".repeat(70)).segments, 1);
        assert_eq!(cost(&"ж".repeat(71)).segments, 2);
        // An emoji is two UTF-16 units.
        assert_eq!(cost(&"🔑".repeat(35)).segments, 1);
        assert_eq!(cost(&"🔑".repeat(36)).segments, 2);
    }

    #[test]
    fn warnings_name_the_template_and_the_cause() {
        let t = templates(Some("login.example.com"), None);
        let warnings = t.warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("template pt-br: UCS-2 because of 'ó'"));
        assert!(warnings[1].starts_with("template pt: UCS-2"));
        let long = Templates::new(&format!("{}{{otp}}", "x".repeat(200)), &[], None, None).unwrap();
        assert_eq!(
            long.warnings(),
            ["template default: GSM-7, 2 segments (each segment is billed)"]
        );
    }
}
