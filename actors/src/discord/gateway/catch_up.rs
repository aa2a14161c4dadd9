//! Catch-up: on every new gateway session (`READY`: at start, and after a session that could
//! not be resumed) the gateway reads what was posted in each configured channel and each thread
//! the inbox knows since the last message the inbox has seen (at most `recovery.catch_up_max`
//! per conversation, none older than `recovery.catch_up_max_age_secs`) and routes it as if it
//! had just arrived — marked late if it was posted before the session began. The inbox drops
//! what it already has.
//!
//! Histories are read `recovery.catch_up_concurrency` at a time (each channel is its own
//! rate-limit bucket on Discord's side), a channel's pages `recovery.catch_up_interval_ms`
//! apart, and never more than [`GLOBAL_PACE`] requests a second in all (Discord's global limit
//! is 50). A configured channel's live messages wait only until its own history is read, so
//! none is answered before an older one; a message that arrived over the live connection is
//! never counted or logged as caught up.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use futures_util::stream::{self, StreamExt};
use serenity::all::{GetMessages, Message as DiscordMessage};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use super::router::Source;
use super::DiscordGateway;
use crate::discord::ids;
use crate::discord::outbound::Outbound;
use crate::ids::{ChannelId, ConversationId, MessageId};
use crate::recovery::RecoveryConfig;
use crate::store::ListLastSeen;

/// At most this many history requests a second, across every channel.
pub const GLOBAL_PACE: u32 = 40;

/// Route what `channel`'s history shows was posted since the last message seen there, with
/// its live messages held back meanwhile, in the order they were posted.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(super) struct CatchUp {
    pub(super) channel: ChannelId,
    pub(super) found: Vec<DiscordMessage>,
}

/// The catch-up has ended: route every live message still held back.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(super) struct CatchUpDone;

/// The catch-ups: whether one is under way, since when this session runs, and the live
/// messages held back meanwhile.
pub(super) struct CatchUps {
    recovery: RecoveryConfig,
    /// A catch-up is under way.
    running: bool,
    /// When the current gateway session began: a message found by catch-up that was posted
    /// after it is not late (it was posted while the service was up, and only raced the read).
    session_since: MessageId,
    /// Channels whose history is being read: their live messages wait here, so none is
    /// answered before an older one the history holds.
    held: HashMap<ChannelId, Vec<DiscordMessage>>,
}

impl CatchUps {
    pub(super) fn new(recovery: RecoveryConfig) -> Self {
        Self {
            recovery,
            running: false,
            session_since: MessageId(0),
            held: HashMap::new(),
        }
    }

    /// Holds back a live message whose channel's history is being read; gives back one that
    /// may be routed now.
    pub(super) fn hold(&mut self, msg: DiscordMessage) -> Option<DiscordMessage> {
        match self.held.get_mut(&ids::channel(msg.channel_id)) {
            Some(held) => {
                held.push(msg);
                None
            }
            None => Some(msg),
        }
    }
}

/// Discord's epoch (2015-01-01) in unix milliseconds: snowflakes count from it.
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// The smallest snowflake of time `at`.
fn snowflake_at(at: SystemTime) -> MessageId {
    let ms = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    MessageId(ms.saturating_sub(DISCORD_EPOCH_MS) << 22)
}

/// Spaces requests across tasks: each waits for its slot, at most `per_second` a second.
struct Pace {
    next: Mutex<tokio::time::Instant>,
    every: Duration,
}

impl Pace {
    fn new(per_second: u32) -> Self {
        Self {
            next: Mutex::new(tokio::time::Instant::now()),
            every: Duration::from_secs(1) / per_second.max(1),
        }
    }

    async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let slot = (*next).max(tokio::time::Instant::now());
            *next = slot + self.every;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

impl Handler<CatchUp> for DiscordGateway {
    type Result = ();

    fn handle(&mut self, msg: CatchUp, ctx: &mut Self::Context) {
        // The live messages held back meanwhile, and what the history shows that no event
        // brought: routed together in the order they were posted. The history may hold a
        // message newer than one held back, whose own MESSAGE_CREATE has not come yet.
        let held = self.catch_up.held.remove(&msg.channel).unwrap_or_default();
        let mut next: Vec<(DiscordMessage, Source)> =
            held.into_iter().map(|m| (m, Source::Live)).collect();
        let mut late_ids = Vec::new();
        for m in msg.found {
            let id = ids::message(m.id);
            if !self.router.first_sight(id) {
                continue;
            }
            // Posted after this session began: it only raced the read, it is not late.
            let late = id < self.catch_up.session_since;
            if late {
                late_ids.push(id);
            }
            next.push((m, Source::History { late }));
        }
        next.sort_by_key(|(m, _)| m.id);
        if !late_ids.is_empty() {
            self.stats.caught_up(late_ids.len());
            info!(channel_id = msg.channel.get(), messages = late_ids.len(), message_ids = ?late_ids, "caught up on messages posted while the service was down");
        }
        for (m, source) in next {
            self.handle_message(m, source, ctx);
        }
    }
}

impl Handler<CatchUpDone> for DiscordGateway {
    type Result = ();

