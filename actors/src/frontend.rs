//! The edges between a front end (the console, the Discord gateway) and the core: what a front
//! end sends in ([`SubmitMessage`], [`RunCommand`], [`CancelRun`], `channel::GetStatus`,
//! [`AnswerApproval`] — each travels unchanged to the conversation's channel actor), what it gets
//! back ([`DeliverReply`], [`ShowProgress`], [`ShowApproval`]), and where a message came from.
//!
//! Channel actors hold the outbound edges as `Recipient`s, so any front end can receive them;
//! [`ReplySink`] is the one for the console, the tests and the benchmark. Every routed message
//! produces exactly one [`DeliverReply`] that answers it (and at most a few of kind
//! [`ReplyKind::Notice`], which do not); [`ShowProgress`] is optional decoration while a run is
//! in flight.

use actix::{Actor, Addr, Context, Handler, Message};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::conversation::ConversationRef;
use crate::files::AttachmentMeta;
use crate::ids::{ChannelId, CommandId, ConversationId, MessageId, ScheduleId, UserId};

/// A user's message for its conversation: a prompt for Claude, or a `!` command. The front end
/// sends it to the registry, which hands this same message to the conversation's channel actor
/// (starting one if needed). Exactly one [`DeliverReply`] answers it; a prompt is written to the
/// inbox before it is queued (a copy of one already there is dropped).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SubmitMessage {
    /// The conversation it belongs to.
    pub conversation: ConversationRef,
    /// Where it came from.
    pub origin: Origin,
    /// What the user wrote, verbatim.
    pub text: String,
    /// Its files (metadata).
    pub attachments: Vec<AttachmentMeta>,
    /// Posted while the service was down (found by catch-up), or queued over a restart: the
    /// reply says it is late.
    pub late: bool,
    /// Whether it is kept in the inbox (and its reply in the outbox).
    pub inbox: Durability,
    /// The front end found the author an approver here (`!mode`, `!rules clear`).
    pub approver: bool,
    /// How it came: a chat message, a schedule's run, a prompt over HTTP.
    pub via: crate::via::Via,
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

/// Run a coordinator command in a conversation (a `/claude` application command; the `!`
/// commands arrive as [`SubmitMessage`] text and are parsed by the channel). The registry hands
/// it to the conversation's channel actor; exactly one [`DeliverReply`] of kind
/// [`ReplyKind::Command`] answers it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RunCommand {
    /// The conversation it belongs to.
    pub conversation: ConversationRef,
    /// Where it came from.
    pub origin: CommandOrigin,
    /// What to do.
    pub command: Command,
    /// The front end found the user to be an approver here (`mode`, `rules clear`).
    pub approver: bool,
}

/// Stop the run in flight in a conversation (SIGINT to the CLI, SIGKILL to its group if it
/// lingers); queued messages stay queued. Answers whether there was a run to cancel (`false`
/// too when the conversation has no live actor).
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct CancelRun {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Why; the user is told.
    pub reason: CancelReason,
    /// Only if the run in flight answers this message (a Stop button on an older run's progress
    /// message must not stop a later one).
    pub message_id: Option<MessageId>,
}

/// Why a run is cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// A user asked (`!cancel`, the Stop button).
    User,
    /// A newer message runs now instead (*Interrupt and run this now*, or the channel's
    /// `while_busy = "interrupt"`).
    Superseded,
    /// The service is shutting down and the grace period is over.
    Shutdown,
}

/// Run a waiting message now (*Interrupt and run this now* on its "queued" notice): it goes to
/// the front of the queue and the run in flight is interrupted. Answers whether it was waiting
/// (`false` too when the conversation has no live actor).
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct RunNow {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The waiting message.
    pub message_id: MessageId,
    /// Who asked (its author or an approver: the front end checked).
    pub by: UserId,
}

