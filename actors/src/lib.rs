//! The actors of claude-coordinator: from a user's message to Claude Code and back.
//!
//! # Layout
//!
//! A message travels through these pieces, in this order:
//!
//! 1. A **front end** — the console (`claude-coordinator console`) or the Discord gateway —
//!    decides which conversation a message belongs to (a [`channel::ConversationRef`]: a
//!    configured channel, or a thread under one) and sends [`registry::RouteMessage`] to the
//!    registry.
//! 2. [`registry::ChannelRegistry`] looks up the conversation's [`channel::ChannelActor`], or
//!    starts one, and forwards the message. It stops actors that stay idle.
//! 3. [`channel::ChannelActor`] answers coordinator commands (`!status`, `!cancel`, `!reset`)
//!    itself; a prompt joins its bounded queue. It runs one prompt at a time: wait for one of the
//!    global run slots (`claude.max_concurrent_runs`), load the session id from the store, run
//!    the CLI, then save the new session id and cost — while the next queued prompt already
//!    runs with the session id it has in hand (saves stay in order, one at a time).
//! 4. [`runner::ClaudeRunner`] spawns `claude -p --output-format stream-json --verbose
//!    [--resume ID] … -- PROMPT` in the channel's project directory, in its own process group,
//!    and drives it from one blocking thread until it is reaped, parsing its output with
//!    [`stream_json`]. Tool use is passed on as progress.
//! 5. [`store::SessionStoreActor`] (on a `SyncArbiter`, r2d2 pool of SQLite connections, WAL)
//!    keeps conversation → session id, project directory, model, counts, cost, last error.
//! 6. The channel actor sends exactly one [`frontend::DeliverReply`] per message back to the
//!    front end once its run is saved, plus [`frontend::ShowProgress`] while the run is in
//!    flight. Both edges are `Recipient`s, so tests plug in a collector.

pub mod channel;
pub mod chunking;
pub mod discord_rest;
pub mod frontend;
pub mod gateway;
pub mod metrics;
pub mod registry;
pub mod runner;
pub mod store;
pub mod stream_json;
