//! The gateway's side of `/claude`: registering it when a session is ready, answering an
//! invocation (the same allowlists as messages; approvers for `mode` and `rules clear`; a
//! refusal is ephemeral), and autocomplete.
//!
//! Discord wants an answer within 3 s: every invocation is acknowledged at once with a
//! deferred response (ephemeral when nothing changes for others), and the core's answer — one
//! [`DeliverReply`] for the interaction — edits it when it comes.

use std::collections::HashSet;

use actix::prelude::*;
use serenity::all::{
    ApplicationId, ChannelId, CommandInteraction, CreateAutocompleteResponse,
    CreateInteractionResponse, CreateInteractionResponseMessage, GuildId,
};
use tracing::{info, warn};

use super::router::LearnChannel;
use super::DiscordGateway;
use crate::discord::commands::{self, choices};
use crate::frontend::{DeliverReply, Origin, RouteCommand};
use crate::store::ListSessions;

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// Handle a `/claude` invocation (`INTERACTION_CREATE`, an application command).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ReceiveCommand(pub Box<CommandInteraction>);

/// Offer choices while a `/claude` option is typed (`INTERACTION_CREATE`, autocomplete).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ReceiveAutocomplete(pub Box<CommandInteraction>);

// ---------------------------------------------------------------------------------------------
// Handling
// ---------------------------------------------------------------------------------------------

impl DiscordGateway {
    /// Registers `/claude` in the guild of every configured channel: one bulk overwrite per
    /// guild, so a restart replaces the command and never adds a second.
    pub(super) fn register_commands(&mut self, application_id: u64, ctx: &mut Context<Self>) {
        let out = self.outbound.clone();
        out.http
            .set_application_id(ApplicationId::new(application_id.max(1)));
        let channels = self.router.configured();
        let me = ctx.address();
        let work = async move {
            let mut guilds = HashSet::new();
            for id in channels {
                let found = out
                    .with_retry("look up channel", || {
                        ChannelId::new(id.max(1)).to_channel(&*out.http)
                    })
                    .await;
                match found.map(serenity::all::Channel::guild) {
                    Ok(Some(g)) => {
                        guilds.insert(g.guild_id.get());
                        // The router keeps its guild: roles are read there.
                        me.do_send(LearnChannel::of(&g));
                    }
                    Ok(None) => warn!(channel_id = id, "a configured channel is not in a guild"),
                    Err(e) => {
                        warn!(channel_id = id, error = %e, "could not look up a configured channel; /claude is not registered for its guild");
                    }
                }
            }
            let definition = [commands::definition()];
            for guild in guilds {
                let set = out
                    .with_retry("register commands", || {
                        // A PUT: a bulk overwrite.
                        out.http
                            .create_guild_commands(GuildId::new(guild), &definition)
                    })
                    .await;
                match set {
                    Ok(_) => info!(guild_id = guild, "/claude registered"),
                    Err(e) => warn!(guild_id = guild, error = %e, "could not register /claude"),
                }
            }
        };
        self.send_later(work, ctx);
    }

    /// The core's answer to an invocation, if `reply` is one: edits its deferred response.
    /// Answers whether it was.
    pub(super) fn answer_command(&mut self, reply: &DeliverReply, ctx: &mut Context<Self>) -> bool {
        let Some((_, interaction)) = self.slash.remove(&reply.origin.message_id) else {
            return false;
        };
        let out = self.outbound.clone();
        let text = if reply.is_error {
            format!("⚠️ {}", reply.text)
        } else {
            reply.text.clone()
        };
        // After the deferral, on the same lane.
        self.send_in_order(
            reply.origin.message_id,
            async move { out.edit_command_response(&interaction, &text).await },
            ctx,
        );
        true
    }
}

/// A private, immediate answer.
fn refuse(text: &str) -> CreateInteractionResponse {
    CreateInteractionResponse::Message(
        CreateInteractionResponseMessage::new()
            .content(text)
            .ephemeral(true),
    )
}

