//! The channel actor: one per conversation (a configured channel, or a thread under one).
//!
//! It runs ONE Claude invocation at a time — two concurrent resumes of a session fork its
//! transcript — and keeps further messages in a queue bounded by `channels.queue_limit`; a
//! message that does not fit gets a "busy, N waiting" reply, never a silent drop. The run
//! itself is a future spawned on the actor's context, so `Status` and `Cancel` are answered
//! while it is in flight. Before a run it loads the session id from the store; after, it saves
//! the new id, cost and counts, and only then sends the reply. The save does not hold up the
//! next queued message: that run starts at once with the session id the last run left, while
//! the saves are written one at a time, in order. A stale session is replaced by a fresh one,
//! and the user is told.
//!
//! With live sessions (`claude.live_sessions`) the actor holds the conversation's warm CLI
//! process between turns, ends it after `claude.keep_warm_secs` idle (or when the shared
//! [`WarmPool`] needs room), and answers Claude's permission requests through the front end:
//! each is shown with an unguessable token, answered once, denied after
//! `claude.approval_timeout_secs`, or withdrawn; every decision is recorded, and "always" rules
//! are stored and passed again to every new process.
//!
//! A run refused by the account's usage limit is not answered: its message goes back to the
//! head of the queue, every conversation pauses until the limit resets ([`UsageGate`]), each
//! tells its users once, and the queued messages run by themselves afterwards.
//!
//! Files: this one (the actor and its queue-and-save state machine), `job` (one run, from
//! its run slot to its reply), `command` (what the coordinator itself answers),
//! `approvals` (pending permission requests), `warm` (the warm processes of all
//! conversations), `usage` (the shared usage-limit pause).

mod approvals;
mod closing;
mod command;
mod job;
mod usage;
mod warm;

pub use closing::{close_now as closing_now, CloseWorktree};
pub use usage::{Pause, UsageGate};
pub use warm::WarmPool;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use actix::prelude::*;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

use crate::claude::permission::PermissionRequest;
use crate::claude::{ClaudeRunner, LiveSession, SessionControl};
use crate::conversation::ConversationRef;
use crate::frontend::{
    AnswerApproval, ApprovalError, DeliverReply, Origin, ProgressStep, ReplyKind, ShowApproval,
    ShowProgress,
};
use crate::metrics::{Metric, RecordMetric, RunOutcome, SessionMetric};
use crate::store::{
    AcceptMessage, AttachmentMeta, Conversation, Inbound, InboxState, LoadConversation,
    LoadOverrides, MarkMessage, Overrides, RecordApproval, SessionStoreActor, StoreError,
};
use approvals::{Approvals, Resolution};
use command::Command;
use job::{Job, JobEnd, Prior, Ran};

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// Handle one message from a user: a prompt for Claude, or a coordinator command.
/// Exactly one [`DeliverReply`] answers it. A prompt is written to the inbox before it is
/// queued (a copy of one already there is dropped).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SubmitMessage {
    /// Where it came from.
    pub origin: Origin,
    /// What the user wrote, verbatim.
    pub text: String,
    /// Its files.
    pub attachments: Vec<AttachmentMeta>,
    /// Posted while the service was down, or queued over a restart: the reply says so.
    pub late: bool,
    /// Whether it goes to the inbox.
    pub inbox: Durability,
    /// The front end found the author an approver here (for `!mode`, `!rules clear`).
    pub approver: bool,
}

/// Run a coordinator command (a `/claude` subcommand).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RunCommand {
    /// Where it came from.
    pub origin: Origin,
    /// What to do.
    pub command: Command,
    /// The author is an approver here.
    pub approver: bool,
}

/// Whether a message is kept in the inbox (and its reply in the outbox).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Write it to the inbox before queueing it.
    New,
    /// It is in the inbox already (queued again at start-up, or by `!retry`).
    Stored,
    /// Not kept: the console's, which has no one to answer after a restart.
    Transient,
}

/// Report what the channel is doing.
#[derive(Debug, Message)]
#[rtype(result = "ChannelStatus")]
pub struct GetStatus;

