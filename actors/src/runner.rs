//! The Claude runner: spawns one `claude -p … --output-format stream-json --verbose` process
//! and turns its output into a [`RunReport`].
//!
//! Each run is driven by one blocking thread from spawn to reaping, as `Command::output`
//! would: a single `poll` waits for output, the child's exit (a pidfd), a cancel and the next
//! timer, so the actors' thread is woken once per run, when it is over (and for progress).
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
//! - stdin is `/dev/null` (an open pipe makes the CLI wait and append stdin to the prompt);
//! - the child leads its own process group, so cancel and timeout reach everything it started:
//!   SIGINT first (the CLI's clean stop), SIGKILL to the group after `kill_grace_secs`;
//! - success comes from `is_error`; `result` may be absent; usage errors print only stderr;
//!   stderr noise on success is not failure; `total_cost_usd` is cumulative per session in
//!   current versions.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::pipe::{pipe_with, PipeFlags};
use rustix::process::{pidfd_open, PidfdFlags};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

use crate::store::ReportedCost;
use crate::stream_json::{parse_line, ResultLine, StreamEvent};

/// Permission modes the CLI accepts (`manual` and `default` are the same mode).
pub const PERMISSION_MODES: [&str; 7] = [
    "default",
    "manual",
    "acceptEdits",
    "auto",
    "bypassPermissions",
    "dontAsk",
    "plan",
];

/// After the CLI exits, how long to keep reading output that a leftover child may still hold.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// How much of stderr to keep for error messages.
const STDERR_TAIL_BYTES: usize = 8 * 1024;
/// Without a pidfd, how often to check whether the CLI has exited.
const EXIT_CHECK: Duration = Duration::from_millis(50);
/// Bytes taken from a pipe per `read`.
const READ_CHUNK: usize = 16 * 1024;
/// The longest output line kept; a longer one fails the run (the CLI's lines are far shorter).
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Variables of the service's own environment that the CLI (and every tool it runs) must not
/// see: secrets, and settings that may carry them.
fn is_withheld(name: &OsStr) -> bool {
    let name = name.as_encoded_bytes();
    name == b"DISCORD_TOKEN"
        || name == b"COORDINATOR_CONFIG"
        || name == b"CREDENTIALS_DIRECTORY"
        || name == b"CLAUDECODE"
        || name.starts_with(b"COORDINATOR__")
}

/// The CLI's whole environment: `inherited` (the service's own) without what
/// [`is_withheld`], then `claude.env`, then `CLAUDE_CODE_OAUTH_TOKEN` when a token is set.
pub fn cli_environment(
    config: &ClaudeConfig,
    inherited: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    let mut env: BTreeMap<OsString, OsString> = inherited
        .into_iter()
        .filter(|(k, _)| !is_withheld(k))
        .collect();
    env.extend(
        config
            .env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v))),
    );
    if let Some(token) = &config.oauth_token {
        env.insert(
            "CLAUDE_CODE_OAUTH_TOKEN".into(),
            token.expose_secret().into(),
        );
    }
    env.into_iter().collect()
}

/// What the CLI is given for a user's message: the text itself, or, for `/name …` whose name
/// is not in `passthrough`, the text after one space (so the CLI does not run it as a command).
pub fn cli_prompt<'a>(prompt: &'a str, passthrough: &[String]) -> Cow<'a, str> {
    let blocked = prompt.strip_prefix('/').is_some_and(|rest| {
        let name = rest.split_whitespace().next().unwrap_or_default();
        !passthrough.iter().any(|p| p == name)
    });
    if blocked {
        Cow::Owned(format!(" {prompt}"))
    } else {
        Cow::Borrowed(prompt)
    }
}

/// How to read `total_cost_usd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CostReporting {
    /// Decide from the CLI's version in the init line: 2.1.330 and later report the session's
    /// running total; earlier versions (2.1.197 observed) report the call alone.
    #[default]
    Auto,
    /// Always the session's running total.
    Cumulative,
    /// Always this call alone.
    PerCall,
}

