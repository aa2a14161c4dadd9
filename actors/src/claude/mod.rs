//! Claude's side: running the `claude` CLI in a conversation's project directory and turning
//! its `stream-json` output into a [`RunReport`]. Two ways, the first the default:
//!
//! - a **live session** ([`session`], `claude.live_sessions = true`): one warm, two-way process
//!   per conversation (`--input-format stream-json --permission-prompt-tool stdio`), a turn per
//!   user line on stdin, Claude's permission requests and questions answered on the same stdin;
//!   it idles between turns and is resumed (`--resume`) when it had to go;
//! - a **one-shot run** ([`ClaudeRunner::run`], `process`): one `claude -p … --output-format
//!   stream-json --verbose` process per message, stdin `/dev/null`, driven by one blocking
//!   thread from spawn to reaping — a single `poll` waits for output, the child's exit (a
//!   pidfd), a cancel and the next timer, so the actors' thread is woken once per run.
//!
//! Rules from `../shared/claude-cli/BEHAVIOUR.md` it follows:
//! - the prompt goes after `--`, so a message starting with `-` is never read as an option;
//! - a message starting with `/` runs a built-in CLI command even with
//!   `--disable-slash-commands`; unless its command name is in `claude.passthrough_commands` it
//!   is sent with one leading space, the only escape observed to reach the model, as an argument
//!   and on stdin alike (`tests/fixtures/claude-cli/observed-slash-escape.md`);
//! - the CLI's environment is the service's without its secrets and settings (`DISCORD_TOKEN`,
//!   `COORDINATOR_CONFIG`, `COORDINATOR__*`, `CREDENTIALS_DIRECTORY`) and without `CLAUDECODE`,
//!   plus `claude.env` and `CLAUDE_CODE_OAUTH_TOKEN`: a prompt saying "run printenv" must not
//!   post the bot token;
//! - an output line longer than [`MAX_LINE_BYTES`] is not kept in memory: the run fails;
//! - a one-shot run's stdin is `/dev/null` (an open pipe makes the CLI wait and append stdin to
//!   the prompt); a live session's carries only JSON lines;
//! - the child leads its own process group, so cancel and timeout reach everything it started:
//!   SIGINT first (the CLI's clean stop), SIGKILL to the group after `kill_grace_secs`;
//! - success comes from `is_error`; `result` may be absent; usage errors print only stderr;
//!   stderr noise on success is not failure; `total_cost_usd` is cumulative per session in
//!   current versions.
//!
//! Files: [`config`] (the `[claude]` settings), [`args`] (command line and user text),
//! [`environment`] (what the CLI may see), [`session`] (the live session), [`permission`]
//! (the stdin control protocol's lines), [`models`] (the models the CLI offers), [`sandbox`]
//! (bubblewrap around every process), `process`
//! (spawn, drive, signals), `lines` (bounded output lines, stderr's tail), `report` (what a
//! run's output means), [`stream_json`] (parsing its lines).

pub mod args;
pub mod config;
pub mod environment;
mod lines;
pub mod models;
pub mod permission;
mod process;
mod report;
pub mod sandbox;
pub mod session;
pub mod stream_json;
pub mod todo;
pub mod transcripts;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use rustix::pipe::{pipe_with, PipeFlags};
use tokio_util::sync::CancellationToken;
use tracing::instrument;

pub use args::{cli_prompt, user_line};
pub use config::{machine_memory, ClaudeConfig, CostReporting, PermissionMode, WarmCap};
pub use environment::cli_environment;
pub use lines::MAX_LINE_BYTES;
pub use session::{LiveSession, SessionControl};

use crate::cost::ReportedCost;
use stream_json::{ResultLine, StreamEvent};