/// Stop the run in flight (SIGINT to the CLI, SIGKILL to its group if it lingers).
/// Queued messages stay queued. Answers whether there was a run to cancel.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct CancelRun {
    /// Why; the user is told.
    pub reason: CancelReason,
    /// Only if the run in flight answers this message (a Stop button on an older run's
    /// progress message must not stop a later one).
    pub message_id: Option<u64>,
}

/// Start no new run (what is queued, and what arrives now, stays in the inbox for the next
/// start) and answer when the run in flight, if any, has finished and been recorded. For
/// shutdown.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Drain;

/// Why a run is cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// A user asked (`!cancel`).
    User,
    /// The service is shutting down and the grace period is over.
    Shutdown,
}

/// What a shutdown tells users whose message will not run.
pub const SHUTDOWN_NOT_RUN: &str =
    "The service is restarting, so this message was not sent to Claude. Please send it again in a minute.";

/// Claude asked for a permission during a turn (sent by the turn itself).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct PermissionAsked {
    /// What it asked.
    pub request: PermissionRequest,
    /// Where the answer goes.
    pub control: SessionControl,
    /// The message whose turn asked.
    pub origin: Origin,
}

/// The CLI withdrew a permission request.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct PermissionWithdrawn {
    /// Its id.
    pub request_id: String,
}

/// End the warm process now, if it is idle.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct EndWarmSession {
    /// Why.
    pub reason: EndReason,
}

/// Why a warm process is ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// `claude.keep_warm_secs` passed.
    Idle,
    /// Another conversation needed room (`claude.max_warm_sessions`).
    Evicted,
    /// `!reset`, `!rules clear`, or shutdown.
    Other,
}

/// Stop this actor if it has nothing running or queued. Answers whether it stopped.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct StopIfIdle;

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

/// Everything a channel actor needs that is shared by all of them.
#[derive(Clone)]
pub struct ChannelDeps {
    /// Runs the CLI.
    pub runner: ClaudeRunner,
    /// The session store.
    pub store: Addr<SessionStoreActor>,
    /// `claude.max_concurrent_runs` permits, handed out in request order.
    pub run_slots: Arc<Semaphore>,
    /// Where replies go.
    pub replies: Recipient<DeliverReply>,
    /// Where progress goes.
    pub progress: Recipient<ShowProgress>,
    /// `channels.queue_limit`: messages that may wait behind the running one.
    pub queue_limit: usize,
    /// `channels.command_prefix`, e.g. `!` for `!status`; empty disables commands.
    pub command_prefix: String,
    /// Where observations for the metrics log go.
    pub metrics: Recipient<RecordMetric>,
    /// Where permission requests and their outcomes go (the front end).
    pub approvals: Recipient<ShowApproval>,
    /// The warm processes of all conversations.
    pub warm: WarmPool,
    /// The account's usage-limit pause, shared by all conversations.
    pub usage: UsageGate,
    /// `[files]`.
    pub files: crate::files::FilesConfig,
    /// Runs git for threads' worktrees, with none of a repository's configured programs.
    pub git: crate::worktree::Git,
    /// The service's own state directory (the database's): what a removed worktree's
    /// coordinator files are kept in.
    pub state_dir: std::path::PathBuf,
}

/// What a channel is doing.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelStatus {
    /// Channel or thread id.
    pub conversation_id: u64,
    /// Human name.
    pub name: String,
    /// When the run in flight started (a run slot was granted).
    pub running_since: Option<SystemTime>,
    /// When the current message began waiting for a run slot.
    pub waiting_since: Option<SystemTime>,
    /// Messages queued behind the current one.
    pub queued: usize,
    /// The stored session id.
    pub session_id: Option<String>,
    /// Messages sent to Claude so far.
    pub message_count: u64,
    /// Total cost in USD.
    pub total_cost_usd: f64,
    /// Whether a warm process is up between turns.
    pub warm: bool,
    /// Permission requests waiting for an answer.
    pub pending_approvals: usize,
    /// Runs wait for the account's usage limit until then.
    pub paused_until: Option<SystemTime>,
    /// Where it works, when not the channel's project directory (a thread's worktree).
    pub workdir: Option<String>,
    /// The model of the next run (chosen here, the channel's, or the CLI's last report).
    pub model: Option<String>,
    /// The permission mode of the next run.
    pub permission_mode: String,
}