/// What the coordinator itself answers, rather than Claude: one implementation for the `!`
/// commands and the `/claude` subcommands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// What the conversation is doing.
    Status,
    /// Stop the run in flight.
    Cancel,
    /// A new Claude session.
    New,
    /// The "always" rules.
    Rules,
    /// Forget the "always" rules (approvers).
    RulesClear,
    /// Run again the message a stop interrupted.
    Retry,
    /// The commands.
    Help,
    /// What this conversation, its channel and today cost.
    Usage,
    /// This conversation's sessions.
    Sessions,
    /// Switch back to one of this conversation's sessions.
    Resume(String),
    /// Show (`None`) or set the model for this conversation.
    Model(Option<String>),
    /// Show (`None`) or set the permission mode for this conversation (approvers, where the
    /// channel allows it).
    Mode(Option<String>),
    /// Start a thread from a copy of this conversation (`/claude fork`: Discord makes the
    /// `thread` first; without one there is nothing to fork into).
    Fork {
        /// The thread's name.
        name: Option<String>,
        /// The thread made for it.
        thread: Option<ChannelId>,
    },
    /// The command that continues this conversation in a terminal.
    Handoff,
    /// How full the context window is.
    Context,
    /// Compact the conversation (the CLI's `/compact`).
    Compact,
    /// The spend and message limits.
    Limits,
    /// Lift a person's own limits until the end of the day (approvers).
    LiftLimits(UserId),
    /// The conversation's schedules (changing them: approvers).
    Schedule(ScheduleAction),
}

/// What `schedule` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleAction {
    /// Run `prompt` at the times of the cron expression `cron`.
    Add {
        /// The cron expression.
        cron: String,
        /// The prompt.
        prompt: String,
    },
    /// This conversation's schedules.
    List,
    /// Delete one.
    Remove(ScheduleId),
    /// Stop one's runs.
    Pause(ScheduleId),
    /// Start one's runs again.
    Resume(ScheduleId),
}

impl Command {
    /// Whether only approvers may run it.
    pub fn needs_approver(&self) -> bool {
        matches!(
            self,
            Self::RulesClear
                | Self::Mode(Some(_))
                | Self::LiftLimits(_)
                | Self::Schedule(
                    ScheduleAction::Add { .. }
                        | ScheduleAction::Remove(_)
                        | ScheduleAction::Pause(_)
                        | ScheduleAction::Resume(_)
                )
        )
    }
}

/// Where a message came from, so the answer can go back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Origin {
    /// The Discord channel (or thread) to answer in; the conversation's own for the console.
    pub channel_id: ChannelId,
    /// The message being answered (the console numbers its input lines).
    pub message_id: MessageId,
    /// Who wrote it.
    pub author_id: UserId,
}

/// Where a command came from, so the answer can go back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CommandOrigin {
    /// The Discord channel (or thread) it was run in; the conversation's own for the console.
    pub channel_id: ChannelId,
    /// The invocation (a Discord interaction, whose deferred response the answer edits).
    pub command_id: CommandId,
    /// Who ran it.
    pub author_id: UserId,
}

/// What a reply answers: a message, or a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyTo {
    /// A message ([`SubmitMessage`]).
    Message(Origin),
    /// A command ([`RunCommand`]).
    Command(CommandOrigin),
}

impl ReplyTo {
    /// Where the answer goes.
    pub fn channel_id(self) -> ChannelId {
        match self {
            Self::Message(o) => o.channel_id,
            Self::Command(o) => o.channel_id,
        }
    }

    /// Who is answered.
    pub fn author_id(self) -> UserId {
        match self {
            Self::Message(o) => o.author_id,
            Self::Command(o) => o.author_id,
        }
    }

    /// The message answered, if a message is.
    pub fn message_id(self) -> Option<MessageId> {
        match self {
            Self::Message(o) => Some(o.message_id),
            Self::Command(_) => None,
        }
    }
}

impl From<Origin> for ReplyTo {
    fn from(o: Origin) -> Self {
        Self::Message(o)
    }
}

impl From<CommandOrigin> for ReplyTo {
    fn from(o: CommandOrigin) -> Self {
        Self::Command(o)
    }
}

/// What kind of answer a [`DeliverReply`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// Claude's answer (which may itself report an error: see `is_error`).
    Answer,
    /// The queue was full; the message was not accepted.
    Busy,
    /// The answer to a coordinator command (`!status`, `!cancel`, …).
    Command,
    /// The message could not be run (store unavailable, CLI missing, …).
    Failure,
    /// Word about a message that is not its answer (a usage-limit pause, an interrupted run);
    /// the answer, if any, comes later.
    Notice,
}

