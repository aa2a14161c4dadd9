//! The router: the one place a Discord channel id becomes a conversation, and where it is
//! decided whether a message reaches Claude. It owns the configured channels, the threads and
//! other channels learned since start, their guilds, the authors' roles read over REST, the
//! message ids already taken, the refusals' cooldown, and the messages waiting for a look-up.
//!
//! A message read from a channel's history (catch-up) carries neither `guild_id` nor `member`
//! (Discord's `MessageResponse`): it is routed by the channel it was read from, and when its
//! author could only be allowed by a role, the roles are read with
//! `GET /guilds/{guild}/members/{user}` (kept for [`ROLES_FRESH`], at most [`MAX_KNOWN`]).
//! Whatever must be looked up first — a channel's parent, an author's roles — parks that
//! channel's messages, in arrival order, until it is known; a look-up that fails for a reason
//! other than "no such thing" is tried again later, and nothing waiting is dropped.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serenity::all::{ChannelType, GuildChannel, Message as DiscordMessage, MessageType};

use crate::conversation::ConversationRef;
use crate::discord::access::{AccessConfig, DiscordChannel};
use crate::discord::ids;
use crate::ids::{ChannelId, ConversationId, MessageId, UserId};

/// Channels, threads, ids and roles remembered; the oldest is forgotten beyond this (it costs
/// one more look-up if it is needed again).
pub(super) const MAX_KNOWN: usize = 10_000;
/// Refusals remembered for the cooldown; beyond this, expired ones are forgotten first.
const MAX_REFUSED: usize = 10_000;
/// How long roles read over REST are trusted.
pub(super) const ROLES_FRESH: Duration = Duration::from_secs(600);

/// What a channel or thread id is, as far as routing goes.
#[derive(Debug, Clone)]
pub(super) enum Known {
    /// A thread under configured channel `parent`.
    Thread { parent: ChannelId, name: String },
    /// Anything else: not ours.
    Foreign,
}

/// A channel or thread learned from an event or a look-up.
#[derive(Debug, Clone, actix::Message)]
#[rtype(result = "()")]
pub struct LearnChannel {
    /// The channel or thread.
    pub id: ChannelId,
    /// Its guild.
    pub guild_id: Option<u64>,
    /// Its parent channel, for threads.
    pub parent_id: Option<ChannelId>,
    /// Whether it is a thread.
    pub is_thread: bool,
    /// Its name.
    pub name: String,
}

impl LearnChannel {
    /// What serenity's channel says.
    pub fn of(c: &GuildChannel) -> Self {
        Self {
            id: ids::channel(c.id),
            guild_id: Some(c.guild_id.get()),
            parent_id: c.parent_id.map(ids::channel),
            is_thread: matches!(
                c.kind,
                ChannelType::PublicThread | ChannelType::PrivateThread | ChannelType::NewsThread
            ),
            name: c.name.clone(),
        }
    }
}

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The gateway's `MESSAGE_CREATE`.
    Live,
    /// A channel's history, read by catch-up; `late`: posted while the service was down.
    History { late: bool },
}

impl Source {
    pub(super) fn late(self) -> bool {
        matches!(self, Self::History { late: true })
    }
}

/// What to look up before a channel's messages can be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lookup {
    /// The channel itself (is it a thread of a configured channel?).
    Channel,
    /// The roles of `user` in the channel's guild (`guild`, if known).
    Roles { guild: Option<u64>, user: UserId },
}

/// What to do with a message.
pub(super) enum Route {
    Ignore(&'static str),
    /// Look this up first; the message waits.
    LookUp(Lookup),
    /// The conversation, the text, and whether the author is an approver there.
    Deliver(ConversationRef, String, bool),
    /// Not allowed in this conversation.
    Refuse(ConversationId),
}

/// A message waiting for a look-up of its channel.
pub(super) struct Parked {
    pub(super) message: DiscordMessage,
    pub(super) source: Source,
}

/// A channel's messages waiting for a look-up, in arrival order.
#[derive(Default)]
pub(super) struct Waiting {
    pub(super) queue: VecDeque<Parked>,
    /// Failed attempts of the current look-up (for its backoff).
    pub(super) attempts: u32,
}

/// A map that forgets its oldest entries beyond `cap`.
pub(super) struct Recent<K, V> {
    map: HashMap<K, V>,
    /// Keys, oldest first.
    order: VecDeque<K>,
    cap: usize,
}

impl<K: Hash + Eq + Clone, V> Recent<K, V> {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    pub(super) fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    pub(super) fn insert(&mut self, key: K, value: V) {
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
        }
        while self.map.len() > self.cap {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.map.remove(&old);
        }
    }
}

