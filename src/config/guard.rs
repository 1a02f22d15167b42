//! The guards' settings: the rate limits, the geo rules and the Lookup rules.

use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::fraud_options::pairs;
use super::{given, Options};
use crate::guard::budgets::CountryBudgets;
use crate::guard::geo::{regions, GeoRules};
use crate::guard::lookup::{read_carriers, LookupRules};
use crate::guard::ratelimit::{Rate, RateLimits};

pub(super) fn settings(o: &Options) -> Result<crate::guard::Settings> {
    let rate = |name: &str, value: Option<String>| -> Result<Option<Rate>> {
        match given(value, name)?.as_str() {
            "off" => Ok(None),
            text => text.parse::<Rate>().map(Some).context(name.to_owned()),
        }
    };
    let rate_limits = RateLimits {
        phone: rate("rate_limit_phone", o.rate_limit_phone.clone())?,
        ip: rate("rate_limit_ip", o.rate_limit_ip.clone())?,
        user: rate("rate_limit_user", o.rate_limit_user.clone())?,
        global: rate("rate_limit_global", o.rate_limit_global.clone())?,
        country: match &o.fraud.country_budgets {
            Some(text) => CountryBudgets::parse(&pairs(text, "country_budgets")?)
                .context("country_budgets")?,
            None => None,
        },
        max_keys: given(o.rate_limit_max_keys, "rate_limit_max_keys")?,
    };
    let geo = GeoRules {
        allow: match &o.allow_countries {
            Some(list) => Some(regions(list).context("allow_countries")?),
            None => None,
        },
        deny: regions(&o.deny_countries.clone().unwrap_or_default()).context("deny_countries")?,
        check_validity: o.check_number_validity.unwrap_or(false),
    };
    let lookup = if o.lookup.unwrap_or(false) {
        let block_line_types = given(o.block_line_types.clone(), "block_line_types")?
            .into_iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        let block_carriers = match &o.block_carriers_file {
            Some(path) => read_carriers(path)?,
            None => Default::default(),
        };
        let fail_open = match given(o.lookup_failure.clone(), "lookup_failure")?.as_str() {
            "open" => true,
            "closed" => false,
            other => bail!("lookup_failure must be \"open\" or \"closed\", not {other:?}"),
        };
        Some(LookupRules {
            block_line_types,
            block_carriers,
            cache_ttl: Duration::from_secs(given(o.lookup_cache_secs, "lookup_cache_secs")?),
            fail_open,
            block_pumping_risk: o.fraud.block_pumping_risk.map(|s| s as u32),
        })
    } else {
        if o.fraud.block_pumping_risk.is_some() {
            bail!("block_pumping_risk needs lookup = true (the score comes from Twilio Lookup)");
        }
        None
    };
    let number_types = given(o.fraud.block_number_types.clone(), "block_number_types")?
        .join(",")
        .parse()
        .context("block_number_types")?;
    Ok(crate::guard::Settings {
        geo,
        number_types,
        rate_limits,
        lookup,
        pumping: super::pumping::pumping(o)?,
        sent: super::pumping::sent(o)?,
    })
}
