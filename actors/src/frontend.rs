//! The edges towards a front end (the console, the Discord gateway): the messages a channel
//! sends out, and where a message came from.
//!
//! Channel actors hold these as `Recipient`s, so any front end — or a test's collector — can
//! receive them. Every [`crate::channel::SubmitMessage`] produces exactly one [`DeliverReply`];
//! [`ShowProgress`] is optional decoration while a run is in flight.

use actix::Message;

/// Where a message came from, so the answer can go back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Origin {
    /// The Discord channel (or thread) to answer in; the conversation id for the console.
    pub channel_id: u64,
    /// The message being answered (the console numbers its input lines).
    pub message_id: u64,
    /// Who wrote it.
    pub author_id: u64,
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
}

/// Send a reply to the user.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct DeliverReply {
    /// The conversation (channel or thread id).
    pub conversation_id: u64,
    /// The conversation's human name.
    pub conversation: String,
    /// The message this answers.
    pub origin: Origin,
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
    /// The CLI is retrying an API call.
    Retrying {
        /// Attempt number.
        attempt: u64,
        /// HTTP status that caused it.
        status: Option<u64>,
    },
}

/// Show progress on a message that is being worked on.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ShowProgress {
    /// The conversation.
    pub conversation_id: u64,
    /// The message being worked on.
    pub origin: Origin,
    /// What is happening.
    pub step: ProgressStep,
}
