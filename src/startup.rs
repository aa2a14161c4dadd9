//! Building the application: open the store, prepare the runner and the run slots, and start
//! the channel registry wired to a front end. The binary and the tests use the same code.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Recipient};
use actors::channel::{ChannelDeps, ChannelProfile, ConversationRef};
use actors::frontend::{DeliverReply, ShowProgress};
use actors::gateway::{DiscordConnection, DiscordGateway, GatewayError, GatewaySetup};
use actors::registry::ChannelRegistry;
use actors::runner::ClaudeRunner;
use actors::store::{open_pool, SessionStoreActor};
use anyhow::Context as _;
use tokio::sync::Semaphore;

use crate::settings::Settings;

/// The core of the service: store, runner, run slots and channel profiles.
pub struct Application {
    settings: Settings,
    store: Addr<SessionStoreActor>,
    runner: ClaudeRunner,
    run_slots: Arc<Semaphore>,
    channels: Vec<Arc<ChannelProfile>>,
}

impl Application {
    /// Opens (creating and migrating) the session store and prepares everything a front end
    /// needs. Must run inside an actix system.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store_config = settings.store.to_config();
        let mut profiles = settings.channel.clone();
        // File-system work happens on a blocking thread, not on the actors' thread.
        let (pool, profiles) = actix_rt::task::spawn_blocking(move || {
            // Absolute project directories, so a session's stored cwd means the same thing
            // whichever directory the service is started from.
            for p in &mut profiles {
                if let Ok(abs) = std::fs::canonicalize(&p.project_dir) {
                    p.project_dir = abs;
                }
            }
            open_pool(&store_config).map(|pool| (pool, profiles))
        })
        .await
        .context("the store's start-up thread failed")??;
        let store = SessionStoreActor::start(pool, settings.store.pool_size as usize);
        Ok(Self {
            runner: ClaudeRunner::new(settings.claude.clone()),
            run_slots: Arc::new(Semaphore::new(settings.claude.max_concurrent_runs)),
            channels: profiles.into_iter().map(Arc::new).collect(),
            store,
            settings,
        })
    }

    /// Starts the channel registry, sending replies and progress to a front end.
    pub fn start_registry(
        &self,
        replies: Recipient<DeliverReply>,
        progress: Recipient<ShowProgress>,
    ) -> Addr<ChannelRegistry> {
        self.registry_starter()(replies, progress)
    }

    /// A function that starts the registry once the front end exists.
    fn registry_starter(
        &self,
    ) -> impl FnOnce(Recipient<DeliverReply>, Recipient<ShowProgress>) -> Addr<ChannelRegistry> + 'static
    {
        let runner = self.runner.clone();
        let store = self.store.clone();
        let run_slots = Arc::clone(&self.run_slots);
        let limits = self.settings.channels.clone();
        move |replies, progress| {
            let deps = ChannelDeps {
                runner,
                store,
                run_slots,
                replies,
                progress,
                queue_limit: limits.queue_limit,
                command_prefix: limits.command_prefix,
            };
            ChannelRegistry::new(deps, Duration::from_secs(limits.idle_secs)).start()
        }
    }

    /// Connects to Discord and starts the gateway with its own registry.
    pub async fn start_discord(&self) -> Result<DiscordConnection, GatewayError> {
        let start = self.registry_starter();
        GatewaySetup {
            discord: self.settings.discord.clone(),
            access: self.settings.access.clone(),
            channels: self.channels.clone(),
            start_registry: Box::new(move |gateway: Addr<DiscordGateway>| {
                start(gateway.clone().recipient(), gateway.recipient())
            }),
        }
        .connect()
        .await
    }

    /// Runs the Discord service until the connection ends or the process is interrupted.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let connection = self
            .start_discord()
            .await
            .context("starting the Discord gateway")?;
        tokio::select! {
            ended = connection.client => match ended {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(anyhow::anyhow!("the Discord connection ended: {e}")),
                Err(e) => Err(anyhow::anyhow!("the Discord client task failed: {e}")),
            },
            _ = tokio::signal::ctrl_c() => {
                connection.shards.shutdown_all().await;
                Ok(())
            }
        }
    }

    /// The conversation of the configured channel called `name`.
    pub fn conversation(&self, name: &str) -> Option<ConversationRef> {
        self.channels
            .iter()
            .find(|c| c.name == name)
            .map(|p| ConversationRef::channel(Arc::clone(p)))
    }

    /// The configured channels, with absolute project directories.
    pub fn channels(&self) -> &[Arc<ChannelProfile>] {
        &self.channels
    }

    /// The session store.
    pub fn store(&self) -> &Addr<SessionStoreActor> {
        &self.store
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
}
