//! Serenity's side: its event handler, which only forwards each event to the gateway actor and
//! returns at once, so the shard never waits on the actors.

use std::sync::Arc;

use serenity::all::{
    ConnectionStage, Context as SerenityContext, EventHandler, GuildChannel, Interaction,
    Message as DiscordMessage, PartialGuildChannel, Ready, ResumedEvent, ShardStageUpdateEvent,
};

use actix::Addr;

use super::ids;

use super::gateway::{
    CloseThread, DiscordGateway, LearnChannel, MarkReady, MarkResumed, ReceiveAutocomplete,
    ReceiveClick, ReceiveCommand, ReceiveMessage,
};

/// Serenity's event handler: forwards to the gateway actor and returns at once.
pub(super) struct Forward {
    pub(super) gateway: Addr<DiscordGateway>,
    /// Where the session's state is kept for `/readyz`.
    pub(super) stats: Arc<crate::metrics::GatewayStats>,
}

#[serenity::async_trait]
impl EventHandler for Forward {
    async fn message(&self, _: SerenityContext, msg: DiscordMessage) {
        self.gateway.do_send(ReceiveMessage(Box::new(msg)));
    }

    async fn ready(&self, _: SerenityContext, ready: Ready) {
        self.stats.set_connected(true);
        self.gateway.do_send(MarkReady {
            bot_id: ids::user(ready.user.id),
            application_id: ready.application.id.get(),
            at: std::time::SystemTime::now(),
        });
    }

    async fn interaction_create(&self, _: SerenityContext, interaction: Interaction) {
        match interaction {
            Interaction::Component(click) => self.gateway.do_send(ReceiveClick(Box::new(click))),
            Interaction::Command(command) => {
                self.gateway.do_send(ReceiveCommand(Box::new(command)));
            }
            Interaction::Autocomplete(typing) => {
                self.gateway.do_send(ReceiveAutocomplete(Box::new(typing)));
            }
            _ => {}
        }
    }

    async fn shard_stage_update(&self, _: SerenityContext, event: ShardStageUpdateEvent) {
        // Serenity's shard is `Connected` once READY or RESUMED came, anything else is down.
        self.stats
            .set_connected(event.new == ConnectionStage::Connected);
    }

    async fn resume(&self, _: SerenityContext, _: ResumedEvent) {
        self.stats.set_connected(true);
        self.gateway.do_send(MarkResumed);
    }

    async fn thread_create(&self, _: SerenityContext, thread: GuildChannel) {
        self.gateway.do_send(LearnChannel::of(&thread));
    }

    async fn thread_update(
        &self,
        _: SerenityContext,
        _: Option<GuildChannel>,
        thread: GuildChannel,
    ) {
        let archived = thread.thread_metadata.is_some_and(|m| m.archived);
        self.gateway.do_send(LearnChannel::of(&thread));
        if archived {
            self.gateway.do_send(CloseThread {
                id: ids::channel(thread.id),
            });
        }
    }

    async fn thread_delete(
        &self,
        _: SerenityContext,
        thread: PartialGuildChannel,
        _: Option<GuildChannel>,
    ) {
        self.gateway.do_send(CloseThread {
            id: ids::channel(thread.id),
        });
    }
}
