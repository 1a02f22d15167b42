//! Lookup v2 with line type intelligence: what kind of line a number is, and whose.

use hyper::{Method, Uri};
use serde::Deserialize;
use tokio::time::Instant;

use super::TwilioClient;
use crate::mask::scrub::scrub_numbers;

/// What Lookup says of a number (only what the rules read).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct LineInfo {
    #[serde(rename = "type")]
    pub line_type: Option<String>,
    pub mobile_country_code: Option<String>,
    pub mobile_network_code: Option<String>,
}

impl TwilioClient {
    /// Lookup v2 with line type intelligence for one number.
    pub async fn lookup(&self, phone: &str, deadline: Instant) -> Result<LineInfo, String> {
        #[derive(Deserialize)]
        struct Found {
            line_type_intelligence: Option<LineInfo>,
        }
        let mut url = self.lookup_url.clone();
        url.path_segments_mut()
            .map_err(|()| "lookup_api_url cannot be a base URL".to_owned())?
            .pop_if_empty()
            .extend(["v2", "PhoneNumbers", phone]);
        url.query_pairs_mut()
            .append_pair("Fields", "line_type_intelligence");
        let uri = Uri::try_from(url.as_str()).map_err(|e| e.to_string())?;
        let answer = self
            .request(Method::GET, &uri, None, deadline)
            .await
            .map_err(|busy| busy.text())?
            .map_err(|f| f.detail)?;
        if !answer.status.is_success() {
            return Err(format!("HTTP {}", answer.status.as_u16()));
        }
        // A decoding error quotes the value it choked on, which may be the number.
        let found: Found = serde_json::from_slice(&answer.body)
            .map_err(|e| format!("unreadable answer: {}", scrub_numbers(&e.to_string())))?;
        Ok(found.line_type_intelligence.unwrap_or_default())
    }
}
