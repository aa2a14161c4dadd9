//! The gateway actor: turns Discord's events into messages for the channel registry, and
//! delivers replies and progress back to Discord.
//!
//! Routing: messages in configured channels, and in threads whose parent is a configured
//! channel (each thread its own conversation, with the parent's settings). Bots — this one
//! included — and system messages are ignored. Access is secure by default: only allow-listed
//! users or roles reach a channel actor; anyone else gets at most one short refusal per
//! conversation and cooldown.
//!
//! Catch-up: on every new gateway session (`READY`: at start, and after a session that could
//! not be resumed) it fetches, one channel at a time and `recovery.catch_up_interval_ms` apart,
//! what was posted in each configured channel and each thread the inbox knows since the last
//! message the inbox has seen (at most `recovery.catch_up_max`, none older than
//! `recovery.catch_up_max_age_secs`), and routes it as if it had just arrived, marked late. The
//! inbox drops what it already has.
//!
//! Delivery: a reply from the outbox is posted from its first unposted chunk, and each chunk
//! posted is recorded, so a restart resumes it instead of posting it twice.

mod catch_up;
mod router;
mod slash;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use serenity::all::{
    ChannelId, ComponentInteraction, ComponentInteractionDataKind, CreateInteractionResponse,
    CreateInteractionResponseMessage, GuildId, Message as DiscordMessage, MessageId, UserId,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tracing::{debug, error, info, instrument, warn};

use super::access::{AccessConfig, DiscordChannel};
use super::approvals::{answer_of, outcome, parse_custom_id, parse_stop, prompt, Action};
use super::outbound::{status_of, Outbound};
use crate::frontend::{
    AnswerApproval, ApprovalAnswer, ApprovalState, DeliverReply, Origin, ProgressStep, ReplyKind,
    RouteMessage, ShowApproval, ShowProgress,
};
use crate::metrics::GatewayStats;
use crate::recovery::RecoveryConfig;
use crate::registry::ChannelRegistry;
use crate::store::{AttachmentMeta, RecordDelivery, SessionStoreActor};
pub use router::LearnChannel;
use router::{Lookup, Parked, Route, Router, Source};

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// Handle a message Discord delivered (`MESSAGE_CREATE`).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ReceiveMessage(pub Box<DiscordMessage>);

pub use slash::{ReceiveAutocomplete, ReceiveCommand};

/// Remember who the bot is (from `READY`).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct MarkReady {
    /// The bot's user id.
    pub bot_id: u64,
    /// The application's id (application commands are registered under it).
    pub application_id: u64,
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
    pub id: u64,
}

/// Handle a click on one of the bot's buttons (`INTERACTION_CREATE`, a component).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ReceiveClick(pub Box<ComponentInteraction>);

/// Remember where a permission prompt was posted.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct PromptPosted {
    token: String,
    /// Its message, or why Discord would not post it.
    message: Result<MessageId, String>,
}

/// Answer once every reply and progress update under way has been sent (for shutdown).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FlushOutbound;

// ---------------------------------------------------------------------------------------------
// The actor
// ---------------------------------------------------------------------------------------------

/// One channel's sends, in order.
#[derive(Default)]
struct Lane {
    queue: VecDeque<std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>>,
    running: bool,
}

/// A permission prompt on Discord.
struct Prompt {
    conversation_id: u64,
    request_id: String,
    /// Where it was posted.
    channel_id: u64,
    /// The message whose run asked.
    reply_to: u64,
    /// Its message, once posted.
    message: Option<MessageId>,
    /// Its text, to which the outcome is added.
    text: String,
    /// For `AskUserQuestion`: the questions offered and their options, and what was chosen so
    /// far (the answer goes once every question has one).
    questions: Vec<(String, Vec<String>)>,
    chosen: Vec<Option<String>>,
    /// The outcome, if it came before the post completed.
    closed: Option<String>,
}

