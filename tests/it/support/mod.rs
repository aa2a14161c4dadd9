//! Shared test support: a temporary deployment (project dir, HOME, database, stand-in log),
//! its settings (a real overlay file for the binary; loaded, then changed in code, for
//! in-process tests), an in-process harness that collects replies, and readers for what the
//! stand-in `claude` recorded.

pub mod discord;
pub mod gateway_docs;
pub mod openapi;
pub mod real_cli;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actix::Addr;
use actors::channel::{ChannelStatus, GetStatus};
use actors::frontend::{
    ApprovalAnswer, ApprovalState, DeliverReply, Durability, FrontEnd, FrontendEvent, Origin,
    ReplySink, ShowApproval, ShowProgress, SubmitMessage,
};
use actors::frontend::{CancelReason, CancelRun};
use actors::ids::{ConversationId, MessageId, UserId};
use actors::registry::ChannelRegistry;
use claude_coordinator::settings::Settings;
use claude_coordinator::startup::Application;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;

/// How long a test waits for something that should happen; generous, since CI is shared.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The stand-in `claude`, built by `cargo test` as the `fake-claude` workspace member.
pub fn fake_claude() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_claude-coordinator"));
    let path = bin.with_file_name("claude");
    assert!(
        path.exists(),
        "stand-in claude not found at {}: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// A temporary deployment: one directory holding everything a test touches.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub fn new() -> Self {
        Self::laid_out(
            tempfile::Builder::new()
                .prefix("coordinator-test")
                .tempdir()
                .expect("temp dir"),
        )
    }

    fn laid_out(dir: tempfile::TempDir) -> Self {
        for sub in ["home", "proj", "proj2", "proj3", "gates"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        Self { dir }
    }

    /// A deployment outside `/tmp` (in Cargo's target directory): the sandbox gives the CLI a
    /// private `/tmp`, which would hide everything under it whatever else the sandbox did.
    pub fn outside_tmp() -> Self {
        Self::laid_out(
            tempfile::Builder::new()
                .prefix("coordinator-test")
                .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
                .expect("temp dir"),
        )
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn db(&self) -> PathBuf {
        self.path("data/coordinator.db")
    }

    pub fn log(&self) -> PathBuf {
        self.path("claude.log")
    }

    /// A gate file path for `GATE:<path>` prompts; `open_gate` releases it.
    pub fn gate(&self, name: &str) -> PathBuf {
        self.path("gates").join(name)
    }

    pub fn open_gate(&self, name: &str) {
        std::fs::write(self.gate(name), b"open").expect("open gate");
    }

    /// An overlay with three channels (`alpha`, `beta`, `gamma`) using the stand-in; `extra`
    /// is appended (later keys in TOML tables must not repeat, so extra holds whole tables or
    /// keys of tables not written here).
    pub fn overlay(&self, claude_extra: &str, extra: &str) -> PathBuf {
        // Test defaults for [claude], unless `claude_extra` sets the same key.
        let mut claude_defaults = String::new();
        // The sandbox (on by default where bubblewrap works) is turned on by the tests about
        // it: inside it a process's pid is the namespace's, which the process tests follow.
        for line in [
            "timeout_secs = 60",
            "kill_grace_secs = 1",
            "sandbox = \"none\"",
        ] {
            let key = line.split('=').next().unwrap_or_default().trim();
            if !claude_extra
                .lines()
                .any(|l| l.trim_start().starts_with(key))
            {
                claude_defaults.push_str(line);
                claude_defaults.push('\n');
            }
        }
        let text = format!(
            r#"
[claude]
binary = "{binary}"
{claude_defaults}{claude_extra}

[claude.env]
HOME = "{home}"
FAKE_CLAUDE_LOG = "{log}"
FAKE_CLAUDE_SLOW_MS = "30000"

[store]
path = "{db}"

# Streaming (on by default) is turned on by the tests about it: with it every turn also
# posts and edits a progress message, which the other tests do not count on.
[[channel]]
id = 1001
name = "alpha"
project_dir = "{proj}"
stream = false

[[channel]]
id = 1002
name = "beta"
project_dir = "{proj2}"
stream = false

[[channel]]
id = 1003
name = "gamma"
project_dir = "{proj3}"
stream = false
{extra}
"#,
            binary = fake_claude().display(),
            home = self.path("home").display(),
            log = self.log().display(),
            db = self.db().display(),
            proj = self.path("proj").display(),
            proj2 = self.path("proj2").display(),
            proj3 = self.path("proj3").display(),
        );
        let path = self.path("overlay.toml");
        std::fs::write(&path, text).expect("write overlay");
        path
    }

    /// The deployment's settings, from the real loader with [`TestEnv::overlay`]; tests change
    /// fields in code.
    pub fn settings(&self) -> Settings {
        Settings::load(Some(&self.overlay("", ""))).expect("settings load")
    }

    /// The deployment's settings with one `claude -p` process per message (live sessions
    /// off), for tests of that mode.
    pub fn one_shot(&self) -> Settings {
        let mut s = self.settings();
        s.claude.live_sessions = false;
        s
    }

    /// Every record the stand-in wrote.
    pub fn records(&self) -> Vec<Value> {
        let Ok(text) = std::fs::read_to_string(self.log()) else {
            return Vec::new();
        };
        text.lines()
            .map(|l| serde_json::from_str(l).expect("stand-in log line is JSON"))
            .collect()
    }

    /// The stand-in's start records, in order.
    pub fn starts(&self) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["event"] == "start")
            .collect()
    }

    /// Completed runs as (prompt, cwd, start ms, end ms), ordered by start: a one-shot
    /// process from start to end, or a live session's turn.
    pub fn runs(&self) -> Vec<Run> {
        let records = self.records();
        let mut runs: Vec<Run> = records
            .iter()
            .enumerate()
            .filter(|(_, r)| (r["event"] == "start" && !is_live(r)) || r["event"] == "turn")
            .filter_map(|(i, s)| {
                let end_kind = if s["event"] == "turn" {
                    "turn_end"
                } else {
                    "end"
                };
                let end = records[i..]
                    .iter()
                    .find(|e| e["event"] == end_kind && e["pid"] == s["pid"])?;
                Some(Run {
                    prompt: prompt_of(s),
                    cwd: s["cwd"].as_str().unwrap_or_default().to_string(),
                    start: s["at_ms"].as_u64().unwrap_or_default(),
                    end: end["at_ms"].as_u64().unwrap_or_default(),
                })
            })
            .collect();
        runs.sort_by_key(|r| r.start);
        runs
    }

    /// Every prompt the stand-in received, in order: one-shot prompts and live turns.
    pub fn prompts(&self) -> Vec<String> {
        self.records()
            .iter()
            .filter(|r| (r["event"] == "start" && !is_live(r)) || r["event"] == "turn")
            .map(prompt_of)
            .collect()
    }

    /// Waits until the stand-in has begun `n` runs (one-shot processes or live turns): a live
    /// process starts before its turn reaches a `GATE`.
    pub async fn wait_for_runs(&self, n: usize) {
        wait_until(|| self.prompts().len() >= n, &format!("{n} stand-in runs")).await;
    }

    /// Waits until the stand-in has started `n` processes.
    pub async fn wait_for_starts(&self, n: usize) {
        wait_until(|| self.starts().len() >= n, &format!("{n} stand-in starts")).await;
    }
}

