//! otp-sidecar: a MessagePack-RPC daemon that texts one-time passwords through Twilio, for
//! BIG-IP APM access policies. See the README for the protocol and the contract.

pub mod app;
pub mod call;
pub mod client;
pub mod config;
pub mod error;
pub mod guard;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod rpc;
pub mod server;
pub mod twilio;
