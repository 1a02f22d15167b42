//! otp-sidecar: a MessagePack-RPC daemon that texts one-time passwords through Twilio, for
//! BIG-IP APM access policies. See the README for the protocol and the contract.
//!
//! The pipeline, by folder: `server` (sockets, connections, limits) → `rpc` (frames and
//! messages) → `call` (the typed request, the dispatcher, the backend, the log line) →
//! `guard` (validation, geo, rate limits, Lookup) → `twilio` (the HTTP client and each API);
//! `delivery` follows each message's fate after the 201 and `alerts` tells the operator;
//! `config` composes every part's settings and `app` runs them; `mask` hides phone numbers in
//! log lines and in Twilio's text. Only what `main`, the tests,
//! the benches, the fuzz target and the example use is public.

mod alerts;
pub mod app;
mod call;
pub mod client;
pub mod codes;
pub mod config;
mod delivery;
mod error;
mod guard;
mod health;
pub mod logging;
mod mask;
mod metrics;
pub mod rpc;
pub mod server;
mod slots;
mod state;
mod status;
mod twilio;