/// Owns the Discord side of the service.
pub struct DiscordGateway {
    outbound: Outbound,
    registry: Addr<ChannelRegistry>,
    /// Outbound sends and progress tasks under way.
    pending: usize,
    /// Waiting for `pending` to reach zero.
    flush_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    /// Which conversation a message belongs to, and whether it reaches Claude.
    router: Router,
    /// Whether a gateway session has been ready before (a second READY is a reconnect).
    was_ready: bool,
    /// Message being worked on → its progress task's input.
    working: HashMap<u64, UnboundedSender<Option<String>>>,
    /// Permission prompts shown, by token.
    prompts: HashMap<String, Prompt>,
    /// Sends waiting their turn, per Discord channel.
    lanes: HashMap<u64, Lane>,
    stats: Arc<GatewayStats>,
    /// The store: where deliveries are recorded, and what catch-up starts after.
    store: Addr<SessionStoreActor>,
    recovery: RecoveryConfig,
    /// A catch-up is under way.
    catching_up: bool,
    /// When the current gateway session began: a message found by catch-up that was posted
    /// after it is not late (it was posted while the service was up, and only raced the read).
    session_since: u64,
    /// Channels whose history is being read: their live messages wait here, so none is
    /// answered before an older one the history holds.
    held: HashMap<u64, Vec<DiscordMessage>>,
    /// `/claude` invocations acknowledged and waiting for the core's answer, by interaction id.
    /// An interaction's token lives 15 minutes: older entries are forgotten.
    slash: HashMap<u64, (Instant, Box<serenity::all::CommandInteraction>)>,
    /// The models to offer in autocomplete.
    models: crate::claude::models::ModelCatalog,
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
            recovery: links.recovery,
            catching_up: false,
            session_since: 0,
            held: HashMap::new(),
            slash: HashMap::new(),
            models: links.models,
            pending: 0,
            flush_waiters: Vec::new(),
            router: Router::new(channels, access),
            was_ready: false,
            working: HashMap::new(),
            prompts: HashMap::new(),
            lanes: HashMap::new(),
            stats,
        }
    }
}

impl Actor for DiscordGateway {
    type Context = Context<Self>;
}

impl DiscordGateway {
    /// Runs outbound work beside the actor, counted for [`FlushOutbound`].
    fn send_later(
        &mut self,
        work: impl std::future::Future<Output = ()> + 'static,
        ctx: &mut Context<Self>,
    ) {
        self.pending += 1;
        ctx.spawn(work.into_actor(self).map(|(), act, _| act.done_one()));
    }

    fn done_one(&mut self) {
        self.pending -= 1;
        if self.pending == 0 {
            for w in self.flush_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    /// Runs outbound work for `channel` after the work queued for it before: one sender per
    /// channel, so replies go out in the order of the messages they answer and the chunks of
    /// consecutive replies never interleave (counted for [`FlushOutbound`] while queued).
    fn send_in_order(
        &mut self,
        channel: u64,
        work: impl std::future::Future<Output = ()> + 'static,
        ctx: &mut Context<Self>,
    ) {
        self.pending += 1;
        let lane = self.lanes.entry(channel).or_default();
        lane.queue.push_back(Box::pin(work));
        if !lane.running {
            lane.running = true;
            self.run_lane(channel, ctx);
        }
    }

    fn run_lane(&mut self, channel: u64, ctx: &mut Context<Self>) {
        let Some(work) = self
            .lanes
            .get_mut(&channel)
            .and_then(|l| l.queue.pop_front())
        else {
            self.lanes.remove(&channel);
            return;
        };
        ctx.spawn(work.into_actor(self).map(move |(), act, ctx| {
            act.done_one();
            act.run_lane(channel, ctx);
        }));
    }

    /// Routes a message (see [`router`]); one waiting for a look-up of its channel waits, in
    /// order, behind it.
    fn handle_message(&mut self, msg: DiscordMessage, source: Source, ctx: &mut Context<Self>) {
        let channel = msg.channel_id.get();
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
                channel_id = channel,
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
                channel_id = channel,
                message_id = msg.id.get(),
                "a late message from a user not on the allowlist"
            ),
            Route::Refuse(conversation) => self.refuse(&msg, conversation, ctx),
            Route::Deliver(conversation, text, approver) => {
                self.stats.routed.fetch_add(1, Ordering::Relaxed);
                self.registry.do_send(RouteMessage {
                    conversation,
                    origin: Origin {
                        channel_id: channel,
                        message_id: msg.id.get(),
                        author_id: msg.author.id.get(),
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
                    durable: true,
                    approver,
                });
            }
        }
    }

    /// Looks up what channel `channel`'s waiting messages need (over REST, retried), then
    /// routes them. A definite answer is remembered: the channel, "unknown / no access" (404,
    /// 403), the author's roles (none if not a member). After any other failure the messages
    /// keep waiting and the look-up is tried again later: nothing is dropped.
    fn look_up(&mut self, channel: u64, lookup: Lookup, ctx: &mut Context<Self>) {
        let out = self.outbound.clone();
        let work = async move {
            match lookup {
                Lookup::Channel => look_up_channel(&out, channel).await.map(Learned::Channel),
                Lookup::Roles { guild, user } => look_up_roles(&out, channel, guild, user)
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
                    let (wait, ids) = act.router.failed(channel);
                    warn!(channel_id = channel, message_ids = ?ids, error = %e, retry_in_secs = wait.as_secs(), "a look-up failed; the channel's messages wait for the next try");
                    ctx.run_later(wait, move |act, ctx| act.look_up(channel, lookup, ctx));
                    return;
                }
            }
            for parked in act.router.release(channel) {
                act.handle_message(parked.message, parked.source, ctx);
            }
        }));
    }

    fn refuse(&mut self, msg: &DiscordMessage, conversation: u64, ctx: &mut Context<Self>) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        let user = msg.author.id.get();
        info!(
            channel_id = conversation,
            user_id = user,
            "message from a user not on the allowlist"
        );
        if !self.router.tell_refusal(user, conversation) {
            return;
        }
        let out = self.outbound.clone();
        let (channel, reply_to) = (msg.channel_id.get(), msg.id.get());
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