/// What one run needs to know.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// For logs: the conversation this run belongs to.
    pub conversation_id: crate::ids::ConversationId,
    /// The user's message, verbatim.
    pub prompt: String,
    /// The directory to run in: the project, or its place in the thread's worktree.
    pub cwd: PathBuf,
    /// The channel's project directory (the sandbox lets a worktree write its `.git`).
    pub project_dir: PathBuf,
    /// Session to `--resume`.
    pub resume: Option<String>,
    /// `--model`.
    pub model: Option<String>,
    /// `--system-prompt`.
    pub system_prompt: Option<String>,
    /// `--tools` (`Some(vec![])` = no tools).
    pub tools: Option<Vec<String>>,
    /// `--disallowedTools`.
    pub disallowed_tools: Vec<String>,
    /// `--permission-mode` for this conversation, else `claude.permission_mode`.
    pub permission_mode: Option<PermissionMode>,
    /// `--allowedTools`: the conversation's stored "always" rules (session rules are lost on
    /// `--resume`, so they are passed again at every spawn).
    pub allowed_tools: Vec<String>,
    /// The directory whose files are attached to the reply: `CLAUDE_COORDINATOR_OUTBOX`, and a
    /// line of `--append-system-prompt` that says so.
    pub outbox: Option<PathBuf>,
    /// Start from a copy of `resume` (`--fork-session`): a new session id, the original left as
    /// it was (`o_fork_live`).
    pub fork: bool,
    /// Ask for the text as it is written (`--include-partial-messages`, live sessions).
    pub stream: bool,
    /// Run this built-in command instead of the prompt (never a user's text).
    pub command: Option<CliCommand>,
}

/// A built-in CLI command the coordinator runs on purpose; a user's `/…` text never becomes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CliCommand {
    /// `/compact`: summarize the conversation so far (`o_context_compact_live`: `status`
    /// `compacting`, a `compact_boundary` with the tokens before and after, an empty result).
    Compact,
}

impl CliCommand {
    /// What is sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Compact => "/compact",
        }
    }
}

/// How full the context window is, after a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextUse {
    /// Tokens the last API call read and wrote (after a compaction: what is left).
    pub tokens: u64,
    /// The model's window, when the CLI said.
    pub window: Option<u64>,
}

/// Why a run was stopped before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A user asked.
    Cancelled,
    /// `claude.timeout_secs` passed.
    TimedOut,
}

/// What a finished (or stopped) run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Session id from the result line, else from the init line.
    pub session_id: Option<String>,
    /// Model from the init line.
    pub model: Option<String>,
    /// The final result line, if the CLI printed one.
    pub result: Option<ResultLine>,
    /// The last `rate_limit_event`, if any.
    pub rate_limit: Option<stream_json::RateLimitInfo>,
    /// Images the API could not process, which the CLI removed before going on without them.
    pub media_removed: usize,
    /// Set when the run was cancelled or timed out.
    pub stopped: Option<StopReason>,
    /// The reported cost, read per [`CostReporting`].
    pub cost: Option<ReportedCost>,
    /// How the process ended.
    pub exit: String,
    /// The end of stderr, for diagnostics.
    pub stderr_tail: String,
    /// How full the context window is now, if the run said.
    pub context: Option<ContextUse>,
    /// A compaction in this run: the tokens before and after.
    pub compacted: Option<(Option<u64>, Option<u64>)>,
}

impl RunReport {
    /// The report of a run cancelled before its process started: nothing ran.
    pub fn cancelled_before_start() -> Self {
        Self {
            session_id: None,
            model: None,
            result: None,
            rate_limit: None,
            media_removed: 0,
            stopped: Some(StopReason::Cancelled),
            cost: None,
            exit: "not started".into(),
            stderr_tail: String::new(),
            context: None,
            compacted: None,
        }
    }

    /// The run failed because the API could not process an image in the session, and the CLI
    /// (older than 2.1.330, which removes it itself) would send it again with every turn.
    pub fn image_stuck(&self) -> bool {
        self.result
            .as_ref()
            .is_some_and(|r| r.is_error && r.text().contains("Could not process image"))
    }

    /// Whether the user should see this as a failure.
    pub fn is_error(&self) -> bool {
        self.stopped.is_some() || self.result.as_ref().is_none_or(|r| r.is_error)
    }

