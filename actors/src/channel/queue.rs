//! The conversation's queue: the message being worked on, and those waiting behind it, bounded
//! by `channels.queue_limit` (one that does not fit gets a "busy, N waiting" reply, never a
//! silent drop). Runs start from it one at a time, each after one of the global run slots
//! (`claude.max_concurrent_runs`), handed out in request order; the warm process is taken only
//! once the slot is granted, so while a message waits for one its process counts as idle.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use actix::prelude::*;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::job::Job;
use super::relay::Relay;
use super::ChannelActor;
use crate::claude::CliCommand;
use crate::conversation::WhileBusy;
use crate::frontend::{CancelReason, CommandOrigin, Origin, ProgressStep, ReplyKind, ShowProgress};
use crate::ids::MessageId;
use crate::metrics::{Metric, RecordMetric};
use crate::store::{AttachmentMeta, InboxState};

/// A user message (or a command's run) waiting its turn.
#[derive(Debug)]
pub(super) struct Pending {
    /// The message (message id 0 for a command's run, which has none).
    pub(super) origin: Origin,
    /// A command's run answers the command.
    pub(super) answer_to: Option<CommandOrigin>,
    pub(super) prompt: String,
    /// Run this built-in CLI command instead of the prompt.
    pub(super) command: Option<CliCommand>,
    /// Its files (fetched when it runs).
    pub(super) attachments: Vec<AttachmentMeta>,
    pub(super) late: bool,
    /// In the inbox (false only if the store could not take it).
    pub(super) stored: bool,
    /// How it came (its answer says so when not from the chat).
    pub(super) via: crate::via::Via,
}

/// The message being worked on.
pub(super) struct Current {
    /// What it was, to queue it again if the usage limit refuses it.
    pub(super) message: Pending,
    pub(super) accepted_at: SystemTime,
    /// When it got its run slot.
    pub(super) started_at: Option<SystemTime>,
    pub(super) cancel: CancellationToken,
    pub(super) cancel_reason: CancelReason,
}

/// The message being worked on, and those waiting behind it.
#[derive(Default)]
pub(super) struct Queue {
    waiting: VecDeque<Pending>,
    current: Option<Current>,
}

impl Queue {
    pub(super) fn current(&self) -> Option<&Current> {
        self.current.as_ref()
    }

    /// Messages waiting behind the current one.
    pub(super) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Nothing running, nothing waiting.
    pub(super) fn is_empty(&self) -> bool {
        self.current.is_none() && self.waiting.is_empty()
    }

    /// Whether a run is in flight (or waiting for its slot).
    pub(super) fn is_running(&self) -> bool {
        self.current.is_some()
    }

    /// Whether another message would be one too many behind a run.
    fn is_full(&self, limit: usize) -> bool {
        self.current.is_some() && self.waiting.len() >= limit
    }

    /// Where the first waiting message came from.
    pub(super) fn first_waiting(&self) -> Option<Origin> {
        self.waiting.front().map(|p| p.origin)
    }

    /// Moves waiting message `message` to the head; answers whether it was waiting.
    pub(super) fn move_to_front(&mut self, message: MessageId) -> bool {
        let Some(pos) = self
            .waiting
            .iter()
            .position(|p| p.origin.message_id == message)
        else {
            return false;
        };
        if let Some(p) = self.waiting.remove(pos) {
            self.waiting.push_front(p);
        }
        true
    }

    /// Back at the head: its run was refused by the usage limit.
    pub(super) fn put_back(&mut self, message: Pending) {
        self.waiting.push_front(message);
    }

    /// Takes what waits (shutting down).
    pub(super) fn take_waiting(&mut self) -> VecDeque<Pending> {
        std::mem::take(&mut self.waiting)
    }

    /// The run in flight has ended.
    /// The message that runs next, if one waits.
    pub(super) fn next_waiting(&self) -> Option<&Pending> {
        self.waiting.front()
    }

    /// Takes the message that would run next out of the queue.
    pub(super) fn drop_next(&mut self) -> Option<Pending> {
        self.waiting.pop_front()
    }

    pub(super) fn finish(&mut self) -> Option<Current> {
        self.current.take()
    }

    /// Cancels the run in flight (only if it answers `message`, when given); answers whether
    /// there was one to cancel.
    pub(super) fn cancel(&mut self, reason: CancelReason, message: Option<MessageId>) -> bool {
        match &mut self.current {
            Some(c)
                if !c.cancel.is_cancelled()
                    && message.is_none_or(|m| m == c.message.origin.message_id) =>
            {
                c.cancel_reason = reason;
                c.cancel.cancel();
                true
            }
            _ => false,
        }
    }

    /// The next message becomes the current one, if nothing runs; its cancel token.
    fn start(&mut self) -> Option<CancellationToken> {
        if self.current.is_some() {
            return None;
        }
        let message = self.waiting.pop_front()?;
        let cancel = CancellationToken::new();
        self.current = Some(Current {
            message,
            accepted_at: SystemTime::now(),
            started_at: None,
            cancel: cancel.clone(),
            cancel_reason: CancelReason::User,
        });
        Some(cancel)
    }
}

