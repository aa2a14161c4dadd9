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

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use actix::prelude::*;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

use crate::frontend::{DeliverReply, Origin, ProgressStep, ReplyKind, ShowProgress};
use crate::metrics::{Metric, RecordMetric, RunOutcome};
use crate::runner::{ClaudeRunner, RunError, RunReport, RunRequest, StopReason};
use crate::store::{
    Conversation, CostUpdate, LoadConversation, RecordRun, ResetConversation, SessionStoreActor,
    StoreError,
};
use crate::stream_json::StreamEvent;

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// Handle one message from a user: a prompt for Claude, or a coordinator command.
/// Exactly one [`DeliverReply`] answers it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SubmitMessage {
    /// Where it came from.
    pub origin: Origin,
    /// What the user wrote, verbatim.
    pub text: String,
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
}

/// Stop accepting messages (new ones, and those queued, are answered "not run") and answer
/// when the run in flight, if any, has finished and been recorded. For shutdown.
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

/// Stop this actor if it has nothing running or queued. Answers whether it stopped.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct StopIfIdle;

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

/// A `[[channel]]` from the settings: a Discord channel bound to a project directory.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChannelProfile {
    /// Discord channel id.
    pub id: u64,
    /// Human name, used by `console --channel NAME` and in logs.
    pub name: String,
    /// The directory `claude` runs in.
    pub project_dir: PathBuf,
    /// `--model` for this channel (else `claude.model`).
    #[serde(default)]
    pub model: Option<String>,
    /// `--system-prompt` for this channel.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// `--tools`: the built-in tools Claude may use here (absent = the CLI's default set).
    #[serde(default)]
    pub tools: Option<Vec<String>>,
    /// `--disallowedTools`.
    #[serde(default)]
    pub disallowed_tools: Vec<String>,
    /// Only answer messages that mention the bot (the mention is removed from the prompt).
    #[serde(default)]
    pub require_mention: bool,
    /// Users allowed here, replacing `access.allowed_users` for this channel.
    #[serde(default)]
    pub allowed_users: Option<Vec<u64>>,
    /// Roles allowed here, replacing `access.allowed_roles` for this channel.
    #[serde(default)]
    pub allowed_roles: Option<Vec<u64>>,
}

/// Which conversation a message belongs to: a configured channel, or a thread under one
/// (its own id and session, the parent's profile).
#[derive(Debug, Clone)]
pub struct ConversationRef {
    /// Channel or thread id.
    pub id: u64,
    /// Human name; `parent/thread` for threads.
    pub name: String,
    /// The channel settings that apply.
    pub profile: Arc<ChannelProfile>,
}

impl ConversationRef {
    /// The conversation of a configured channel itself.
    pub fn channel(profile: Arc<ChannelProfile>) -> Self {
        Self {
            id: profile.id,
            name: profile.name.clone(),
            profile,
        }
    }
}

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
        format!(
            "{activity}; {} waiting. Conversation `{}`: {session}, {} message(s), ${:.4} spent.",
            self.queued, self.name, self.message_count, self.total_cost_usd
        )
    }
}

/// A user message waiting its turn.
#[derive(Debug)]
struct Pending {
    origin: Origin,
    prompt: String,
}

/// What a run needs of the conversation's stored row: read from the store, or carried over
/// from the run just before it while that run's record is still being written.
#[derive(Debug, Clone, Default)]
struct Prior {
    session_id: Option<String>,
    /// `None` when nothing is stored yet.
    project_dir: Option<PathBuf>,
    session_cost_usd: f64,
}

impl From<&Conversation> for Prior {
    fn from(c: &Conversation) -> Self {
        Self {
            session_id: c.session_id.clone(),
            project_dir: Some(PathBuf::from(&c.project_dir)),
            session_cost_usd: c.session_cost_usd,
        }
    }
}

/// The message being worked on.
struct Current {
    origin: Origin,
    accepted_at: SystemTime,
    started_at: Option<SystemTime>,
    cancel: CancellationToken,
    cancel_reason: CancelReason,
}

