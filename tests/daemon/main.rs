//! The integration tests: one binary that runs the real `otp-sidecar` (daemon and commands)
//! against stand-ins on loopback, a module per area. `cargo test --test daemon twilio::` runs
//! one area. The harness, `tests/common`, is shared with the benches.

#[path = "../common/mod.rs"]
mod common;

mod alerts;
mod appliance;
mod bigip;
mod budget;
mod cli;
mod codes;
mod codes_shared;
mod conformance;
mod conformance_fraud;
mod conversion;
mod delivery;
mod delivery_callback;
mod disk;
mod docs;
mod failover;
mod filters;
mod fraud;
mod gate;
mod gate_browser;
mod guards;
mod layout;
mod limits;
mod listener;
mod monitor;
mod numbers;
pub(crate) mod offbox;
mod offbox_clients;
mod offbox_rule;
mod offbox_tls;
mod offbox_tokens;
mod protocol;
mod pumping;
mod resend;
mod secrets;
mod service;
mod state;
mod state_faults;
mod state_sentinel;
mod status_browser;
mod status_dashboards;
mod status_page;
mod telemetry;
mod templates;
mod twilio;
mod verify;
mod voice;
mod warm;
mod witnesses;
