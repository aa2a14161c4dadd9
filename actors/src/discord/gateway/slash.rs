//! The gateway's side of `/claude`: registering it when a session is ready, answering an
//! invocation (the same allowlists as messages; approvers for `mode` and `rules clear`; a
//! refusal is ephemeral), and autocomplete.
//!
//! Discord wants an answer within 3 s: every invocation is acknowledged at once with a
//! deferred response (ephemeral when nothing changes for others), and the core's answer — one
//! [`DeliverReply`] for the interaction — edits it when it comes.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use actix::prelude::*;
use serenity::all::{
    ApplicationId, AutoArchiveDuration, ChannelType, CommandInteraction,
    CreateAutocompleteResponse, CreateInteractionResponse, CreateInteractionResponseMessage,
    CreateThread, GuildId,
};
use tracing::{info, warn};

use super::lanes::LaneKey;
use super::router::LearnChannel;
use super::DiscordGateway;
use crate::claude::models::ModelCatalog;
use crate::discord::commands::{self, choices};
use crate::discord::ids;
use crate::discord::outbound::{private, Answerable, SendError};
use crate::frontend::{Command, CommandOrigin, DeliverReply, RunCommand};
use crate::ids::{CommandId, UserId};
use crate::store::{ListSessions, LoadConversation};

/// An interaction's token lives 15 minutes: an answer later than that could not be delivered.
const TOKEN_LIFE: Duration = Duration::from_secs(15 * 60);

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

/// The invocations acknowledged and waiting for the core's answer, and the models offered in
/// autocomplete.
pub(super) struct Invocations {
    waiting: HashMap<CommandId, (Instant, Answerable)>,
    models: ModelCatalog,
}

impl Invocations {
    pub(super) fn new(models: ModelCatalog) -> Self {
        Self {
            waiting: HashMap::new(),
            models,
        }
    }