/// Routing state; see the module's docs.
pub(super) struct Router {
    channels: HashMap<ChannelId, DiscordChannel>,
    access: AccessConfig,
    bot_id: Option<UserId>,
    known: Recent<ChannelId, Known>,
    /// The guild of each channel and thread learned.
    guilds: Recent<ChannelId, u64>,
    /// (guild, user) → their roles, and when they were read.
    roles: Recent<(u64, u64), (Instant, Vec<u64>)>,
    /// Message ids already taken, so a replayed `MESSAGE_CREATE` (a resumed gateway session
    /// may send one again) is not answered twice.
    seen: Recent<MessageId, ()>,
    /// Channels whose messages wait for a look-up.
    waiting: HashMap<ChannelId, Waiting>,
    /// (user, conversation) → when the user was last told they are not allowed.
    refused: HashMap<(UserId, ConversationId), Instant>,
}

impl Router {
    pub(super) fn new(channels: Vec<DiscordChannel>, access: AccessConfig) -> Self {
        Self {
            channels: channels.into_iter().map(|c| (c.profile.id, c)).collect(),
            access,
            bot_id: None,
            known: Recent::new(MAX_KNOWN),
            guilds: Recent::new(MAX_KNOWN),
            roles: Recent::new(MAX_KNOWN),
            seen: Recent::new(MAX_KNOWN),
            waiting: HashMap::new(),
            refused: HashMap::new(),
        }
    }

    /// The configured channels' ids.
    pub(super) fn configured(&self) -> Vec<ChannelId> {
        self.channels.keys().copied().collect()
    }

    pub(super) fn set_bot(&mut self, id: UserId) {
        self.bot_id = Some(id);
    }

    /// Whether message `id` is new (and now taken).
    pub(super) fn first_sight(&mut self, id: MessageId) -> bool {
        if self.seen.get(&id).is_some() {
            return false;
        }
        self.seen.insert(id, ());
        true
    }

    /// Remembers a channel or thread (and its guild).
    pub(super) fn learn(&mut self, c: &LearnChannel) {
        if let Some(guild) = c.guild_id {
            self.guilds.insert(c.id, guild);
        }
        if self.channels.contains_key(&c.id) {
            return;
        }
        let known = match (c.is_thread, c.parent_id) {
            (true, Some(parent)) => Known::Thread {
                parent,
                name: c.name.clone(),
            },
            _ => Known::Foreign,
        };
        self.known.insert(c.id, known);
    }

    /// A channel that a look-up found not to exist, or not to be visible (403, 404).
    pub(super) fn learn_foreign(&mut self, id: ChannelId) {
        if !self.channels.contains_key(&id) {
            self.known.insert(id, Known::Foreign);
        }
    }

    /// Remembers `user`'s roles in `guild`.
    pub(super) fn learn_roles(&mut self, guild: u64, user: u64, roles: Vec<u64>) {
        self.roles.insert((guild, user), (Instant::now(), roles));
    }

    /// The guild of channel `id`, if known.
    pub(super) fn guild_of(&self, id: ChannelId) -> Option<u64> {
        self.guilds
            .get(&id)
            .copied()
            .or_else(|| match self.known.get(&id) {
                Some(Known::Thread { parent, .. }) => self.guilds.get(parent).copied(),
                _ => None,
            })
    }

    /// The conversation of channel `id` — a configured channel, or a known thread of one — and
    /// the configured channel whose settings apply. The one place an id becomes one.
    pub(super) fn conversation_of(
        &self,
        id: ChannelId,
    ) -> Option<(ConversationRef, &DiscordChannel)> {
        if let Some(c) = self.channels.get(&id) {
            return Some((ConversationRef::channel(Arc::clone(&c.profile)), c));
        }
        match self.known.get(&id) {
            Some(Known::Thread { parent, name }) => self
                .channels
                .get(parent)
                .map(|c| (ConversationRef::thread(Arc::clone(&c.profile), id, name), c)),
            _ => None,
        }
    }

    /// The roles of a message's author: from its `member`, else as read over REST (fresh).
    fn roles_of(&self, msg: &DiscordMessage) -> Option<Vec<u64>> {
        if let Some(m) = &msg.member {
            return Some(ids::roles(&m.roles));
        }
        let guild = msg
            .guild_id
            .map(serenity::all::GuildId::get)
            .or_else(|| self.guild_of(ids::channel(msg.channel_id)))?;
        self.roles
            .get(&(guild, msg.author.id.get()))
            .filter(|(at, _)| at.elapsed() < ROLES_FRESH)
            .map(|(_, roles)| roles.clone())
    }

