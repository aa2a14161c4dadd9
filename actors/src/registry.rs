//! The channel registry: finds the channel actor for a conversation, or starts one.
//!
//! Its job is deliberately small — look up or spawn, and stop actors that have been idle for
//! `channels.idle_secs` — so it never waits on anything slow. Front ends send it every message
//! for a conversation ([`SubmitMessage`], [`RunCommand`], [`CancelRun`], [`RunNow`],
//! [`GetStatus`], [`AnswerApproval`]), and it hands that same message to the conversation's actor. Its own
//! messages — restoring the inbox at start, closing a thread's worktree, cancelling every run
//! at the end of a stop's grace — are below.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::dev::ToEnvelope;
use actix::prelude::*;
use tracing::{debug, info, warn};

use crate::channel::{ChannelActor, ChannelDeps, CloseWorktree, GetStatus, StopIfIdle};
use crate::conversation::{ChannelProfile, ConversationRef};
use crate::frontend::{
    AnswerApproval, ApprovalError, CancelReason, CancelRun, DeliverReply, Durability, Origin,
    ReplyKind, RunCommand, RunNow, SubmitMessage,
};
use crate::ids::{ChannelId, ConversationId};
use crate::metrics::{Metric, RecordMetric};
use crate::store::{InboxState, MarkMessage, StoreError, TakeUnfinished};

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// At start-up, before any new message: queue again, in their original order, the messages
/// the inbox holds unanswered. One that was running when the service stopped is not run
/// again unless `rerun_interrupted` (its tools may already have acted): its user is told, and
/// `!retry` runs it.
#[derive(Debug, Message)]
#[rtype(result = "Result<Restored, StoreError>")]
pub struct RestoreInbox {
    /// The configured channels, by id (a message of a channel no longer configured is left).
    pub profiles: HashMap<ChannelId, Arc<ChannelProfile>>,
    /// `recovery.rerun_interrupted`.
    pub rerun_interrupted: bool,
}

/// What [`RestoreInbox`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    /// Queued again.
    pub queued: usize,
    /// Interrupted runs whose users were told.
    pub interrupted: usize,
    /// Interrupted runs queued again (`rerun_interrupted`).
    pub rerun: usize,
    /// Messages of channels no longer configured.
    pub orphaned: usize,
}

/// What a message interrupted by a stop is answered with (the answer, if any, comes after
/// `!retry`).
pub fn interrupted_notice(prefix: &str) -> String {
    format!(
        "⚠️ The service stopped while Claude was working on this message, so it may be half done \
         (its tools may already have run). Say `{prefix}retry` to run it again."
    )
}

/// Count live channel actors.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct CountChannels;

/// The stop's grace is over: cancel every run in flight (its users are told). Answers how many
/// were cancelled.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct CancelRuns;

// ---------------------------------------------------------------------------------------------
// The actor
// ---------------------------------------------------------------------------------------------

struct Entry {
    addr: Addr<ChannelActor>,
    last_routed: Instant,
}

/// Owns the map from conversation id to channel actor.
pub struct ChannelRegistry {
    deps: ChannelDeps,
    idle_after: Duration,
    channels: HashMap<ConversationId, Entry>,
    spawned: u64,
    stopped_idle: u64,
}

impl ChannelRegistry {
    /// A registry that starts channel actors with `deps` and stops them after `idle_after`
    /// without messages (zero: never).
    pub fn new(deps: ChannelDeps, idle_after: Duration) -> Self {
        Self {
            deps,
            idle_after,
            channels: HashMap::new(),
            spawned: 0,
            stopped_idle: 0,
        }
    }

    fn observe(&self) {
        self.deps.metrics.do_send(RecordMetric(Metric::Registry {
            live: self.channels.len(),
            spawned: self.spawned,
            stopped_idle: self.stopped_idle,
        }));
    }

    fn live(&self, id: ConversationId) -> Option<&Addr<ChannelActor>> {
        self.channels
            .get(&id)
            .map(|e| &e.addr)
            .filter(|a| a.connected())
    }

