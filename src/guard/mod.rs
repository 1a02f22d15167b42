//! The checks a code meets before it may leave: the arguments (validation), the country
//! (geo rules), the rate limits, and Twilio Lookup's verdict on the line.

pub mod bounded;
pub mod geo;
pub mod lookup;
pub mod ratelimit;
pub mod validate;