impl CostReporting {
    /// Whether a CLI of `version` reports a running total.
    pub fn is_cumulative(self, version: Option<&str>) -> bool {
        match self {
            Self::Cumulative => true,
            Self::PerCall => false,
            // Unknown version: assume a current CLI.
            Self::Auto => version
                .and_then(parse_version)
                .is_none_or(|v| v >= (2, 1, 330)),
        }
    }
}

fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let mut parts = v
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(str::parse::<u64>);
    Some((
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    ))
}

/// The `[claude]` settings: how to run the CLI.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaudeConfig {
    /// The `claude` executable, a path or a name looked up in `PATH`.
    pub binary: PathBuf,
    /// Wall-clock limit for one run; the whole process group is stopped after it.
    pub timeout_secs: u64,
    /// After SIGINT (cancel, timeout), how long before SIGKILL to the process group.
    pub kill_grace_secs: u64,
    /// `--permission-mode` for every run.
    pub permission_mode: String,
    /// `--model` unless the channel sets one; empty means the CLI's default.
    #[serde(default)]
    pub model: String,
    /// Runs in flight across all channels; others wait their turn, in order.
    pub max_concurrent_runs: usize,
    /// Passed as `CLAUDE_CODE_OAUTH_TOKEN`. From the environment
    /// (`COORDINATOR__CLAUDE__OAUTH_TOKEN`), or read from `oauth_token_file`; never in settings.
    #[serde(default)]
    pub oauth_token: Option<SecretString>,
    /// A file holding the OAuth token (else `$CREDENTIALS_DIRECTORY/claude-oauth-token`).
    #[serde(default)]
    pub oauth_token_file: Option<PathBuf>,
    /// Extra environment variables for the CLI.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Slash command names (without `/`) that run as CLI commands instead of being sent as text.
    #[serde(default)]
    pub passthrough_commands: Vec<String>,
    /// How to read `total_cost_usd`.
    #[serde(default)]
    pub cost_reporting: CostReporting,
}

/// What one run needs to know.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// For logs: the conversation this run belongs to.
    pub conversation_id: u64,
    /// The user's message, verbatim.
    pub prompt: String,
    /// The project directory to run in.
    pub cwd: PathBuf,
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
    /// Set when the run was cancelled or timed out.
    pub stopped: Option<StopReason>,
    /// The reported cost, read per [`CostReporting`].
    pub cost: Option<ReportedCost>,
    /// How the process ended.
    pub exit: String,
    /// The end of stderr, for diagnostics.
    pub stderr_tail: String,
}

