//! The channel actor: one per conversation (a configured channel, or a thread under one).
//!
//! It runs ONE Claude invocation at a time — two concurrent resumes of a session fork its
//! transcript — and keeps further messages in a bounded queue (`queue`). The run itself is a
//! job beside the actor (`job`), so `status` and `cancel` are answered while it is in flight.
//! After a run its record and reply are written (`saving`), and only then is the reply sent;
//! meanwhile the next message already runs. With live sessions the actor holds the
//! conversation's warm CLI process between turns (`warm`; all of them capped by `pool`),
//! answers Claude's permission requests through the front end (`approvals`), waits out the
//! account's usage limit (`usage`), refuses a prompt over a spend or message limit when its
//! turn comes (`limiting`), answers the coordinator's own commands (`command`), and closes a
//! thread's worktree once idle (`closing`). `status` says what it is doing.
//!
//! This file is the actor itself: its state, the messages a front end sends it
//! ([`SubmitMessage`], [`RunCommand`], [`GetStatus`], [`CancelRun`] — each unchanged from the
//! front end through the registry), and the stop: once the service's [`crate::shutdown::Shutdown`] has begun it
//! starts no run, what is queued stays in the inbox, and it holds a [`crate::shutdown::Busy`] while anything is
//! running or unsaved.

mod answer;
mod approvals;
mod closing;
mod command;
mod deps;
mod job;
mod limiting;
mod pool;
mod queue;
mod relay;
mod run_files;
mod saving;
mod scheduling;
mod sessions;
mod status;
mod usage;
mod warm;

pub use approvals::{PermissionAsked, PermissionWithdrawn};
pub use closing::{close_now as closing_now, CloseWorktree};
pub use deps::ChannelDeps;
pub use pool::{ProcessSlot, WarmPool};
pub use status::{ChannelStatus, GetStatus};
pub use usage::{Pause, UsageGate};
pub use warm::{EndReason, EndWarmSession};

use std::sync::{Arc, Mutex};

use actix::prelude::*;
use tracing::{info, instrument, warn};

use crate::claude::todo::TodoList;
use crate::conversation::ConversationRef;
use crate::frontend::{
    CancelReason, CancelRun, DeliverReply, Durability, ReplyKind, ReplyTo, RunCommand, RunNow,
    SubmitMessage,
};
use crate::ids::MessageId;
use crate::shutdown::Busy;
use crate::store::{
    AcceptMessage, Conversation, Inbound, InboxState, LoadConversation, LoadOverrides, MarkMessage,
    Overrides, StoreError,
};
use approvals::Approvals;
use queue::{Pending, Queue};
use saving::Saves;
use usage::PauseState;
use warm::Warm;

/// What a stop tells users whose message will not run (the inbox could not keep it).
pub const SHUTDOWN_NOT_RUN: &str =
    "The service is restarting, so this message was not sent to Claude. Please send it again in a minute.";

/// Stop this actor if it has nothing running or queued. Answers whether it stopped.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct StopIfIdle;

/// One conversation with Claude, started by the channel registry.
pub struct ChannelActor {
    conversation: ConversationRef,
    deps: ChannelDeps,
    queue: Queue,
    saves: Saves,
    /// The stored row, for `status` (refreshed at start and after every run).
    record: Option<Conversation>,
    warm: Warm,
    approvals: Approvals,
    pause: PauseState,
    /// The model and permission mode chosen for it from chat.
    overrides: Overrides,
    /// Its thread was closed: the worktree goes once the conversation is idle.
    close_worktree: bool,
    /// Held while anything runs, waits or is unsaved: the service's stop waits for it.
    busy: Option<Busy>,
    /// Claude's to-do list in this conversation's session (its runs keep it up to date).
    todo: Arc<Mutex<TodoList>>,
}

