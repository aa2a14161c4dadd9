//! The console front end: `claude-coordinator console --channel NAME [--json]`.
//!
//! Each line read from the input is one message from the local user to channel NAME, through
//! the same registry, channel actors, runner and store as the Discord service. Each reply is
//! written as it completes (with `--json`: one JSON object per line). At end of input the
//! console waits for the outstanding replies, then returns.

use actors::frontend::{DeliverReply, FrontendEvent, Origin, ReplySink, RouteMessage};
use serde_json::json;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

use crate::startup::Application;

/// What the console was asked to do.
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    /// The configured channel to talk to.
    pub channel: String,
    /// One JSON object per reply instead of plain text.
    pub json: bool,
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
/// (text mode only) go to `diag`. When `stop` completes (a signal), input is no longer read and
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
    let registry = app.start_registry(sink.clone().recipient(), sink.recipient());

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
            n = input.read_until(b'\n', &mut buf), if !eof => {
                if n? == 0 {
                    eof = true;
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
                summary.sent += 1;
                registry.do_send(RouteMessage {
                    conversation: conversation.clone(),
                    origin: Origin { channel_id: conversation.id, message_id: line_no, author_id: 0 },
                    text: text.to_string(),
                });
            }
            event = rx.recv() => match event {
                Some(FrontendEvent::Reply(reply)) => {
                    summary.replies += 1;
                    summary.errors += usize::from(reply.is_error);
                    output.write_all(format_reply(&reply, opts.json).as_bytes()).await?;
                    output.flush().await?;
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
            "message": reply.origin.message_id,
            "reply": reply.text,
            "session_id": reply.session_id,
            "is_error": reply.is_error,
            "cost_usd": reply.cost_usd,
            "kind": format!("{:?}", reply.kind).to_lowercase(),
        });
        format!("{v}\n")
    } else {
        format!("{}\n", reply.text)
    }
}