impl ChannelStatus {
    /// A one-paragraph description for users.
    pub fn describe(&self) -> String {
        let ago = |t: SystemTime| t.elapsed().unwrap_or_default().as_secs();
        let activity = match (self.running_since, self.waiting_since) {
            (Some(t), _) => format!("Running for {} s", ago(t)),
            (None, Some(t)) => format!("Waiting {} s for a free run slot", ago(t)),
            (None, None) => "Idle".to_string(),
        };
        let session = self
            .session_id
            .as_deref()
            .map_or_else(|| "no session yet".to_string(), |s| format!("session {s}"));
        let model = self.model.as_deref().unwrap_or("the CLI's default");
        let mut text = format!(
            "{activity}; {} waiting. Conversation `{}`: {session}, {} message(s), ${:.4} spent; model {model}, permission mode {}.",
            self.queued, self.name, self.message_count, self.total_cost_usd, self.permission_mode
        );
        if self.pending_approvals > 0 {
            let _ = write!(
                text,
                " {} permission request(s) waiting for an answer.",
                self.pending_approvals
            );
        }
        if self.warm {
            text.push_str(" Claude's process is warm.");
        }
        if let Some(dir) = &self.workdir {
            let _ = write!(text, " Works in `{dir}`.");
        }
        if let Some(until) = self.paused_until {
            let _ = write!(
                text,
                " Paused by Claude's usage limit: queued messages run after {}.",
                humantime::format_rfc3339_seconds(until)
            );
        }
        text
    }
}

/// A user message waiting its turn.
#[derive(Debug)]
struct Pending {
    origin: Origin,
    prompt: String,
    /// Its files (fetched when it runs).
    attachments: Vec<AttachmentMeta>,
    late: bool,
    /// In the inbox (false only if the store could not take it).
    stored: bool,
}

/// The message being worked on.
struct Current {
    origin: Origin,
    /// Its text, files and flags, to queue it again if the usage limit refuses it.
    prompt: String,
    attachments: Vec<AttachmentMeta>,
    late: bool,
    stored: bool,
    accepted_at: SystemTime,
    started_at: Option<SystemTime>,
    cancel: CancellationToken,
    cancel_reason: CancelReason,
}

// ---------------------------------------------------------------------------------------------
// The actor
// ---------------------------------------------------------------------------------------------

/// One conversation with Claude, started by the channel registry.
pub struct ChannelActor {
    conversation: ConversationRef,
    deps: ChannelDeps,
    queue: VecDeque<Pending>,
    current: Option<Current>,
    /// The stored row, for `Status` (refreshed at start and after every run).
    record: Option<Conversation>,
    /// Runs that have ended, oldest first, whose records are not written yet. One is written
    /// at a time, so each write sees the one before; its reply goes out once it is written.
    /// Meanwhile the next queued message already runs: the store is off the critical path.
    unsaved: VecDeque<Ran>,
    /// A record is being written.
    saving: bool,
    /// What the last run leaves for the next one while its record is unwritten; cleared
    /// once every record is written, after which the store is read again.
    carry: Option<Prior>,
    /// Shutting down: nothing new is accepted.
    draining: bool,
    /// Waiting for the run in flight to end and its record to be written.
    idle_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    /// The warm process between turns (during a turn its job holds it).
    warm: Option<LiveSession>,
    /// Bumped whenever the warm process changes hands, so a stale idle timer does nothing.
    warm_gen: u64,
    /// Permission requests waiting for an answer.
    approvals: Approvals,
    /// Where it stands with the usage-limit pause.
    pause: PauseState,
    /// The model and permission mode chosen for it from chat.
    overrides: Overrides,
    /// Its thread was closed: the worktree goes once the conversation is idle.
    close_worktree: bool,
}