    /// What to do with `msg`.
    pub(super) fn route(&self, msg: &DiscordMessage, source: Source) -> Route {
        if msg.author.bot || Some(ids::user(msg.author.id)) == self.bot_id {
            return Route::Ignore("from a bot");
        }
        // Thread created, pins, joins, renames… carry text too (a thread's name, a channel's
        // new name), but no one asked Claude anything.
        if !matches!(msg.kind, MessageType::Regular | MessageType::InlineReply) {
            return Route::Ignore("a system message");
        }
        // Only the gateway says where a message was posted; history was read from a channel
        // of ours, and carries no guild_id.
        if source == Source::Live && msg.guild_id.is_none() {
            return Route::Ignore("direct message");
        }
        let id = ids::channel(msg.channel_id);
        let Some((conversation, channel)) = self.conversation_of(id) else {
            return match self.known.get(&id) {
                None => Route::LookUp(Lookup::Channel),
                Some(Known::Foreign) => Route::Ignore("not a configured channel"),
                Some(Known::Thread { .. }) => Route::Ignore("thread of another channel"),
            };
        };
        let mut text = msg.content.clone();
        if channel.access.require_mention {
            let Some(bot) = self.bot_id else {
                return Route::Ignore("mention required, bot id not known yet");
            };
            if !msg.mentions.iter().any(|u| ids::user(u.id) == bot) {
                return Route::Ignore("bot not mentioned");
            }
            text = text
                .replace(&format!("<@{bot}>"), "")
                .replace(&format!("<@!{bot}>"), "")
                .trim()
                .to_string();
        }
        let user = ids::user(msg.author.id);
        let roles = self.roles_of(msg);
        if roles.is_none() && self.access.decides_by_roles(&channel.access, user) {
            return Route::LookUp(Lookup::Roles {
                guild: msg
                    .guild_id
                    .map(serenity::all::GuildId::get)
                    .or_else(|| self.guild_of(id)),
                user,
            });
        }
        let roles = roles.unwrap_or_default();
        if !self.access.allows(&channel.access, user, &roles) {
            return Route::Refuse(conversation.id);
        }
        if text.trim().is_empty() {
            return Route::Ignore("no text");
        }
        let approver = self.access.approves(&channel.access, user, &roles);
        Route::Deliver(conversation, text, approver)
    }

    /// Whether channel `id`'s messages wait for a look-up.
    pub(super) fn is_waiting(&self, id: ChannelId) -> bool {
        self.waiting.contains_key(&id)
    }

    /// Adds `parked` behind what channel `id` has waiting; answers whether a look-up must start
    /// (nothing was waiting).
    pub(super) fn park(&mut self, id: ChannelId, parked: Parked) -> bool {
        let waiting = self.waiting.entry(id).or_default();
        waiting.queue.push_back(parked);
        waiting.queue.len() == 1
    }

    /// Channel `id`'s look-up failed again: the wait before the next attempt (doubling from
    /// 1 s, at most a minute), and the ids of the messages waiting.
    pub(super) fn failed(&mut self, id: ChannelId) -> (Duration, Vec<MessageId>) {
        let Some(w) = self.waiting.get_mut(&id) else {
            return (Duration::ZERO, Vec::new());
        };
        w.attempts += 1;
        let wait = Duration::from_secs(1 << w.attempts.min(6)).min(Duration::from_secs(60));
        (
            wait,
            w.queue.iter().map(|p| ids::message(p.message.id)).collect(),
        )
    }

    /// Channel `id`'s look-up is done: its waiting messages, in order.
    pub(super) fn release(&mut self, id: ChannelId) -> VecDeque<Parked> {
        self.waiting
            .remove(&id)
            .map(|w| w.queue)
            .unwrap_or_default()
    }

    /// Whether `user` should be told (again) that they may not talk in `conversation`; notes
    /// the refusal.
    pub(super) fn tell_refusal(&mut self, user: UserId, conversation: ConversationId) -> bool {
        let cooldown = self.access.refusal_cooldown();
        let now = Instant::now();
        if self
            .refused
            .get(&(user, conversation))
            .is_some_and(|t| now.duration_since(*t) < cooldown)
        {
            return false;
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
        true
    }

    /// Whom a permission prompt asked by `asker` in conversation `id` mentions.
    pub(super) fn prompt_mentions(&self, id: ChannelId, asker: UserId) -> Vec<UserId> {
        self.conversation_of(id)
            .map(|(_, channel)| self.access.prompt_mentions(&channel.access, asker))
            .unwrap_or_default()
    }

    /// Whether `user` (with `roles`) may talk in conversation `id`, and approve there.
    pub(super) fn may(&self, id: ChannelId, user: UserId, roles: &[u64]) -> Option<(bool, bool)> {
        let (_, channel) = self.conversation_of(id)?;
        Some((
            self.access.allows(&channel.access, user, roles),
            self.access.approves(&channel.access, user, roles),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_entries_are_bounded_oldest_first() {
        let mut known = Recent::new(100);
        for id in 0..250_u64 {
            known.insert(ChannelId(id), Known::Foreign);
        }
        known.insert(ChannelId(249), Known::Foreign);
        assert_eq!(known.map.len(), 100);
        assert_eq!(known.order.len(), 100);
        assert!(known.get(&ChannelId(149)).is_none() && known.get(&ChannelId(150)).is_some());
    }
}
