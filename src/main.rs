//! claude-coordinator: command line → settings → telemetry → application → subcommand.
//! (Settings come before telemetry because they say how to log.)

use std::process::ExitCode;

use clap::Parser;
use claude_coordinator::{cli::Cli, commands, settings::Settings, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Held until the end of main: dropping it flushes the last log lines.
    let _logs = telemetry::init(&settings.log);
    match actix::System::new().block_on(commands::execute(cli.command, settings)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
