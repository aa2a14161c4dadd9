//! One run of a conversation: from its run slot to the reply, with the stale-session retry.
//! It owns everything it needs, so it runs as a future beside the channel actor.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use actix::{Addr, Recipient};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{instrument, warn};

use crate::claude::permission::PermissionRequest;
use crate::claude::stream_json::StreamEvent;
use crate::claude::{
    ClaudeRunner, CliCommand, LiveSession, RunError, RunReport, RunRequest, StopReason,
};
use crate::conversation::ConversationRef;
use crate::cost::CostUpdate;
use crate::frontend::{
    CommandOrigin, DeliverReply, Origin, ProgressStep, ReplyKind, ReplyTo, ShowProgress,
};
use crate::metrics::{Metric, RecordMetric, RunOutcome, SessionMetric};
use crate::store::{
    Conversation, LoadConversation, LoadRules, RecordRun, SessionStoreActor, StoreError,
};

use super::answer::{answer_text, first_line};
use super::relay::Relay;
use super::{PermissionAsked, PermissionWithdrawn};

/// What a run needs of the conversation's stored row: read from the store, or carried over
/// from the run just before it while that run's record is still being written.
#[derive(Debug, Clone, Default)]
pub(super) struct Prior {
    pub(super) session_id: Option<String>,
    /// `None` when nothing is stored yet.
    pub(super) project_dir: Option<PathBuf>,
    pub(super) session_cost_usd: f64,
    /// The session is a copy still to be made (`/claude fork`): resume it with `--fork-session`.
    pub(super) fork: bool,
}

impl From<&Conversation> for Prior {
    fn from(c: &Conversation) -> Self {
        Self {
            session_id: c.session_id.clone(),
            project_dir: Some(PathBuf::from(&c.project_dir)),
            session_cost_usd: c.session_cost_usd,
            fork: c.fork_pending,
        }
    }
}

/// What a late reply starts with.
pub const LATE_NOTE: &str =
    "(Answered late: this message arrived while the service was unavailable.)";

/// Everything one run needs, owned, so it can run as a future beside the actor.
pub(super) struct Job {
    pub(super) conversation: ConversationRef,
    pub(super) runner: ClaudeRunner,
    pub(super) store: Addr<SessionStoreActor>,
    pub(super) progress: Recipient<ShowProgress>,
    /// The message it answers (message id 0 for a command's run, which has none).
    pub(super) origin: Origin,
    /// A command's run answers the command instead.
    pub(super) answer_to: Option<CommandOrigin>,
    pub(super) prompt: String,
    /// Run this built-in CLI command instead of the prompt (`!compact`).
    pub(super) command: Option<CliCommand>,
    /// What the front end is shown while it runs.
    pub(super) relay: Relay,
    /// Its files, fetched when it runs.
    pub(super) attachments: Vec<crate::store::AttachmentMeta>,
    /// The images among them, for the turn's content blocks.
    pub(super) images: Vec<crate::files::Image>,
    /// Posted while the service was down: the reply says it is late.
    pub(super) late: bool,
    /// How it came: the answer to a schedule's run or an HTTP prompt says so.
    pub(super) via: crate::via::Via,
    /// In the inbox: its reply goes to the outbox.
    pub(super) stored: bool,
    /// The model chosen for the conversation from chat (else the channel's).
    pub(super) model: Option<String>,
    /// The permission mode in force.
    pub(super) permission_mode: crate::claude::PermissionMode,
    /// Where files in and out go.
    pub(super) files: crate::files::FilesConfig,
    /// Runs git for the thread's worktree.
    pub(super) git: crate::worktree::Git,
    /// The cap on live processes, and who may be asked to end for this run.
    pub(super) warm: super::WarmPool,
    pub(super) cancel: CancellationToken,
    /// Carried over from the run before, if its record is not written yet; else the store
    /// is read.
    pub(super) prior: Option<Prior>,
    /// The conversation's warm process, if it has one (`claude.live_sessions`).
    pub(super) live: Option<LiveSession>,
    /// Whether turns go to a live session (else one `claude -p` process per message).
    pub(super) live_mode: bool,
    /// Where Claude's permission requests, and their withdrawals, go: the channel actor.
    pub(super) asks: Recipient<PermissionAsked>,
    pub(super) withdrawn: Recipient<PermissionWithdrawn>,
    pub(super) metrics: Recipient<RecordMetric>,
}

