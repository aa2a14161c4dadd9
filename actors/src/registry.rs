//! The channel registry: finds the channel actor for a conversation, or starts one.
//!
//! Its job is deliberately small — look up or spawn, and stop actors that have been idle for
//! `channels.idle_secs` — so it never waits on anything slow. Front ends send it every user
//! message ([`RouteMessage`]); status and cancel reach a live actor through it. Its messages
//! other than `RouteMessage` (which belongs to the front-end edge) are at the top.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tracing::{debug, info, warn};

use crate::channel::{
    CancelReason, CancelRun, ChannelActor, ChannelDeps, ChannelStatus, CloseWorktree, Drain,
    Durability, GetStatus, RunCommand, StopIfIdle, SubmitMessage,
};
use crate::conversation::{ChannelProfile, ConversationRef};
use crate::frontend::{
    AnswerApproval, ApprovalError, DeliverReply, Origin, ReplyKind, RouteCommand, RouteMessage,
};
use crate::metrics::{Metric, RecordMetric};
use crate::store::{InboxState, MarkMessage, StoreError, TakeUnfinished};

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// Ask a live channel actor for its status (`None` if the conversation has no live actor).
#[derive(Debug, Message)]
#[rtype(result = "Option<ChannelStatus>")]
pub struct QueryStatus {
    /// Channel or thread id.
    pub id: u64,
}

/// Cancel the run in flight in a conversation; answers whether one was cancelled.
#[derive(Debug, Default, Message)]
#[rtype(result = "bool")]
pub struct CancelConversation {
    /// Channel or thread id.
    pub id: u64,
    /// Only if the run in flight answers this message (the Stop button of its progress).
    pub message_id: Option<u64>,
}

