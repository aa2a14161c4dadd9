//! Runs a subcommand: `run`, `console`, `check`, `backup`, `sessions`.

use std::process::ExitCode;

use actors::store::{BackupTo, StoreError};
use anyhow::{bail, Context as _};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::check::{check, Level};
use crate::cli::{Command, SessionsCommand};
use crate::console::{self, ConsoleOptions};
use crate::lock::lock;
use crate::sessions;
use crate::settings::Settings;
use crate::startup::Application;

/// Runs `command`; must run inside an actix system.
pub async fn execute(command: Command, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check => return Ok(run_check(settings).await),
        Command::Run => {
            let _lock = lock(&settings.store.path, "run")?;
            preflight(&settings).await?;
            let app = build(settings).await?;
            app.kill_left_processes().await;
            app.run_until_stopped().await?;
        }
        Command::Console {
            channel,
            json,
            approve,
        } => {
            let _lock = lock(&settings.store.path, "console")?;
            let app = build(settings).await?;
            app.kill_left_processes().await;
            let opts = ConsoleOptions {
                channel,
                json,
                approve,
            };
            let input = tokio::io::BufReader::new(tokio::io::stdin());
            let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
            let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
            let stop = async move {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
            };
            let outcome = console::run(
                &app,
                &opts,
                input,
                tokio::io::stdout(),
                tokio::io::stderr(),
                stop,
            )
            .await;
            app.close().await;
            outcome?;
        }
        Command::Backup { file } => {
            if file.exists() {
                bail!("{} already exists; choose a new file", file.display());
            }
            build(settings)
                .await?
                .store()
                .send(BackupTo { path: file.clone() })
                .await
                .map_err(StoreError::from)?
                .with_context(|| format!("backing up to {}", file.display()))?;
            println!("backed up to {}", file.display());
        }
        Command::Sessions { action } => {
            // A reset must not race a service whose run would save the old session back.
            let _lock = match &action {
                SessionsCommand::Reset { .. } => {
                    Some(lock(&settings.store.path, "sessions reset")?)
                }
                _ => None,
            };
            sessions::execute(build(settings).await?.store(), action).await?;
        }
        Command::Audit { conversation, json } => {
            sessions::audit(
                build(settings).await?.store(),
                conversation.as_deref(),
                json,
            )
            .await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn build(settings: Settings) -> anyhow::Result<Application> {
    Application::build(settings)
        .await
        .context("starting the session store")
}

async fn findings(settings: Settings, for_run: bool) -> anyhow::Result<Vec<crate::check::Finding>> {
    // The checks run the CLI and open the database: not on the actors' thread.
    actix_rt::task::spawn_blocking(move || check(&settings, for_run))
        .await
        .context("the check thread failed")
}

async fn run_check(settings: Settings) -> ExitCode {
    let found = match findings(settings, false).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    for f in &found {
        println!("{f}");
    }
    if found.iter().any(|f| f.level == Level::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The `check` findings, logged; any failure stops `run` before it connects.
async fn preflight(settings: &Settings) -> anyhow::Result<()> {
    let found = findings(settings.clone(), true).await?;
    let mut failed = Vec::new();
    for f in &found {
        match f.level {
            Level::Ok => info!(topic = %f.topic, "{}", f.message),
            Level::Warn => warn!(topic = %f.topic, "{}", f.message),
            Level::Fail => {
                error!(topic = %f.topic, "{}", f.message);
                failed.push(format!("{}: {}", f.topic, f.message));
            }
        }
    }
    if !failed.is_empty() {
        bail!("start-up checks failed:\n  {}", failed.join("\n  "));
    }
    Ok(())
}