/// How a job ended.
pub(super) enum JobEnd {
    /// Answered without running Claude (cancelled while waiting, store unreadable); the warm
    /// process, untouched.
    NotRun(Box<DeliverReply>, Option<LiveSession>),
    /// Claude ran; the reply goes out once the record is written.
    Ran(Box<Ran>),
    /// The account's usage limit refused the run (nothing recorded, nothing answered): the
    /// message waits until `resets_at` (if the CLI said), with the warm process.
    Limited {
        resets_at: Option<std::time::SystemTime>,
        live: Option<LiveSession>,
    },
}

/// A run that has ended, with the record to write and the reply to send after it.
pub(super) struct Ran {
    pub(super) record: RecordRun,
    /// The reply, cost included; a failed write adds a warning to it.
    pub(super) reply: DeliverReply,
    /// What the run leaves for the next one.
    pub(super) next: Prior,
    pub(super) outcome: RunOutcome,
    /// When it got its run slot.
    pub(super) started: Instant,
    /// The warm process after the turn, if it is still up.
    pub(super) live: Option<LiveSession>,
    /// Its message is in the inbox.
    pub(super) stored: bool,
}

impl Job {
    fn reply(&self, kind: ReplyKind, text: String, is_error: bool) -> DeliverReply {
        let to = self
            .answer_to
            .map_or(ReplyTo::Message(self.origin), ReplyTo::Command);
        DeliverReply::new(&self.conversation, to, kind, text, is_error)
    }

    #[instrument(skip_all, fields(channel_id = self.conversation.id.get(), message_id = self.origin.message_id.get()))]
    pub(super) async fn execute(self, permit: Option<OwnedSemaphorePermit>) -> JobEnd {
        let Some(permit) = permit else {
            let reply = self.reply(
                ReplyKind::Answer,
                "Cancelled before it started.".into(),
                true,
            );
            return JobEnd::NotRun(Box::new(reply), self.live);
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
        notes.extend(self.via.heading(&self.prompt));
        if self.late {
            notes.push(LATE_NOTE.to_string());
        }
        let cwd = match self.workdir(&mut notes).await {
            Ok(cwd) => cwd,
            Err(reply) => return JobEnd::NotRun(Box::new(reply), self.live),
        };
        self.fetch_attachments(&cwd, &mut notes).await;
        let resume = resume_from(&prior, &cwd, &mut notes);
        let mut req = RunRequest {
            conversation_id: id,
            prompt: self.prompt.clone(),
            cwd: cwd.clone(),
            project_dir: profile.project_dir.clone(),
            resume,
            model: self.model.clone().or_else(|| profile.model.clone()),
            system_prompt: profile.system_prompt.clone(),
            tools: profile.tools.clone(),
            disallowed_tools: profile.disallowed_tools.clone(),
            permission_mode: Some(self.permission_mode),
            allowed_tools: Vec::new(),
            outbox: self.outbox_dir(&cwd, &mut notes).await,
            fork: prior.fork,
            stream: self.relay.stream,
            command: self.command,
        };
        if self.origin.message_id.get() != 0 {
            self.progress.do_send(ShowProgress {
                conversation_id: id,
                origin: self.origin,
                step: ProgressStep::Started,
            });
        }
        let mut result = self.attempt(&req).await;
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
            req.fork = false;
            if !self.cancel.is_cancelled() {
                result = self.attempt(&req).await;
            }
        }
        drop(permit);
        let (files, file_notes) = if req.outbox.is_some() {
            self.collect_outbox(&cwd).await
        } else {
            (Vec::new(), Vec::new())
        };
        if let Some(resets_at) = result.as_ref().ok().and_then(RunReport::usage_limit) {
            warn!(resets_at = ?resets_at, "the account's usage limit refused the run; the message waits");
            return JobEnd::Limited {
                resets_at,
                live: self.live,
            };
        }
        let mut ran = self.finish(req, &prior, &notes, &result, started);
        for note in file_notes {
            ran.reply.text.push_str("\n\n");
            ran.reply.text.push_str(&note);
        }
        ran.reply.files = files;
        JobEnd::Ran(Box::new(ran))
    }

