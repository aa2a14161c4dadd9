//! The actors of claude-coordinator: from a user's message to Claude Code and back.
//!
//! # Layout
//!
//! A message travels through these pieces, in this order:
//!
//! 1. A **front end** — the console (`claude-coordinator console`, in the binary) or the Discord
//!    gateway ([`discord`]: [`discord::gateway`] routes, [`discord::access`] decides who may
//!    talk) — decides which conversation a message belongs to (a
//!    [`conversation::ConversationRef`]: a configured channel, or a thread under one) and sends
//!    [`frontend::RouteMessage`] to the registry.
//! 2. [`registry::ChannelRegistry`] looks up the conversation's [`channel::ChannelActor`], or
//!    starts one, and forwards the message. It stops actors that stay idle.
//! 3. [`channel::ChannelActor`] answers coordinator commands (`!status`, `!cancel`, `!reset`)
//!    itself; a prompt joins its bounded queue. It runs one prompt at a time (a `Job` in
//!    `channel/job.rs`): wait for one of the global run slots (`claude.max_concurrent_runs`),
//!    load the session id from the store, run the CLI, then save the new session id and
//!    [`cost`] — while the next queued prompt already runs with the session id it has in hand
//!    (saves stay in order, one at a time).
//! 4. With live sessions (the default) the run is a turn of the conversation's warm
//!    [`claude::LiveSession`]: one `claude -p --input-format stream-json --permission-prompt-tool
//!    stdio [--resume ID] …` process, the user line written to its stdin, its output read to the
//!    turn's `result` (spawned, or replaced with `--resume` when it has died, as needed). Claude's
//!    permission requests ([`claude::permission`]) go to the channel actor, which shows them to
//!    the front end and writes the answer back. Otherwise [`claude::ClaudeRunner`] spawns one
//!    `claude -p … -- PROMPT` and drives it from one blocking thread until it is reaped
//!    (`claude/process.rs`). Either way the arguments come from [`claude::args`], the
//!    environment from [`claude::environment`] (no service secrets), the lines are parsed by
//!    [`claude::stream_json`], and tool use is passed on as progress.
//! 5. [`store::SessionStoreActor`] (on a `SyncArbiter`, r2d2 pool of SQLite connections, WAL)
//!    keeps conversation → session id, project directory, model, counts, cost, last error; and
//!    the inbox (every accepted prompt, written before it is queued, until answered) and the
//!    outbox (each run's reply, written with its record, until delivered). At start-up the
//!    registry queues the inbox's unanswered messages again ([`registry::RestoreInbox`],
//!    [`recovery`]), the gateway catches up on what was posted while the service was down, and
//!    undelivered replies are sent again.
//! 6. The channel actor sends exactly one [`frontend::DeliverReply`] per message back to the
//!    front end once its run is saved, plus [`frontend::ShowProgress`] while the run is in
//!    flight, and [`frontend::ShowApproval`] for each permission request and its outcome; the
//!    front end answers with [`frontend::AnswerApproval`]. The edges are `Recipient`s
//!    ([`frontend::FrontEnd`]), so tests plug in a collector ([`frontend::ReplySink`]). The Discord gateway sends replies through
//!    [`discord::outbound`], split by [`discord::chunking`].
//!
//! Around the run: [`files`] fetches a message's attachments (images become image blocks of the
//! turn) and collects what Claude wrote to its outbox for the reply; [`worktree`] gives each
//! thread of a `thread_worktrees` channel its own git checkout. Coordinator commands — the `!`
//! ones, and `/claude` ([`discord::commands`]) — are one [`frontend::Command`], answered by the
//! channel actor (`channel/command.rs`).
//!
//! [`metrics::MetricsActor`] writes one structured event per actor kind to the log, from what
//! the others report. Every module uses only modules listed before it in that flow or below it
//! (conversation, frontend, cost, text, metrics, recovery, files, worktree); the core never
//! imports [`discord`].

pub mod channel;
pub mod claude;
pub mod conversation;
pub mod cost;
pub mod discord;
pub mod files;
pub mod frontend;
pub mod metrics;
pub mod recovery;
pub mod registry;
pub mod store;
pub mod text;
pub mod worktree;

pub use claude::{ClaudeConfig, ClaudeRunner};
pub use conversation::{ChannelProfile, ConversationRef};
pub use frontend::{
    DeliverReply, FrontEnd, FrontendEvent, Origin, ReplySink, RouteMessage, ShowApproval,
    ShowProgress,
};