/// What the coordinator itself answers, rather than Claude.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Status,
    Cancel,
    Reset,
    Help,
}

impl Command {
    fn parse(text: &str, prefix: &str) -> Option<Self> {
        if prefix.is_empty() {
            return None;
        }
        match text
            .trim()
            .strip_prefix(prefix)?
            .to_ascii_lowercase()
            .as_str()
        {
            "status" => Some(Self::Status),
            "cancel" | "stop" => Some(Self::Cancel),
            "reset" | "new" => Some(Self::Reset),
            "help" => Some(Self::Help),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The actor
// ---------------------------------------------------------------------------------------------

/// One conversation with Claude. Created by [`crate::registry::ChannelRegistry`].
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
        }
    }

    fn reply(&self, origin: Origin, kind: ReplyKind, text: String, is_error: bool) {
        self.deps.replies.do_send(DeliverReply {
            conversation_id: self.conversation.id,
            conversation: self.conversation.name.clone(),
            origin,
            kind,
            text,
            is_error,
            session_id: self.record.as_ref().and_then(|r| r.session_id.clone()),
            cost_usd: 0.0,
        });
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
        }
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

    fn command(&mut self, cmd: &Command, origin: Origin, ctx: &mut Context<Self>) {
        let text = match cmd {
            Command::Status => self.status().describe(),
            Command::Cancel => {
                if self.cancel_current(CancelReason::User) {
                    "Cancelling the current run.".to_string()
                } else {
                    "Nothing is running.".to_string()
                }
            }
            Command::Help => {
                let p = &self.deps.command_prefix;
                format!(
                    "Messages here go to Claude Code, one at a time (working in `{}`). \
                     Commands: `{p}status` (what is happening), `{p}cancel` (stop the current run), \
                     `{p}reset` (start a new conversation).",
                    self.conversation.profile.project_dir.display()
                )
            }
            Command::Reset => {
                if self.is_idle() {
                    self.reset(origin, ctx);
                    return;
                }
                let p = &self.deps.command_prefix;
                format!("A run is in progress; `{p}cancel` it first, then `{p}reset`.")
            }
        };
        self.reply(origin, ReplyKind::Command, text, false);
    }

    fn reset(&mut self, origin: Origin, ctx: &mut Context<Self>) {
        let reset = self.deps.store.send(ResetConversation {
            id: self.conversation.id,
        });
        // Wait: no run may start from a message that arrives before the reset is stored.
        ctx.wait(reset.into_actor(self).map(move |res, act, _| {
            let (text, is_error) = match res.map_err(StoreError::from).and_then(|r| r) {
                Ok(_) => {
                    if let Some(r) = act.record.as_mut() {
                        r.session_id = None;
                        r.session_cost_usd = 0.0;
                    }
                    ("Started a new conversation: the next message begins a fresh Claude session.".to_string(), false)
                }
                Err(e) => (format!("Could not reset the conversation: {e}"), true),
            };
            act.reply(origin, ReplyKind::Command, text, is_error);
        }));
    }