impl DiscordGateway {
    /// Answers an invocation at once, privately, and routes nothing.
    fn refuse_command(
        &mut self,
        interaction: Box<CommandInteraction>,
        text: String,
        ctx: &mut Context<Self>,
    ) {
        let out = self.outbound.clone();
        self.send_in_order(
            interaction.id.get(),
            async move { out.respond_command(&interaction, refuse(&text)).await },
            ctx,
        );
    }
}

impl Handler<ReceiveCommand> for DiscordGateway {
    type Result = ();

    fn handle(&mut self, msg: ReceiveCommand, ctx: &mut Self::Context) {
        self.stats
            .events
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let interaction = msg.0;
        let (user, channel) = (interaction.user.id.get(), interaction.channel_id.get());
        let roles: Vec<u64> = interaction
            .member
            .as_ref()
            .map(|m| m.roles.iter().map(|r| r.get()).collect())
            .unwrap_or_default();
        let Some((conversation, _)) = self.router.conversation_of(channel) else {
            return self.refuse_command(
                interaction,
                "Claude does not work in this channel.".into(),
                ctx,
            );
        };
        let (allowed, approver) = self
            .router
            .may(conversation.id, user, &roles)
            .unwrap_or_default();
        if !allowed {
            info!(
                channel_id = channel,
                user_id = user,
                "/claude from a user not on the allowlist"
            );
            return self.refuse_command(
                interaction,
                "You are not on this bot's allowlist here.".into(),
                ctx,
            );
        }
        let command = match commands::parse(&interaction.data) {
            Ok(c) => c,
            Err(why) => return self.refuse_command(interaction, why, ctx),
        };
        if command.needs_approver() && !approver {
            return self.refuse_command(
                interaction,
                "Only approvers may do that here.".into(),
                ctx,
            );
        }
        info!(channel_id = channel, user_id = user, command = ?command, "/claude");
        let lane = interaction.id.get();
        let defer = CreateInteractionResponse::Defer(
            CreateInteractionResponseMessage::new().ephemeral(commands::is_private(&command)),
        );
        let (out, first) = (self.outbound.clone(), interaction.clone());
        self.send_in_order(
            lane,
            async move { out.respond_command(&first, defer).await },
            ctx,
        );
        // Its token lives 15 minutes: an answer later than that could not be delivered.
        let expired = std::time::Duration::from_secs(15 * 60);
        self.slash.retain(|_, (at, _)| at.elapsed() < expired);
        self.slash
            .insert(lane, (std::time::Instant::now(), interaction));
        self.registry.do_send(RouteCommand {
            conversation,
            origin: Origin {
                channel_id: channel,
                message_id: lane,
                author_id: user,
            },
            command,
            approver,
        });
    }
}

impl Handler<ReceiveAutocomplete> for DiscordGateway {
    type Result = ();

    fn handle(&mut self, msg: ReceiveAutocomplete, ctx: &mut Self::Context) {
        let interaction = msg.0;
        let Some(focused) = interaction.data.autocomplete() else {
            return;
        };
        let (option, typed) = (focused.name.to_string(), focused.value.to_string());
        let out = self.outbound.clone();
        let user = interaction.user.id.get();
        let roles: Vec<u64> = interaction
            .member
            .as_ref()
            .map(|m| m.roles.iter().map(|r| r.get()).collect())
            .unwrap_or_default();
        let channel = interaction.channel_id.get();
        let allowed = self
            .router
            .may(channel, user, &roles)
            .filter(|(talk, _)| *talk)
            .and(self.router.conversation_of(channel))
            .map(|(c, _)| c.id);
        let models = self.models.known();
        let store = self.store.clone();
        let work = async move {
            let candidates: Vec<String> = match (allowed, option.as_str()) {
                (Some(_), "name") => models,
                (Some(id), "id") => match store
                    .send(ListSessions {
                        conversation_id: id,
                    })
                    .await
                {
                    Ok(Ok(all)) => all.into_iter().map(|s| s.session_id).collect(),
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            let mut response = CreateAutocompleteResponse::new();
            for c in choices(&candidates, &typed) {
                response = response.add_string_choice(c.clone(), c);
            }
            out.respond_command(
                &interaction,
                CreateInteractionResponse::Autocomplete(response),
            )
            .await;
        };
        self.send_later(work, ctx);
    }
}