impl ReplyKind {
    /// The outbox's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answer => "answer",
            Self::Busy => "busy",
            Self::Command => "command",
            Self::Failure => "failure",
            Self::Notice => "notice",
        }
    }

    /// From the outbox's name (an unknown one is an answer).
    pub fn parse(s: &str) -> Self {
        match s {
            "busy" => Self::Busy,
            "command" => Self::Command,
            "failure" => Self::Failure,
            "notice" => Self::Notice,
            _ => Self::Answer,
        }
    }
}

/// Send a reply to the user.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct DeliverReply {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The conversation's human name.
    pub conversation: String,
    /// What this answers.
    pub to: ReplyTo,
    /// What kind of reply.
    pub kind: ReplyKind,
    /// The text to show.
    pub text: String,
    /// Whether this reports a failure.
    pub is_error: bool,
    /// The Claude session after this message, if known.
    pub session_id: Option<String>,
    /// What this message cost in USD.
    pub cost_usd: f64,
    /// Stored in the outbox: the front end records its delivery ([`crate::store::RecordDelivery`]).
    pub durable: bool,
    /// Parts already posted (a reply resent after a restart continues after them).
    pub parts_sent: usize,
    /// Files to attach (what Claude wrote to its outbox).
    pub files: Vec<crate::files::ReplyFile>,
}

impl DeliverReply {
    /// A reply of `kind` to `origin` in `conversation`, with no session or cost yet.
    pub fn new(
        conversation: &ConversationRef,
        to: impl Into<ReplyTo>,
        kind: ReplyKind,
        text: String,
        is_error: bool,
    ) -> Self {
        Self {
            conversation_id: conversation.id,
            conversation: conversation.name.clone(),
            to: to.into(),
            kind,
            text,
            is_error,
            session_id: None,
            cost_usd: 0.0,
            durable: false,
            parts_sent: 0,
            files: Vec::new(),
        }
    }
}

/// What a run is doing, for a progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressStep {
    /// Accepted, waiting behind `position` other messages.
    Queued {
        /// 1 = next.
        position: usize,
    },
    /// The CLI has been started.
    Started,
    /// Claude is using a tool, e.g. `Bash: cargo test`.
    Tool(String),
    /// Claude wrote this much more text (with `stream`).
    Text(String),
    /// Claude's to-do list now.
    Todo(Vec<crate::claude::todo::TodoItem>),
    /// The CLI is retrying an API call.
    Retrying {
        /// Attempt number.
        attempt: u64,
        /// HTTP status that caused it.
        status: Option<u64>,
    },
}

impl ProgressStep {
    /// The step in words for a progress display; `None` for the start, the text and the to-do
    /// list, which are shown otherwise.
    pub fn describe(&self) -> Option<String> {
        match self {
            Self::Queued { position } => Some(format!("queued (position {position})")),
            Self::Started | Self::Text(_) | Self::Todo(_) => None,
            Self::Tool(summary) => Some(summary.clone()),
            Self::Retrying { attempt, status } => Some(match status {
                Some(s) => format!("retrying the API (attempt {attempt}, HTTP {s})"),
                None => format!("retrying the API (attempt {attempt})"),
            }),
        }
    }
}

/// Show progress on a message that is being worked on.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ShowProgress {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The message being worked on.
    pub origin: Origin,
    /// What is happening.
    pub step: ProgressStep,
}

/// A front end's three inbound edges: replies, progress, permission requests.
#[derive(Clone)]
pub struct FrontEnd {
    /// Where replies go.
    pub replies: actix::Recipient<DeliverReply>,
    /// Where progress goes.
    pub progress: actix::Recipient<ShowProgress>,
    /// Where permission requests and their outcomes go.
    pub approvals: actix::Recipient<ShowApproval>,
}

impl FrontEnd {
    /// The edges of an actor that handles all three.
    pub fn of<A>(addr: &Addr<A>) -> Self
    where
        A: Actor<Context = Context<A>>
            + Handler<DeliverReply>
            + Handler<ShowProgress>
            + Handler<ShowApproval>,
    {
        Self {
            replies: addr.clone().recipient(),
            progress: addr.clone().recipient(),
            approvals: addr.clone().recipient(),
        }
    }
}