impl ChannelActor {
    /// A channel actor for `conversation`.
    pub fn new(conversation: ConversationRef, deps: ChannelDeps) -> Self {
        Self {
            conversation,
            deps,
            queue: Queue::default(),
            saves: Saves::default(),
            record: None,
            warm: Warm::default(),
            approvals: Approvals::default(),
            pause: PauseState::default(),
            overrides: Overrides::default(),
            close_worktree: false,
            busy: None,
            todo: Arc::default(),
        }
    }

    /// Whether the service is stopping: nothing new runs.
    fn service_stopping(&self) -> bool {
        self.deps.shutdown.is_begun()
    }

    fn reply(&self, to: impl Into<ReplyTo>, kind: ReplyKind, text: String, is_error: bool) {
        let mut reply = DeliverReply::new(&self.conversation, to, kind, text, is_error);
        reply.session_id = self.record.as_ref().and_then(|r| r.session_id.clone());
        self.deps.replies.do_send(reply);
    }

    /// Forgets the to-do list (a new session has its own).
    fn clear_todo(&self) {
        self.todo
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Moves an inbox row on; states only move forward, so the order these land in is moot.
    fn mark(&self, message_id: MessageId, state: InboxState) {
        let mark = self.deps.store.send(MarkMessage { message_id, state });
        let id = self.conversation.id;
        actix::spawn(async move {
            if let Ok(Err(e)) = mark.await {
                warn!(channel_id = id.get(), message_id = message_id.get(), error = %e, "could not update the inbox");
            }
        });
    }

    /// Nothing running, queued or waiting to be written.
    fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.saves.is_empty()
    }

    /// Holds a [`Busy`] for the stop while anything is under way, and lets it go when not.
    fn track_busy(&mut self) {
        if self.is_idle() {
            self.busy = None;
        } else if self.busy.is_none() {
            self.busy = Some(self.deps.shutdown.busy());
        }
    }

    fn notify_if_idle(&mut self) {
        if self.is_idle() && self.service_stopping() {
            self.end_warm(EndReason::Other);
        }
        self.track_busy();
    }

    /// The stop has begun: what waits stays queued in the inbox, and runs after the restart;
    /// only a message the inbox could not take is lost now, and its user told.
    fn stop_starting(&mut self) {
        for pending in self.queue.take_waiting() {
            self.keep_for_restart(&pending);
        }
        self.observe_queue();
        self.notify_if_idle();
    }
}

impl Actor for ChannelActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        self.end_warm(EndReason::Other);
        self.deps.warm.remove(self.conversation.id);
    }

    fn started(&mut self, ctx: &mut Self::Context) {
        let shutdown = self.deps.shutdown.clone();
        let stop = async move { shutdown.begun().await };
        ctx.spawn(stop.into_actor(self).map(|(), act, _| act.stop_starting()));
        let load = self.deps.store.send(LoadConversation {
            id: self.conversation.id,
        });
        ctx.spawn(load.into_actor(self).map(|res, act, _| {
            if let Ok(Ok(Some(record))) = res {
                // A run that finished first has the fresher row.
                act.record.get_or_insert(record);
            }
        }));
        let load = self.deps.store.send(LoadOverrides {
            conversation_id: self.conversation.id,
        });
        // Wait: the first run uses them.
        ctx.wait(load.into_actor(self).map(|res, act, _| match res {
            Ok(Ok(o)) => act.overrides = o,
            Ok(Err(e)) => warn!(channel_id = act.conversation.id.get(), error = %e, "could not read the model and mode chosen here; using the channel's"),
            Err(_) => {}
        }));
    }
}

impl Handler<RunCommand> for ChannelActor {
    type Result = ();

    #[instrument(skip_all, fields(channel_id = self.conversation.id.get(), command = ?msg.command))]
    fn handle(&mut self, msg: RunCommand, ctx: &mut Self::Context) {
        self.command(&msg.command, msg.origin.into(), msg.approver, ctx);
    }
}

impl Handler<SubmitMessage> for ChannelActor {
    type Result = ();