/// One completed stand-in process.
#[derive(Debug, Clone)]
pub struct Run {
    pub prompt: String,
    pub cwd: String,
    pub start: u64,
    pub end: u64,
}

/// Whether a start record is a live session's (`--input-format stream-json`).
pub fn is_live(record: &Value) -> bool {
    argv_of(record).iter().any(|a| a == "--input-format")
}

/// The prompt of a stand-in record: a live turn's, or a one-shot start's argument after `--`.
pub fn prompt_of(record: &Value) -> String {
    if let Some(p) = record["prompt"].as_str() {
        return p.to_string();
    }
    let argv: Vec<&str> = record["argv"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    argv.iter()
        .position(|a| *a == "--")
        .and_then(|i| argv.get(i + 1))
        .map(|s| (*s).to_string())
        .unwrap_or_default()
}

/// The argv of a stand-in start record.
pub fn argv_of(record: &Value) -> Vec<String> {
    record["argv"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The largest number of runs in flight at once.
pub fn max_overlap(runs: &[Run]) -> usize {
    let mut edges: Vec<(u64, i32)> = runs
        .iter()
        .flat_map(|r| [(r.start, 1), (r.end, -1)])
        .collect();
    // Ends sort before starts at the same millisecond: touching is not overlapping.
    edges.sort_by_key(|&(t, d)| (t, d));
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        max = max.max(now);
    }
    max as usize
}

/// Polls `cond` until it holds; panics with `what` after [`PATIENCE`].
pub async fn wait_until(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a process is still alive (a zombie counts as gone).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat.rsplit(')').next().unwrap_or_default().trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

/// The real application with a collecting front end.
pub struct Harness {
    pub app: Application,
    pub registry: Addr<ChannelRegistry>,
    rx: UnboundedReceiver<FrontendEvent>,
    pub progress: Vec<ShowProgress>,
    /// Permission requests and outcomes seen on the way.
    pub approvals: Vec<ShowApproval>,
    next_message: u64,
}

impl Harness {
    pub async fn start(settings: Settings) -> Self {
        let app = Application::build(settings)
            .await
            .expect("application builds");
        let (sink, rx) = ReplySink::start();
        let registry = app.start_registry(FrontEnd::of(&sink));
        Self {
            app,
            registry,
            rx,
            progress: Vec::new(),
            approvals: Vec::new(),
            // Ids from the clock: a harness started again on the same database must not
            // send ids its inbox already holds (they would be dropped as copies).
            next_message: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
                * 1000,
        }
    }

    /// Sends `text` to the configured channel `channel`; returns the message id.
    pub fn send(&mut self, channel: &str, text: &str) -> MessageId {
        let conversation = self.app.conversation(channel).expect("configured channel");
        self.next_message += 1;
        self.registry.do_send(SubmitMessage {
            origin: Origin {
                channel_id: conversation.id.into(),
                message_id: MessageId(self.next_message),
                author_id: UserId(7),
            },
            conversation,
            text: text.to_string(),
            attachments: Vec::new(),
            late: false,
            inbox: Durability::New,
            approver: true,
            via: actors::via::Via::Chat,
        });
        MessageId(self.next_message)
    }

    /// What conversation `id` is doing (`None`: no live actor).
    pub async fn status(&self, id: u64) -> Option<ChannelStatus> {
        let id = ConversationId(id);
        self.registry
            .send(GetStatus {
                conversation_id: id,
            })
            .await
            .expect("registry")
    }

    /// Cancels the run in flight in conversation `id` (a user's `!cancel`); whether there was
    /// one.
    pub async fn cancel(&self, id: u64) -> bool {
        let cancel = CancelRun {
            conversation_id: ConversationId(id),
            reason: CancelReason::User,
            message_id: None,
        };
        self.registry.send(cancel).await.expect("registry")
    }

    /// The next reply (progress seen on the way is kept in `self.progress`).
    pub async fn reply(&mut self) -> DeliverReply {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let next = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no reply within {PATIENCE:?}"));
            match next {
                Some(FrontendEvent::Reply(r)) => return r,
                Some(FrontendEvent::Progress(p)) => self.progress.push(p),
                Some(FrontendEvent::Approval(a)) => self.approvals.push(a),
                None => panic!("collector closed"),
            }
        }
    }

    /// The next permission request asked (replies must not come first).
    pub async fn asked(&mut self) -> ShowApproval {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(i) = self
                .approvals
                .iter()
                .position(|a| matches!(a.state, ApprovalState::Asked { .. }))
            {
                return self.approvals.remove(i);
            }
            let next = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no permission request within {PATIENCE:?}"));
            match next {
                Some(FrontendEvent::Approval(a)) => self.approvals.push(a),
                Some(FrontendEvent::Progress(p)) => self.progress.push(p),
                Some(FrontendEvent::Reply(r)) => panic!("a reply before the request: {r:?}"),
                None => panic!("collector closed"),
            }
        }
    }

    /// Answers `asked` as `by`.
    pub async fn answer(
        &self,
        asked: &ShowApproval,
        answer: ApprovalAnswer,
        by: &str,
    ) -> Result<(), actors::frontend::ApprovalError> {
        self.registry
            .send(actors::frontend::AnswerApproval {
                conversation_id: asked.conversation_id,
                request_id: asked.request_id.clone(),
                token: asked.token.clone(),
                answer,
                by: by.to_string(),
            })
            .await
            .expect("registry")
    }

    /// The reply to message `id`, collecting others on the way into the returned vector.
    pub async fn replies(&mut self, n: usize) -> Vec<DeliverReply> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.reply().await);
        }
        out
    }
}

