//! otp-sidecar: a MessagePack-RPC daemon that texts one-time passwords through Twilio, for
//! BIG-IP APM access policies. See the README for the protocol and the contract.

pub mod backend;
pub mod bounded;
pub mod calllog;
pub mod client;
pub mod config;
pub mod credentials;
pub mod error;
pub mod failover;
pub mod geo;
pub mod health;
pub mod http;
pub mod lifecycle;
pub mod limits;
pub mod logging;
pub mod lookup;
pub mod methods;
pub mod metrics;
pub mod ratelimit;
pub mod rpc;
pub mod server;
pub mod systemd;
pub mod template;
pub mod twilio;
pub mod validate;
pub mod verify;
pub mod voice;
