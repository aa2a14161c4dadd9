//! The console front end: `claude-coordinator console --channel NAME [--json]`.
//!
//! Each line read from the input is one message from the local user to channel NAME, through
//! the same registry, channel actors, runner and store as the Discord service. Each reply is
//! written as it completes (with `--json`: one JSON object per line). At end of input the
//! console waits for the outstanding replies, then returns.

use std::fmt::Write as _;

use actix::Addr;
use actors::frontend::{
    AnswerApproval, ApprovalAnswer, ApprovalState, DeliverReply, Durability, FrontEnd,
    FrontendEvent, Origin, ReplyKind, ReplySink, ShowApproval, SubmitMessage,
};
use actors::ids::{MessageId, UserId};
use actors::registry::ChannelRegistry;
use serde_json::json;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

use crate::cli::Approve;
use crate::startup::Application;

/// What the console was asked to do.
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    /// The configured channel to talk to.
    pub channel: String,
    /// One JSON object per reply instead of plain text.
    pub json: bool,
    /// How permission requests are answered.
    pub approve: Approve,
}

/// What happened, for the exit status and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsoleSummary {
    /// Messages sent.
    pub sent: usize,
    /// Replies received (always equal to `sent` on a normal end).
    pub replies: usize,
    /// Replies that reported an error.
    pub errors: usize,
}

/// Why the console stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// `--channel` names no configured channel.
    #[error("no channel named `{name}` is configured (configured: {known})")]
    UnknownChannel {
        /// What was asked for.
        name: String,
        /// What exists.
        known: String,
    },
    /// Reading input or writing output failed.
    #[error("console I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The actors stopped before every reply arrived.
    #[error("the service stopped before all replies arrived ({replies} of {sent})")]
    Interrupted {
        /// Messages sent.
        sent: usize,
        /// Replies received.
        replies: usize,
    },
}

/// Runs the console until the input ends and every message has its reply. Progress notes
/// (text mode only) go to `diag`. With `--approve ask` (the default) a line is read only once
/// the message before it is answered (or asks for a permission, which that line answers);
/// with `all` or `none`, lines are sent as they are read and queue like any channel's. When `stop` completes (a signal), input is no longer read and
/// the registry shuts down as the service does: runs in flight get the grace period, then are
/// cancelled; every message still gets its reply.
pub async fn run<R, W, E>(
    app: &Application,
    opts: &ConsoleOptions,
    mut input: R,
    mut output: W,
    mut diag: E,
    stop: impl std::future::Future<Output = ()>,
) -> Result<ConsoleSummary, ConsoleError>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let conversation =
        app.conversation(&opts.channel)
            .ok_or_else(|| ConsoleError::UnknownChannel {
                name: opts.channel.clone(),
                known: app
                    .channels()
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
    let (sink, mut rx) = ReplySink::start();
    let registry = app.start_registry(FrontEnd::of(&sink));
    // The request the next input line answers.
    let mut awaiting: Option<ShowApproval> = None;

    let mut summary = ConsoleSummary::default();
    let mut line_no = 0u64;
    let mut buf = Vec::new();
    let mut eof = false;
    let (mut stopping, mut drained) = (false, false);
    tokio::pin!(stop);
    let drain = app.drain(&registry);
    tokio::pin!(drain);
    while !(eof && summary.replies == summary.sent) {
        tokio::select! {
            () = &mut stop, if !stopping => {
                stopping = true;
                eof = true;
                diag.write_all(b"stopping: no more input is read; waiting for the replies\n").await?;
            }
            _ = &mut drain, if stopping && !drained => drained = true,
            // Asking: one message at a time, so the line after a request answers it.
            n = input.read_until(b'\n', &mut buf), if !eof
                && (opts.approve != Approve::Ask || awaiting.is_some() || summary.sent == summary.replies) => {
                if n? == 0 {
                    eof = true;
                    if let Some(asked) = awaiting.take() {
                        let reason = Some("the console's input ended".to_string());
                        let note = answer(&registry, asked, ApprovalAnswer::Deny(reason)).await;
                        diag.write_all(format!("  … {note}\n").as_bytes()).await?;
                    }
                    continue;
                }
                line_no += 1;
                let line = std::mem::take(&mut buf);
                let Ok(text) = String::from_utf8(line) else {
                    diag.write_all(format!("line {line_no} is not valid UTF-8; it was not sent\n").as_bytes()).await?;
                    continue;
                };
                let text = text.trim_end_matches(['\n', '\r']);
                if text.trim().is_empty() {
                    continue;
                }
                if let Some(asked) = awaiting.take() {
                    let reply = parse_answer(&asked, text);
                    let note = answer(&registry, asked, reply).await;
                    diag.write_all(format!("  … {note}\n").as_bytes()).await?;
                    continue;
                }
                summary.sent += 1;
                registry.do_send(SubmitMessage {
                    conversation: conversation.clone(),
                    origin: Origin {
                        channel_id: conversation.id.into(),
                        message_id: MessageId(line_no),
                        author_id: UserId::default(),
                    },
                    text: text.to_string(),
                    attachments: Vec::new(),
                    late: false,
                    // Nobody reads the console's answers after a restart.
                    inbox: Durability::Transient,
                    approver: true,
                    via: actors::via::Via::Chat,
                });
            }
            event = rx.recv() => match event {
                Some(FrontendEvent::Reply(reply)) => {
                    // A notice is not the answer: that comes later.
                    summary.replies += usize::from(reply.kind != ReplyKind::Notice);
                    summary.errors += usize::from(reply.is_error);
                    output.write_all(format_reply(&reply, opts.json).as_bytes()).await?;
                    output.flush().await?;
                }
                Some(FrontendEvent::Approval(a)) => {
                    on_approval(&registry, opts, a, &mut awaiting, &mut output, &mut diag).await?;
                }
                Some(FrontendEvent::Progress(p)) => {
                    if let (false, Some(note)) = (opts.json, p.step.describe()) {
                        diag.write_all(format!("  … {note}\n").as_bytes()).await?;
                    }
                }
                None => return Err(ConsoleError::Interrupted { sent: summary.sent, replies: summary.replies }),
            }
        }
    }
    Ok(summary)
}

fn format_reply(reply: &DeliverReply, json: bool) -> String {
    if json {
        let v = json!({
            "channel": reply.conversation,
            "message": reply.to.message_id(),
            "reply": reply.text,
            "session_id": reply.session_id,
            "is_error": reply.is_error,
            "cost_usd": reply.cost_usd,
            "kind": reply.kind.as_str(),
        });
        format!("{v}\n")
    } else {
        format!("{}\n", reply.text)
    }
}

/// A permission request or its outcome: answered by `--approve`, or printed and remembered for
/// the next input line to answer.
async fn on_approval<W, E>(
    registry: &Addr<ChannelRegistry>,
    opts: &ConsoleOptions,
    a: ShowApproval,
    awaiting: &mut Option<ShowApproval>,
    output: &mut W,
    diag: &mut E,
) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let note = match (&a.state, opts.approve) {
        (ApprovalState::Asked { .. }, Approve::All) => {
            answer(registry, a, ApprovalAnswer::AllowOnce).await
        }
        (ApprovalState::Asked { .. }, Approve::None) => {
            answer(registry, a, ApprovalAnswer::Deny(None)).await
        }
        (ApprovalState::Asked { .. }, Approve::Ask) => {
            output
                .write_all(format_approval(&a, opts.json).as_bytes())
                .await?;
            output.flush().await?;
            *awaiting = Some(a);
            return Ok(());
        }
        (state, _) => {
            if awaiting
                .as_ref()
                .is_some_and(|w| w.request_id == a.request_id)
            {
                *awaiting = None;
            }
            format!("permission request {}", outcome(state))
        }
    };
    diag.write_all(format!("  … {note}\n").as_bytes()).await
}