    fn handle(&mut self, _: CatchUpDone, ctx: &mut Self::Context) {
        self.catch_up.running = false;
        let channels: Vec<ChannelId> = self.catch_up.held.keys().copied().collect();
        for channel in channels {
            self.release_held(channel, ctx);
        }
    }
}

impl DiscordGateway {
    /// Routes the live messages of `channel` held back during its catch-up.
    fn release_held(&mut self, channel: ChannelId, ctx: &mut Context<Self>) {
        for m in self.catch_up.held.remove(&channel).unwrap_or_default() {
            self.handle_message(m, Source::Live, ctx);
        }
    }

    /// Reads what was posted while the service was down (see the module's docs) and routes
    /// it; `ready_at`: when this session's `READY` was read. One at a time: a second `READY`
    /// during a catch-up starts none.
    pub(super) fn catch_up(&mut self, ready_at: SystemTime, ctx: &mut Context<Self>) {
        let state = &mut self.catch_up;
        state.session_since = snowflake_at(ready_at);
        let max = state.recovery.catch_up_max;
        if max == 0 || state.running {
            return;
        }
        state.running = true;
        let floor = snowflake_at(
            SystemTime::now()
                .checked_sub(state.recovery.catch_up_max_age())
                .unwrap_or(UNIX_EPOCH),
        );
        let configured = self.router.configured();
        // Live messages of the configured channels wait until their history is read. (A
        // thread's live messages do not: the inbox knows the thread only once it is read.)
        for id in &configured {
            state.held.entry(*id).or_default();
        }
        let (pause, at_once) = (
            state.recovery.catch_up_interval(),
            state.recovery.catch_up_concurrency.max(1),
        );
        let (store, out, me) = (self.store.clone(), self.outbound.clone(), ctx.address());
        let work = async move {
            let seen = match store.send(ListLastSeen).await {
                Ok(Ok(seen)) => seen,
                Ok(Err(e)) => {
                    warn!(error = %e, "could not read the inbox; no catch-up");
                    return;
                }
                Err(_) => return,
            };
            let last = |id: ChannelId| {
                seen.iter()
                    .find(|l| l.conversation_id == ConversationId::from(id))
                    .map(|l| l.message_id)
            };
            // Configured channels, then the threads the inbox knows that are recent enough.
            let mut targets: Vec<(ChannelId, MessageId)> = configured
                .iter()
                .map(|&id| (id, last(id).unwrap_or_default().max(floor)))
                .collect();
            targets.extend(
                seen.iter()
                    .filter(|l| l.conversation_id != l.profile_id.into() && l.message_id >= floor)
                    .filter(|l| configured.contains(&l.profile_id))
                    .map(|l| (l.conversation_id.into(), l.message_id)),
            );
            let pace = Pace::new(GLOBAL_PACE);
            let (pace, out, me) = (&pace, &out, &me);
            let total: usize = stream::iter(targets)
                .map(|(channel, after)| async move {
                    let found = fetch_after(out, pace, channel, after, max, pause).await;
                    let n = found.len();
                    me.do_send(CatchUp { channel, found });
                    n
                })
                .buffer_unordered(at_once)
                .fold(0, |sum, n| async move { sum + n })
                .await;
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
    spacing: &Pace,
    channel: ChannelId,
    mut after: MessageId,
    max: usize,
    pause: Duration,
) -> Vec<DiscordMessage> {
    let channel_id = ids::to_channel(channel);
    let mut found: Vec<DiscordMessage> = Vec::new();
    while found.len() < max {
        let limit = (max - found.len()).min(100) as u8;
        spacing.wait().await;
        let page = out
            .with_retry("fetch history", || {
                channel_id.messages(
                    &*out.http,
                    GetMessages::new()
                        .after(ids::to_message(after))
                        .limit(limit),
                )
            })
            .await;
        let mut page = match page {
            Ok(page) => page,
            Err(e) => {
                warn!(channel_id = channel.get(), error = %e, "could not fetch the channel's history; its catch-up stops here");
                break;
            }
        };
        // Discord answers newest first.
        page.sort_by_key(|m| m.id);
        let full = page.len() >= usize::from(limit);
        let Some(newest) = page.last().map(|m| ids::message(m.id)) else {
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