    #[instrument(skip_all, fields(channel_id = self.conversation.id.get(), message_id = msg.origin.message_id.get()))]
    fn handle(&mut self, msg: SubmitMessage, ctx: &mut Self::Context) {
        // A schedule's or an HTTP caller's text is a prompt, even if it looks like a command.
        let command = (msg.via == crate::via::Via::Chat)
            .then(|| command::parse(&msg.text, &self.deps.command_prefix))
            .flatten();
        if let Some(cmd) = command {
            if msg.late {
                // A command is about now: a `!reset` or `!cancel` posted while the service was
                // down must not act on whatever runs when it is back.
                info!("a command posted while the service was down; not run late");
                return;
            }
            self.command(&cmd, msg.origin.into(), msg.approver, ctx);
            return;
        }
        let pending = Pending {
            origin: msg.origin,
            answer_to: None,
            prompt: msg.text,
            command: None,
            attachments: msg.attachments,
            late: msg.late,
            stored: msg.inbox != Durability::Transient,
            via: msg.via,
        };
        if msg.inbox != Durability::New {
            self.enqueue(pending, ctx);
            self.track_busy();
            return;
        }
        let accept = self.deps.store.send(AcceptMessage(Inbound {
            message_id: msg.origin.message_id,
            conversation_id: self.conversation.id,
            profile_id: self.conversation.profile.id,
            conversation: self.conversation.name.clone(),
            channel_id: msg.origin.channel_id,
            author_id: msg.origin.author_id,
            text: pending.prompt.clone(),
            attachments: pending.attachments.clone(),
            late: msg.late,
            via: pending.via.clone(),
        }));
        // Wait: messages are queued in the order they were written.
        ctx.wait(accept.into_actor(self).map(move |res, act, ctx| {
            match res.map_err(StoreError::from).and_then(|r| r) {
                Ok(true) => act.enqueue(pending, ctx),
                Ok(false) => {
                    info!(message_id = pending.origin.message_id.get(), "a message already in the inbox; dropped");
                }
                Err(e) => {
                    // Better run it than refuse it: only a crash before it is answered loses it.
                    warn!(error = %e, "could not write the message to the inbox; running it anyway");
                    act.enqueue(
                        Pending {
                            stored: false,
                            ..pending
                        },
                        ctx,
                    );
                }
            }
            act.track_busy();
        }));
    }
}

impl Handler<GetStatus> for ChannelActor {
    type Result = Option<ChannelStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Self::Context) -> Self::Result {
        Some(self.status())
    }
}

impl Handler<CancelRun> for ChannelActor {
    type Result = bool;

    fn handle(&mut self, msg: CancelRun, _: &mut Self::Context) -> bool {
        let cancelled = self.queue.cancel(msg.reason, msg.message_id);
        if let (true, Some(c)) = (cancelled, self.queue.current()) {
            info!(
                channel_id = self.conversation.id.get(),
                message_id = c.message.origin.message_id.get(),
                reason = ?msg.reason,
                "run cancelled"
            );
        }
        cancelled
    }
}

impl Handler<RunNow> for ChannelActor {
    type Result = bool;

    fn handle(&mut self, msg: RunNow, _: &mut Self::Context) -> bool {
        if !self.queue.move_to_front(msg.message_id) {
            return false;
        }
        info!(
            channel_id = self.conversation.id.get(),
            message_id = msg.message_id.get(),
            user_id = msg.by.get(),
            "a waiting message runs now; the run in flight is interrupted"
        );
        // Its turn comes as soon as the run in flight has ended.
        self.queue.cancel(CancelReason::Superseded, None);
        true
    }
}

impl Handler<StopIfIdle> for ChannelActor {
    type Result = bool;

    fn handle(&mut self, _: StopIfIdle, ctx: &mut Self::Context) -> bool {
        let idle = self.is_idle();
        if idle {
            self.end_warm(EndReason::Idle);
            ctx.stop();
        }
        idle
    }
}