    /// Remembers `id` until its answer comes (forgetting those whose token has expired).
    fn wait_for_answer(&mut self, id: CommandId, to: Answerable) {
        self.waiting.retain(|_, (at, _)| at.elapsed() < TOKEN_LIFE);
        self.waiting.insert(id, (Instant::now(), to));
    }
}

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
                        ids::to_channel(id).to_channel(&*out.http)
                    })
                    .await;
                match found.map(serenity::all::Channel::guild) {
                    Ok(Some(g)) => {
                        guilds.insert(g.guild_id.get());
                        // The router keeps its guild: roles are read there.
                        me.do_send(LearnChannel::of(&g));
                    }
                    Ok(None) => warn!(
                        channel_id = id.get(),
                        "a configured channel is not in a guild"
                    ),
                    Err(e) => {
                        warn!(channel_id = id.get(), error = %e, "could not look up a configured channel; /claude is not registered for its guild");
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

    /// The core's answer to invocation `id`: edits its deferred response.
    pub(super) fn answer_command(
        &mut self,
        id: CommandId,
        reply: &DeliverReply,
        ctx: &mut Context<Self>,
    ) {
        let Some((_, to)) = self.slash.waiting.remove(&id) else {
            warn!(
                command_id = id.get(),
                "the answer to a /claude whose token expired; not sent"
            );
            return;
        };
        let out = self.outbound.clone();
        let text = if reply.is_error {
            format!("⚠️ {}", reply.text)
        } else {
            reply.text.clone()
        };
        // After the deferral, on the same lane.
        self.send_in_order(
            LaneKey::Interaction(id),
            async move { out.edit_answer(&to, &text).await },
            ctx,
        );
    }

    /// Answers an invocation at once, privately, and routes nothing.
    fn refuse_command(
        &mut self,
        interaction: &CommandInteraction,
        text: &str,
        ctx: &mut Context<Self>,
    ) {
        let (out, to, response) = (
            self.outbound.clone(),
            Answerable::from(interaction),
            private(text),
        );
        let lane = LaneKey::Interaction(CommandId(interaction.id.get()));
        self.send_in_order(lane, async move { out.respond(&to, response).await }, ctx);
    }
}

impl Handler<ReceiveCommand> for DiscordGateway {
    type Result = ();

    fn handle(&mut self, msg: ReceiveCommand, ctx: &mut Self::Context) {
        self.stats.event();
        let interaction = msg.0;
        let (user, channel) = (
            ids::user(interaction.user.id),
            ids::channel(interaction.channel_id),
        );
        let roles = ids::member_roles(interaction.member.as_deref());
        let Some((conversation, _)) = self.router.conversation_of(channel) else {
            return self.refuse_command(&interaction, "Claude does not work in this channel.", ctx);
        };
        let (allowed, approver) = self.router.may(channel, user, &roles).unwrap_or_default();
        if !allowed {
            info!(
                channel_id = channel.get(),
                user_id = user.get(),
                "/claude from a user not on the allowlist"
            );
            return self.refuse_command(
                &interaction,
                "You are not on this bot's allowlist here.",
                ctx,
            );
        }
        let command = match commands::parse(&interaction.data) {
            Ok(c) => c,
            Err(why) => return self.refuse_command(&interaction, &why, ctx),
        };
        if command.needs_approver() && !approver {
            return self.refuse_command(&interaction, "Only approvers may do that here.", ctx);
        }
        info!(channel_id = channel.get(), user_id = user.get(), command = ?command, "/claude");
        let id = CommandId(interaction.id.get());
        let defer = CreateInteractionResponse::Defer(
            CreateInteractionResponseMessage::new().ephemeral(commands::is_private(&command)),
        );
        let (out, to) = (self.outbound.clone(), Answerable::from(&*interaction));
        self.slash.wait_for_answer(id, to.clone());
        let deferred = to.clone();
        self.send_in_order(
            LaneKey::Interaction(id),
            async move { out.respond(&deferred, defer).await },
            ctx,
        );
        let run = RunCommand {
            conversation,
            origin: CommandOrigin {
                channel_id: channel,
                command_id: id,
                author_id: user,
            },
            command,
            approver,
        };
        if let Command::Fork { name, .. } = &run.command {
            let name = name.clone();
            return self.fork(run, name, to, ctx);
        }
        self.registry.do_send(run);
    }
}

impl DiscordGateway {
    /// `/claude fork`: a thread under the configured channel, made once the conversation is
    /// known to have a session to copy; then the core seeds it (and answers).
    fn fork(
        &mut self,
        mut run: RunCommand,
        name: Option<String>,
        to: Answerable,
        ctx: &mut Context<Self>,
    ) {
        let (out, store, registry, me) = (
            self.outbound.clone(),
            self.store.clone(),
            self.registry.clone(),
            ctx.address(),
        );
        let parent = run.conversation.profile.id;
        let lane = LaneKey::Interaction(run.origin.command_id);
        let work = async move {
            let conversation = run.conversation.id;
            let has_session = matches!(
                store.send(LoadConversation { id: conversation }).await,
                Ok(Ok(Some(c))) if c.session_id.is_some()
            );
            if !has_session {
                let text = "⚠️ Nothing to fork yet: this conversation has no Claude session.";
                return out.edit_answer(&to, text).await;
            }
            let title = crate::text::truncate_chars(
                &name.unwrap_or_else(|| format!("fork of {}", run.conversation.name)),
                100,
            );
            let made = out
                .with_retry("create thread", || {
                    ids::to_channel(parent).create_thread(
                        &*out.http,
                        CreateThread::new(title.clone())
                            .kind(ChannelType::PublicThread)
                            .auto_archive_duration(AutoArchiveDuration::OneDay),
                    )
                })
                .await;
            match made {
                Ok(thread) => {
                    // Known before its first message: its conversation is this fork.
                    me.do_send(LearnChannel::of(&thread));
                    run.command = Command::Fork {
                        name: Some(thread.name.clone()),
                        thread: Some(ids::channel(thread.id)),
                    };
                    registry.do_send(run);
                }
                Err(e) => {
                    warn!(channel_id = parent.get(), error = %e, "could not make the fork's thread");
                    let text = format!("⚠️ The thread could not be made: {}", SendError::from(&e));
                    out.edit_answer(&to, &text).await;
                }
            }
        };
        self.send_in_order(lane, work, ctx);
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
        let user: UserId = ids::user(interaction.user.id);
        let roles = ids::member_roles(interaction.member.as_deref());
        let channel = ids::channel(interaction.channel_id);
        let allowed = self
            .router
            .may(channel, user, &roles)
            .filter(|(talk, _)| *talk)
            .and(self.router.conversation_of(channel))
            .map(|(c, _)| c.id);
        let models = self.slash.models.known();
        let store = self.store.clone();
        let to = Answerable::from(&*interaction);
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
            out.respond(&to, CreateInteractionResponse::Autocomplete(response))
                .await;
        };
        self.send_later(work, ctx);
    }
}
