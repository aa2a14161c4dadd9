//! The gateway's side of routing: a message goes to its conversation ([`SubmitMessage`] to the
//! registry), waits behind a look-up its channel needs (a thread's parent, an author's roles:
//! over REST, retried until it succeeds), or is refused (told once per cooldown, never late).

use actix::prelude::*;
use serenity::all::{GuildId, Message as DiscordMessage, UserId as SUserId};
use tracing::{debug, info, warn};

use super::router::{LearnChannel, Lookup, Parked, Route, Source};
use super::DiscordGateway;
use crate::discord::ids;
use crate::discord::outbound::{status_of, Outbound};
use crate::frontend::{Durability, Origin, SubmitMessage};
use crate::ids::{ChannelId, ConversationId};
use crate::store::AttachmentMeta;

/// What a look-up found.
enum Learned {
    /// The channel (`None`: unknown, or not visible to the bot).
    Channel(Option<LearnChannel>),
    /// (guild, user, roles).
    Roles((u64, u64, Vec<u64>)),
}

impl DiscordGateway {
    /// Routes a message (see [`super::router`]); one waiting for a look-up of its channel
    /// waits, in order, behind it.
    pub(super) fn handle_message(
        &mut self,
        msg: DiscordMessage,
        source: Source,
        ctx: &mut Context<Self>,
    ) {
        let channel = ids::channel(msg.channel_id);
        if self.router.is_waiting(channel) {
            self.router.park(
                channel,
                Parked {
                    message: msg,
                    source,
                },
            );
            return;
        }
        match self.router.route(&msg, source) {
            Route::Ignore(why) => debug!(
                channel_id = channel.get(),
                message_id = msg.id.get(),
                why,
                "message ignored"
            ),
            Route::LookUp(lookup) => {
                self.router.park(
                    channel,
                    Parked {
                        message: msg,
                        source,
                    },
                );
                self.look_up(channel, lookup, ctx);
            }
            // Not told late: the refusal would answer something long past.
            Route::Refuse(_) if source.late() => debug!(
                channel_id = channel.get(),
                message_id = msg.id.get(),
                "a late message from a user not on the allowlist"
            ),
            Route::Refuse(conversation) => self.refuse(&msg, conversation, ctx),
            Route::Deliver(conversation, text, approver) => {
                self.stats.routed();
                self.registry.do_send(SubmitMessage {
                    conversation,
                    origin: Origin {
                        channel_id: channel,
                        message_id: ids::message(msg.id),
                        author_id: ids::user(msg.author.id),
                    },
                    text,
                    attachments: msg
                        .attachments
                        .iter()
                        .map(|a| AttachmentMeta {
                            name: a.filename.clone(),
                            size: u64::from(a.size),
                            content_type: a.content_type.clone(),
                            url: a.url.clone(),
                        })
                        .collect(),
                    late: source.late(),
                    inbox: Durability::New,
                    approver,
                    via: crate::via::Via::Chat,
                });
            }
        }
    }

    /// Looks up what channel `channel`'s waiting messages need (over REST, retried), then
    /// routes them. A definite answer is remembered: the channel, "unknown / no access" (404,
    /// 403), the author's roles (none if not a member). After any other failure the messages
    /// keep waiting and the look-up is tried again later: nothing is dropped.
    fn look_up(&mut self, channel: ChannelId, lookup: Lookup, ctx: &mut Context<Self>) {
        let out = self.outbound.clone();
        let work = async move {
            match lookup {
                Lookup::Channel => look_up_channel(&out, channel).await.map(Learned::Channel),
                Lookup::Roles { guild, user } => look_up_roles(&out, channel, guild, user.get())
                    .await
                    .map(Learned::Roles),
            }
        };
        ctx.spawn(work.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok(Learned::Channel(Some(c))) => act.router.learn(&c),
                Ok(Learned::Channel(None)) => act.router.learn_foreign(channel),
                Ok(Learned::Roles((guild, user, roles))) => {
                    act.router.learn_roles(guild, user, roles);
                }
                Err(e) => {
                    let (wait, waiting) = act.router.failed(channel);
                    warn!(channel_id = channel.get(), message_ids = ?waiting, error = %e, retry_in_secs = wait.as_secs(), "a look-up failed; the channel's messages wait for the next try");
                    ctx.run_later(wait, move |act, ctx| act.look_up(channel, lookup, ctx));
                    return;
                }
            }
            for parked in act.router.release(channel) {
                act.handle_message(parked.message, parked.source, ctx);
            }
        }));
    }

    fn refuse(
        &mut self,
        msg: &DiscordMessage,
        conversation: ConversationId,
        ctx: &mut Context<Self>,
    ) {
        self.stats.refused();
        let user = ids::user(msg.author.id);
        info!(
            channel_id = conversation.get(),
            user_id = user.get(),
            "message from a user not on the allowlist"
        );
        if !self.router.tell_refusal(user, conversation) {
            return;
        }
        let out = self.outbound.clone();
        let (channel, reply_to) = (ids::channel(msg.channel_id), ids::message(msg.id));
        self.send_in_order(
            channel,
            async move {
                out.send_reply(channel, reply_to, "Sorry — you are not on this bot's allowlist here, so your messages are not sent to Claude.", &[], 0, &|_| {})
                    .await;
            },
            ctx,
        );
    }
}

/// The channel `id` (`None` if Discord answers 403 or 404).
async fn look_up_channel(
    out: &Outbound,
    id: ChannelId,
) -> Result<Option<LearnChannel>, serenity::Error> {
    let found = out
        .with_retry("look up channel", || {
            ids::to_channel(id).to_channel(&*out.http)
        })
        .await;
    match found {
        Ok(c) => Ok(Some(c.guild().map_or(
            LearnChannel {
                id,
                guild_id: None,
                parent_id: None,
                is_thread: false,
                name: String::new(),
            },
            |g| LearnChannel::of(&g),
        ))),
        Err(e) if matches!(status_of(&e), Some(403 | 404)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The roles of `user` in the guild of `channel` (`guild`, or looked up): none if they are not
/// a member (404) or the bot may not see them (403).
async fn look_up_roles(
    out: &Outbound,
    channel: ChannelId,
    guild: Option<u64>,
    user: u64,
) -> Result<(u64, u64, Vec<u64>), serenity::Error> {
    let guild = match guild {
        Some(g) => g,
        None => match look_up_channel(out, channel).await? {
            Some(LearnChannel {
                guild_id: Some(g), ..
            }) => g,
            // Not in a guild: no roles to read.
            _ => return Ok((0, user, Vec::new())),
        },
    };
    let member = out
        .with_retry("look up member", || {
            out.http
                .get_member(GuildId::new(guild.max(1)), SUserId::new(user.max(1)))
        })
        .await;
    match member {
        Ok(m) => Ok((guild, user, ids::roles(&m.roles))),
        Err(e) if matches!(status_of(&e), Some(403 | 404)) => Ok((guild, user, Vec::new())),
        Err(e) => Err(e),
    }
}
