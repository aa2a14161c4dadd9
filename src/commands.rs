//! Runs a subcommand against a built [`Application`].

use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::Command;
use crate::console::{self, ConsoleOptions};
use crate::sessions;
use crate::settings::Settings;
use crate::startup::Application;

/// Builds the application and runs `command`; must run inside an actix system.
pub async fn execute(command: Command, settings: Settings) -> anyhow::Result<ExitCode> {
    let app = Application::build(settings)
        .await
        .context("starting the session store")?;
    match command {
        Command::Run => app.run_until_stopped().await?,
        Command::Console { channel, json } => {
            let opts = ConsoleOptions { channel, json };
            let input = tokio::io::BufReader::new(tokio::io::stdin());
            console::run(&app, &opts, input, tokio::io::stdout(), tokio::io::stderr()).await?;
        }
        Command::Sessions { action } => sessions::execute(app.store(), action).await?,
    }
    Ok(ExitCode::SUCCESS)
}
