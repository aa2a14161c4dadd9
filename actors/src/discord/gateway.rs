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

mod slash;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use serenity::all::GetMessages;
use serenity::all::{
    ChannelId, ComponentInteraction, ComponentInteractionDataKind, CreateInteractionResponse,
    CreateInteractionResponseMessage, Message as DiscordMessage, MessageId, MessageType,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tracing::{debug, error, info, instrument, warn};

use super::access::{AccessConfig, DiscordChannel};
use super::approvals::{answer_of, outcome, parse_custom_id, parse_stop, prompt, Action};
use super::events::learn;
use super::outbound::{status_of, Outbound};
use crate::conversation::ConversationRef;
use crate::frontend::{
    AnswerApproval, ApprovalAnswer, ApprovalState, DeliverReply, Origin, ProgressStep, ReplyKind,
    RouteMessage, ShowApproval, ShowProgress,
};
use crate::metrics::GatewayStats;
use crate::recovery::RecoveryConfig;
use crate::registry::ChannelRegistry;
use crate::store::{AttachmentMeta, ListLastSeen, RecordDelivery, SessionStoreActor};

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

/// Remember a thread and its parent (from `THREAD_CREATE` / `THREAD_UPDATE`, or a REST lookup).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct LearnChannel {
    /// The channel or thread id.
    pub id: u64,
    /// Its parent channel, for threads.
    pub parent_id: Option<u64>,
    /// Whether it is a thread.
    pub is_thread: bool,
    /// Its name.
    pub name: String,
}

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
    message: Option<MessageId>,
}

/// Route messages that history shows were posted in `channel` while the service was down,
/// oldest first; then the live ones held back meanwhile.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct CatchUp {
    channel: u64,
    found: Vec<DiscordMessage>,
}

/// The catch-up has ended: route every live message still held back.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct CatchUpDone;

/// Answer once every reply and progress update under way has been sent (for shutdown).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FlushOutbound;

// ---------------------------------------------------------------------------------------------
// The actor
// ---------------------------------------------------------------------------------------------

/// Channels and threads remembered for routing; the oldest is forgotten beyond this (it costs
/// one more lookup if it speaks again).
const MAX_KNOWN: usize = 10_000;
/// Refusals remembered for the cooldown; beyond this, expired ones are forgotten first.
const MAX_REFUSED: usize = 10_000;

/// What a channel or thread id is, as far as routing goes.
#[derive(Debug, Clone)]
enum Known {
    /// A thread under configured channel `parent`.
    Thread { parent: u64, name: String },
    /// Anything else: not ours.
    Foreign,
}

/// A map from ids that forgets its oldest entries beyond `cap`.
struct Recent<V> {
    map: HashMap<u64, V>,
    /// Ids, oldest first.
    order: VecDeque<u64>,
    cap: usize,
}

impl<V> Recent<V> {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    fn get(&self, id: u64) -> Option<&V> {
        self.map.get(&id)
    }

    fn insert(&mut self, id: u64, value: V) {
        if self.map.insert(id, value).is_none() {
            self.order.push_back(id);
        }
        while self.map.len() > self.cap {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.map.remove(&old);
        }
    }
}

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
    channels: HashMap<u64, DiscordChannel>,
    access: AccessConfig,
    bot_id: Option<u64>,
    /// Channels and threads seen, other than the configured ones.
    known: Recent<Known>,
    /// Message ids already taken, so a replayed `MESSAGE_CREATE` (a resumed gateway session
    /// may send one again) is not answered twice.
    seen: Recent<()>,
    /// Messages waiting while a channel's parent is looked up, in arrival order (and whether
    /// each is late).
    resolving: HashMap<u64, Vec<(DiscordMessage, bool)>>,
    /// (user, conversation) → when the user was last told they are not allowed.
    refused: HashMap<(u64, u64), Instant>,
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
            channels: channels.into_iter().map(|c| (c.profile.id, c)).collect(),
            access,
            bot_id: None,
            known: Recent::new(MAX_KNOWN),
            seen: Recent::new(MAX_KNOWN),
            resolving: HashMap::new(),
            refused: HashMap::new(),
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

