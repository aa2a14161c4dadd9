//! The Claude runner: spawns one `claude -p … --output-format stream-json --verbose` process
//! and turns its output into a [`RunReport`].
//!
//! Rules from `../shared/claude-cli/BEHAVIOUR.md` it follows:
//! - the prompt goes after `--`, so a message starting with `-` is never read as an option;
//! - a message starting with `/` gets `--disable-slash-commands` unless its command name is in
//!   `claude.passthrough_commands`, so it reaches Claude as text;
//! - stdin is `/dev/null` (an open pipe makes the CLI wait and append stdin to the prompt);
//! - the child leads its own process group, so cancel and timeout reach everything it started:
//!   SIGINT first (the CLI's clean stop), SIGKILL to the group after `kill_grace_secs`;
//! - success comes from `is_error`; `result` may be absent; usage errors print only stderr;
//!   stderr noise on success is not failure; `total_cost_usd` is cumulative per session in
//!   current versions.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::time::{sleep_until, Instant};
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
    /// Passed as `CLAUDE_CODE_OAUTH_TOKEN`. Environment only, never in a file.
    #[serde(default)]
    pub oauth_token: Option<SecretString>,
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
    /// Waiting for the process failed.
    #[error("waiting for claude failed: {0}")]
    Wait(std::io::Error),
}

/// Runs the `claude` CLI. Cheap to clone; shared by every channel.
#[derive(Debug, Clone)]
pub struct ClaudeRunner {
    config: Arc<ClaudeConfig>,
    /// `CLAUDECODE` is set in this process (the coordinator was started from Claude Code):
    /// it must be removed for the CLI, which otherwise refuses to start nested.
    nested: bool,
}

impl ClaudeRunner {
    /// A runner with these settings.
    pub fn new(config: ClaudeConfig) -> Self {
        Self {
            config: Arc::new(config),
            nested: std::env::var_os("CLAUDECODE").is_some(),
        }
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
        if self.is_blocked_slash_command(&req.prompt) {
            args.push("--disable-slash-commands".into());
        }
        args.push("--".into());
        args.push(req.prompt.clone().into());
        args
    }

    /// A `/name …` message whose name is not allowed to run as a CLI command.
    fn is_blocked_slash_command(&self, prompt: &str) -> bool {
        prompt.strip_prefix('/').is_some_and(|rest| {
            let name = rest.split_whitespace().next().unwrap_or_default();
            !self.config.passthrough_commands.iter().any(|p| p == name)
        })
    }

    /// Runs the CLI once. `on_event` sees every parsed line as it arrives (progress display);
    /// `cancel` stops the run (SIGINT, then SIGKILL of the process group).
    #[instrument(skip_all, fields(channel_id = req.conversation_id, resume = req.resume.is_some()))]
    pub async fn run(
        &self,
        req: &RunRequest,
        mut on_event: impl FnMut(&StreamEvent),
        cancel: &CancellationToken,
    ) -> Result<RunReport, RunError> {
        let mut child = self.spawn(req).await?;
        let pgid = child.id().map(|id| Pid::from_raw(id as i32));
        // If this future is dropped mid-run (actor stopped), take the whole group down.
        let mut guard = GroupGuard { pgid, armed: true };
        debug!(pid = ?pgid, "claude started");

        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(RunError::Wait(std::io::Error::other("child pipes missing")));
        };
        let mut stdout = BufReader::new(stdout);
        // stderr is mostly empty: a small buffer.
        let mut stderr = BufReader::with_capacity(1024, stderr);
        let (mut out_buf, mut err_buf) = (Vec::new(), Vec::new());
        let (mut out_open, mut err_open) = (true, true);
        let mut state = StreamState::default();
        let mut stderr_tail = String::new();
        let mut status: Option<ExitStatus> = None;
        let mut stopped: Option<StopReason> = None;
        let deadline = Instant::now() + Duration::from_secs(self.config.timeout_secs);
        let grace = Duration::from_secs(self.config.kill_grace_secs);
        let mut kill_at: Option<Instant> = None;
        let mut drain_until: Option<Instant> = None;

