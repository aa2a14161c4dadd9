//! The claude-coordinator binary's library: settings, start-up, front ends and subcommands.
//! `main.rs` parses the command line and calls [`commands::execute`]; tests build the same
//! [`startup::Application`].

pub mod check;
pub mod cli;
pub mod commands;
pub mod console;
pub mod http;
pub mod lock;
pub mod sandboxing;
pub mod sessions;
pub mod settings;
pub mod startup;
pub mod telemetry;
