//! The Discord front end: owns the serenity client, and everything Discord-only — settings,
//! who may talk, routing, REST sends, chunking. The core never imports this module.
//!
//! Serenity runs its shard on the same tokio runtime as the actors; its event handler only
//! forwards events to the gateway actor with `do_send`, and every REST call runs as a spawned
//! future, so neither side ever blocks the other.
//!
//! Files: this one (settings, connecting), [`gateway`] (the actor and the concepts it owns),
//! `events` (serenity's handler), [`ids`] (serenity's ids to the core's and back), [`access`]
//! (who may talk and approve), [`approvals`] (permission prompts and their buttons),
//! [`commands`] (`/claude`'s definition and parsing), [`outbound`] (every send's retries and
//! nonces; prompts; interaction answers), [`replies`] (a reply in chunks, as a file, its
//! files), [`progress`] (typing and the progress message), [`chunking`] (splitting replies),
//! [`proxied`] (message posts in proxy mode).

pub mod access;
pub mod approvals;
pub mod chunking;
pub mod commands;
mod events;
pub mod gateway;
pub mod ids;
pub mod outbound;
pub mod progress;
pub mod progress_view;
pub mod proxied;
pub mod replies;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serenity::all::{GatewayIntents, HttpBuilder, ShardManager};

pub use access::{AccessConfig, ChannelAccess, DiscordChannel};
pub use gateway::{DiscordGateway, FlushOutbound};

use crate::metrics::GatewayStats;
use crate::registry::ChannelRegistry;
use events::Forward;
use outbound::Outbound;

/// The `[discord]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    /// The bot token: from the environment (`COORDINATOR__DISCORD__TOKEN` or `DISCORD_TOKEN`),
    /// or read from `token_file`; never in settings.
    #[serde(default)]
    pub token: Option<SecretString>,
    /// A file holding the bot token (else `$CREDENTIALS_DIRECTORY/discord-token`, as systemd's
    /// `LoadCredential=` provides), so the token need not be in the service's environment.
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
    /// `https://discord.com`, or another server speaking Discord's API (proxy mode).
    pub api_base_url: String,
    /// Beyond this many messages a reply is sent as a `.md` file with a preview.
    pub max_chunks: usize,
    /// Retries of a failed send (429, 5xx, connection error).
    pub send_retries: u32,
    /// First retry backoff in milliseconds, doubled per retry.
    pub retry_backoff_ms: u64,
    /// Minimum seconds between edits of a progress message.
    pub progress_edit_secs: u64,
    /// Minimum milliseconds between edits of a progress message while Claude's text streams.
    pub stream_edit_ms: u64,
    /// A turn that ran longer than this many seconds mentions its asker in its reply.
    pub notify_after_secs: u64,
}

impl DiscordConfig {
    /// First retry backoff, doubled per retry.
    pub fn retry_backoff(&self) -> Duration {
        Duration::from_millis(self.retry_backoff_ms.max(1))
    }

    /// Minimum time between edits of a progress message.
    pub fn progress_every(&self) -> Duration {
        Duration::from_secs(self.progress_edit_secs)
    }

    /// Minimum time between edits of a progress message while text streams.
    pub fn stream_every(&self) -> Duration {
        Duration::from_millis(self.stream_edit_ms)
    }

    /// How long a turn must run before its reply mentions the asker.
    pub fn notify_after(&self) -> Duration {
        Duration::from_secs(self.notify_after_secs)
    }