/// A conversation's view of the usage-limit pause.
#[derive(Debug, Default)]
struct PauseState {
    /// Its users were told (once, until a run goes through again: a backoff that is tried
    /// and refused again is no news).
    told: bool,
    /// A start is scheduled for the end of the pause.
    wake_scheduled: bool,
}

impl ChannelActor {
    /// A channel actor for `conversation`.
    pub fn new(conversation: ConversationRef, deps: ChannelDeps) -> Self {
        Self {
            conversation,
            deps,
            queue: VecDeque::new(),
            current: None,
            record: None,
            unsaved: VecDeque::new(),
            saving: false,
            carry: None,
            draining: false,
            idle_waiters: Vec::new(),
            warm: None,
            warm_gen: 0,
            approvals: Approvals::default(),
            pause: PauseState::default(),
            overrides: Overrides::default(),
            close_worktree: false,
        }
    }

    /// An actor that starts no run (the service is shutting down): what it is given stays
    /// queued in the inbox.
    #[must_use]
    pub fn draining(mut self, draining: bool) -> Self {
        self.draining = draining;
        self
    }

    /// Keeps `live` warm for `claude.keep_warm_secs` (or ends it at once when that is zero).
    fn hold_warm(&mut self, live: LiveSession, ctx: &mut Context<Self>) {
        let keep = self.deps.runner.config().keep_warm();
        self.warm_gen += 1;
        if keep.is_zero() || self.draining {
            self.deps.warm.remove(self.conversation.id);
            self.observe_session_end(EndReason::Idle);
            live.end();
            return;
        }
        self.warm = Some(live);
        self.deps
            .warm
            .idle(self.conversation.id, ctx.address().recipient());
        let generation = self.warm_gen;
        ctx.run_later(keep, move |act, _| {
            if act.warm_gen == generation && act.current.is_none() {
                act.end_warm(EndReason::Idle);
            }
        });
    }

    /// Ends the warm process, if there is one between turns.
    fn end_warm(&mut self, reason: EndReason) {
        if let Some(live) = self.warm.take() {
            self.warm_gen += 1;
            self.deps.warm.remove(self.conversation.id);
            self.observe_session_end(reason);
            live.end();
        }
    }

    fn observe_session_end(&self, reason: EndReason) {
        self.deps
            .metrics
            .do_send(RecordMetric(Metric::Session(match reason {
                EndReason::Idle => SessionMetric::EndedIdle,
                EndReason::Evicted => SessionMetric::EndedEvicted,
                EndReason::Other => SessionMetric::EndedReplaced,
            })));
    }

    /// Shows how a permission request ended, records it, stores its rules.
    fn publish(&mut self, r: Resolution, ctx: &mut Context<Self>) {
        if let Some(timer) = r.timer {
            ctx.cancel_future(timer);
        }
        info!(
            channel_id = self.conversation.id,
            tool = %r.request.tool_name,
            decision = r.decision,
            by = r.by.as_deref().unwrap_or("-"),
            "permission request resolved"
        );
        self.deps.approvals.do_send(ShowApproval {
            conversation_id: self.conversation.id,
            origin: r.origin,
            request_id: r.request.request_id.clone(),
            token: r.token.clone(),
            state: r.state.clone(),
        });
        self.deps.metrics.do_send(RecordMetric(Metric::Approval {
            outcome: r.outcome,
            waited: r.waited,
        }));
        let record = RecordApproval {
            conversation_id: self.conversation.id,
            conversation: self.conversation.name.clone(),
            tool: r.request.tool_name.clone(),
            summary: r.request.summary(),
            decision: r.decision.to_string(),
            decided_by: r.by.clone(),
            rule: (!r.rules.is_empty()).then(|| r.rules.join(", ")),
            at_ms: crate::store::unix_ms(),
        };
        let id = self.conversation.id;
        let store = self.deps.store.clone();
        let rules = r.rules;
        let save = async move {
            if !rules.is_empty() {
                if let Ok(Err(e)) = store.send(crate::store::AddRules { id, rules }).await {
                    warn!(channel_id = id, error = %e, "could not store the \"always\" rule");
                }
            }
            if let Ok(Err(e)) = store.send(record).await {
                warn!(channel_id = id, error = %e, "could not record the permission decision");
            }
        };
        ctx.spawn(save.into_actor(self));
    }