/// What to do with a message.
enum Route {
    Ignore(&'static str),
    Resolve,
    /// The conversation, the text, and whether the author is an approver there.
    Deliver(ConversationRef, String, bool),
    Refuse(u64),
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

    fn route(&self, msg: &DiscordMessage) -> Route {
        if msg.author.bot || Some(msg.author.id.get()) == self.bot_id {
            return Route::Ignore("from a bot");
        }
        // Thread created, pins, joins, renames… carry text too (a thread's name, a channel's
        // new name), but no one asked Claude anything.
        if !matches!(msg.kind, MessageType::Regular | MessageType::InlineReply) {
            return Route::Ignore("a system message");
        }
        if msg.guild_id.is_none() {
            return Route::Ignore("direct message");
        }
        let id = msg.channel_id.get();
        let (conversation, channel) = if let Some(channel) = self.channels.get(&id) {
            (
                ConversationRef::channel(Arc::clone(&channel.profile)),
                channel,
            )
        } else {
            match self.known.get(id) {
                None => return Route::Resolve,
                Some(Known::Foreign) => return Route::Ignore("not a configured channel"),
                Some(Known::Thread { parent, name }) => match self.channels.get(parent) {
                    Some(channel) => (
                        ConversationRef {
                            id,
                            name: format!("{}/{name}", channel.profile.name),
                            profile: Arc::clone(&channel.profile),
                        },
                        channel,
                    ),
                    None => return Route::Ignore("thread of another channel"),
                },
            }
        };
        let mut text = msg.content.clone();
        if channel.access.require_mention {
            let Some(bot) = self.bot_id else {
                return Route::Ignore("mention required, bot id not known yet");
            };
            if !msg.mentions.iter().any(|u| u.id.get() == bot) {
                return Route::Ignore("bot not mentioned");
            }
            text = text
                .replace(&format!("<@{bot}>"), "")
                .replace(&format!("<@!{bot}>"), "")
                .trim()
                .to_string();
        }
        let roles: Vec<u64> = msg
            .member
            .as_ref()
            .map(|m| m.roles.iter().map(|r| r.get()).collect())
            .unwrap_or_default();
        if !self
            .access
            .allows(&channel.access, msg.author.id.get(), &roles)
        {
            return Route::Refuse(conversation.id);
        }
        if text.trim().is_empty() {
            return Route::Ignore("no text");
        }
        let approver = self
            .access
            .approves(&channel.access, msg.author.id.get(), &roles);
        Route::Deliver(conversation, text, approver)
    }

    /// Routes a message; `late`: found by catch-up.
    fn handle_message(&mut self, msg: Box<DiscordMessage>, late: bool, ctx: &mut Context<Self>) {
        let channel = msg.channel_id.get();
        if let Some(waiting) = self.resolving.get_mut(&channel) {
            waiting.push((*msg, late));
            return;
        }
        match self.route(&msg) {
            Route::Ignore(why) => debug!(
                channel_id = channel,
                message_id = msg.id.get(),
                why,
                "message ignored"
            ),
            Route::Resolve => {
                self.resolving.insert(channel, vec![(*msg, late)]);
                self.resolve(channel, ctx);
            }
            // Not told late: the refusal would answer something long past.
            Route::Refuse(_) if late => debug!(
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
                    late,
                    durable: true,
                    approver,
                });
            }
        }
    }

    /// Looks up an unknown channel's parent over REST (retried), then routes what waited for
    /// it. Only a definite answer is remembered: the channel, or "unknown / no access" (404,
    /// 403). After any other failure its waiting messages are dropped with a warning and the
    /// next message looks it up again.
    fn resolve(&mut self, channel: u64, ctx: &mut Context<Self>) {
        let out = self.outbound.clone();
        let lookup = async move {
            out.with_retry("look up channel", || {
                ChannelId::new(channel.max(1)).to_channel(&*out.http)
            })
            .await
        };
        ctx.spawn(lookup.into_actor(self).map(move |res, act, ctx| {
            let waiting = act.resolving.remove(&channel).unwrap_or_default();
            let known = match res {
                Ok(c) => match c.guild() {
                    Some(g) => {
                        let l = learn(&g);
                        match (l.is_thread, l.parent_id) {
                            (true, Some(parent)) => Known::Thread { parent, name: l.name },
                            _ => Known::Foreign,
                        }
                    }
                    None => Known::Foreign,
                },
                Err(e) if matches!(status_of(&e), Some(403 | 404)) => Known::Foreign,
                Err(e) => {
                    let ids: Vec<u64> = waiting.iter().map(|(m, _)| m.id.get()).collect();
                    warn!(channel_id = channel, message_ids = ?ids, error = %e, "could not look up the channel; these messages are dropped, the next one looks it up again");
                    return;
                }
            };
            act.known.insert(channel, known);
            for (msg, late) in waiting {
                act.handle_message(Box::new(msg), late, ctx);
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
        let cooldown = self.access.refusal_cooldown();
        let now = Instant::now();
        if self
            .refused
            .get(&(user, conversation))
            .is_some_and(|t| now.duration_since(*t) < cooldown)
        {
            return;
        }
        if self.refused.len() >= MAX_REFUSED {
            self.refused
                .retain(|_, t| now.duration_since(*t) < cooldown);
            if self.refused.len() >= MAX_REFUSED {
                // Forgetting a refusal only means that user may be told once more.
                self.refused.clear();
            }
        }
        self.refused.insert((user, conversation), now);
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

impl Handler<ReceiveMessage> for DiscordGateway {
    type Result = ();

    #[instrument(skip_all, fields(channel_id = msg.0.channel_id.get(), message_id = msg.0.id.get()))]
    fn handle(&mut self, msg: ReceiveMessage, ctx: &mut Self::Context) {
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        let id = msg.0.id.get();
        if self.seen.get(id).is_some() {
            debug!(message_id = id, "a message delivered again; already taken");
            return;
        }
        self.seen.insert(id, ());
        if let Some(held) = self.held.get_mut(&msg.0.channel_id.get()) {
            held.push(*msg.0);
            return;
        }
        self.handle_message(msg.0, false, ctx);
    }
}

impl Handler<CatchUp> for DiscordGateway {
    type Result = ();

    fn handle(&mut self, msg: CatchUp, ctx: &mut Self::Context) {
        for m in msg.found {
            let id = m.id.get();
            if self.seen.get(id).is_some() {
                continue;
            }
            self.seen.insert(id, ());
            let late = id < self.session_since;
            self.stats
                .caught_up
                .fetch_add(u64::from(late), Ordering::Relaxed);
            self.handle_message(Box::new(m), late, ctx);
        }
        self.release_held(msg.channel, ctx);
    }
}

impl Handler<CatchUpDone> for DiscordGateway {
    type Result = ();

    fn handle(&mut self, _: CatchUpDone, ctx: &mut Self::Context) {
        self.catching_up = false;
        let channels: Vec<u64> = self.held.keys().copied().collect();
        for channel in channels {
            self.release_held(channel, ctx);
        }
    }
}

/// Discord's epoch (2015-01-01) in unix milliseconds: snowflakes count from it.
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// The smallest snowflake of time `at`.
fn snowflake_at(at: std::time::SystemTime) -> u64 {
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    ms.saturating_sub(DISCORD_EPOCH_MS) << 22
}

impl DiscordGateway {
    /// Routes the live messages of `channel` held back during its catch-up.
    fn release_held(&mut self, channel: u64, ctx: &mut Context<Self>) {
        for m in self.held.remove(&channel).unwrap_or_default() {
            self.handle_message(Box::new(m), false, ctx);
        }
    }

    /// Fetches what was posted while the service was down (see the module's docs) and routes
    /// it, late. One at a time: a second `READY` during a catch-up starts none.
    fn catch_up(&mut self, ctx: &mut Context<Self>) {
        let max = self.recovery.catch_up_max;
        if max == 0 || self.catching_up {
            return;
        }
        self.catching_up = true;
        let floor = snowflake_at(
            std::time::SystemTime::now()
                .checked_sub(self.recovery.catch_up_max_age())
                .unwrap_or(std::time::UNIX_EPOCH),
        );
        let configured: Vec<u64> = self.channels.keys().copied().collect();
        // Live messages of the configured channels wait until their history is read. (A
        // thread's live messages do not: the inbox knows the thread only once it is read.)
        for id in &configured {
            self.held.entry(*id).or_default();
        }
        let (store, out, me) = (self.store.clone(), self.outbound.clone(), ctx.address());
        let pause = self.recovery.catch_up_interval();
        let work = async move {
            let seen = match store.send(ListLastSeen).await {
                Ok(Ok(seen)) => seen,
                Ok(Err(e)) => {
                    warn!(error = %e, "could not read the inbox; no catch-up");
                    return;
                }
                Err(_) => return,
            };
            let last = |id: u64| {
                seen.iter()
                    .find(|l| l.conversation_id == id)
                    .map(|l| l.message_id)
            };
            // Configured channels, then the threads the inbox knows that are recent enough.
            let mut targets: Vec<(u64, u64)> = configured
                .iter()
                .map(|&id| (id, last(id).unwrap_or(0).max(floor)))
                .collect();
            targets.extend(
                seen.iter()
                    .filter(|l| l.conversation_id != l.profile_id && l.message_id >= floor)
                    .filter(|l| configured.contains(&l.profile_id))
                    .map(|l| (l.conversation_id, l.message_id)),
            );
            let mut total = 0;
            for (i, (channel, after)) in targets.into_iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(pause).await;
                }
                let found = fetch_after(&out, channel, after, max, pause).await;
                total += found.len();
                if !found.is_empty() {
                    info!(
                        channel_id = channel,
                        messages = found.len(),
                        "caught up on messages posted while the service was down"
                    );
                }
                me.do_send(CatchUp { channel, found });
            }
            debug!(total, "catch-up done");
        };
        // Done, or given up: whatever is still held goes on, after the catch-ups sent.
        ctx.spawn(
            work.into_actor(self)
                .map(|(), _, ctx| ctx.address().do_send(CatchUpDone)),
        );
    }
}

/// Up to `max` messages of `channel` after id `after`, oldest first (pages of at most 100,
/// `pause` apart). A failed fetch ends this channel's catch-up with a warning.
async fn fetch_after(
    out: &Outbound,
    channel: u64,
    mut after: u64,
    max: usize,
    pause: std::time::Duration,
) -> Vec<DiscordMessage> {
    let channel_id = ChannelId::new(channel.max(1));
    let mut found: Vec<DiscordMessage> = Vec::new();
    while found.len() < max {
        let limit = (max - found.len()).min(100) as u8;
        let page = out
            .with_retry("fetch history", || {
                channel_id.messages(
                    &*out.http,
                    GetMessages::new()
                        .after(MessageId::new(after.max(1)))
                        .limit(limit),
                )
            })
            .await;
        let mut page = match page {
            Ok(page) => page,
            Err(e) => {
                warn!(channel_id = channel, error = %e, "could not fetch the channel's history; its catch-up stops here");
                break;
            }
        };
        // Discord answers newest first.
        page.sort_by_key(|m| m.id);
        let full = page.len() >= usize::from(limit);
        let Some(newest) = page.last().map(|m| m.id.get()) else {
            break;
        };
        if newest <= after {
            break;
        }
        after = newest;
        // The bot's own replies are history too, but never something to answer.
        found.extend(page.into_iter().filter(|m| !m.author.bot));
        if !full {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    found.truncate(max);
    found
}

impl Handler<MarkReady> for DiscordGateway {
    type Result = ();

    fn handle(&mut self, msg: MarkReady, ctx: &mut Self::Context) {
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        if self.bot_id.is_some() {
            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        info!(bot_id = msg.bot_id, "connected to Discord");
        self.bot_id = Some(msg.bot_id);
        // A new session (not a resumed one): what was posted meanwhile was never delivered.
        self.session_since = snowflake_at(std::time::SystemTime::now());
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
        let known = match (msg.is_thread, msg.parent_id) {
            (true, Some(parent)) => Known::Thread {
                parent,
                name: msg.name,
            },
            _ => Known::Foreign,
        };
        if !self.channels.contains_key(&msg.id) {
            self.known.insert(msg.id, known);
        }
    }
}

impl Handler<CloseThread> for DiscordGateway {
    type Result = ();

    fn handle(&mut self, msg: CloseThread, _: &mut Self::Context) {
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        if let Some((conversation, _)) = self.conversation_of(msg.id) {
            if conversation.id != conversation.profile.id {
                self.registry
                    .do_send(crate::registry::CloseWorktree { conversation });
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
    /// The configured channel whose settings apply to conversation `id` (itself, or a
    /// thread's parent).
    fn channel_of(&self, id: u64) -> Option<&DiscordChannel> {
        self.channels.get(&id).or_else(|| match self.known.get(id) {
            Some(Known::Thread { parent, .. }) => self.channels.get(parent),
            _ => None,
        })
    }

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
        p.message = msg.message;
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
            .channel_of(conversation)
            .is_some_and(|c| self.access.allows(&c.access, user, roles));
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
            .channel_of(conversation)
            .is_some_and(|c| self.access.approves(&c.access, user, roles));
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
            let valid = p.questions.get(n).is_some_and(|(_, options)| {
                !values.is_empty() && values.iter().all(|v| options.contains(v))
            });
            if !valid {
                let response = whisper("That option does not exist.");
                self.send_later(async move { out.respond(&click, response).await }, ctx);
                return;
            }
            p.chosen[n] = Some(values.join(", "));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_channels_are_bounded_oldest_first() {
        let mut known = Recent::new(100);
        for id in 0..250 {
            known.insert(id, Known::Foreign);
        }
        known.insert(249, Known::Foreign);
        assert_eq!(known.map.len(), 100);
        assert_eq!(known.order.len(), 100);
        assert!(known.get(149).is_none() && known.get(150).is_some());
    }
}
