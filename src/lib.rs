//! The `relais` binary's library: configuration, telemetry, start-up of the gateway and the
//! projection workers, the command line, and the demo with its synthetic history.
//!
//! The binary is thin (`main.rs`); tests build the same application with [`startup::Application`].

pub mod audit_cli;
pub mod cli;
pub mod config;
pub mod demo;
pub mod deploy;
pub mod nats_server;
pub mod privacy_cli;
pub mod startup;
pub mod synth;
pub mod telemetry;