impl RunReport {
    /// Whether the user should see this as a failure.
    pub fn is_error(&self) -> bool {
        self.stopped.is_some() || self.result.as_ref().is_none_or(|r| r.is_error)
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

/// Runs the `claude` CLI. Cheap to clone; shared by every channel.
#[derive(Clone)]
pub struct ClaudeRunner {
    config: Arc<ClaudeConfig>,
    /// The CLI's environment ([`cli_environment`]), computed once: it holds the OAuth token.
    env: Arc<Vec<(OsString, OsString)>>,
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
    /// A runner with these settings; the CLI's environment is taken from this process's now.
    pub fn new(config: ClaudeConfig) -> Self {
        let env = cli_environment(&config, std::env::vars_os());
        Self {
            config: Arc::new(config),
            env: Arc::new(env),
        }
    }

    /// The stream-json user line (`--input-format stream-json`) that sends `prompt` as one turn,
    /// escaped like a prompt argument ([`cli_prompt`]).
    pub fn user_line(&self, prompt: &str) -> String {
        let text = cli_prompt(prompt, &self.config.passthrough_commands);
        let line = serde_json::json!({
            "type": "user",
            "message": {"role": "user", "content": text},
            "parent_tool_use_id": null,
            "session_id": "",
        });
        line.to_string()
    }

    /// The settings.
    pub fn config(&self) -> &ClaudeConfig {
        &self.config
    }

    /// The command-line arguments for `req` (everything after the binary name).
    pub fn args(&self, req: &RunRequest) -> Vec<OsString> {
        let mut args: Vec<OsString> = ["-p", "--output-format", "stream-json", "--verbose"]
            .iter()
            .map(OsString::from)
            .collect();
        let mut push = |flag: &str, value: &str| {
            args.push(flag.into());
            args.push(value.into());
        };
        if let Some(id) = &req.resume {
            push("--resume", id);
        }
        let model = req
            .model
            .as_deref()
            .or(Some(self.config.model.as_str()))
            .filter(|m| !m.is_empty());
        if let Some(m) = model {
            push("--model", m);
        }
        if let Some(s) = &req.system_prompt {
            push("--system-prompt", s);
        }
        push("--permission-mode", &self.config.permission_mode);
        // Under bypassPermissions `--allowedTools` restricts nothing: only `--tools` and
        // `--disallowedTools` do. One comma-joined value each, as both are variadic.
        if let Some(tools) = &req.tools {
            push("--tools", &tools.join(","));
        }
        if !req.disallowed_tools.is_empty() {
            push("--disallowedTools", &req.disallowed_tools.join(","));
        }
        args.push("--".into());
        args.push(
            cli_prompt(&req.prompt, &self.config.passthrough_commands)
                .as_ref()
                .into(),
        );
        args
    }

    /// Runs the CLI once. The process is driven from spawn to reaping by one blocking thread
    /// (as `Command::output` would), which wakes the actors only when the run is over.
    /// `on_event` sees every parsed line as it arrives, on that thread (progress display).
    /// `cancel` stops the run: SIGINT, then SIGKILL of the process group after
    /// `kill_grace_secs`. Dropping this future stops the run the same way.
    #[instrument(skip_all, fields(channel_id = req.conversation_id, resume = req.resume.is_some()))]
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
            runner.run_blocking(&req, on_event, &stop_rx)
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

    /// The body of [`Self::run`], on a blocking thread.
    fn run_blocking(
        &self,
        req: &RunRequest,
        on_event: impl FnMut(&StreamEvent),
        stop: &OwnedFd,
    ) -> Result<RunReport, RunError> {
        let mut drive = Drive::start(self, req, on_event)?;
        drive.until_done(stop)?;
        let Drive {
            mut state,
            stderr_tail,
            stopped,
            status,
            out_lines,
            ..
        } = drive;
        state.too_long = out_lines.too_long;
        let Some(status) = status else {
            return Err(RunError::Wait(std::io::Error::other("no exit status")));
        };
        let exit = describe_exit(status);
        debug!(%exit, unparsed = state.unparsed, "claude ended");
        self.report(req, state, stopped, exit, stderr_tail, status.success())
    }

    /// Starts the CLI for `req`: in the project directory, stdin null, own process group.
    fn spawn(&self, req: &RunRequest) -> Result<Process, RunError> {
        let mut cmd = Command::new(&self.config.binary);
        cmd.args(self.args(req))
            .current_dir(&req.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .process_group(0);
        match cmd.spawn() {
            Ok(child) => Ok(Process::new(child)),
            // A missing working directory fails the spawn just like a missing binary; only
            // on failure is it worth a look at the directory to tell which.
            Err(cause) => Err(match std::fs::metadata(&req.cwd) {
                Ok(m) if m.is_dir() => RunError::Spawn {
                    binary: self.config.binary.clone(),
                    cause,
                },
                Ok(_) => RunError::ProjectDir {
                    path: req.cwd.clone(),
                    cause: std::io::Error::other("not a directory"),
                },
                Err(cause) => RunError::ProjectDir {
                    path: req.cwd.clone(),
                    cause,
                },
            }),
        }
    }

    fn report(
        &self,
        req: &RunRequest,
        state: StreamState,
        stopped: Option<StopReason>,
        exit: String,
        stderr_tail: String,
        success: bool,
    ) -> Result<RunReport, RunError> {
        if state.too_long > 0 {
            return Err(RunError::LineTooLong);
        }
        let unknown_session = |text: &str| {
            req.resume.is_some()
                && (text.contains("No conversation found with session ID")
                    || text.contains("--resume requires a valid session ID"))
        };
        let resumed_id = || req.resume.clone().unwrap_or_default();
        if let Some(r) = &state.result {
            if r.is_error && unknown_session(&r.text()) {
                return Err(RunError::UnknownSession {
                    session_id: resumed_id(),
                    message: r.text(),
                });
            }
        } else if stopped.is_none() {
            let message = last_lines(&stderr_tail, 3);
            if unknown_session(&message) {
                return Err(RunError::UnknownSession {
                    session_id: resumed_id(),
                    message,
                });
            }
            if success {
                return Err(RunError::NoResult {
                    exit,
                    unparsed: state.unparsed,
                });
            }
            return Err(RunError::Failed {
                exit,
                message: if message.is_empty() {
                    "no output".into()
                } else {
                    message
                },
            });
        }
        let cumulative = self
            .config
            .cost_reporting
            .is_cumulative(state.version.as_deref());
        let cost = state
            .result
            .as_ref()
            .and_then(|r| r.total_cost_usd)
            .map(|total_usd| ReportedCost {
                total_usd,
                cumulative,
            });
        Ok(RunReport {
            session_id: state
                .result
                .as_ref()
                .and_then(|r| r.session_id.clone())
                .or(state.init_session),
            model: state.model,
            result: state.result,
            stopped,
            cost,
            exit,
            stderr_tail,
        })
    }
}

/// What the stream has told us so far.
#[derive(Default)]
struct StreamState {
    init_session: Option<String>,
    model: Option<String>,
    version: Option<String>,
    result: Option<ResultLine>,
    unparsed: usize,
    /// Lines longer than [`MAX_LINE_BYTES`], dropped.
    too_long: usize,
}

impl StreamState {
    /// Takes one output line; returns the event for the progress display.
    fn take_line(&mut self, line: &[u8]) -> Option<StreamEvent> {
        if line.is_empty() {
            return None;
        }
        let ev = match parse_line(line) {
            Ok(ev) => ev,
            Err(e) => {
                self.unparsed += 1;
                debug!(error = %e, "claude printed a line that is not JSON");
                return None;
            }
        };
        match &ev {
            StreamEvent::Init {
                session_id,
                model,
                version,
            } => {
                self.init_session.clone_from(session_id);
                self.model.clone_from(model);
                self.version.clone_from(version);
            }
            StreamEvent::Result(r) => self.result = Some(r.clone()),
            _ => {}
        }
        Some(ev)
    }
}

/// One run as its thread drives it: one `poll` waits for output, the child's exit (a pidfd),
/// a cancel (the stop pipe hung up) and the next timer.
struct Drive<'a, F> {
    config: &'a ClaudeConfig,
    proc: Process,
    /// Readable once the child has exited. Without it (Linux before 5.3) the exit is checked
    /// every [`EXIT_CHECK`] instead.
    pidfd: Option<OwnedFd>,
    /// `None` once closed.
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    out_lines: LineSplitter,
    err_lines: LineSplitter,
    on_event: F,
    state: StreamState,
    stderr_tail: String,
    status: Option<ExitStatus>,
    stopped: Option<StopReason>,
    deadline: Instant,
    kill_at: Option<Instant>,
    drain_until: Option<Instant>,
    chunk: Vec<u8>,
}

impl<'a, F: FnMut(&StreamEvent)> Drive<'a, F> {
    fn start(runner: &'a ClaudeRunner, req: &RunRequest, on_event: F) -> Result<Self, RunError> {
        let mut proc = runner.spawn(req)?;
        debug!(pid = %proc.pgid, "claude started");
        let pidfd = pidfd_open(
            rustix::process::Pid::from_child(&proc.child),
            PidfdFlags::empty(),
        )
        .ok();
        let (stdout, stderr) = (proc.child.stdout.take(), proc.child.stderr.take());
        let config = runner.config();
        Ok(Self {
            config,
            proc,
            pidfd,
            stdout,
            stderr,
            out_lines: LineSplitter::new(MAX_LINE_BYTES),
            // stderr is only kept as a tail; its long lines are not worth an error.
            err_lines: LineSplitter::new(MAX_LINE_BYTES),
            on_event,
            state: StreamState::default(),
            stderr_tail: String::new(),
            status: None,
            stopped: None,
            deadline: Instant::now() + Duration::from_secs(config.timeout_secs),
            kill_at: None,
            drain_until: None,
            chunk: vec![0_u8; READ_CHUNK],
        })
    }

    /// Runs until the child is reaped and its output closed (or given up on).
    fn until_done(&mut self, stop: &OwnedFd) -> Result<(), RunError> {
        let mut stop_open = true;
        loop {
            if self.status.is_some() && self.stdout.is_none() && self.stderr.is_none() {
                return Ok(());
            }
            let now = Instant::now();
            self.on_timers(now)?;
            if self.drain_until.is_some_and(|t| now >= t) {
                debug!("output still open after claude exited; not waiting for it");
                return Ok(());
            }
            let mut sources = Vec::with_capacity(4);
            let mut fds = Vec::with_capacity(4);
            if let Some(out) = &self.stdout {
                fds.push(PollFd::new(out, PollFlags::IN));
                sources.push(Source::Stdout);
            }
            if let Some(err) = &self.stderr {
                fds.push(PollFd::new(err, PollFlags::IN));
                sources.push(Source::Stderr);
            }
            if let (Some(fd), None) = (&self.pidfd, self.status) {
                fds.push(PollFd::new(fd, PollFlags::IN));
                sources.push(Source::Exit);
            }
            if stop_open {
                fds.push(PollFd::new(stop, PollFlags::IN));
                sources.push(Source::Stop);
            }
            let timeout = self
                .next_timer(now)
                .and_then(|t| Timespec::try_from(t.saturating_duration_since(now)).ok());
            match poll(&mut fds, timeout.as_ref()) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => return Err(RunError::Wait(e.into())),
            }
            let ready: Vec<Source> = sources
                .iter()
                .zip(&fds)
                .filter(|(_, fd)| !fd.revents().is_empty())
                .map(|(s, _)| *s)
                .collect();
            drop(fds);
            for source in ready {
                match source {
                    Source::Stdout => self.read_stdout(),
                    Source::Stderr => self.read_stderr(),
                    Source::Exit => self.reap()?,
                    Source::Stop => {
                        stop_open = false;
                        if self.status.is_none() && self.stopped.is_none() {
                            info!("cancelling claude");
                            self.stop(StopReason::Cancelled, Instant::now());
                        }
                    }
                }
            }
        }
    }

    /// Timeout, SIGKILL after the grace period, and the exit check without a pidfd.
    fn on_timers(&mut self, now: Instant) -> Result<(), RunError> {
        if self.status.is_some() {
            return Ok(());
        }
        if self.stopped.is_none() && now >= self.deadline {
            warn!(
                timeout_secs = self.config.timeout_secs,
                "claude timed out; stopping it"
            );
            self.stop(StopReason::TimedOut, now);
        }
        if self.kill_at.is_some_and(|t| now >= t) {
            warn!("claude did not stop after SIGINT; killing its process group");
            self.proc.signal(Signal::SIGKILL);
            self.kill_at = None;
        }
        if self.pidfd.is_none() {
            self.reap()?;
        }
        Ok(())
    }

    fn next_timer(&self, now: Instant) -> Option<Instant> {
        let running = self.status.is_none();
        [
            (running && self.stopped.is_none()).then_some(self.deadline),
            self.kill_at.filter(|_| running),
            self.drain_until,
            (running && self.pidfd.is_none()).then(|| now + EXIT_CHECK),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// SIGINT (the CLI's clean stop) now, SIGKILL to the group after the grace period.
    fn stop(&mut self, reason: StopReason, now: Instant) {
        self.stopped = Some(reason);
        self.proc.signal(Signal::SIGINT);
        self.kill_at = Some(now + Duration::from_secs(self.config.kill_grace_secs));
    }

    /// Reaps the child if it has exited; output is then read for [`DRAIN_AFTER_EXIT`] more.
    fn reap(&mut self) -> Result<(), RunError> {
        self.status = self.proc.try_reap(self.stopped.is_some())?;
        if self.status.is_some() {
            self.drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
        }
        Ok(())
    }

    fn read_stdout(&mut self) {
        let Some(pipe) = self.stdout.as_mut() else {
            return;
        };
        let (state, on_event) = (&mut self.state, &mut self.on_event);
        let mut each = |line: &[u8]| {
            if let Some(ev) = state.take_line(line.trim_ascii_end()) {
                on_event(&ev);
            }
        };
        match read_some(pipe, &mut self.chunk) {
            Some(0) | None => {
                self.stdout = None;
                self.out_lines.finish(&mut each);
            }
            Some(n) => self.out_lines.push(&self.chunk[..n], &mut each),
        }
    }

    fn read_stderr(&mut self) {
        let Some(pipe) = self.stderr.as_mut() else {
            return;
        };
        let tail = &mut self.stderr_tail;
        let mut each = |line: &[u8]| {
            let line = String::from_utf8_lossy(line);
            debug!(line = %line.trim_end(), "claude stderr");
            push_tail(tail, &line);
            push_tail(tail, "\n");
        };
        match read_some(pipe, &mut self.chunk) {
            Some(0) | None => {
                self.stderr = None;
                self.err_lines.finish(&mut each);
            }
            Some(n) => self.err_lines.push(&self.chunk[..n], &mut each),
        }
    }
}

/// What the poll in [`ClaudeRunner::run_blocking`] waits on.
#[derive(Debug, Clone, Copy)]
enum Source {
    Stdout,
    Stderr,
    Exit,
    Stop,
}

/// A started CLI process, leader of its own process group. Until it has been reaped, its
/// pid (= the group id) cannot be reused, so signals reach the right group; if dropped
/// unreaped (an early return), the group is killed and the child reaped.
struct Process {
    child: Child,
    pgid: Pid,
    reaped: bool,
}

impl Process {
    fn new(child: Child) -> Self {
        // Linux pids fit in an i32 (pid_max is at most 2^22).
        let pgid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        Self {
            child,
            pgid,
            reaped: false,
        }
    }

    fn signal(&self, signal: Signal) {
        signal_group(self.pgid, signal);
    }

    /// Reaps the child if it has exited. After a cancel or timeout, whatever it started that
    /// is still in its group is killed too.
    fn try_reap(&mut self, stopped: bool) -> Result<Option<ExitStatus>, RunError> {
        let status = self.child.try_wait().map_err(RunError::Wait)?;
        if status.is_some() {
            self.reaped = true;
            if stopped {
                self.signal(Signal::SIGKILL);
            }
        }
        Ok(status)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if !self.reaped {
            self.signal(Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Splits a byte stream into lines (without their `\n`), keeping at most `max` bytes of a
/// line: the rest of a longer one is skipped, and it is counted in `too_long` instead.
struct LineSplitter {
    partial: Vec<u8>,
    max: usize,
    /// Inside a line that passed `max`: skip to its end.
    skipping: bool,
    too_long: usize,
}

impl LineSplitter {
    fn new(max: usize) -> Self {
        Self {
            partial: Vec::new(),
            max,
            skipping: false,
            too_long: 0,
        }
    }

    /// Feeds `data`; calls `each` for every line it completes.
    fn push(&mut self, mut data: &[u8], each: &mut impl FnMut(&[u8])) {
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            if self.skipping {
                self.skipping = false;
            } else if self.partial.len() + i > self.max {
                self.too_long += 1;
                self.partial.clear();
            } else if self.partial.is_empty() {
                each(&data[..i]);
            } else {
                self.partial.extend_from_slice(&data[..i]);
                each(&self.partial);
                self.partial.clear();
            }
            data = &data[i + 1..];
        }
        if self.skipping {
            return;
        }
        if self.partial.len() + data.len() > self.max {
            self.too_long += 1;
            self.skipping = true;
            self.partial = Vec::new();
        } else {
            self.partial.extend_from_slice(data);
        }
    }

    /// End of stream: a last line without `\n` still counts.
    fn finish(&mut self, each: &mut impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            each(&self.partial);
            self.partial.clear();
        }
    }
}

/// One `read` after `poll` said the pipe is ready; `None` on an error (treated as closed).
fn read_some(pipe: &mut impl Read, buf: &mut [u8]) -> Option<usize> {
    loop {
        match pipe.read(buf) {
            Ok(n) => return Some(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                debug!(error = %e, "reading claude's output failed");
                return None;
            }
        }
    }
}

fn signal_group(pgid: Pid, signal: Signal) {
    // ESRCH (already gone) is the expected case after exit.
    if let Err(e) = killpg(pgid, signal) {
        debug!(%pgid, ?signal, error = %e, "signal not delivered");
    }
}

fn push_tail(tail: &mut String, line: &str) {
    tail.push_str(line);
    if tail.len() > STDERR_TAIL_BYTES {
        let mut cut = tail.len() - STDERR_TAIL_BYTES;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail.drain(..cut);
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => Signal::try_from(sig).map_or_else(
            |_| format!("killed by signal {sig}"),
            |s| format!("killed by {s}"),
        ),
        _ => "unknown exit".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(passthrough: &[&str]) -> ClaudeRunner {
        runner_for("claude".into(), passthrough)
    }

    fn runner_for(binary: PathBuf, passthrough: &[&str]) -> ClaudeRunner {
        ClaudeRunner::new(ClaudeConfig {
            binary,
            timeout_secs: 60,
            kill_grace_secs: 1,
            permission_mode: "default".into(),
            model: String::new(),
            max_concurrent_runs: 1,
            oauth_token: None,
            oauth_token_file: None,
            env: BTreeMap::new(),
            passthrough_commands: passthrough.iter().map(|s| (*s).to_string()).collect(),
            cost_reporting: CostReporting::Auto,
        })
    }

    fn args_of(r: &ClaudeRunner, prompt: &str) -> Vec<String> {
        r.args(&RunRequest {
            prompt: prompt.into(),
            ..RunRequest::default()
        })
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
    }

    #[test]
    fn the_prompt_always_follows_a_double_dash() {
        let a = args_of(&runner(&[]), "-v is a flag");
        assert_eq!(&a[a.len() - 2..], ["--", "-v is a flag"]);
    }

    #[test]
    fn slash_messages_are_text_unless_passed_through() {
        let r = runner(&["cost"]);
        let last = |prompt: &str| args_of(&r, prompt).pop().unwrap_or_default();
        assert_eq!(last("/clear now"), " /clear now");
        assert_eq!(last("/cost"), "/cost");
        assert_eq!(last("hello /clear"), "hello /clear");
        assert!(!args_of(&r, "/clear").contains(&"--disable-slash-commands".to_string()));
        let line: serde_json::Value = serde_json::from_str(&r.user_line("/model x")).expect("json");
        assert_eq!(line["message"]["content"], " /model x");
        assert_eq!(line["type"], "user");
    }

    #[test]
    fn the_cli_environment_holds_no_service_secrets() {
        let mut config = runner(&[]).config().clone();
        config.env.insert("EXTRA".into(), "1".into());
        config.oauth_token = Some(SecretString::from("oauth-secret"));
        let inherited = [
            ("DISCORD_TOKEN", "bot-secret"),
            ("COORDINATOR__CLAUDE__OAUTH_TOKEN", "oauth-secret"),
            ("COORDINATOR__STORE__PATH", "/x"),
            ("COORDINATOR_CONFIG", "/etc/c.toml"),
            ("CREDENTIALS_DIRECTORY", "/run/credentials/c"),
            ("CLAUDECODE", "1"),
            ("PATH", "/usr/bin"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let env: BTreeMap<String, String> = cli_environment(&config, inherited)
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect();
        let keys: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(keys, ["CLAUDE_CODE_OAUTH_TOKEN", "EXTRA", "PATH"]);
        assert_eq!(env["CLAUDE_CODE_OAUTH_TOKEN"], "oauth-secret");
    }

    #[test]
    fn cost_reporting_follows_the_cli_version() {
        assert!(CostReporting::Auto.is_cumulative(Some("2.1.330")));
        assert!(CostReporting::Auto.is_cumulative(Some("2.2.0")));
        assert!(!CostReporting::Auto.is_cumulative(Some("2.1.197")));
        assert!(CostReporting::Auto.is_cumulative(None));
        assert!(!CostReporting::PerCall.is_cumulative(Some("2.1.330")));
    }

    #[test]
    fn without_a_pidfd_the_exit_is_noticed_by_polling() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let script = dir.path().join("claude");
        // A leftover process keeps stdout open: only noticing the exit ends the run.
        std::fs::write(
            &script,
            "#!/bin/sh\nsleep 600 & echo $! > \"$0.pid\"\n\
             echo '{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"done\"}'\n",
        )
        .expect("write script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let runner = runner_for(script.clone(), &[]);
        let req = RunRequest {
            prompt: "hello".into(),
            cwd: dir.path().to_path_buf(),
            ..RunRequest::default()
        };
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (stop_rx, _stop_tx) = pipe_with(PipeFlags::CLOEXEC).expect("pipe");
            let mut drive = Drive::start(&runner, &req, |_| {}).expect("spawn");
            drive.pidfd = None;
            let ran = drive.until_done(&stop_rx).map(|()| {
                (
                    drive.status.is_some_and(|s| s.success()),
                    drive.state.result.as_ref().map(ResultLine::text),
                )
            });
            let _ = done_tx.send(ran.map_err(|e| e.to_string()));
        });
        let outcome = done_rx.recv_timeout(Duration::from_secs(60));
        if let Ok(pid) = std::fs::read_to_string(dir.path().join("claude.pid")) {
            if let Ok(pid) = pid.trim().parse() {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let (exited_ok, text) = outcome.expect("the run ended").expect("ran");
        assert!(exited_ok);
        assert_eq!(text.as_deref(), Some("done"));
    }

    #[test]
    fn lines_split_across_reads_are_put_back_together() {
        let mut lines = Vec::new();
        let mut each = |l: &[u8]| lines.push(String::from_utf8_lossy(l).into_owned());
        let mut split = LineSplitter::new(1024);
        split.push(b"one\ntw", &mut each);
        split.push(b"o", &mut each);
        split.push(b"\nthree\n\nfou", &mut each);
        split.finish(&mut each);
        split.finish(&mut each);
        assert_eq!(lines, ["one", "two", "three", "", "fou"]);
    }

    #[test]
    fn a_line_past_the_bound_is_dropped_and_counted_not_kept() {
        let mut lines = Vec::new();
        let mut each = |l: &[u8]| lines.push(String::from_utf8_lossy(l).into_owned());
        let mut split = LineSplitter::new(8);
        split.push(b"short\nmuch too lo", &mut each);
        assert!(split.partial.is_empty(), "nothing of the long line is kept");
        split.push(b"ng still going", &mut each);
        split.push(b"\nok\n12345678\n123456789\nend", &mut each);
        split.finish(&mut each);
        assert_eq!(lines, ["short", "ok", "12345678", "end"]);
        assert_eq!(split.too_long, 2);
    }

    #[test]
    fn the_stderr_tail_is_bounded_and_valid_utf8() {
        let mut t = String::new();
        for _ in 0..2000 {
            push_tail(&mut t, "ünïcödé line\n");
        }
        assert!(t.len() <= STDERR_TAIL_BYTES);
        assert!(t.ends_with("ünïcödé line\n"));
    }
}