    /// Where this run works: the channel's project directory, or — for a thread of a channel
    /// with `thread_worktrees` — its place in the thread's own git worktree, made on its first
    /// run (and the user told where). A worktree that cannot be made stops the run: two threads
    /// must never share a checkout.
    async fn workdir(&self, notes: &mut Vec<String>) -> Result<PathBuf, DeliverReply> {
        let profile = &self.conversation.profile;
        if !(self.conversation.is_thread() && profile.thread_worktrees) {
            return Ok(profile.project_dir.clone());
        }
        let (git, project, root, id) = (
            self.git.clone(),
            profile.project_dir.clone(),
            profile.worktree_root.clone(),
            self.conversation.id,
        );
        let ensure = move || crate::worktree::ensure(&git, &project, root.as_deref(), id);
        let made = tokio::task::spawn_blocking(ensure)
            .await
            .map_err(|e| crate::worktree::WorktreeError::Git(std::io::Error::other(e)))
            .and_then(|r| r);
        match made {
            Ok(wt) => {
                if wt.created {
                    notes.push(format!(
                        "This thread works in its own git worktree: `{}`, on branch `{}`.",
                        wt.cwd.display(),
                        wt.branch
                    ));
                }
                Ok(wt.cwd)
            }
            Err(e) => {
                warn!(error = %e, "could not make the thread's git worktree");
                Err(self.reply(
                    ReplyKind::Failure,
                    format!("This thread's git worktree could not be made ({e}), so the message was not run."),
                    true,
                ))
            }
        }
    }

    /// One run of `req`: a turn of the warm process (started, resuming, if there is none or it
    /// works on another session), or a one-shot `claude -p` process.
    async fn attempt(&mut self, req: &RunRequest) -> Result<RunReport, RunError> {
        if !self.live_mode {
            return self.runner.run(req, self.forwarder(), &self.cancel).await;
        }
        let reusable = self
            .live
            .as_mut()
            .is_some_and(|s| s.is_alive() && s.session_id() == req.resume.as_deref());
        let mut live = match (reusable, self.live.take()) {
            (true, Some(s)) => s,
            (_, old) => {
                if let Some(mut old) = old {
                    let crashed = !old.is_alive();
                    self.metrics
                        .do_send(RecordMetric(Metric::Session(if crashed {
                            SessionMetric::EndedCrashed
                        } else {
                            SessionMetric::EndedReplaced
                        })));
                    old.end();
                }
                let mut spawn = req.clone();
                spawn.allowed_tools = self.stored_rules().await;
                // A place under `claude.max_warm_sessions` first: the cap holds at every moment.
                let slot = tokio::select! {
                    slot = self.warm.acquire(self.conversation.id) => slot,
                    () = self.cancel.cancelled() => {
                        return Ok(RunReport::cancelled_before_start());
                    }
                };
                // fork and exec block: not on the actors' thread.
                let runner = self.runner.clone();
                let live =
                    tokio::task::spawn_blocking(move || LiveSession::spawn(&runner, &spawn, slot))
                        .await
                        .map_err(|e| RunError::Wait(std::io::Error::other(e)))??;
                self.metrics
                    .do_send(RecordMetric(Metric::Session(SessionMetric::Spawned {
                        resumed: req.resume.is_some(),
                    })));
                live
            }
        };
        let (asks, withdrawn, relay) = (
            self.asks.clone(),
            self.withdrawn.clone(),
            self.relay.clone(),
        );
        let (origin, control) = (self.origin, live.control());
        let on_event = |event: &StreamEvent| match event {
            StreamEvent::ControlRequest {
                request_id,
                request,
            } => {
                if let (Some(request), Some(control)) =
                    (PermissionRequest::parse(request_id, request), &control)
                {
                    asks.do_send(PermissionAsked {
                        request,
                        control: control.clone(),
                        origin,
                    });
                } else {
                    warn!(%request_id, "a control request the coordinator does not answer");
                }
            }
            StreamEvent::ControlCancel { request_id } => withdrawn.do_send(PermissionWithdrawn {
                request_id: request_id.clone(),
            }),
            other => relay.relay(other),
        };
        let user_line = match self.command {
            Some(command) => ClaudeRunner::command_line(command),
            None => self.runner.user_line_with(&self.prompt, &self.images),
        };
        let timeout = self.runner.config().timeout();
        let result = live
            .turn(user_line, on_event, &self.cancel, timeout, req)
            .await;
        if live.is_alive() {
            self.live = Some(live);
        } else {
            self.metrics
                .do_send(RecordMetric(Metric::Session(SessionMetric::EndedCrashed)));
        }
        result
    }