/// The real binary with `args` and the environment `vars` (`RUST_LOG` and `DISCORD_TOKEN`
/// from the test's own environment removed), stdout and stderr piped.
pub fn coordinator(args: &[&str], vars: &[(&str, &str)]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_claude-coordinator"));
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("DISCORD_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

/// Runs the real binary with `args`, feeding `stdin`; returns (status, stdout, stderr).
pub fn run_binary(
    args: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
) -> (std::process::ExitStatus, String, String) {
    run_binary_as(args, stdin, env, None)
}

/// [`run_binary`] with `--config overlay` before `args`.
pub fn run_with_config(
    overlay: &Path,
    args: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
) -> (std::process::ExitStatus, String, String) {
    run_with_config_as(overlay, args, stdin, env, None)
}

/// [`run_with_config`], as user `uid` when given.
pub fn run_with_config_as(
    overlay: &Path,
    args: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
    uid: Option<u32>,
) -> (std::process::ExitStatus, String, String) {
    let config = overlay.to_str().expect("utf-8 path");
    let all: Vec<&str> = ["--config", config].iter().chain(args).copied().collect();
    run_binary_as(&all, stdin, env, uid)
}

/// [`run_binary`], as user `uid` (and group `uid`) when given.
pub fn run_binary_as(
    args: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
    uid: Option<u32>,
) -> (std::process::ExitStatus, String, String) {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    let mut cmd = coordinator(args, env);
    cmd.stdin(std::process::Stdio::piped());
    if let Some(id) = uid {
        cmd.uid(id).gid(id);
    }
    let mut child = cmd.spawn().expect("spawn coordinator");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    let out = child.wait_with_output().expect("wait coordinator");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs plain `git -C dir args…` (as a user would, hooks and all) and answers its stdout;
/// panics if it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Parses JSON lines.
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Starts `claude-coordinator run` against `server`, with `extra` appended to the test
/// overlay (tables such as `[access]`, `[shutdown]`), logging at `RUST_LOG=trace`.
pub fn spawn_run(
    env: &TestEnv,
    server: &discord::DiscordServer,
    extra: &str,
    token: Option<&str>,
) -> std::process::Child {
    spawn_run_with(env, server, extra, token, &[("RUST_LOG", "trace")])
}

/// [`spawn_run`] with other environment variables.
pub fn spawn_run_with(
    env: &TestEnv,
    server: &discord::DiscordServer,
    extra: &str,
    token: Option<&str>,
    vars: &[(&str, &str)],
) -> std::process::Child {
    let overlay = env.overlay(
        "",
        &format!(
            "[discord]\napi_base_url = \"{}\"\nretry_backoff_ms = 20\n{extra}",
            server.base
        ),
    );
    let mut cmd = coordinator(&["--config", overlay.to_str().expect("utf-8"), "run"], vars);
    cmd.stdin(std::process::Stdio::null());
    if let Some(t) = token {
        cmd.env("DISCORD_TOKEN", t);
    }
    cmd.spawn().expect("spawn run")
}

/// Sends `signal` to a spawned `run` and waits (off the runtime thread) for its output.
pub async fn stop_with(
    child: std::process::Child,
    signal: nix::sys::signal::Signal,
) -> std::process::Output {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, signal).expect("signal");
    wait_output(child).await
}

/// Waits (off the runtime thread) for a spawned process's output.
pub async fn wait_output(child: std::process::Child) -> std::process::Output {
    tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait")
}