/// What a look-up found.
enum Learned {
    /// The channel (`None`: unknown, or not visible to the bot).
    Channel(Option<LearnChannel>),
    /// (guild, user, roles).
    Roles((u64, u64, Vec<u64>)),
}

/// The channel `id` (`None` if Discord answers 403 or 404).
async fn look_up_channel(out: &Outbound, id: u64) -> Result<Option<LearnChannel>, serenity::Error> {
    let found = out
        .with_retry("look up channel", || {
            ChannelId::new(id.max(1)).to_channel(&*out.http)
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
    channel: u64,
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
                .get_member(GuildId::new(guild.max(1)), UserId::new(user.max(1)))
        })
        .await;
    match member {
        Ok(m) => Ok((guild, user, m.roles.iter().map(|r| r.get()).collect())),
        Err(e) if matches!(status_of(&e), Some(403 | 404)) => Ok((guild, user, Vec::new())),
        Err(e) => Err(e),
    }
}

impl Handler<ReceiveMessage> for DiscordGateway {
    type Result = ();

    #[instrument(skip_all, fields(channel_id = msg.0.channel_id.get(), message_id = msg.0.id.get()))]
    fn handle(&mut self, msg: ReceiveMessage, ctx: &mut Self::Context) {
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        let id = msg.0.id.get();
        if !self.router.first_sight(id) {
            debug!(message_id = id, "a message delivered again; already taken");
            return;
        }
        if let Some(held) = self.held.get_mut(&msg.0.channel_id.get()) {
            held.push(*msg.0);
            return;
        }
        self.handle_message(*msg.0, Source::Live, ctx);
    }
}

impl Handler<MarkReady> for DiscordGateway {
    type Result = ();

    fn handle(&mut self, msg: MarkReady, ctx: &mut Self::Context) {
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        if self.was_ready {
            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        self.was_ready = true;
        info!(bot_id = msg.bot_id, "connected to Discord");
        self.router.set_bot(msg.bot_id);
        // A new session (not a resumed one): what was posted meanwhile was never delivered.
        self.session_since = catch_up::snowflake_at(std::time::SystemTime::now());
        self.catch_up(ctx);
        self.register_commands(msg.application_id, ctx);
    }
}

impl Handler<MarkResumed> for DiscordGateway {
    type Result = ();

    fn handle(&mut self, _: MarkResumed, _: &mut Self::Context) {
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        info!("Discord gateway session resumed");
    }
}

impl Handler<LearnChannel> for DiscordGateway {
    type Result = ();

    fn handle(&mut self, msg: LearnChannel, _: &mut Self::Context) {
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        self.router.learn(&msg);
    }
}

impl Handler<CloseThread> for DiscordGateway {
    type Result = ();