/// Sends `answer` to the request `asked`; returns a note for the user.
async fn answer(
    registry: &Addr<ChannelRegistry>,
    asked: ShowApproval,
    answer: ApprovalAnswer,
) -> String {
    let sent = registry
        .send(AnswerApproval {
            conversation_id: asked.conversation_id,
            request_id: asked.request_id,
            token: asked.token,
            answer,
            by: "the console".into(),
        })
        .await;
    match sent {
        Ok(Ok(())) => "answered".into(),
        Ok(Err(e)) => format!("not taken: {e}"),
        Err(_) => "not taken: the service is stopping".into(),
    }
}

/// `y` (allow once), `a` (always), `n [reason]` (deny); anything else answers the request's
/// (first) question with that text.
fn parse_answer(asked: &ShowApproval, line: &str) -> ApprovalAnswer {
    let line = line.trim();
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    match word.to_ascii_lowercase().as_str() {
        "y" | "yes" => ApprovalAnswer::AllowOnce,
        "a" | "always" => ApprovalAnswer::AllowAlways,
        "n" | "no" => ApprovalAnswer::Deny(Some(rest.to_string()).filter(|r| !r.is_empty())),
        _ => {
            let question = match &asked.state {
                ApprovalState::Asked { questions, .. } => questions
                    .first()
                    .map(|q| q.question.clone())
                    .unwrap_or_default(),
                _ => String::new(),
            };
            ApprovalAnswer::Answers(vec![(question, line.to_string())])
        }
    }
}

fn outcome(state: &ApprovalState) -> String {
    match state {
        ApprovalState::Asked { .. } => "asked".into(),
        ApprovalState::Allowed { by, always } => {
            format!("allowed by {by}{}", if *always { " (always)" } else { "" })
        }
        ApprovalState::Denied { by } => format!("denied by {by}"),
        ApprovalState::Answered { by } => format!("answered by {by}"),
        ApprovalState::TimedOut => "timed out: denied".into(),
        ApprovalState::Withdrawn => "withdrawn".into(),
    }
}

fn format_approval(a: &ShowApproval, json: bool) -> String {
    let ApprovalState::Asked {
        tool,
        summary,
        questions,
        always,
        ..
    } = &a.state
    else {
        return String::new();
    };
    if json {
        let v = json!({
            "kind": "approval",
            "request_id": a.request_id,
            "tool": tool,
            "summary": summary,
            "questions": questions.iter().map(|q| json!({"question": q.question, "options": q.options})).collect::<Vec<_>>(),
            "always": always,
        });
        return format!("{v}\n");
    }
    if questions.is_empty() {
        format!(
            "Claude asks to use {tool}: {summary}\nAnswer: y (allow once), a (always: {}), n [reason] (deny)\n",
            always.join(", ")
        )
    } else {
        let mut text = String::from("Claude asks:\n");
        for q in questions {
            let _ = writeln!(text, "  {} [{}]", q.question, q.options.join(" / "));
        }
        text.push_str("Answer with an option, or n [reason] to decline\n");
        text
    }
}
