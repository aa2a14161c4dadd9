//! The actors of claude-coordinator: from a user's message to Claude Code and back.
//!
//! # Layout
//!
//! A message travels through these rooms, in this order; one concept per file, each actor a
//! thin shell that owns them.
//!
//! 1. A **front end** — the console (`claude-coordinator console`, in the binary) or the Discord
//!    gateway — decides which conversation a message belongs to (a
//!    [`conversation::ConversationRef`]: a configured channel, or a thread under one) and sends
//!    [`frontend::SubmitMessage`] (a `/claude` command: [`frontend::RunCommand`]) to the
//!    registry. The gateway ([`discord::gateway`]) owns, each in its file: the `router` (the one
//!    place a Discord channel becomes a conversation; access, threads, de-duplication,
//!    look-ups) and its side in the actor (`routing`), `catch_up` (what was posted while the
//!    service was down), `prompts` (permission prompts and clicks, Stop), `delivery` (replies
//!    and progress), `slash` (`/claude`) and `lanes` (every send, in order per channel).
//!    Serenity's ids become the core's at [`discord::ids`]; the core's ids are [`ids`].
//! 2. [`registry::ChannelRegistry`] hands that same message to the conversation's
//!    [`channel::ChannelActor`], starting one if needed; it stops actors that stay idle.
//! 3. [`channel::ChannelActor`] answers coordinator commands itself (`channel/command.rs`); a
//!    prompt is written to the inbox and joins the `Queue` (`channel/queue.rs`: the bounded
//!    queue and the run in flight). It runs one prompt at a time — a `Job` (`channel/job.rs`,
//!    its answer's text in `channel/answer.rs`) waits for one of the global run slots
//!    (`claude.max_concurrent_runs`), loads the session id, runs the CLI — and its record is
//!    written by `Saves` (`channel/saving.rs`) while the next prompt already runs. Beside it:
//!    the warm process between turns (`channel/warm.rs`, all of them capped by
//!    [`channel::WarmPool`]), permission requests (`channel/approvals.rs`), the account's usage
//!    pause (`channel/usage.rs`), a closed thread's worktree (`channel/closing.rs`), `!status`
//!    (`channel/status.rs`), spend and message limits when a prompt's turn comes
//!    (`channel/limiting.rs`, against [`limits::Limits`] and its ledger) and its dependencies
//!    (`channel/deps.rs`).
//! 4. With live sessions (the default) the run is a turn of the conversation's warm
//!    [`claude::LiveSession`]: one `claude -p --input-format stream-json --permission-prompt-tool
//!    stdio [--resume ID] …` process, the user line written to its stdin, its output read to the
//!    turn's `result`. Claude's permission requests ([`claude::permission`]) go to the channel
//!    actor, which shows them to the front end and writes the answer back. Otherwise
//!    [`claude::ClaudeRunner`] spawns one `claude -p … -- PROMPT` and drives it from one
//!    blocking thread until it is reaped (`claude/process.rs`). Either way the process starts
//!    sealed in bubblewrap ([`claude::sandbox`]: the service's state, secrets and the other
//!    channels' projects not there), the arguments come from [`claude::args`], the environment
//!    from [`claude::environment`] (no service secrets),
//!    the lines are read bounded (`claude/lines.rs`) and parsed by [`claude::stream_json`].
//! 5. [`store::SessionStoreActor`] (on a `SyncArbiter`, r2d2 pool of SQLite connections, WAL),
//!    one module per table: `conversations` (session id, project directory, model, counts,
//!    cost, last error), `sessions` (every session and its cost; choices made from chat),
//!    `inbox` (every accepted prompt until answered), `outbox` (each run's reply until
//!    delivered), `rules` ("always" answers), `audit` (who answered what), `processes` (CLI
//!    processes to kill after a crash), `upkeep` (checkpoint, backup, stats). At start-up the
//!    registry queues the inbox's unanswered messages again ([`registry::RestoreInbox`],
//!    [`recovery`]), the gateway catches up, and undelivered replies are sent again.
//! 6. The channel actor sends exactly one [`frontend::DeliverReply`] per message or command back
//!    to the front end once its run is saved, plus [`frontend::ShowProgress`] while the run is
//!    in flight, and [`frontend::ShowApproval`] for each permission request and its outcome;
//!    the front end answers with [`frontend::AnswerApproval`]. The edges are `Recipient`s
//!    ([`frontend::FrontEnd`]), so tests plug in a collector ([`frontend::ReplySink`]). Discord
//!    posts replies with [`discord::replies`] (split by [`discord::chunking`]) and progress with
//!    [`discord::progress`], both over [`discord::outbound`].
//!
//! Not every prompt is a chat message: [`schedule::Scheduler`] writes a schedule's due run to
//! the inbox (with the schedule's progress, in one transaction) and submits it to the registry
//! as a stored [`frontend::SubmitMessage`]; the binary's HTTP endpoint does the same for a
//! prompt over HTTP (with its idempotency key). Such a prompt has a message id of the
//! service's own ([`ids::MessageId::local`]) and says where it came from ([`via::Via`]), so
//! its answer is headed with its source rather than replying to a message.
//!
//! Around the run: [`files`] fetches a message's attachments (images become image blocks of the
//! turn) and collects what Claude wrote to its outbox for the reply; [`worktree`] gives each
//! thread of a `thread_worktrees` channel its own git checkout. Coordinator commands — the `!`
//! ones, and `/claude` ([`discord::commands`]) — are one [`frontend::Command`].
//!
//! The stop is one [`shutdown::Shutdown`]: once begun no run starts (what waits stays in the
//! inbox), and every part holds a [`shutdown::Busy`] while it has work that must not be cut
//! off — a run and its record, a send to Discord — so the stop waits exactly for those.
//!
//! [`metrics::MetricsActor`] writes one structured event per actor kind to the log, from what
//! the others report, and renders the same figures for Prometheus (`GET /metrics`, served with
//! `/healthz` and `/readyz` by the binary's `http` module). Every module uses only modules listed before it in that flow or below it
//! (conversation, frontend, ids, time, via, shutdown, cost, text, limits, metrics, recovery,
//! files, worktree); the scheduler sits beside the registry (it submits to it, and channel
//! actors ask it); the core never imports [`discord`].

pub mod channel;
pub mod claude;
pub mod conversation;
pub mod cost;
pub mod discord;
pub mod files;
pub mod frontend;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod recovery;
pub mod registry;
pub mod schedule;
pub mod shutdown;
pub mod store;
pub mod text;
pub mod time;
pub mod via;
pub mod worktree;

pub use claude::{ClaudeConfig, ClaudeRunner};
pub use conversation::{ChannelProfile, ConversationRef};
pub use frontend::{
    DeliverReply, FrontEnd, FrontendEvent, Origin, ReplySink, ShowApproval, ShowProgress,
    SubmitMessage,
};