impl ChannelActor {
    /// Queues a message that is in the inbox (or could not be written to it), or refuses it
    /// when the queue is full.
    pub(super) fn enqueue(&mut self, pending: Pending, ctx: &mut Context<Self>) {
        if self.service_stopping() {
            self.keep_for_restart(&pending);
            return;
        }
        if self.queue.is_full(self.deps.queue_limit) {
            let waiting = self.queue.waiting();
            info!(waiting, "queue full; message refused");
            self.mark(pending.origin.message_id, InboxState::Skipped);
            self.reply(
                pending.origin,
                ReplyKind::Busy,
                format!(
                    "Busy: Claude is working on an earlier message and {waiting} more are waiting \
                     (the limit is {}). This message was not sent; please send it again later.",
                    self.deps.queue_limit
                ),
                true,
            );
            return;
        }
        let origin = pending.origin;
        let visible = origin.message_id.get() != 0;
        self.queue.waiting.push_back(pending);
        self.observe_queue();
        if self.queue.is_running() {
            if self.conversation.profile.while_busy == WhileBusy::Interrupt && visible {
                info!("a new message interrupts the run in flight (while_busy = interrupt)");
                self.queue.cancel(CancelReason::Superseded, None);
            } else if visible {
                self.deps.progress.do_send(ShowProgress {
                    conversation_id: self.conversation.id,
                    origin,
                    step: ProgressStep::Queued {
                        position: self.queue.waiting(),
                    },
                });
            }
        }
        self.start_next(ctx);
    }

    /// Starts the next queued message, if nothing is running: it waits for a run slot, then
    /// takes the warm process (if any) and runs as a job beside the actor.
    /// Messages at the front over a limit are answered and kept as refused; the next may run.
    fn refuse_over_limit(&mut self) {
        while let Some(refusal) = self.queue.next_waiting().and_then(|p| self.over_limit(p)) {
            if let Some(p) = self.queue.drop_next() {
                self.refused(&p, &refusal);
            }
        }
    }

    pub(super) fn start_next(&mut self, ctx: &mut Context<Self>) {
        if self.queue.is_running() {
            return;
        }
        if self.queue.waiting.is_empty() {
            self.notify_if_idle();
            return;
        }
        if self.wait_for_pause(ctx) {
            return;
        }
        self.refuse_over_limit();
        if self.queue.next_waiting().is_none() {
            self.observe_queue();
            self.notify_if_idle();
            return;
        }
        let Some(cancel) = self.queue.start() else {
            return;
        };
        let Some(next) = self.queue.current().map(|c| &c.message) else {
            return;
        };
        let job = Job {
            conversation: self.conversation.clone(),
            runner: self.deps.runner.clone(),
            store: self.deps.store.clone(),
            progress: self.deps.progress.clone(),
            origin: next.origin,
            answer_to: next.answer_to,
            prompt: next.prompt.clone(),
            command: next.command,
            relay: Relay {
                progress: self.deps.progress.clone(),
                conversation_id: self.conversation.id,
                origin: next.origin,
                stream: self.conversation.profile.stream,
                todo: Arc::clone(&self.todo),
            },
            attachments: next.attachments.clone(),
            images: Vec::new(),
            late: next.late,
            via: next.via.clone(),
            stored: next.stored,
            model: self.overrides.model.clone(),
            permission_mode: self.permission_mode(),
            files: self.deps.files.clone(),
            git: self.deps.git.clone(),
            warm: self.deps.warm.clone(),
            cancel: cancel.clone(),
            prior: self.saves.carry(),
            // Taken with the run slot: until then the process idles (another run may end it).
            live: None,
            live_mode: self.deps.runner.config().live_sessions,
            asks: ctx.address().recipient(),
            withdrawn: ctx.address().recipient(),
            metrics: self.deps.metrics.clone(),
        };
        let (stored, message_id) = (next.stored, next.origin.message_id);
        if stored && next.answer_to.is_none() {
            let profile = self.conversation.profile.id;
            self.deps
                .limits
                .ran(next.origin.author_id, profile, crate::time::unix_ms());
        }
        self.observe_queue();
        if stored {
            self.mark(message_id, InboxState::Running);
        }
        let slots = Arc::clone(&self.deps.run_slots);
        let wait_for_slot = async move {
            tokio::select! {
                permit = slots.acquire_owned() => permit.ok(),
                () = cancel.cancelled() => None,
            }
        };
        let fut = wait_for_slot
            .into_actor(self)
            .then(move |permit, act, ctx| {
                let mut job = job;
                if job.live_mode {
                    // The turn runs now: the process is busy, no longer to be ended for others.
                    job.live = act.warm.take();
                    act.deps
                        .warm
                        .busy(act.conversation.id, ctx.address().recipient());
                }
                if permit.is_some() {
                    if let Some(c) = act.queue.current.as_mut() {
                        c.started_at = Some(SystemTime::now());
                    }
                    act.deps.metrics.do_send(RecordMetric(Metric::RunStarted {
                        id: act.conversation.id,
                        name: act.conversation.name.clone(),
                    }));
                }
                job.execute(permit).into_actor(act)
            })
            .map(|end, act, ctx| act.job_ended(end, ctx));
        ctx.spawn(fut);
    }

    /// Shutting down: a message in the inbox stays queued there and runs after the restart;
    /// one the inbox could not take is not run, and its user is told.
    pub(super) fn keep_for_restart(&self, pending: &Pending) {
        if !pending.stored {
            self.reply(
                pending.origin,
                ReplyKind::Failure,
                super::SHUTDOWN_NOT_RUN.into(),
                true,
            );
        }
    }

    pub(super) fn observe_queue(&self) {
        self.deps.metrics.do_send(RecordMetric(Metric::QueueDepth {
            id: self.conversation.id,
            name: self.conversation.name.clone(),
            depth: self.queue.waiting(),
        }));
    }
}