    fn handle(&mut self, msg: CloseThread, _: &mut Self::Context) {
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        if let Some((conversation, _)) = self.router.conversation_of(msg.id) {
            if conversation.is_thread() {
                self.registry
                    .do_send(crate::channel::CloseWorktree { conversation });
            }
        }
    }
}

impl Handler<ShowProgress> for DiscordGateway {
    type Result = ();

    fn handle(&mut self, msg: ShowProgress, ctx: &mut Self::Context) {
        let key = msg.origin.message_id;
        let step = match msg.step {
            ProgressStep::Started => {
                let (tx, rx) = unbounded_channel();
                let worker = self
                    .outbound
                    .clone()
                    .progress(msg.origin.channel_id, key, rx);
                self.send_later(worker, ctx);
                self.working.insert(key, tx);
                return;
            }
            ProgressStep::Queued { .. } => return,
            step => match step.describe() {
                Some(text) => text,
                None => return,
            },
        };
        if let Some(tx) = self.working.get(&key) {
            let _ = tx.send(Some(step));
        }
    }
}

impl Handler<DeliverReply> for DiscordGateway {
    type Result = ();

    #[instrument(skip_all, fields(channel_id = msg.origin.channel_id, message_id = msg.origin.message_id))]
    fn handle(&mut self, msg: DeliverReply, ctx: &mut Self::Context) {
        if let Some(tx) = self.working.remove(&msg.origin.message_id) {
            let _ = tx.send(None);
        }
        if self.answer_command(&msg, ctx) {
            return;
        }
        if msg.origin.channel_id == 0 {
            error!(conversation = %msg.conversation, "reply without a Discord channel; not sent");
            return;
        }
        let out = self.outbound.clone();
        let text = if msg.is_error && msg.kind != ReplyKind::Notice {
            format!("⚠️ {}", msg.text)
        } else {
            msg.text
        };
        let (channel, reply_to) = (msg.origin.channel_id, msg.origin.message_id);
        if msg.kind == ReplyKind::Notice {
            self.send_in_order(
                channel,
                async move { out.send_note(channel, reply_to, &text).await },
                ctx,
            );
            return;
        }
        let (from, store, files) = (
            msg.parts_sent,
            msg.durable.then(|| self.store.clone()),
            msg.files,
        );
        self.send_in_order(
            channel,
            async move {
                let report = |state| {
                    if let Some(store) = &store {
                        store.do_send(RecordDelivery {
                            message_id: reply_to,
                            state,
                        });
                    }
                };
                out.send_reply(channel, reply_to, &text, &files, from, &report)
                    .await;
            },
            ctx,
        );
    }
}

impl DiscordGateway {
    fn close_prompt(&mut self, token: &str, state: &ApprovalState, ctx: &mut Context<Self>) {
        let Some(p) = self.prompts.get_mut(token) else {
            return;
        };
        let text = format!("{}\n{}", p.text, outcome(state));
        match p.message {
            Some(message) => {
                let (out, channel) = (self.outbound.clone(), p.channel_id);
                self.prompts.remove(token);
                self.send_later(
                    async move { out.close_prompt(channel, message, &text).await },
                    ctx,
                );
            }
            // Still being posted: closed as soon as it is.
            None => p.closed = Some(text),
        }
    }
}

impl Handler<ShowApproval> for DiscordGateway {
    type Result = ();

