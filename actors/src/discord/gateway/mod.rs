//! The gateway actor: turns Discord's events into messages for the channel registry, and
//! delivers replies, progress and permission prompts back to Discord. A thin shell: each
//! concept it owns is a type of its own, in a file of its own.
//!
//! - `router`: the one place a Discord channel becomes a conversation, and whether a message
//!   reaches Claude (configured channels, threads, access, de-duplication, look-ups);
//!   `routing` is the actor's side of it (submitting, looking up, refusing).
//! - `catch_up`: what was posted while the service was down, read on every new session.
//! - `prompts`: permission prompts and the clicks on them (and on **Stop**).
//! - `delivery`: replies from the outbox and progress on the message being worked on.
//! - `slash`: `/claude`: registering it, answering invocations, autocomplete.
//! - `lanes`: every send, one lane per channel, counted for the stop.
//!
//! This file holds the actor, its wiring, and the events that touch only the router.

mod catch_up;
mod delivery;
mod lanes;
mod prompts;
mod router;
mod routing;
mod slash;

use std::sync::Arc;

use actix::prelude::*;
use serenity::all::Message as DiscordMessage;
use tracing::{debug, info, instrument};

use super::access::{AccessConfig, DiscordChannel};
use super::ids;
use super::outbound::Outbound;
use crate::channel::CloseWorktree;
use crate::ids::{ChannelId, UserId};
use crate::metrics::GatewayStats;
use crate::recovery::RecoveryConfig;
use crate::registry::ChannelRegistry;
use crate::shutdown::Shutdown;
use crate::store::SessionStoreActor;
pub use lanes::FlushOutbound;
pub use prompts::ReceiveClick;
pub use router::LearnChannel;
pub use slash::{ReceiveAutocomplete, ReceiveCommand};

/// Handle a message Discord delivered (`MESSAGE_CREATE`).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ReceiveMessage(pub Box<DiscordMessage>);

/// Remember who the bot is (from `READY`), and catch up on what was posted meanwhile.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct MarkReady {
    /// The bot's user id.
    pub bot_id: UserId,
    /// The application's id (application commands are registered under it).
    pub application_id: u64,
    /// When serenity read it, before the actors' mailbox: a message found in a history that
    /// was posted after it is not late.
    pub at: std::time::SystemTime,
}

/// Count a gateway session that resumed after a reconnect.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct MarkResumed;

/// A thread was archived or deleted (`THREAD_UPDATE`, `THREAD_DELETE`).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CloseThread {
    /// The thread.
    pub id: ChannelId,
}

/// Owns the Discord side of the service.
pub struct DiscordGateway {
    outbound: Outbound,
    registry: Addr<ChannelRegistry>,
    /// The store: where deliveries are recorded, and what catch-up starts after.
    store: Addr<SessionStoreActor>,
    router: router::Router,
    catch_up: catch_up::CatchUps,
    prompts: prompts::Prompts,
    progress: delivery::Progress,
    slash: slash::Invocations,
    lanes: lanes::Lanes,
    /// Whether a gateway session has been ready before (a second READY is a reconnect).
    was_ready: bool,
    stats: Arc<GatewayStats>,
}

/// What the gateway is connected to besides Discord.
pub struct GatewayLinks {
    /// Where messages go.
    pub registry: Addr<ChannelRegistry>,
    /// The session store.
    pub store: Addr<SessionStoreActor>,
    /// `[recovery]`.
    pub recovery: RecoveryConfig,
    /// The models the CLI offers.
    pub models: crate::claude::models::ModelCatalog,
    /// The service's stop: it waits for the sends under way.
    pub shutdown: Shutdown,
}

impl DiscordGateway {
    /// A gateway for `channels` that sends through `outbound` and routes to `registry`.
    pub fn new(
        outbound: Outbound,
        links: GatewayLinks,
        channels: Vec<DiscordChannel>,
        access: AccessConfig,
        stats: Arc<GatewayStats>,
    ) -> Self {
        Self {
            outbound,
            registry: links.registry,
            store: links.store,
            router: router::Router::new(channels, access),
            catch_up: catch_up::CatchUps::new(links.recovery),
            prompts: prompts::Prompts::default(),
            progress: delivery::Progress::default(),
            slash: slash::Invocations::new(links.models),
            lanes: lanes::Lanes::new(links.shutdown),
            was_ready: false,
            stats,
        }
    }
}

impl Actor for DiscordGateway {
    type Context = Context<Self>;
}

impl Handler<ReceiveMessage> for DiscordGateway {
    type Result = ();

    #[instrument(skip_all, fields(channel_id = msg.0.channel_id.get(), message_id = msg.0.id.get()))]
    fn handle(&mut self, msg: ReceiveMessage, ctx: &mut Self::Context) {
        self.stats.event();
        let id = ids::message(msg.0.id);
        if !self.router.first_sight(id) {
            debug!(
                message_id = id.get(),
                "a message delivered again; already taken"
            );
            return;
        }
        let Some(live) = self.catch_up.hold(*msg.0) else {
            return;
        };
        self.handle_message(live, router::Source::Live, ctx);
    }
}

impl Handler<MarkReady> for DiscordGateway {
    type Result = ();

    fn handle(&mut self, msg: MarkReady, ctx: &mut Self::Context) {
        self.stats.event();
        if self.was_ready {
            self.stats.reconnected();
        }
        self.was_ready = true;
        info!(bot_id = msg.bot_id.get(), "connected to Discord");
        self.router.set_bot(msg.bot_id);
        // A new session (not a resumed one): what was posted meanwhile was never delivered.
        self.catch_up(msg.at, ctx);
        self.register_commands(msg.application_id, ctx);
    }
}

impl Handler<MarkResumed> for DiscordGateway {
    type Result = ();

    fn handle(&mut self, _: MarkResumed, _: &mut Self::Context) {
        self.stats.event();
        self.stats.reconnected();
        info!("Discord gateway session resumed");
    }
}

impl Handler<LearnChannel> for DiscordGateway {
    type Result = ();

    fn handle(&mut self, msg: LearnChannel, _: &mut Self::Context) {
        self.stats.event();
        self.router.learn(&msg);
    }
}

impl Handler<CloseThread> for DiscordGateway {
    type Result = ();

    fn handle(&mut self, msg: CloseThread, _: &mut Self::Context) {
        self.stats.event();
        if let Some((conversation, _)) = self.router.conversation_of(msg.id) {
            if conversation.is_thread() {
                self.registry.do_send(CloseWorktree { conversation });
            }
        }
    }
}