    fn reply(&self, origin: Origin, kind: ReplyKind, text: String, is_error: bool) {
        let mut reply = DeliverReply::new(&self.conversation, origin, kind, text, is_error);
        reply.session_id = self.record.as_ref().and_then(|r| r.session_id.clone());
        self.deps.replies.do_send(reply);
    }

    fn status(&self) -> ChannelStatus {
        let record = self.record.as_ref();
        ChannelStatus {
            conversation_id: self.conversation.id,
            name: self.conversation.name.clone(),
            running_since: self.current.as_ref().and_then(|c| c.started_at),
            waiting_since: self
                .current
                .as_ref()
                .filter(|c| c.started_at.is_none())
                .map(|c| c.accepted_at),
            queued: self.queue.len(),
            session_id: record.and_then(|r| r.session_id.clone()),
            message_count: record.map_or(0, |r| r.message_count),
            total_cost_usd: record.map_or(0.0, |r| r.total_cost_usd),
            warm: self.warm.is_some(),
            pending_approvals: self.approvals.len(),
            paused_until: self.deps.usage.paused().map(|p| p.until),
            workdir: record
                .map(|r| r.project_dir.clone())
                .filter(|d| std::path::Path::new(d) != self.conversation.profile.project_dir),
            model: self
                .overrides
                .model
                .clone()
                .or_else(|| self.conversation.profile.model.clone())
                .or_else(|| record.and_then(|r| r.model.clone())),
            permission_mode: self.permission_mode().as_str().to_string(),
        }
    }

    /// The usage limit refused the run of `c`: it goes back to the head of the queue.
    fn limited(&mut self, c: Current, resets_at: Option<SystemTime>) {
        let (pause, new) = self.deps.usage.limited(resets_at);
        if new {
            self.deps.metrics.do_send(RecordMetric(Metric::UsagePause {
                until: pause.until,
                announced: pause.announced,
            }));
        }
        if c.stored {
            self.mark(c.origin.message_id, InboxState::Queued);
        }
        self.queue.push_front(Pending {
            origin: c.origin,
            prompt: c.prompt,
            attachments: c.attachments,
            late: c.late,
            stored: c.stored,
        });
        self.observe_queue();
    }

    /// While every conversation is paused for the usage limit: tells the users (once) and
    /// schedules the next start for the end of the pause. Answers whether it is paused.
    fn wait_for_pause(&mut self, ctx: &mut Context<Self>) -> bool {
        let Some(pause) = self.deps.usage.paused() else {
            return false;
        };
        self.tell_paused(&pause);
        if !self.pause.wake_scheduled {
            self.pause.wake_scheduled = true;
            let wait = pause
                .until
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            ctx.run_later(wait, |act, ctx| {
                act.pause.wake_scheduled = false;
                act.start_next(ctx);
            });
        }
        true
    }

    /// Tells this conversation's users of `pause`, once.
    fn tell_paused(&mut self, pause: &Pause) {
        if self.pause.told {
            return;
        }
        self.pause.told = true;
        let Some(first) = self.queue.front().map(|p| p.origin) else {
            return;
        };
        info!(channel_id = self.conversation.id, until = %humantime::format_rfc3339_seconds(pause.until), "paused by the usage limit");
        let text = usage::pause_notice(pause, self.queue.len());
        self.reply(first, ReplyKind::Notice, text, false);
    }

    fn cancel_current(&mut self, reason: CancelReason) -> bool {
        match &mut self.current {
            Some(c) if !c.cancel.is_cancelled() => {
                c.cancel_reason = reason;
                c.cancel.cancel();
                true
            }
            _ => false,
        }
    }

    /// Nothing running, queued or waiting to be written.
    fn is_idle(&self) -> bool {
        self.current.is_none() && self.queue.is_empty() && self.unsaved.is_empty() && !self.saving
    }