    /// Whether REST and gateway discovery go to a server other than discord.com.
    pub fn is_proxied(&self) -> bool {
        self.api_base_url.trim_end_matches('/') != "https://discord.com"
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No token in the environment.
    #[error("no Discord token: set discord.token_file (or systemd's LoadCredential=discord-token), or DISCORD_TOKEN")]
    NoToken,
    /// Secure by default.
    #[error("no allowlist: set access.allowed_users or access.allowed_roles (or a channel's own), or access.allow_everyone = true to let everyone in")]
    NoAllowlist,
    /// Serenity refused the settings or could not reach the gateway URL endpoint.
    #[error("Discord client: {0}")]
    Client(#[from] serenity::Error),
}

/// A running Discord connection: the gateway actor and the serenity client task.
pub struct DiscordConnection {
    /// The gateway actor.
    pub gateway: Addr<DiscordGateway>,
    /// The registry behind it.
    pub registry: Addr<ChannelRegistry>,
    /// Serenity's shard manager (to shut the connection down).
    pub shards: Arc<ShardManager>,
    /// Ends when the serenity client stops; carries its error if it failed.
    pub client: tokio::task::JoinHandle<Result<(), serenity::Error>>,
    /// Counters.
    pub stats: Arc<GatewayStats>,
}

impl DiscordConnection {
    /// What `/readyz` asks about the gateway.
    pub fn probe(&self) -> GatewayProbe {
        GatewayProbe {
            stats: Arc::clone(&self.stats),
            shards: Arc::clone(&self.shards),
        }
    }
}

/// Whether the gateway session is up: serenity's shard runners (one exists and each is
/// `Connected`, which it is only after READY or RESUMED) and the event handler's view. A
/// session invalidated for good leaves no runner while serenity waits to identify again,
/// which no stage event reports; so the runners are asked, and the answer kept for the
/// metrics' `gateway_connected`.
#[derive(Clone)]
pub struct GatewayProbe {
    stats: Arc<GatewayStats>,
    shards: Arc<ShardManager>,
}

impl GatewayProbe {
    /// Whether a gateway session is connected and identified now.
    pub async fn is_identified(&self) -> bool {
        let runners = self.shards.runners.lock().await;
        let up = !runners.is_empty()
            && runners
                .values()
                .all(|r| r.stage == serenity::gateway::ConnectionStage::Connected)
            && self.stats.is_connected();
        drop(runners);
        self.stats.set_connected(up);
        up
    }
}

/// What the gateway needs to start.
pub struct GatewaySetup {
    /// `[discord]`.
    pub discord: DiscordConfig,
    /// `[access]`.
    pub access: AccessConfig,
    /// The configured channels.
    pub channels: Vec<DiscordChannel>,
    /// Starts the registry, given where replies and progress should go.
    pub start_registry: Box<dyn FnOnce(Addr<DiscordGateway>) -> Addr<ChannelRegistry>>,
    /// The session store (deliveries, catch-up).
    pub store: Addr<crate::store::SessionStoreActor>,
    /// `[recovery]`.
    pub recovery: crate::recovery::RecoveryConfig,
    /// The models the CLI offers (for `/claude model` autocomplete).
    pub models: crate::claude::models::ModelCatalog,
    /// The service's stop.
    pub shutdown: crate::shutdown::Shutdown,
}

impl GatewaySetup {
    /// Connects to Discord (or the proxy server) and starts the gateway actor. Must run inside
    /// an actix system.
    pub async fn connect(self) -> Result<DiscordConnection, GatewayError> {
        let token = self.discord.token.clone().ok_or(GatewayError::NoToken)?;
        if !self
            .access
            .has_allowlist(self.channels.iter().map(|c| &c.access))
            && !self.access.allow_everyone
        {
            return Err(GatewayError::NoAllowlist);
        }
        let mut http = HttpBuilder::new(token.expose_secret());
        if self.discord.is_proxied() {
            // With a proxy serenity's ratelimiter would send to discord.com; 429s come to us.
            http = http
                .proxy(self.discord.api_base_url.trim_end_matches('/'))
                .ratelimiter_disabled(true);
        }
        let intents = GatewayIntents::GUILDS
            | GatewayIntents::GUILD_MESSAGES
            | GatewayIntents::MESSAGE_CONTENT;
        let ctx = Context::<DiscordGateway>::new();
        let addr = ctx.address();
        let stats = Arc::new(GatewayStats::default());
        let mut client = serenity::client::ClientBuilder::new_with_http(http.build(), intents)
            .event_handler(Forward {
                gateway: addr.clone(),
                stats: Arc::clone(&stats),
            })
            .await?;
        let proxied = self.discord.is_proxied().then(|| {
            proxied::ProxiedPoster::new(
                &self.discord.api_base_url,
                token.clone(),
                self.discord.send_retries,
                Arc::clone(&stats.rest),
            )
        });
        let outbound = Outbound {
            http: Arc::clone(&client.http),
            proxied,
            max_chunks: self.discord.max_chunks.max(1),
            send_retries: self.discord.send_retries,
            backoff: self.discord.retry_backoff(),
            progress_every: self.discord.progress_every(),
            stream_every: self.discord.stream_every(),
            notify_after: self.discord.notify_after(),
            stats: Arc::clone(&stats.rest),
        };
        let registry = (self.start_registry)(addr.clone());
        let gateway = DiscordGateway::new(
            outbound,
            gateway::GatewayLinks {
                registry: registry.clone(),
                store: self.store,
                recovery: self.recovery,
                models: self.models,
                shutdown: self.shutdown,
            },
            self.channels,
            self.access,
            Arc::clone(&stats),
        );
        ctx.run(gateway);
        let shards = Arc::clone(&client.shard_manager);
        let client = tokio::spawn(async move { client.start().await });
        Ok(DiscordConnection {
            gateway: addr,
            registry,
            shards,
            client,
            stats,
        })
    }
}