    /// The run failed because the account may not make calls now: a usage limit (a rejected
    /// `rate_limit_event`, or a result saying so) or an API 429 (the CLI does not retry one:
    /// BEHAVIOUR.md). Answers when the limit resets, if the CLI said.
    pub fn usage_limit(&self) -> Option<Option<std::time::SystemTime>> {
        let result = self.result.as_ref().filter(|r| r.is_error)?;
        let rejected = self.rate_limit.as_ref().filter(|r| r.is_rejected());
        let text = result.text().to_ascii_lowercase();
        let limited = rejected.is_some()
            || result.api_error_status == Some(429)
            || result.api_error.as_deref() == Some("usage_limit_reached")
            || text.contains("usage limit")
            || (text.contains("hit your") && text.contains("limit"));
        if !limited || self.stopped.is_some() {
            return None;
        }
        Some(
            rejected
                .and_then(|r| r.resets_at)
                .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s)),
        )
    }
}

/// Errors at the runner's boundary: the run produced nothing usable.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The channel's project directory is missing or unreadable.
    #[error("the project directory {path} is not usable: {cause}")]
    ProjectDir {
        /// The configured directory.
        path: PathBuf,
        /// Why (in the message, so not also a `source`).
        cause: std::io::Error,
    },
    /// The CLI could not be started.
    #[error("could not start `{binary}`: {cause} (check claude.binary)")]
    Spawn {
        /// The configured binary.
        binary: PathBuf,
        /// Why (in the message, so not also a `source`).
        cause: std::io::Error,
    },
    /// `--resume` failed because the CLI does not know the session.
    #[error("session {session_id} could not be resumed: {message}")]
    UnknownSession {
        /// The id that was passed to `--resume`.
        session_id: String,
        /// What the CLI said.
        message: String,
    },
    /// The CLI exited non-zero without a result (usage error, crash, kill).
    #[error("claude failed ({exit}): {message}")]
    Failed {
        /// How it ended.
        exit: String,
        /// The last lines of stderr.
        message: String,
    },
    /// The CLI exited 0 without a result line.
    #[error("claude ended without a result ({exit}); {unparsed} unreadable output line(s)")]
    NoResult {
        /// How it ended.
        exit: String,
        /// Lines that were not JSON.
        unparsed: usize,
    },
    /// The CLI printed a line too long to keep.
    #[error("claude printed an output line longer than {} MiB; the run was not used", MAX_LINE_BYTES / (1024 * 1024))]
    LineTooLong,
    /// Waiting for the process failed.
    #[error("waiting for claude failed: {0}")]
    Wait(std::io::Error),
}

/// Where the runner reports the CLI processes it starts and reaps, so a later instance can
/// kill what a killed one left behind.
pub trait ProcessLog: Send + Sync {
    /// Process `pid` (a process group leader) started; `start_time` is its kernel start time
    /// (`/proc/<pid>/stat`, field 22), which tells it from a later process with the same pid.
    fn started(&self, pid: i32, start_time: u64);
    /// Process `pid` has been reaped.
    fn ended(&self, pid: i32);
}

/// The kernel start time of process `pid` (clock ticks since boot), if it exists.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name (which may hold spaces): state is field 3,
    // so start time (22) is the 20th after it.
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Runs the `claude` CLI. Cheap to clone; shared by every channel.
#[derive(Clone)]
pub struct ClaudeRunner {
    config: Arc<ClaudeConfig>,
    /// The CLI's environment ([`cli_environment`]), computed once: it holds the OAuth token.
    env: Arc<Vec<(OsString, OsString)>>,
    /// Told of every process started and reaped.
    processes: Option<Arc<dyn ProcessLog>>,
    /// The models the CLI offers, once a live session has said.
    models: models::ModelCatalog,
    /// Where each CLI process is sealed off; `None`: not sealed.
    sandbox: Option<Arc<sandbox::Sandbox>>,
}