    #[instrument(skip_all, fields(channel_id = msg.origin.channel_id, message_id = msg.origin.message_id))]
    fn handle(&mut self, msg: ShowApproval, ctx: &mut Self::Context) {
        if !matches!(msg.state, ApprovalState::Asked { .. }) {
            self.close_prompt(&msg.token, &msg.state, ctx);
            return;
        }
        let (text, components) = prompt(&msg.state, &msg.token);
        let questions: Vec<(String, Vec<String>)> = match &msg.state {
            ApprovalState::Asked { questions, .. } => questions
                .iter()
                .take(super::approvals::MAX_QUESTIONS)
                .map(|q| (q.question.clone(), q.options.clone()))
                .collect(),
            _ => Vec::new(),
        };
        self.prompts.insert(
            msg.token.clone(),
            Prompt {
                conversation_id: msg.conversation_id,
                request_id: msg.request_id,
                channel_id: msg.origin.channel_id,
                reply_to: msg.origin.message_id,
                message: None,
                text: text.clone(),
                chosen: vec![None; questions.len()],
                questions,
                closed: None,
            },
        );
        let out = self.outbound.clone();
        let me = ctx.address();
        let (channel, reply_to, token) = (msg.origin.channel_id, msg.origin.message_id, msg.token);
        self.send_in_order(
            channel,
            async move {
                // The nonce comes from the request's token: a retried post is posted once.
                let nonce = token.chars().take(24).collect::<String>();
                let message = out
                    .post_with_buttons(channel, reply_to, &text, components, format!("q{nonce}"))
                    .await;
                me.do_send(PromptPosted { token, message });
            },
            ctx,
        );
    }
}

impl Handler<PromptPosted> for DiscordGateway {
    type Result = ();

    fn handle(&mut self, msg: PromptPosted, ctx: &mut Self::Context) {
        let Some(p) = self.prompts.get_mut(&msg.token) else {
            return;
        };
        let why = match msg.message {
            Ok(id) => {
                p.message = Some(id);
                None
            }
            Err(why) => Some(why),
        };
        if let Some(why) = why {
            // Nobody can answer a prompt nobody sees: denied now, not at the timeout.
            let Some(p) = self.prompts.remove(&msg.token) else {
                return;
            };
            self.prompt_not_shown(p, msg.token, &why, ctx);
            return;
        }
        if let (Some(text), Some(message)) = (p.closed.take(), p.message) {
            let (out, channel) = (self.outbound.clone(), p.channel_id);
            self.prompts.remove(&msg.token);
            self.send_later(
                async move { out.close_prompt(channel, message, &text).await },
                ctx,
            );
        }
    }
}

impl DiscordGateway {
    /// A permission prompt Discord would not post: the request is denied at once (Claude is
    /// told why) and the channel told.
    fn prompt_not_shown(&mut self, p: Prompt, token: String, why: &str, ctx: &mut Context<Self>) {
        warn!(channel_id = p.channel_id, request_id = %p.request_id, %why, "a permission prompt could not be shown; denied");
        self.registry.do_send(AnswerApproval {
            conversation_id: p.conversation_id,
            request_id: p.request_id,
            token,
            answer: ApprovalAnswer::Deny(Some(format!(
                "The request could not be shown to anyone in the chat ({why}), so it was denied."
            ))),
            by: "the coordinator".into(),
        });
        let out = self.outbound.clone();
        let (channel, about) = (p.channel_id, p.reply_to);
        let text = format!(
            "⚠️ Claude asked for a permission, but the request could not be shown here ({why}), so it was denied and Claude was told."
        );
        self.send_in_order(
            channel,
            async move { out.send_note(channel, about, &text).await },
            ctx,
        );
    }
}

impl Handler<ReceiveClick> for DiscordGateway {
    type Result = ();

    #[instrument(skip_all, fields(channel_id = msg.0.channel_id.get(), user_id = msg.0.user.id.get()))]
    fn handle(&mut self, msg: ReceiveClick, ctx: &mut Self::Context) {
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        let click = msg.0;
        let user = click.user.id.get();
        let roles: Vec<u64> = click
            .member
            .as_ref()
            .map(|m| m.roles.iter().map(|r| r.get()).collect())
            .unwrap_or_default();
        match parse_stop(&click.data.custom_id) {
            Some((conversation, message)) => {
                self.stop_clicked(click, conversation, message, (user, &roles), ctx);
            }
            None => self.prompt_clicked(click, (user, &roles), ctx),
        }
    }
}

/// A private answer to a click.
fn whisper(text: &str) -> CreateInteractionResponse {
    CreateInteractionResponse::Message(
        CreateInteractionResponseMessage::new()
            .content(text)
            .ephemeral(true),
    )
}

impl DiscordGateway {
    /// **Stop** on a progress message: interrupts that message's run, for anyone allowed to
    /// talk in the conversation.
    fn stop_clicked(
        &mut self,
        click: Box<ComponentInteraction>,
        conversation: u64,
        message: u64,
        (user, roles): (u64, &[u64]),
        ctx: &mut Context<Self>,
    ) {
        let out = self.outbound.clone();
        let allowed = self
            .router
            .may(conversation, user, roles)
            .is_some_and(|(talk, _)| talk);
        if !allowed {
            let response = whisper("You are not allowed to stop Claude here.");
            self.send_later(async move { out.respond(&click, response).await }, ctx);
            return;
        }
        info!(
            channel_id = conversation,
            message_id = message,
            user_id = user,
            "Stop pressed"
        );
        let registry = self.registry.clone();
        self.send_later(
            async move {
                out.respond(&click, CreateInteractionResponse::Acknowledge)
                    .await;
                let stop = crate::registry::CancelConversation {
                    id: conversation,
                    message_id: Some(message),
                };
                if !registry.send(stop).await.unwrap_or(false) {
                    out.whisper(&click, "That run has already ended.").await;
                }
            },
            ctx,
        );
    }

