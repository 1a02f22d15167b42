//! Twilio's own fraud signals: what the requests tell Twilio's defences (Messages'
//! `RiskCheck`; Verify's `DeviceIp`, `Tags` and Service Rate Limit keys), and the refusals
//! those defences answer with (SMS Pumping Protection's 30450 and 30453, Verify Fraud Guard's
//! 60410): never retried, never handed to another provider — it would refuse the same number.

use anyhow::{bail, Context};

/// Twilio's codes for "refused as SMS pumping": Messages' SMS Pumping Protection (30450
/// "Message delivery blocked", 30453) and Verify's Fraud Guard (60410).
pub const FRAUD_BLOCKS: [u32; 3] = [30450, 30453, 60410];

/// Whether Twilio's code says its fraud defence refused the number.
pub fn is_fraud_block(code: Option<u32>) -> bool {
    code.is_some_and(|c| FRAUD_BLOCKS.contains(&c))
}

/// Verify's most tags per verification, and the longest key or value (Twilio's limits).
const MAX_TAGS: usize = 10;
const MAX_TAG_CHARS: usize = 128;

/// What Verify requests carry besides the code, from the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifySignals {
    /// `Tags`: a JSON object of the configured tags (`None`: no tags).
    pub tags: Option<String>,
    /// The unique name of the service's rate limit fed the caller's `ip`, and of the one fed
    /// its `user`.
    pub rate_limit_ip: Option<String>,
    pub rate_limit_user: Option<String>,
}

impl VerifySignals {
    /// From `verify_tags` and `verify_rate_limits` as pairs.
    pub fn new(
        tags: &[(String, String)],
        rate_limits: &[(String, String)],
    ) -> anyhow::Result<VerifySignals> {
        if tags.len() > MAX_TAGS {
            bail!("verify_tags: Verify takes at most {MAX_TAGS} tags");
        }
        let mut object = serde_json::Map::new();
        for (key, value) in tags {
            let length_ok = |s: &str| (1..=MAX_TAG_CHARS).contains(&s.chars().count());
            if !length_ok(key) || !length_ok(value) {
                bail!("verify_tags: keys and values are 1 to {MAX_TAG_CHARS} characters");
            }
            object.insert(key.clone(), value.clone().into());
        }
        let mut signals = VerifySignals {
            tags: (!object.is_empty()).then(|| serde_json::Value::Object(object).to_string()),
            ..Default::default()
        };
        for (field, name) in rate_limits {
            let slot = match field.as_str() {
                "ip" => &mut signals.rate_limit_ip,
                "user" => &mut signals.rate_limit_user,
                other => bail!("verify_rate_limits: {other:?} is neither ip nor user"),
            };
            let plain = !name.is_empty()
                && name.len() <= MAX_TAG_CHARS
                && name.bytes().all(|b| b.is_ascii_graphic());
            if !plain {
                bail!("verify_rate_limits: {field}'s unique name must be printable ASCII");
            }
            *slot = Some(name.clone());
        }
        Ok(signals)
    }

    /// `RateLimits`: a JSON object of the unique names the caller's `ip` and `user` feed,
    /// `None` when neither is configured or given.
    pub fn rate_limits(&self, ip: Option<std::net::IpAddr>, user: Option<&str>) -> Option<String> {
        let mut object = serde_json::Map::new();
        if let (Some(name), Some(ip)) = (&self.rate_limit_ip, ip) {
            object.insert(name.clone(), ip.to_string().into());
        }
        if let (Some(name), Some(user)) = (&self.rate_limit_user, user) {
            object.insert(name.clone(), user.into());
        }
        (!object.is_empty()).then(|| serde_json::Value::Object(object).to_string())
    }
}

/// Parses the configured pairs, naming the option on error.
pub fn signals(
    tags: &[(String, String)],
    rate_limits: &[(String, String)],
) -> anyhow::Result<VerifySignals> {
    VerifySignals::new(tags, rate_limits).context("Verify's fraud signals")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn tags_and_rate_limits_as_verify_takes_them() {
        let s = signals(
            &pairs(&[("app", "vpn"), ("site", "ams")]),
            &pairs(&[("ip", "end_user_ip"), ("user", "user_id")]),
        )
        .unwrap();
        assert_eq!(s.tags.as_deref(), Some(r#"{"app":"vpn","site":"ams"}"#));
        let ip = Some("198.51.100.7".parse().unwrap());
        assert_eq!(
            s.rate_limits(ip, Some("José")).as_deref(),
            Some(r#"{"end_user_ip":"198.51.100.7","user_id":"José"}"#)
        );
        assert_eq!(s.rate_limits(None, None), None);
        assert_eq!(signals(&[], &[]).unwrap(), VerifySignals::default());
        let many: Vec<_> = (0..11).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert!(signals(&many, &[]).is_err());
        assert!(signals(&[], &pairs(&[("phone", "x")])).is_err());
        assert!(signals(&[], &pairs(&[("ip", "has space")])).is_err());
        assert!(is_fraud_block(Some(60410)) && !is_fraud_block(Some(21211)));
    }
}