impl std::fmt::Debug for ClaudeRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the environment: it holds the OAuth token.
        f.debug_struct("ClaudeRunner")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ClaudeRunner {
    /// The environment for the helper programs the service runs beside the CLI (git): the
    /// CLI's, without its OAuth token.
    pub fn helper_env(&self) -> Vec<(OsString, OsString)> {
        self.env
            .iter()
            .filter(|(k, _)| k != "CLAUDE_CODE_OAUTH_TOKEN")
            .cloned()
            .collect()
    }

    /// A runner with these settings; the CLI's environment is taken from this process's now.
    pub fn new(config: ClaudeConfig) -> Self {
        let env = cli_environment(&config, std::env::vars_os());
        Self {
            config: Arc::new(config),
            env: Arc::new(env),
            processes: None,
            models: models::ModelCatalog::default(),
            sandbox: None,
        }
    }

    /// The same runner, every CLI process sealed in `sandbox`.
    #[must_use]
    pub fn with_sandbox(mut self, sandbox: Option<sandbox::Sandbox>) -> Self {
        self.sandbox = sandbox.map(Arc::new);
        self
    }

    /// Whether CLI processes run sealed.
    pub fn is_sandboxed(&self) -> bool {
        self.sandbox.is_some()
    }

    /// The CLI's `HOME`, as its environment says.
    fn home(&self) -> Option<&std::path::Path> {
        self.env
            .iter()
            .find(|(k, _)| k == "HOME")
            .map(|(_, v)| std::path::Path::new(v))
    }

    /// The models the CLI offers (cached from the first live session's `list_models`).
    pub fn models(&self) -> models::ModelCatalog {
        self.models.clone()
    }

    /// The same runner, reporting its processes to `log`.
    #[must_use]
    pub fn with_process_log(mut self, log: Arc<dyn ProcessLog>) -> Self {
        self.processes = Some(log);
        self
    }

    pub(crate) fn process_started(&self, pid: i32) {
        if let (Some(log), Some(start)) = (&self.processes, process_start_time(pid)) {
            log.started(pid, start);
        }
    }

    pub(crate) fn process_log(&self) -> Option<Arc<dyn ProcessLog>> {
        self.processes.clone()
    }

    /// The stream-json user line that sends `prompt` as one turn ([`user_line`]).
    pub fn user_line(&self, prompt: &str) -> String {
        user_line(prompt, &self.config.passthrough_commands)
    }

    /// The stream-json user line that runs `command` (not escaped: it is the coordinator's).
    pub fn command_line(command: CliCommand) -> String {
        args::command_line(command)
    }

    /// The user line of a turn with `images` before its text (image blocks, base64).
    pub fn user_line_with(&self, prompt: &str, images: &[crate::files::Image]) -> String {
        args::user_line_with_images(prompt, &self.config.passthrough_commands, images)
    }

    /// The settings.
    pub fn config(&self) -> &ClaudeConfig {
        &self.config
    }

    /// The settings, shared.
    pub(crate) fn shared_config(&self) -> Arc<ClaudeConfig> {
        Arc::clone(&self.config)
    }

    /// Runs the CLI once. The process is driven from spawn to reaping by one blocking thread
    /// (as `Command::output` would), which wakes the actors only when the run is over.
    /// `on_event` sees every parsed line as it arrives, on that thread (progress display).
    /// `cancel` stops the run: SIGINT, then SIGKILL of the process group after
    /// `kill_grace_secs`. Dropping this future stops the run the same way.
    #[instrument(skip_all, fields(channel_id = req.conversation_id.get(), resume = req.resume.is_some()))]
    pub async fn run(
        &self,
        req: &RunRequest,
        on_event: impl FnMut(&StreamEvent) + Send + 'static,
        cancel: &CancellationToken,
    ) -> Result<RunReport, RunError> {
        // The thread learns of a cancel from this pipe's write end closing: dropped on
        // cancel, or with this future if it is dropped mid-run (actor stopped).
        let (stop_rx, stop_tx) =
            pipe_with(PipeFlags::CLOEXEC).map_err(|cause| RunError::Spawn {
                binary: self.config.binary.clone(),
                cause: cause.into(),
            })?;
        let runner = self.clone();
        let req = req.clone();
        let span = tracing::Span::current();
        let mut thread = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            process::run_to_end(&runner, &req, on_event, &stop_rx)
        });
        let mut stop_tx = Some(stop_tx);
        loop {
            tokio::select! {
                joined = &mut thread => {
                    return joined.unwrap_or_else(|e| Err(RunError::Wait(std::io::Error::other(e))));
                }
                () = cancel.cancelled(), if stop_tx.is_some() => stop_tx = None,
            }
        }
    }
}