    /// The conversation's actor, started if needed.
    fn actor(&mut self, conversation: &ConversationRef) -> Addr<ChannelActor> {
        let id = conversation.id;
        let spawned_now = !self.channels.get(&id).is_some_and(|e| e.addr.connected());
        let entry = match self.channels.get_mut(&id) {
            Some(e) if e.addr.connected() => e,
            _ => {
                debug!(channel_id = id.get(), name = %conversation.name, "starting channel actor");
                let addr = ChannelActor::new(conversation.clone(), self.deps.clone()).start();
                self.spawned += 1;
                self.channels
                    .entry(id)
                    .insert_entry(Entry {
                        addr,
                        last_routed: Instant::now(),
                    })
                    .into_mut()
            }
        };
        entry.last_routed = Instant::now();
        let addr = entry.addr.clone();
        if spawned_now {
            self.observe();
        }
        addr
    }

    /// Hands `msg` to the live actor of `id` and answers what it answers; `none` without one.
    fn ask_live<M>(&self, id: ConversationId, msg: M, none: M::Result) -> ResponseFuture<M::Result>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        ChannelActor: Handler<M>,
        <ChannelActor as Actor>::Context: ToEnvelope<ChannelActor, M>,
    {
        let addr = self.live(id).cloned();
        Box::pin(async move {
            match addr {
                Some(a) => a.send(msg).await.unwrap_or(none),
                None => none,
            }
        })
    }

    fn sweep_idle(&mut self, ctx: &mut Context<Self>) {
        let candidates: Vec<(ConversationId, Addr<ChannelActor>)> = self
            .channels
            .iter()
            .filter(|(_, e)| e.last_routed.elapsed() >= self.idle_after)
            .map(|(id, e)| (*id, e.addr.clone()))
            .collect();
        if candidates.is_empty() {
            return;
        }
        // `wait`: route nothing until every candidate has answered, so no message can be sent
        // to an actor that is stopping.
        let asks = async move {
            let mut stopped = Vec::new();
            for (id, addr) in candidates {
                if addr.send(StopIfIdle).await.unwrap_or(true) {
                    stopped.push(id);
                }
            }
            stopped
        };
        ctx.wait(asks.into_actor(self).map(|stopped, act, _| {
            for id in &stopped {
                act.channels.remove(id);
            }
            act.stopped_idle += stopped.len() as u64;
            act.observe();
            debug!(
                stopped = stopped.len(),
                live = act.channels.len(),
                "idle channel actors stopped"
            );
        }));
    }
}

impl Actor for ChannelRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.idle_after > Duration::ZERO {
            let every =
                (self.idle_after / 2).clamp(Duration::from_millis(100), Duration::from_secs(60));
            ctx.run_interval(every, Self::sweep_idle);
        }
    }
}

impl Handler<SubmitMessage> for ChannelRegistry {
    type Result = ();

    fn handle(&mut self, msg: SubmitMessage, _: &mut Self::Context) {
        self.actor(&msg.conversation).do_send(msg);
    }
}

impl Handler<RunCommand> for ChannelRegistry {
    type Result = ();

    fn handle(&mut self, msg: RunCommand, _: &mut Self::Context) {
        self.actor(&msg.conversation).do_send(msg);
    }
}

impl Handler<GetStatus> for ChannelRegistry {
    type Result = ResponseFuture<Option<crate::channel::ChannelStatus>>;

    fn handle(&mut self, msg: GetStatus, _: &mut Self::Context) -> Self::Result {
        self.ask_live(msg.conversation_id, msg, None)
    }
}

impl Handler<CancelRun> for ChannelRegistry {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, msg: CancelRun, _: &mut Self::Context) -> Self::Result {
        self.ask_live(msg.conversation_id, msg, false)
    }
}

impl Handler<RunNow> for ChannelRegistry {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, msg: RunNow, _: &mut Self::Context) -> Self::Result {
        self.ask_live(msg.conversation_id, msg, false)
    }
}

impl Handler<AnswerApproval> for ChannelRegistry {
    type Result = ResponseFuture<Result<(), ApprovalError>>;

    fn handle(&mut self, msg: AnswerApproval, _: &mut Self::Context) -> Self::Result {
        self.ask_live(msg.conversation_id, msg, Err(ApprovalError::NotPending))
    }
}