/// What a [`ReplySink`] passes on.
#[derive(Debug)]
pub enum FrontendEvent {
    /// A reply.
    Reply(DeliverReply),
    /// A progress update.
    Progress(ShowProgress),
    /// A permission request, or its outcome.
    Approval(ShowApproval),
}

/// A front end that hands every reply and progress update to a channel, in order: the console
/// reads it, and so do the tests and the benchmark.
pub struct ReplySink {
    tx: UnboundedSender<FrontendEvent>,
}

impl ReplySink {
    /// Starts a sink; its events arrive on the receiver.
    pub fn start() -> (Addr<Self>, UnboundedReceiver<FrontendEvent>) {
        let (tx, rx) = unbounded_channel();
        (Self { tx }.start(), rx)
    }
}

impl Actor for ReplySink {
    type Context = Context<Self>;
}

impl Handler<DeliverReply> for ReplySink {
    type Result = ();

    fn handle(&mut self, msg: DeliverReply, _: &mut Self::Context) {
        // The receiver gone means the front end stopped listening: nothing left to tell.
        let _ = self.tx.send(FrontendEvent::Reply(msg));
    }
}

impl Handler<ShowProgress> for ReplySink {
    type Result = ();

    fn handle(&mut self, msg: ShowProgress, _: &mut Self::Context) {
        let _ = self.tx.send(FrontendEvent::Progress(msg));
    }
}

impl Handler<ShowApproval> for ReplySink {
    type Result = ();

    fn handle(&mut self, msg: ShowApproval, _: &mut Self::Context) {
        let _ = self.tx.send(FrontendEvent::Approval(msg));
    }
}

/// Claude asked for a permission (or a question's answer), or such a request was resolved:
/// the front end shows it, and edits what it showed to the outcome.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ShowApproval {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The message whose run asked.
    pub origin: Origin,
    /// The CLI's request id.
    pub request_id: String,
    /// Unguessable; an answer must carry it (a button's `custom_id` holds it).
    pub token: String,
    /// Asked, or how it ended.
    pub state: ApprovalState,
}

/// Where a permission request stands.
#[derive(Debug, Clone, PartialEq)]
pub enum ApprovalState {
    /// Waiting for a person.
    Asked {
        /// `Bash`, `Edit`, `AskUserQuestion`, `ExitPlanMode`, …
        tool: String,
        /// A readable, bounded summary of the input.
        summary: String,
        /// For `AskUserQuestion`: the questions and their options.
        questions: Vec<crate::claude::permission::Question>,
        /// Who sent the message that led to it.
        requested_by: UserId,
        /// The rules "Always allow" would store.
        always: Vec<String>,
    },
    /// Allowed (once, or always) by someone.
    Allowed {
        /// Who.
        by: String,
        /// Whether a rule was stored.
        always: bool,
    },
    /// Denied by someone.
    Denied {
        /// Who.
        by: String,
    },
    /// Answered (AskUserQuestion) by someone.
    Answered {
        /// Who.
        by: String,
    },
    /// No answer in time: denied.
    TimedOut,
    /// The CLI withdrew it (the turn was interrupted or ended).
    Withdrawn,
}

/// A person's answer to a permission request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalAnswer {
    /// Run it this once.
    AllowOnce,
    /// Run it, and store the suggested rule for this conversation.
    AllowAlways,
    /// Do not run it; Claude is told why.
    Deny(Option<String>),
    /// AskUserQuestion: question → chosen labels.
    Answers(Vec<(String, String)>),
}

/// Answer a permission request (from a button, a select menu or the console).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), ApprovalError>")]
pub struct AnswerApproval {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The CLI's request id.
    pub request_id: String,
    /// The token the request was shown with.
    pub token: String,
    /// The answer.
    pub answer: ApprovalAnswer,
    /// Who answered, for the record and the edited message.
    pub by: String,
}

/// Why an answer was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    /// Already answered, timed out, withdrawn — or never asked.
    #[error("this request is no longer waiting for an answer")]
    NotPending,
    /// The token does not match.
    #[error("this answer does not belong to that request")]
    BadToken,
}