/// At start-up, before any new message: queue again, in their original order, the messages
/// the inbox holds unanswered. One that was running when the service stopped is not run
/// again unless `rerun_interrupted` (its tools may already have acted): its user is told, and
/// `!retry` runs it.
#[derive(Debug, Message)]
#[rtype(result = "Result<Restored, StoreError>")]
pub struct RestoreInbox {
    /// The configured channels, by id (a message of a channel no longer configured is left).
    pub profiles: HashMap<u64, Arc<ChannelProfile>>,
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

/// Shut down: accept nothing new, let runs in flight finish for up to `grace`, then cancel
/// them (their users are told) and wait until they have ended and been recorded, at most
/// `cancel_wait` more. Answers how many runs had to be cancelled.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct Shutdown {
    /// How long runs in flight may take to finish.
    pub grace: Duration,
    /// After cancelling, how long to wait for the CLIs to stop (SIGINT, then SIGKILL).
    pub cancel_wait: Duration,
}

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
    channels: HashMap<u64, Entry>,
    spawned: u64,
    stopped_idle: u64,
    draining: bool,
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
            draining: false,
        }
    }

    fn observe(&self) {
        self.deps.metrics.do_send(RecordMetric(Metric::Registry {
            live: self.channels.len(),
            spawned: self.spawned,
            stopped_idle: self.stopped_idle,
        }));
    }

    fn live(&self, id: u64) -> Option<&Addr<ChannelActor>> {
        self.channels
            .get(&id)
            .map(|e| &e.addr)
            .filter(|a| a.connected())
    }

    fn sweep_idle(&mut self, ctx: &mut Context<Self>) {
        let candidates: Vec<(u64, Addr<ChannelActor>)> = self
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

impl Handler<RouteMessage> for ChannelRegistry {
    type Result = ();

    fn handle(&mut self, msg: RouteMessage, _: &mut Self::Context) {
        let submit = SubmitMessage {
            origin: msg.origin,
            text: msg.text,
            attachments: msg.attachments,
            late: msg.late,
            inbox: if msg.durable {
                Durability::New
            } else {
                Durability::Transient
            },
            approver: msg.approver,
        };
        self.submit(msg.conversation, submit);
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

impl Handler<RouteCommand> for ChannelRegistry {
    type Result = ();

    fn handle(&mut self, msg: RouteCommand, _: &mut Self::Context) {
        let addr = self.actor(msg.conversation);
        addr.do_send(RunCommand {
            origin: msg.origin,
            command: msg.command,
            approver: msg.approver,
        });
    }
}

impl ChannelRegistry {
    /// Hands `msg` to the conversation's actor, starting one if needed (while draining, one
    /// that stores what it gets and runs nothing).
    fn submit(&mut self, conversation: ConversationRef, msg: SubmitMessage) {
        self.actor(conversation).do_send(msg);
    }

    /// The conversation's actor, started if needed.
    fn actor(&mut self, conversation: ConversationRef) -> Addr<ChannelActor> {
        let id = conversation.id;
        let spawned_now = !self.channels.get(&id).is_some_and(|e| e.addr.connected());
        let entry = match self.channels.get_mut(&id) {
            Some(e) if e.addr.connected() => e,
            _ => {
                debug!(channel_id = id, name = %conversation.name, "starting channel actor");
                let addr = ChannelActor::new(conversation, self.deps.clone())
                    .draining(self.draining)
                    .start();
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
                    warn!(channel_id = m.conversation_id, message_id = m.message_id, "an unanswered message of a channel no longer configured; left in the inbox");
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
                    origin,
                    text: m.text,
                    attachments: m.attachments,
                    late: true,
                    inbox: Durability::Stored,
                    // Restored prompts run no command.
                    approver: false,
                };
                act.submit(conversation, submit);
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

impl Handler<QueryStatus> for ChannelRegistry {
    type Result = ResponseFuture<Option<ChannelStatus>>;

    fn handle(&mut self, msg: QueryStatus, _: &mut Self::Context) -> Self::Result {
        let addr = self.live(msg.id).cloned();
        Box::pin(async move {
            match addr {
                Some(a) => a.send(GetStatus).await.ok(),
                None => None,
            }
        })
    }
}

impl Handler<CancelConversation> for ChannelRegistry {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, msg: CancelConversation, _: &mut Self::Context) -> Self::Result {
        let addr = self.live(msg.id).cloned();
        Box::pin(async move {
            match addr {
                Some(a) => a
                    .send(CancelRun {
                        reason: CancelReason::User,
                        message_id: msg.message_id,
                    })
                    .await
                    .unwrap_or(false),
                None => false,
            }
        })
    }
}

impl Handler<AnswerApproval> for ChannelRegistry {
    type Result = ResponseFuture<Result<(), ApprovalError>>;

    fn handle(&mut self, msg: AnswerApproval, _: &mut Self::Context) -> Self::Result {
        let addr = self.live(msg.conversation_id).cloned();
        Box::pin(async move {
            match addr {
                Some(a) => a.send(msg).await.unwrap_or(Err(ApprovalError::NotPending)),
                None => Err(ApprovalError::NotPending),
            }
        })
    }
}

impl Handler<CountChannels> for ChannelRegistry {
    type Result = usize;

    fn handle(&mut self, _: CountChannels, _: &mut Self::Context) -> usize {
        self.channels.len()
    }
}

impl Handler<Shutdown> for ChannelRegistry {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, msg: Shutdown, _: &mut Self::Context) -> Self::Result {
        // From now on channel actors take messages into the inbox and run none.
        self.draining = true;
        let live: Vec<Addr<ChannelActor>> = self
            .channels
            .values()
            .map(|e| e.addr.clone())
            .filter(Addr::connected)
            .collect();
        Box::pin(async move {
            // Every channel is told at once (`send` queues the message when called), so none
            // starts a queued run while another is still being waited for.
            let drained = |live: Vec<Addr<ChannelActor>>| {
                let told: Vec<_> = live.iter().map(|addr| addr.send(Drain)).collect();
                async move {
                    for answer in told {
                        let _ = answer.await;
                    }
                }
            };
            if tokio::time::timeout(msg.grace, drained(live.clone()))
                .await
                .is_ok()
            {
                return 0;
            }
            let mut cancelled = 0;
            for addr in &live {
                let stop = addr.send(CancelRun {
                    reason: CancelReason::Shutdown,
                    message_id: None,
                });
                cancelled += usize::from(stop.await.unwrap_or(false));
            }
            info!(cancelled, "grace period over; runs in flight cancelled");
            if tokio::time::timeout(msg.cancel_wait, drained(live))
                .await
                .is_err()
            {
                warn!("runs did not end after cancel; their process groups are killed on exit");
            }
            cancelled
        })
    }
}