    fn notify_if_idle(&mut self) {
        if self.is_idle() {
            if self.draining {
                self.end_warm(EndReason::Other);
            }
            for waiter in self.idle_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    fn observe_queue(&self) {
        self.deps.metrics.do_send(RecordMetric(Metric::QueueDepth {
            id: self.conversation.id,
            name: self.conversation.name.clone(),
            depth: self.queue.len(),
        }));
    }

    /// Queues a message that is in the inbox (or could not be written to it), or refuses it
    /// when the queue is full.
    fn enqueue(&mut self, pending: Pending, ctx: &mut Context<Self>) {
        if self.draining {
            self.keep_for_restart(&pending);
            return;
        }
        if self.current.is_some() && self.queue.len() >= self.deps.queue_limit {
            let waiting = self.queue.len();
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
        self.queue.push_back(pending);
        self.observe_queue();
        if self.current.is_some() {
            self.deps.progress.do_send(ShowProgress {
                conversation_id: self.conversation.id,
                origin,
                step: ProgressStep::Queued {
                    position: self.queue.len(),
                },
            });
        }
        self.start_next(ctx);
    }

    /// Shutting down: a message in the inbox stays queued there and runs after the restart;
    /// one the inbox could not take is not run, and its user is told.
    fn keep_for_restart(&self, pending: &Pending) {
        if !pending.stored {
            self.reply(
                pending.origin,
                ReplyKind::Failure,
                SHUTDOWN_NOT_RUN.into(),
                true,
            );
        }
    }

    /// Moves an inbox row on; states only move forward, so the order these land in is moot.
    fn mark(&self, message_id: u64, state: InboxState) {
        let mark = self.deps.store.send(MarkMessage { message_id, state });
        let id = self.conversation.id;
        actix::spawn(async move {
            if let Ok(Err(e)) = mark.await {
                warn!(channel_id = id, message_id, error = %e, "could not update the inbox");
            }
        });
    }

    /// Starts the next queued message, if nothing is running.
    fn start_next(&mut self, ctx: &mut Context<Self>) {
        if self.current.is_some() {
            return;
        }
        if self.queue.is_empty() {
            self.notify_if_idle();
            return;
        }
        if self.wait_for_pause(ctx) {
            return;
        }
        let Some(next) = self.queue.pop_front() else {
            return;
        };
        self.observe_queue();
        if next.stored {
            self.mark(next.origin.message_id, InboxState::Running);
        }
        let cancel = CancellationToken::new();
        self.current = Some(Current {
            origin: next.origin,
            prompt: next.prompt.clone(),
            attachments: next.attachments.clone(),
            late: next.late,
            stored: next.stored,
            accepted_at: SystemTime::now(),
            started_at: None,
            cancel: cancel.clone(),
            cancel_reason: CancelReason::User,
        });
        let job = Job {
            conversation: self.conversation.clone(),
            runner: self.deps.runner.clone(),
            store: self.deps.store.clone(),
            progress: self.deps.progress.clone(),
            origin: next.origin,
            prompt: next.prompt,
            attachments: next.attachments,
            images: Vec::new(),
            late: next.late,
            stored: next.stored,
            model: self.overrides.model.clone(),
            permission_mode: self.permission_mode(),
            files: self.deps.files.clone(),
            git: self.deps.git.clone(),
            warm: self.deps.warm.clone(),
            cancel: cancel.clone(),
            prior: self.carry.clone(),
            // Taken once the run has its slot: until then the process idles, and may be ended
            // for another conversation's run.
            live: None,
            live_mode: self.deps.runner.config().live_sessions,
            asks: ctx.address().recipient(),
            withdrawn: ctx.address().recipient(),
            metrics: self.deps.metrics.clone(),
        };
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
                    act.warm_gen += 1;
                    act.deps
                        .warm
                        .busy(act.conversation.id, ctx.address().recipient());
                }
                if permit.is_some() {
                    if let Some(c) = act.current.as_mut() {
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

    /// A job has ended: its reply goes out (after its record, if it ran), the warm process is
    /// kept, and the next message starts.
    fn job_ended(&mut self, end: JobEnd, ctx: &mut Context<Self>) {
        let current = self.current.take();
        // The turn is over: whatever it asked and nobody answered is moot.
        for r in self.approvals.withdraw_all() {
            self.publish(r, ctx);
        }
        let live = match end {
            JobEnd::NotRun(reply, live) => {
                self.mark(reply.origin.message_id, InboxState::Failed);
                self.deps.replies.do_send(*reply);
                live
            }
            JobEnd::Limited { resets_at, live } => {
                if let Some(c) = current {
                    self.limited(c, resets_at);
                }
                live
            }
            JobEnd::Ran(mut ran) => {
                self.pause.told = false;
                if ran.outcome == RunOutcome::Succeeded {
                    self.deps.usage.passed();
                }
                let shutdown = current.is_some_and(|c| c.cancel_reason == CancelReason::Shutdown);
                if shutdown && ran.outcome == RunOutcome::Cancelled {
                    ran.reply.text = "Stopped: the service is restarting. The conversation is saved; please send this message again in a minute.".into();
                }
                self.carry = Some(ran.next.clone());
                let live = ran.live.take();
                self.unsaved.push_back(*ran);
                live
            }
        };
        match live {
            Some(live) => self.hold_warm(live, ctx),
            None => self.deps.warm.remove(self.conversation.id),
        }
        // The next run first: its spawn is on the critical path, the save is not.
        self.start_next(ctx);
        self.save_next(ctx);
        self.try_close_worktree(ctx);
    }

    /// Writes the oldest unwritten record, unless one is being written; then sends its reply.
    fn save_next(&mut self, ctx: &mut Context<Self>) {
        if self.saving {
            return;
        }
        let Some(ran) = self.unsaved.pop_front() else {
            self.carry = None;
            self.notify_if_idle();
            return;
        };
        self.saving = true;
        let Ran {
            mut record,
            mut reply,
            outcome,
            started,
            stored,
            ..
        } = ran;
        // The reply is stored with the record, and its message marked answered, in one
        // transaction: after a crash it is either still to run, or in the outbox.
        record.reply = stored.then(|| reply.to_outgoing());
        let write = self.deps.store.send(record);
        ctx.spawn(write.into_actor(self).map(move |res, act, ctx| {
            act.saving = false;
            match res.map_err(StoreError::from).and_then(|r| r) {
                Ok(saved) => {
                    act.record = Some(saved.conversation);
                    reply.durable = stored;
                }
                Err(e) => {
                    warn!(channel_id = act.conversation.id, error = %e, "could not save the session");
                    let _ = write!(
                        reply.text,
                        "\n\nWarning: this conversation could not be saved ({e}); the next message may not continue it."
                    );
                }
            }
            act.deps.metrics.do_send(RecordMetric(Metric::RunFinished {
                outcome,
                latency: started.elapsed(),
                cost_usd: reply.cost_usd,
            }));
            act.deps.replies.do_send(reply);
            act.save_next(ctx);
            act.try_close_worktree(ctx);
        }));
    }
}

impl Actor for ChannelActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        self.end_warm(EndReason::Other);
        self.deps.warm.remove(self.conversation.id);
    }

    fn started(&mut self, ctx: &mut Self::Context) {
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
            Ok(Err(e)) => warn!(channel_id = act.conversation.id, error = %e, "could not read the model and mode chosen here; using the channel's"),
            Err(_) => {}
        }));
    }
}