        loop {
            if status.is_some() && !out_open && !err_open {
                break;
            }
            tokio::select! {
                // read_until is cancel safe with a buffer kept across iterations.
                n = stdout.read_until(b'\n', &mut out_buf), if out_open => {
                    match n {
                        Ok(0) | Err(_) => out_open = false,
                        Ok(_) => {
                            if let Some(ev) = state.take_line(out_buf.trim_ascii_end()) {
                                on_event(&ev);
                            }
                            out_buf.clear();
                        }
                    }
                }
                n = stderr.read_until(b'\n', &mut err_buf), if err_open => {
                    match n {
                        Ok(0) | Err(_) => err_open = false,
                        Ok(_) => {
                            let line = String::from_utf8_lossy(&err_buf);
                            debug!(line = %line.trim_end(), "claude stderr");
                            push_tail(&mut stderr_tail, &line);
                            err_buf.clear();
                        }
                    }
                }
                st = child.wait(), if status.is_none() => {
                    let st = st.map_err(RunError::Wait)?;
                    status = Some(st);
                    guard.armed = false;
                    if stopped.is_some() {
                        // Anything the CLI started that is still in its group goes too.
                        signal_group(pgid, Signal::SIGKILL);
                    }
                    drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
                }
                () = sleep_until(deadline), if stopped.is_none() && status.is_none() => {
                    warn!(timeout_secs = self.config.timeout_secs, "claude timed out; stopping it");
                    stopped = Some(StopReason::TimedOut);
                    signal_group(pgid, Signal::SIGINT);
                    kill_at = Some(Instant::now() + grace);
                }
                () = cancel.cancelled(), if stopped.is_none() && status.is_none() => {
                    info!("cancelling claude");
                    stopped = Some(StopReason::Cancelled);
                    signal_group(pgid, Signal::SIGINT);
                    kill_at = Some(Instant::now() + grace);
                }
                () = sleep_opt(kill_at), if kill_at.is_some() && status.is_none() => {
                    warn!("claude did not stop after SIGINT; killing its process group");
                    signal_group(pgid, Signal::SIGKILL);
                    kill_at = None;
                }
                () = sleep_opt(drain_until), if drain_until.is_some() => {
                    debug!("output still open after claude exited; not waiting for it");
                    break;
                }
            }
        }
        let Some(status) = status else {
            return Err(RunError::Wait(std::io::Error::other("no exit status")));
        };
        let exit = describe_exit(status);
        debug!(%exit, unparsed = state.unparsed, "claude ended");
        self.report(req, state, stopped, exit, stderr_tail, status.success())
    }

    /// Starts the CLI for `req`: in the project directory, stdin null, own process group.
    async fn spawn(&self, req: &RunRequest) -> Result<tokio::process::Child, RunError> {
        let mut cmd = Command::new(&self.config.binary);
        cmd.args(self.args(req))
            .current_dir(&req.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .envs(&self.config.env)
            .process_group(0)
            .kill_on_drop(true);
        // Only touch the environment when needed: any change makes the spawn copy all of it.
        if self.nested {
            cmd.env_remove("CLAUDECODE");
        }
        if let Some(token) = &self.config.oauth_token {
            cmd.env("CLAUDE_CODE_OAUTH_TOKEN", token.expose_secret());
        }
        // `spawn` returns only once the child has exec'd (about a millisecond for a small
        // binary, far more for the real CLI): do it on a blocking thread, not the actors' one.
        let spawned = tokio::task::spawn_blocking(move || cmd.spawn())
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match spawned {
            Ok(child) => Ok(child),
            // A missing working directory fails the spawn just like a missing binary; only
            // on failure is it worth a look at the directory to tell which.
            Err(cause) => Err(match tokio::fs::metadata(&req.cwd).await {
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

/// Sends SIGKILL to the process group if dropped while armed.
struct GroupGuard {
    pgid: Option<Pid>,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            signal_group(self.pgid, Signal::SIGKILL);
        }
    }
}

fn signal_group(pgid: Option<Pid>, signal: Signal) {
    if let Some(pgid) = pgid {
        // ESRCH (already gone) is the expected case after exit.
        if let Err(e) = killpg(pgid, signal) {
            debug!(%pgid, ?signal, error = %e, "signal not delivered");
        }
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
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
        ClaudeRunner::new(ClaudeConfig {
            binary: "claude".into(),
            timeout_secs: 60,
            kill_grace_secs: 1,
            permission_mode: "default".into(),
            model: String::new(),
            max_concurrent_runs: 1,
            oauth_token: None,
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
        assert!(args_of(&r, "/clear").contains(&"--disable-slash-commands".to_string()));
        assert!(!args_of(&r, "/cost").contains(&"--disable-slash-commands".to_string()));
        assert!(!args_of(&r, "hello /clear").contains(&"--disable-slash-commands".to_string()));
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
    fn the_stderr_tail_is_bounded_and_valid_utf8() {
        let mut t = String::new();
        for _ in 0..2000 {
            push_tail(&mut t, "ünïcödé line\n");
        }
        assert!(t.len() <= STDERR_TAIL_BYTES);
        assert!(t.ends_with("ünïcödé line\n"));
    }
}
