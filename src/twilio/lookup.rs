//! Lookup v2 with line type intelligence: what kind of line a number is, and whose; and when
//! asked, its SMS pumping risk (a field Twilio bills on its own).

use hyper::{Method, Uri};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{rest, Error, TwilioClient};
use crate::mask::scrub::scrub_numbers;

/// What Lookup says of a number (only what the rules read). Stored as JSON in the shared
/// cache: its form is Twilio's (`{"type":"mobile",…}`), so instances of other versions read it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct LineInfo {
    #[serde(rename = "type")]
    pub line_type: Option<LineType>,
    pub mobile_country_code: Option<String>,
    pub mobile_network_code: Option<String>,
    /// Present when the pumping risk was asked for (Twilio's `sms_pumping_risk` object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms_pumping_risk: Option<PumpingRisk>,
}

/// Lookup's `sms_pumping_risk`, only what the rules read: the score, 0-100 (none when
/// Twilio could not tell one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct PumpingRisk {
    pub sms_pumping_risk_score: Option<u32>,
}

/// Lookup's line types, spelled as Twilio spells them; one Twilio adds later is kept by its
/// name (`Other`), so `block_line_types` can still name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(from = "String", into = "String")]
pub enum LineType {
    Landline,
    Mobile,
    FixedVoip,
    NonFixedVoip,
    Personal,
    TollFree,
    Premium,
    SharedCost,
    Uan,
    Voicemail,
    Pager,
    Unknown,
    Other(String),
}

impl LineType {
    const NAMED: [(LineType, &'static str); 12] = [
        (LineType::Landline, "landline"),
        (LineType::Mobile, "mobile"),
        (LineType::FixedVoip, "fixedVoip"),
        (LineType::NonFixedVoip, "nonFixedVoip"),
        (LineType::Personal, "personal"),
        (LineType::TollFree, "tollFree"),
        (LineType::Premium, "premium"),
        (LineType::SharedCost, "sharedCost"),
        (LineType::Uan, "uan"),
        (LineType::Voicemail, "voicemail"),
        (LineType::Pager, "pager"),
        (LineType::Unknown, "unknown"),
    ];

    /// Twilio's name for it (what `block_line_types` lists).
    pub fn name(&self) -> &str {
        match self {
            LineType::Other(name) => name,
            known => Self::NAMED
                .iter()
                .find(|(t, _)| t == known)
                .map_or("unknown", |(_, name)| name),
        }
    }
}

impl From<String> for LineType {
    fn from(name: String) -> Self {
        Self::NAMED
            .into_iter()
            .find(|(_, n)| *n == name)
            .map_or(LineType::Other(name), |(t, _)| t)
    }
}

impl From<LineType> for String {
    fn from(line_type: LineType) -> Self {
        line_type.name().to_owned()
    }
}

impl TwilioClient {
    /// Lookup v2 with line type intelligence for one number, and its SMS pumping risk when
    /// `pumping_risk`.
    pub async fn lookup(
        &self,
        phone: &str,
        pumping_risk: bool,
        deadline: Instant,
    ) -> Result<LineInfo, Error> {
        #[derive(Deserialize)]
        struct Found {
            line_type_intelligence: Option<LineInfo>,
            sms_pumping_risk: Option<PumpingRisk>,
        }
        let mut url = self.lookup_url.clone();
        url.path_segments_mut()
            .map_err(|()| Error::Unmade("lookup_api_url cannot be a base URL".into()))?
            .pop_if_empty()
            .extend(["v2", "PhoneNumbers", phone]);
        let fields = if pumping_risk {
            "line_type_intelligence,sms_pumping_risk"
        } else {
            "line_type_intelligence"
        };
        url.query_pairs_mut().append_pair("Fields", fields);
        let uri = Uri::try_from(url.as_str()).map_err(|e| Error::Unmade(e.to_string()))?;
        let answer = self.request(Method::GET, &uri, None, deadline).await?;
        if !answer.status.is_success() {
            return Err(rest::rejected(answer.status, &answer.body));
        }
        // A decoding error quotes the value it choked on, which may be the number.
        let found: Found = serde_json::from_slice(&answer.body).map_err(|e| {
            Error::Unexpected(format!(
                "unreadable answer: {}",
                scrub_numbers(&e.to_string())
            ))
        })?;
        let mut info = found.line_type_intelligence.unwrap_or_default();
        // Asked for, it is recorded as asked even when Twilio left it out: not asked again.
        if pumping_risk {
            info.sms_pumping_risk = Some(found.sms_pumping_risk.unwrap_or_default());
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_types_keep_twilios_spelling_both_ways() {
        for (line_type, name) in LineType::NAMED {
            assert_eq!(LineType::from(name.to_owned()), line_type);
            assert_eq!(line_type.name(), name);
        }
        let later = LineType::from("satellite".to_owned());
        assert_eq!(later, LineType::Other("satellite".into()));
        assert_eq!(later.name(), "satellite");
        let info: LineInfo = serde_json::from_str(r#"{"type":"tollFree"}"#).unwrap();
        assert_eq!(info.line_type, Some(LineType::TollFree));
        let stored = serde_json::to_string(&info).unwrap();
        assert!(stored.contains(r#""type":"tollFree""#), "{stored}");
    }
}