impl Handler<RunCommand> for ChannelActor {
    type Result = ();

    #[instrument(skip_all, fields(channel_id = self.conversation.id, command = ?msg.command))]
    fn handle(&mut self, msg: RunCommand, ctx: &mut Self::Context) {
        self.command(&msg.command, msg.origin, msg.approver, ctx);
    }
}

impl Handler<SubmitMessage> for ChannelActor {
    type Result = ();

    #[instrument(skip_all, fields(channel_id = self.conversation.id, message_id = msg.origin.message_id))]
    fn handle(&mut self, msg: SubmitMessage, ctx: &mut Self::Context) {
        if let Some(cmd) = command::parse(&msg.text, &self.deps.command_prefix) {
            if msg.late {
                // A command is about now: a `!reset` or `!cancel` posted while the service was
                // down must not act on whatever runs when it is back.
                info!("a command posted while the service was down; not run late");
                return;
            }
            self.command(&cmd, msg.origin, msg.approver, ctx);
            return;
        }
        let pending = Pending {
            origin: msg.origin,
            prompt: msg.text,
            attachments: msg.attachments,
            late: msg.late,
            stored: msg.inbox != Durability::Transient,
        };
        if msg.inbox != Durability::New {
            self.enqueue(pending, ctx);
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
        }));
        // Wait: messages are queued in the order they were written.
        ctx.wait(accept.into_actor(self).map(move |res, act, ctx| {
            match res.map_err(StoreError::from).and_then(|r| r) {
                Ok(true) => act.enqueue(pending, ctx),
                Ok(false) => {
                    info!(message_id = pending.origin.message_id, "a message already in the inbox; dropped");
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
        }));
    }
}

