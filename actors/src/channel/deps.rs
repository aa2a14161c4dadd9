//! What every channel actor shares: the runner, the store, the run slots and the warm-process
//! cap, the front end's edges, the usage-limit pause, and the settings they act on.

use std::sync::Arc;

use actix::{Addr, Recipient};
use tokio::sync::Semaphore;

use super::{UsageGate, WarmPool};
use crate::claude::ClaudeRunner;
use crate::frontend::{DeliverReply, ShowApproval, ShowProgress};
use crate::metrics::RecordMetric;
use crate::store::SessionStoreActor;

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
    /// The live CLI processes of all conversations, under `claude.max_warm_sessions`.
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
    /// The service's stop.
    pub shutdown: crate::shutdown::Shutdown,
    /// Spend and message limits per person and channel.
    pub limits: Arc<crate::limits::Limits>,
    /// Where `schedule` commands go (none: schedules are off).
    pub schedules: Option<Recipient<crate::schedule::ManageSchedules>>,
}