    /// Starts the next queued message, if nothing is running.
    fn start_next(&mut self, ctx: &mut Context<Self>) {
        if self.current.is_some() {
            return;
        }
        let Some(next) = self.queue.pop_front() else {
            self.notify_if_idle();
            return;
        };
        self.observe_queue();
        let cancel = CancellationToken::new();
        self.current = Some(Current {
            origin: next.origin,
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
            cancel: cancel.clone(),
            prior: self.carry.clone(),
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
            .then(move |permit, act, _| {
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
            .map(|end, act, ctx| {
                let current = act.current.take();
                match end {
                    JobEnd::NotRun(reply) => act.deps.replies.do_send(reply),
                    JobEnd::Ran(mut ran) => {
                        let shutdown =
                            current.is_some_and(|c| c.cancel_reason == CancelReason::Shutdown);
                        if shutdown && ran.outcome == RunOutcome::Cancelled {
                            ran.reply.text = "Stopped: the service is restarting. The conversation is saved; please send this message again in a minute.".into();
                        }
                        act.carry = Some(ran.next.clone());
                        act.unsaved.push_back(*ran);
                    }
                }
                // The next run first: its spawn is on the critical path, the save is not.
                act.start_next(ctx);
                act.save_next(ctx);
            });
        ctx.spawn(fut);
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
            record,
            mut reply,
            prior,
            outcome,
            started,
            ..
        } = ran;
        let cost = record.cost;
        let session_id = record.session_id.clone();
        let write = self.deps.store.send(record);
        ctx.spawn(write.into_actor(self).map(move |res, act, ctx| {
            act.saving = false;
            match res.map_err(StoreError::from).and_then(|r| r) {
                Ok(saved) => {
                    reply.cost_usd = saved.run_cost_usd;
                    act.record = Some(saved.conversation);
                }
                Err(e) => {
                    warn!(channel_id = act.conversation.id, error = %e, "could not save the session");
                    let _ = write!(
                        reply.text,
                        "\n\nWarning: this conversation could not be saved ({e}); the next message may not continue it."
                    );
                    reply.cost_usd = CostUpdate::after(
                        cost,
                        prior.session_id.as_deref(),
                        prior.session_cost_usd,
                        session_id.as_deref(),
                    )
                    .run_usd;
                }
            }
            act.deps.metrics.do_send(RecordMetric(Metric::RunFinished {
                outcome,
                latency: started.elapsed(),
                cost_usd: reply.cost_usd,
            }));
            act.deps.replies.do_send(reply);
            act.save_next(ctx);
        }));
    }
}

impl Actor for ChannelActor {
    type Context = Context<Self>;

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
    }
}

impl Handler<SubmitMessage> for ChannelActor {
    type Result = ();

    #[instrument(skip_all, fields(channel_id = self.conversation.id, message_id = msg.origin.message_id))]
    fn handle(&mut self, msg: SubmitMessage, ctx: &mut Self::Context) {
        if let Some(cmd) = Command::parse(&msg.text, &self.deps.command_prefix) {
            self.command(&cmd, msg.origin, ctx);
            return;
        }
        if self.draining {
            self.reply(
                msg.origin,
                ReplyKind::Failure,
                SHUTDOWN_NOT_RUN.into(),
                true,
            );
            return;
        }
        if self.current.is_some() && self.queue.len() >= self.deps.queue_limit {
            let waiting = self.queue.len();
            info!(waiting, "queue full; message refused");
            self.reply(
                msg.origin,
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
        self.queue.push_back(Pending {
            origin: msg.origin,
            prompt: msg.text,
        });
        self.observe_queue();
        if self.current.is_some() {
            self.deps.progress.do_send(ShowProgress {
                conversation_id: self.conversation.id,
                origin: msg.origin,
                step: ProgressStep::Queued {
                    position: self.queue.len(),
                },
            });
        }
        self.start_next(ctx);
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
        for pending in std::mem::take(&mut self.queue) {
            self.reply(
                pending.origin,
                ReplyKind::Failure,
                SHUTDOWN_NOT_RUN.into(),
                true,
            );
        }
        self.observe_queue();
        if self.is_idle() {
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
            ctx.stop();
        }
        idle
    }
}

// ---------------------------------------------------------------------------------------------
// One run
// ---------------------------------------------------------------------------------------------

/// Everything one run needs, owned, so it can run as a future beside the actor.
struct Job {
    conversation: ConversationRef,
    runner: ClaudeRunner,
    store: Addr<SessionStoreActor>,
    progress: Recipient<ShowProgress>,
    origin: Origin,
    prompt: String,
    cancel: CancellationToken,
    /// Carried over from the run before, if its record is not written yet; else the store
    /// is read.
    prior: Option<Prior>,
}

/// How a job ended.
enum JobEnd {
    /// Answered without running Claude (cancelled while waiting, store unreadable).
    NotRun(DeliverReply),
    /// Claude ran; the reply goes out once the record is written.
    Ran(Box<Ran>),
}

/// A run that has ended, with the record to write and the reply to send after it.
struct Ran {
    record: RecordRun,
    /// The reply, without the store's outcome (cost, or a warning).
    reply: DeliverReply,
    /// What the run started from, for its cost should the record not be written.
    prior: Prior,
    /// What the run leaves for the next one.
    next: Prior,
    outcome: RunOutcome,
    /// When it got its run slot.
    started: Instant,
}

impl Job {
    fn reply(&self, kind: ReplyKind, text: String, is_error: bool) -> DeliverReply {
        DeliverReply {
            conversation_id: self.conversation.id,
            conversation: self.conversation.name.clone(),
            origin: self.origin,
            kind,
            text,
            is_error,
            session_id: None,
            cost_usd: 0.0,
        }
    }

    #[instrument(skip_all, fields(channel_id = self.conversation.id, message_id = self.origin.message_id))]
    async fn execute(self, permit: Option<OwnedSemaphorePermit>) -> JobEnd {
        let Some(permit) = permit else {
            return JobEnd::NotRun(self.reply(
                ReplyKind::Answer,
                "Cancelled before it started.".into(),
                true,
            ));
        };
        self.run_with_slot(permit, Instant::now()).await
    }

    /// Load, run (with the stale-session retry). The run slot is given back as soon as the
    /// CLI has exited: `max_concurrent_runs` limits CLI processes, not store writes.
    async fn run_with_slot(mut self, permit: OwnedSemaphorePermit, started: Instant) -> JobEnd {
        let id = self.conversation.id;
        let prior = match self.prior.take() {
            Some(prior) => prior,
            None => match self.store.send(LoadConversation { id }).await {
                Ok(Ok(c)) => c.as_ref().map(Prior::from).unwrap_or_default(),
                Ok(Err(e)) => return self.store_unavailable(&e),
                Err(e) => return self.store_unavailable(&StoreError::from(e)),
            },
        };
        let profile = Arc::clone(&self.conversation.profile);
        let mut notes = Vec::new();
        let resume = match (&prior.session_id, &prior.project_dir) {
            (Some(s), Some(dir)) if *dir == profile.project_dir => Some(s.clone()),
            (Some(_), Some(dir)) => {
                notes.push(format!(
                    "The project directory changed from `{}` to `{}`, so this message starts a new conversation.",
                    dir.display(),
                    profile.project_dir.display()
                ));
                None
            }
            _ => None,
        };
        let mut req = RunRequest {
            conversation_id: id,
            prompt: self.prompt.clone(),
            cwd: profile.project_dir.clone(),
            resume,
            model: profile.model.clone(),
            system_prompt: profile.system_prompt.clone(),
            tools: profile.tools.clone(),
            disallowed_tools: profile.disallowed_tools.clone(),
        };
        self.progress.do_send(ShowProgress {
            conversation_id: id,
            origin: self.origin,
            step: ProgressStep::Started,
        });
        let mut result = self.runner.run(&req, self.forwarder(), &self.cancel).await;
        if let Err(RunError::UnknownSession {
            session_id,
            message,
        }) = &result
        {
            warn!(%session_id, %message, "stored session is gone; starting a new one");
            notes.push(format!(
                "The earlier conversation (session {session_id}) could not be resumed, so this message starts a new one."
            ));
            req.resume = None;
            if !self.cancel.is_cancelled() {
                result = self.runner.run(&req, self.forwarder(), &self.cancel).await;
            }
        }
        drop(permit);
        JobEnd::Ran(Box::new(self.finish(req, prior, &notes, &result, started)))
    }

    /// Passes tool use and retries on to the progress display (called on the runner's thread).
    fn forwarder(&self) -> impl FnMut(&StreamEvent) + Send + 'static {
        let progress = self.progress.clone();
        let (conversation_id, origin) = (self.conversation.id, self.origin);
        move |event| {
            let step = match event {
                StreamEvent::ToolUse(t) => ProgressStep::Tool(t.summary()),
                StreamEvent::Retry {
                    attempt,
                    error_status,
                    ..
                } => ProgressStep::Retrying {
                    attempt: *attempt,
                    status: *error_status,
                },
                _ => return,
            };
            progress.do_send(ShowProgress {
                conversation_id,
                origin,
                step,
            });
        }
    }

    fn finish(
        self,
        req: RunRequest,
        prior: Prior,
        notes: &[String],
        result: &Result<RunReport, RunError>,
        started: Instant,
    ) -> Ran {
        let outcome = match result {
            Ok(r) => match r.stopped {
                Some(StopReason::TimedOut) => RunOutcome::TimedOut,
                Some(StopReason::Cancelled) => RunOutcome::Cancelled,
                None if r.is_error() => RunOutcome::Failed,
                None => RunOutcome::Succeeded,
            },
            Err(_) => RunOutcome::Failed,
        };
        let (kind, body, is_error) = match result {
            Ok(report) => (
                ReplyKind::Answer,
                answer_text(report, self.runner.config().timeout_secs),
                report.is_error(),
            ),
            Err(e) => (
                ReplyKind::Failure,
                format!("Claude could not answer: {e}"),
                true,
            ),
        };
        let report = result.as_ref().ok();
        // The session to keep: the one the CLI reported, else the one we resumed (None after a
        // stale session, so the next message does not try it again).
        let session_id = report
            .and_then(|r| r.session_id.clone())
            .or_else(|| req.resume.clone());
        let cost = report.and_then(|r| r.cost);
        let next = Prior {
            session_id: session_id.clone(),
            project_dir: Some(req.cwd.clone()),
            session_cost_usd: CostUpdate::after(
                cost,
                prior.session_id.as_deref(),
                prior.session_cost_usd,
                session_id.as_deref(),
            )
            .session_usd,
        };
        let record = RecordRun {
            id: self.conversation.id,
            name: self.conversation.name.clone(),
            project_dir: req.cwd,
            model: report.and_then(|r| r.model.clone()),
            session_id: session_id.clone(),
            cost,
            error: is_error.then(|| first_line(&body)),
        };
        let mut text = notes.join("\n");
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&body);
        let mut reply = self.reply(kind, text, is_error);
        reply.session_id = session_id;
        Ran {
            record,
            reply,
            prior,
            next,
            outcome,
            started,
        }
    }

    fn store_unavailable(&self, e: &StoreError) -> JobEnd {
        warn!(error = %e, "session store unavailable; message not run");
        JobEnd::NotRun(self.reply(
            ReplyKind::Failure,
            format!("The session store is unavailable ({e}). Your message was not sent to Claude; please try again."),
            true,
        ))
    }
}

/// The user-facing text of a run that produced a report.
fn answer_text(report: &RunReport, timeout_secs: u64) -> String {
    match report.stopped {
        Some(StopReason::Cancelled) => return "Cancelled.".into(),
        Some(StopReason::TimedOut) => {
            return format!("Timed out after {timeout_secs} s; the run was stopped.")
        }
        None => {}
    }
    let Some(result) = &report.result else {
        return format!("Claude ended without a result ({}).", report.exit);
    };
    let mut text = result.text();
    if text.trim().is_empty() {
        text = if result.is_error {
            format!("Claude reported an error ({}).", result.subtype)
        } else {
            "(Claude returned an empty reply.)".into()
        };
    }
    if !result.permission_denials.is_empty() {
        let _ = write!(
            text,
            "\n\n(Refused by the permission mode: {}.)",
            result.permission_denials.join(", ")
        );
    }
    text
}

fn first_line(text: &str) -> String {
    crate::stream_json::truncate_chars(text.lines().next().unwrap_or_default(), 200)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_need_the_prefix_and_a_known_name() {
        assert_eq!(Command::parse("!status", "!"), Some(Command::Status));
        assert_eq!(Command::parse("  !Cancel ", "!"), Some(Command::Cancel));
        assert_eq!(Command::parse("!important: fix the build", "!"), None);
        assert_eq!(Command::parse("status", "!"), None);
        assert_eq!(Command::parse("!status", ""), None);
    }
}