    /// The conversation's stored "always" rules, passed again at every spawn. A store that
    /// cannot be read only means Claude asks again.
    async fn stored_rules(&self) -> Vec<String> {
        match self
            .store
            .send(LoadRules {
                id: self.conversation.id,
            })
            .await
        {
            Ok(Ok(rules)) => rules,
            Ok(Err(e)) => {
                warn!(error = %e, "could not read the conversation's permission rules");
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }

    /// Passes the run's events on to the progress display (called on the runner's thread).
    fn forwarder(&self) -> impl FnMut(&StreamEvent) + Send + 'static {
        let relay = self.relay.clone();
        move |event| relay.relay(event)
    }

    fn finish(
        self,
        req: RunRequest,
        prior: &Prior,
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
                answer_text(report, self.runner.config().timeout_secs, self.live_mode),
                report.is_error(),
            ),
            Err(e) => (
                ReplyKind::Failure,
                format!("Claude could not answer: {e}"),
                true,
            ),
        };
        let report = result.as_ref().ok();
        let mut notes = notes.to_vec();
        if report.is_some_and(|r| r.media_removed > 0) {
            notes.push(
                "⚠️ Claude's API could not process an image in this conversation, so it was removed \
                 and Claude answered without it. Send it again in another format (PNG or JPEG) if it matters."
                    .into(),
            );
        }
        // An image the API refuses, which this CLI would send again with every turn: the next
        // message starts a new session rather than fail the same way until `!reset`.
        let stuck = report.is_some_and(RunReport::image_stuck);
        if stuck {
            warn!("the API refuses an image of the session; the next message starts a new one");
            notes.push(
                "⚠️ Claude's API could not process an image in this conversation, and this version of \
                 the CLI would send it again with every message, so the next message starts a new Claude \
                 session (this one can still be resumed, but it will fail the same way)."
                    .into(),
            );
        }
        // The session to keep: the one the CLI reported, else the one we resumed (None after a
        // stale session, so the next message does not try it again).
        let session_id = report
            .and_then(|r| r.session_id.clone())
            .or_else(|| req.resume.clone())
            .filter(|_| !stuck);
        // The one place a run's cost is worked out: for the reply, the record and the next run.
        // A copy's reported cost goes on from its original's (o_fork_live): the same session
        // as far as the sum is concerned.
        let before = if req.fork {
            session_id.as_deref()
        } else {
            prior.session_id.as_deref()
        };
        let cost = CostUpdate::after(
            report.and_then(|r| r.cost),
            before,
            prior.session_cost_usd,
            session_id.as_deref(),
        );
        let next = Prior {
            session_id: session_id.clone(),
            project_dir: Some(req.cwd.clone()),
            session_cost_usd: cost.session_usd,
            fork: false,
        };
        let record = RecordRun {
            id: self.conversation.id,
            name: self.conversation.name.clone(),
            profile_id: self.conversation.profile.id,
            project_dir: req.cwd,
            model: report.and_then(|r| r.model.clone()),
            session_id: session_id.clone(),
            cost,
            error: is_error.then(|| first_line(&body)),
            reply: None,
            context: report.and_then(|r| r.context).map(|c| (c.tokens, c.window)),
            author: Some(
                self.answer_to
                    .map_or(self.origin.author_id, |c| c.author_id),
            ),
        };
        let mut text = notes.join("\n");
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&body);
        let mut reply = self.reply(kind, text, is_error);
        reply.session_id = session_id;
        reply.cost_usd = cost.run_usd;
        Ran {
            record,
            reply,
            next,
            outcome,
            started,
            live: self.live,
            stored: self.stored,
        }
    }

    fn store_unavailable(self, e: &StoreError) -> JobEnd {
        warn!(error = %e, "session store unavailable; message not run");
        let reply = self.reply(
            ReplyKind::Failure,
            format!("The session store is unavailable ({e}). Your message was not sent to Claude; please try again."),
            true,
        );
        JobEnd::NotRun(Box::new(reply), self.live)
    }
}

/// The session a run resumes: the stored one when it ran in this directory, or a fork's
/// original from wherever it ran (the CLI finds it: `c_resume_other_cwd`); a moved project
/// starts anew, and the user is told.
fn resume_from(prior: &Prior, cwd: &Path, notes: &mut Vec<String>) -> Option<String> {
    match (&prior.session_id, &prior.project_dir) {
        (Some(s), Some(dir)) if dir == cwd => Some(s.clone()),
        (Some(s), _) if prior.fork => Some(s.clone()),
        (Some(_), Some(dir)) => {
            notes.push(format!(
                "The project directory changed from `{}` to `{}`, so this message starts a new conversation.",
                dir.display(),
                cwd.display()
            ));
            None
        }
        _ => None,
    }
}