impl Handler<GetStatus> for ChannelActor {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.status())
    }
}

impl Handler<CancelRun> for ChannelActor {
    type Result = bool;

    fn handle(&mut self, msg: CancelRun, _: &mut Self::Context) -> bool {
        let other_run = msg.message_id.is_some_and(|id| {
            self.current
                .as_ref()
                .is_none_or(|c| c.origin.message_id != id)
        });
        if other_run {
            return false;
        }
        let cancelled = self.cancel_current(msg.reason);
        if let (true, Some(c)) = (cancelled, &self.current) {
            info!(
                channel_id = self.conversation.id,
                message_id = c.origin.message_id,
                "run cancelled"
            );
        }
        cancelled
    }
}

impl Handler<Drain> for ChannelActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _: &mut Self::Context) -> Self::Result {
        self.draining = true;
        // What is queued stays queued in the inbox, and runs after the restart; only a message
        // the inbox could not take is lost now, and its user told.
        for pending in std::mem::take(&mut self.queue) {
            self.keep_for_restart(&pending);
        }
        self.observe_queue();
        if self.is_idle() {
            self.end_warm(EndReason::Other);
            return Box::pin(async {});
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.idle_waiters.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
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

impl Handler<PermissionAsked> for ChannelActor {
    type Result = ();

    #[instrument(skip_all, fields(channel_id = self.conversation.id, tool = %msg.request.tool_name))]
    fn handle(&mut self, msg: PermissionAsked, ctx: &mut Self::Context) {
        let timeout = self.deps.runner.config().approval_timeout();
        let request_id = msg.request.request_id.clone();
        let timer = ctx.run_later(timeout, move |act, ctx| {
            if let Some(r) = act.approvals.time_out(&request_id, timeout) {
                act.publish(r, ctx);
            }
        });
        let request_id = msg.request.request_id.clone();
        let (token, state) = self
            .approvals
            .ask(msg.request, msg.control, msg.origin, timer);
        info!("Claude asks for a permission");
        self.deps.metrics.do_send(RecordMetric(Metric::Approval {
            outcome: crate::metrics::ApprovalOutcome::Asked,
            waited: std::time::Duration::ZERO,
        }));
        self.deps.approvals.do_send(ShowApproval {
            conversation_id: self.conversation.id,
            origin: msg.origin,
            request_id,
            token,
            state,
        });
    }
}

impl Handler<PermissionWithdrawn> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: PermissionWithdrawn, ctx: &mut Self::Context) {
        if let Some(r) = self.approvals.withdraw(&msg.request_id) {
            self.publish(r, ctx);
        }
    }
}

impl Handler<AnswerApproval> for ChannelActor {
    type Result = Result<(), ApprovalError>;

    #[instrument(skip_all, fields(channel_id = self.conversation.id))]
    fn handle(&mut self, msg: AnswerApproval, ctx: &mut Self::Context) -> Self::Result {
        let r = self
            .approvals
            .answer(&msg.request_id, &msg.token, msg.answer, &msg.by)?;
        self.publish(r, ctx);
        Ok(())
    }
}

impl Handler<EndWarmSession> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: EndWarmSession, _: &mut Self::Context) {
        // Between turns the process is here (a run waiting for its slot has not taken it yet).
        self.end_warm(msg.reason);
    }
}