    /// A button or select menu of a permission prompt, for an approver.
    fn prompt_clicked(
        &mut self,
        click: Box<ComponentInteraction>,
        (user, roles): (u64, &[u64]),
        ctx: &mut Context<Self>,
    ) {
        let out = self.outbound.clone();
        let found = parse_custom_id(&click.data.custom_id).and_then(|(action, token)| {
            self.prompts
                .contains_key(token)
                .then(|| (action, token.to_string()))
        });
        let Some((action, token)) = found else {
            let response = whisper("This request is no longer waiting for an answer.");
            self.send_later(async move { out.respond(&click, response).await }, ctx);
            return;
        };
        let conversation = self.prompts.get(&token).map_or(0, |p| p.conversation_id);
        let allowed = self
            .router
            .may(conversation, user, roles)
            .is_some_and(|(_, approve)| approve);
        if !allowed {
            info!(
                user_id = user,
                "a click from someone who may not answer; nothing changes"
            );
            let response = whisper("You are not allowed to answer Claude's requests here.");
            self.send_later(async move { out.respond(&click, response).await }, ctx);
            return;
        }
        let Some(p) = self.prompts.get_mut(&token) else {
            return;
        };
        let answer = if let Action::Question(n) = action {
            let values = match &click.data.kind {
                ComponentInteractionDataKind::StringSelect { values } => values.clone(),
                _ => Vec::new(),
            };
            let picked = p
                .questions
                .get(n)
                .filter(|_| !values.is_empty())
                .and_then(|(_, options)| super::approvals::chosen(&values, options));
            let Some(picked) = picked else {
                let response = whisper("That option does not exist.");
                self.send_later(async move { out.respond(&click, response).await }, ctx);
                return;
            };
            p.chosen[n] = Some(picked.join(", "));
            if p.chosen.iter().any(Option::is_none) {
                // More questions to answer: acknowledged, nothing sent yet.
                let ack = CreateInteractionResponse::Acknowledge;
                self.send_later(async move { out.respond(&click, ack).await }, ctx);
                return;
            }
            ApprovalAnswer::Answers(
                p.questions
                    .iter()
                    .zip(&p.chosen)
                    .map(|((q, _), a)| (q.clone(), a.clone().unwrap_or_default()))
                    .collect(),
            )
        } else {
            match answer_of(&action) {
                Some(answer) => answer,
                None => return,
            }
        };
        let request_id = p.request_id.clone();
        let answer = AnswerApproval {
            conversation_id: conversation,
            request_id,
            token,
            answer,
            by: format!("<@{user}>"),
        };
        let registry = self.registry.clone();
        // Acknowledged at once (Discord wants an answer within 3 s); the prompt is edited to
        // the outcome when the channel reports it.
        self.send_later(
            async move {
                out.respond(&click, CreateInteractionResponse::Acknowledge)
                    .await;
                let note = match registry.send(answer).await {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => format!("Not taken: {e}."),
                    Err(_) => "Not taken: the service is stopping.".to_string(),
                };
                out.whisper(&click, &note).await;
            },
            ctx,
        );
    }
}

impl Handler<FlushOutbound> for DiscordGateway {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: FlushOutbound, _: &mut Self::Context) -> Self::Result {
        if self.pending == 0 {
            return Box::pin(async {});
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.flush_waiters.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