impl Handler<CloseWorktree> for ChannelRegistry {
    type Result = ();

    /// A live conversation closes its worktree once it is idle; otherwise it is closed now.
    fn handle(&mut self, msg: CloseWorktree, ctx: &mut Self::Context) {
        if let Some(addr) = self.live(msg.conversation.id) {
            addr.do_send(msg);
        } else {
            let work = crate::channel::closing_now(msg.conversation, self.deps.clone());
            ctx.spawn(work.into_actor(self));
        }
    }
}

impl Handler<RestoreInbox> for ChannelRegistry {
    type Result = AtomicResponse<Self, Result<Restored, StoreError>>;

    fn handle(&mut self, msg: RestoreInbox, _: &mut Self::Context) -> Self::Result {
        // Atomic: no message is routed until the restored ones are, so they keep their place.
        let store = self.deps.store.clone();
        let rerun = msg.rerun_interrupted;
        let take = async move {
            let rows = store.send(TakeUnfinished).await??;
            let mut ready = Vec::with_capacity(rows.len());
            for row in rows {
                // Queued again before any run can mark it running.
                if row.interrupted && rerun {
                    store
                        .send(MarkMessage {
                            message_id: row.inbound.message_id,
                            state: InboxState::Queued,
                        })
                        .await??;
                }
                ready.push(row);
            }
            Ok::<_, StoreError>(ready)
        };
        AtomicResponse::new(Box::pin(take.into_actor(self).map(move |rows, act, _| {
            let mut restored = Restored::default();
            for row in rows? {
                let m = row.inbound;
                let Some(profile) = msg.profiles.get(&m.profile_id) else {
                    warn!(channel_id = m.conversation_id.get(), message_id = m.message_id.get(), "an unanswered message of a channel no longer configured; left in the inbox");
                    restored.orphaned += 1;
                    continue;
                };
                let conversation = ConversationRef {
                    id: m.conversation_id,
                    name: m.conversation,
                    profile: Arc::clone(profile),
                };
                let origin = Origin {
                    channel_id: m.channel_id,
                    message_id: m.message_id,
                    author_id: m.author_id,
                };
                if row.interrupted && !rerun {
                    restored.interrupted += 1;
                    let text = interrupted_notice(&act.deps.command_prefix);
                    act.deps.replies.do_send(DeliverReply::new(
                        &conversation,
                        origin,
                        ReplyKind::Notice,
                        text,
                        true,
                    ));
                    continue;
                }
                if row.interrupted {
                    restored.rerun += 1;
                } else {
                    restored.queued += 1;
                }
                let submit = SubmitMessage {
                    conversation,
                    origin,
                    text: m.text,
                    attachments: m.attachments,
                    late: true,
                    inbox: Durability::Stored,
                    // Restored prompts run no command.
                    approver: false,
                    via: m.via,
                };
                act.actor(&submit.conversation).do_send(submit);
            }
            info!(
                queued = restored.queued,
                interrupted = restored.interrupted,
                rerun = restored.rerun,
                orphaned = restored.orphaned,
                "inbox restored"
            );
            Ok(restored)
        })))
    }
}

impl Handler<CountChannels> for ChannelRegistry {
    type Result = usize;

    fn handle(&mut self, _: CountChannels, _: &mut Self::Context) -> usize {
        self.channels.len()
    }
}

impl Handler<CancelRuns> for ChannelRegistry {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, _: CancelRuns, _: &mut Self::Context) -> Self::Result {
        // Every channel is told at once (`send` queues the message when called).
        let told: Vec<_> = self
            .channels
            .iter()
            .filter(|(_, e)| e.addr.connected())
            .map(|(id, e)| {
                e.addr.send(CancelRun {
                    conversation_id: *id,
                    reason: CancelReason::Shutdown,
                    message_id: None,
                })
            })
            .collect();
        Box::pin(async move {
            let mut cancelled = 0;
            for answer in told {
                cancelled += usize::from(answer.await.unwrap_or(false));
            }
            info!(cancelled, "grace period over; runs in flight cancelled");
            cancelled
        })
    }
}
