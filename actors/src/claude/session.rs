//! A live session: one warm, two-way `claude` process per conversation
//! (`--input-format stream-json --permission-prompt-tool stdio`), whose stdin carries the turns
//! and the answers to Claude's questions (`../shared/claude-cli/PERMISSIONS.md`).
//!
//! A turn is one user line on stdin; it ends at its `result` line, and the next user line is
//! only written after it (the CLI folds lines written mid-turn into the running turn). The
//! process idles between turns. Three threads serve it — one writes stdin, one reads stdout
//! (lines bounded by [`MAX_LINE_BYTES`]) and reaps the process, one keeps stderr's tail — so the
//! actors only ever wait on a channel. Its process group is signalled only while its leader is
//! unreaped (the reaper takes the same lock), so a signal can never reach a reused pid.

use std::io::{Read, Write};
use std::process::{ChildStderr, ChildStdin, ChildStdout, Stdio};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::args::live_args;
use super::lines::{push_tail, LineSplitter};
use super::permission::{control_line, response_line, Decision};
use super::process::{describe_exit, signal_group, spawn_child};
use super::report::{report, StreamState};
use super::stream_json::{parse_line, StreamEvent};
use super::{ClaudeRunner, RunError, RunReport, RunRequest, StopReason, MAX_LINE_BYTES};

/// What the reader thread passes on.
enum SessionEvent {
    /// A parsed stdout line.
    Line(StreamEvent),
    /// The process exited (how), after its stdout closed.
    Exited(String),
}

/// What the threads and the handles share.
struct Shared {
    pgid: Pid,
    /// Set, under this lock, just before the leader is reaped.
    reaped: Mutex<bool>,
    stderr_tail: Mutex<String>,
    /// Control requests waiting for their answer, by request id.
    asked:
        Mutex<std::collections::HashMap<String, tokio::sync::oneshot::Sender<serde_json::Value>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Signals the whole process group, unless its leader has been reaped.
    fn signal(&self, signal: Signal) {
        let reaped = lock(&self.reaped);
        if !*reaped {
            signal_group(self.pgid, signal);
        }
    }
}

/// A handle that writes to a live session's stdin: answers to permission requests,
/// interrupts. Cheap to clone; writing to a session that has ended does nothing.
#[derive(Clone)]
pub struct SessionControl {
    stdin: Sender<String>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SessionControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionControl")
            .field("pgid", &self.shared.pgid)
            .finish_non_exhaustive()
    }
}

impl SessionControl {
    /// Answers permission request `request_id`.
    pub fn respond(&self, request_id: &str, decision: &Decision) {
        let _ = self.stdin.send(response_line(request_id, decision));
    }

    /// Asks the CLI to stop the running turn (the process stays up).
    pub fn interrupt(&self) {
        let _ = self
            .stdin
            .send(control_line("coordinator-interrupt", "interrupt"));
    }

    /// Asks the CLI `subtype` (`get_usage`, …) and waits up to `wait` for its answer; `None`
    /// if it refused, did not answer in time, or has ended.
    pub async fn ask(&self, subtype: &str, wait: Duration) -> Option<serde_json::Value> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("coordinator-{subtype}-{n}");
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&self.shared.asked).insert(id.clone(), tx);
        let _ = self.stdin.send(control_line(&id, subtype));
        let answer = tokio::time::timeout(wait, rx)
            .await
            .ok()
            .and_then(Result::ok);
        lock(&self.shared.asked).remove(&id);
        answer
    }

    /// Sends the control request `subtype` with `field` = `value` (`set_model`,
    /// `set_permission_mode`: PERMISSIONS.md). Its answer comes back as a line; one that
    /// fails is logged.
    fn request(&self, subtype: &str, field: &str, value: &str) {
        let line = serde_json::json!({"type": "control_request",
            "request_id": format!("coordinator-{subtype}"),
            "request": {"subtype": subtype, field: value}});
        let _ = self.stdin.send(line.to_string());
    }
}

/// One warm CLI process.
pub struct LiveSession {
    control: Option<SessionControl>,
    shared: Arc<Shared>,
    events: UnboundedReceiver<SessionEvent>,
    /// The session the process works on, once known (init line).
    session_id: Option<String>,
    /// What the process was started with (`--resume` id) for the first turn's report.
    resumed: Option<String>,
    exited: bool,
    turns: u64,
    grace: Duration,
    config: Arc<super::ClaudeConfig>,
}

impl std::fmt::Debug for LiveSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSession")
            .field("pgid", &self.shared.pgid)
            .field("session_id", &self.session_id)
            .field("turns", &self.turns)
            .finish_non_exhaustive()
    }
}

impl LiveSession {
    /// Starts the CLI for `req` (its prompt unused), resuming `req.resume` if set. `held` (the
    /// process's place under a cap) is kept until the process has been reaped.
    pub fn spawn(
        runner: &ClaudeRunner,
        req: &RunRequest,
        held: impl Send + 'static,
    ) -> Result<Self, RunError> {
        let args = live_args(runner.config(), req);
        let mut child = spawn_child(runner, req, &args, Stdio::piped())?;
        // Linux pids fit in an i32 (pid_max is at most 2^22).
        let pgid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let shared = Arc::new(Shared {
            pgid,
            reaped: Mutex::new(false),
            stderr_tail: Mutex::new(String::new()),
            asked: Mutex::new(std::collections::HashMap::new()),
        });
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let (Some(stdin), Some(stdout), Some(stderr)) = (stdin, stdout, stderr) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RunError::Wait(std::io::Error::other("no pipes to the CLI")));
        };
        let (in_tx, in_rx) = channel::<String>();
        std::thread::spawn(move || write_stdin(stdin, &in_rx));
        let tail = Arc::clone(&shared);
        let (stderr_done, stderr_closed) = channel::<()>();
        std::thread::spawn(move || {
            read_stderr(stderr, &tail);
            let _ = stderr_done.send(());
        });
        let (ev_tx, events) = unbounded_channel();
        let reaper = Arc::clone(&shared);
        let log = runner.process_log();
        let models = runner.models();
        if !models.is_cached() {
            // Once per service: the answer is kept by the reader, whenever it comes.
            let _ = in_tx.send(control_line(super::models::REQUEST_ID, "list_models"));
        }
        std::thread::spawn(move || {
            read_stdout(stdout, child, &reaper, &ev_tx, &stderr_closed, &models);
            // Reaped: its place under the cap is free.
            drop(held);
            if let Some(log) = log {
                log.ended(reaper.pgid.as_raw());
            }
        });
        info!(pid = %pgid, resume = req.resume.is_some(), "live claude session started");
        Ok(Self {
            control: Some(SessionControl {
                stdin: in_tx,
                shared: Arc::clone(&shared),
            }),
            shared,
            events,
            session_id: req.resume.clone(),
            resumed: req.resume.clone(),
            exited: false,
            turns: 0,
            grace: runner.config().kill_grace(),
            config: runner.shared_config(),
        })
    }

    /// A handle to its stdin (`None` once the session is ending).
    pub fn control(&self) -> Option<SessionControl> {
        self.control.clone()
    }

    /// Switches the process's model (`set_model`; `None`: the CLI's own default).
    pub fn set_model(&self, model: Option<&str>) {
        if let Some(c) = &self.control {
            c.request("set_model", "model", model.unwrap_or("default"));
        }
    }

    /// Switches the process's permission mode (`set_permission_mode`).
    pub fn set_permission_mode(&self, mode: super::PermissionMode) {
        if let Some(c) = &self.control {
            c.request("set_permission_mode", "mode", mode.as_str());
        }
    }

    /// The Claude session it works on, once known.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// Whether the process is still up (it may have died between turns).
    pub fn is_alive(&mut self) -> bool {
        while let Ok(ev) = self.events.try_recv() {
            match ev {
                SessionEvent::Exited(exit) => {
                    info!(pid = %self.shared.pgid, %exit, "live claude session ended between turns");
                    self.exited = true;
                }
                SessionEvent::Line(StreamEvent::ControlResponse {
                    request_id,
                    success: false,
                    payload,
                }) => warn!(%request_id, error = %payload, "the CLI refused a control request"),
                SessionEvent::Line(e) => debug!(event = ?e, "line between turns ignored"),
            }
        }
        !self.exited && self.events_open()
    }

    fn events_open(&self) -> bool {
        !self.events.is_closed() || !self.events.is_empty()
    }

    /// Runs one turn: writes `line` (a user line) and reads until its `result`. `on_event`
    /// sees every line on the way (progress, permission requests, withdrawals). `cancel`, or
    /// `timeout`, sends an interrupt; if no result follows within the kill grace, SIGINT,
    /// then SIGKILL of the group.
    pub async fn turn(
        &mut self,
        line: String,
        mut on_event: impl FnMut(&StreamEvent),
        cancel: &CancellationToken,
        timeout: Duration,
        req: &RunRequest,
    ) -> Result<RunReport, RunError> {
        let Some(control) = self.control.clone() else {
            return Err(RunError::Wait(std::io::Error::other(
                "the session is ending",
            )));
        };
        self.turns += 1;
        let _ = control.stdin.send(line);
        let mut state = StreamState::default();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut stopped: Option<StopReason> = None;
        // Escalation after an interrupt: SIGINT, then SIGKILL, each after the grace period.
        let mut escalate: Option<(tokio::time::Instant, Signal)> = None;
        let result = loop {
            let next_escalation = escalate.map(|(t, _)| t);
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(SessionEvent::Line(e)) => {
                        state.take_event(&e);
                        let done = matches!(e, StreamEvent::Result(_));
                        on_event(&e);
                        if done {
                            break None;
                        }
                    }
                    Some(SessionEvent::Exited(exit)) => {
                        self.exited = true;
                        break Some(exit);
                    }
                    None => {
                        self.exited = true;
                        break Some("the session's output closed".to_string());
                    }
                },
                () = cancel.cancelled(), if stopped.is_none() => {
                    info!("cancelling the turn (interrupt)");
                    stopped = Some(StopReason::Cancelled);
                    control.interrupt();
                    escalate = Some((tokio::time::Instant::now() + self.grace, Signal::SIGINT));
                }
                () = sleep_until(deadline), if stopped.is_none() => {
                    warn!(timeout_secs = timeout.as_secs(), "turn timed out; interrupting it");
                    stopped = Some(StopReason::TimedOut);
                    control.interrupt();
                    escalate = Some((tokio::time::Instant::now() + self.grace, Signal::SIGINT));
                }
                () = sleep_until(next_escalation.unwrap_or(deadline)), if next_escalation.is_some() => {
                    let signal = escalate.map_or(Signal::SIGKILL, |(_, s)| s);
                    warn!(?signal, "no result after the interrupt; signalling the process group");
                    self.shared.signal(signal);
                    escalate = (signal == Signal::SIGINT)
                        .then(|| (tokio::time::Instant::now() + self.grace, Signal::SIGKILL));
                }
            }
        };
        if let Some(id) = state.session_id() {
            self.session_id = Some(id.to_string());
        }
        let first = RunRequest {
            resume: if self.turns == 1 {
                self.resumed.clone()
            } else {
                None
            },
            ..req.clone()
        };
        let stderr_tail = lock(&self.shared.stderr_tail).clone();
        // A result ends the turn (the process lives on); without one the process is gone.
        let (exit, success) = match result {
            None => ("live session".to_string(), true),
            Some(exit) => (exit, false),
        };
        report(
            &self.config,
            &first,
            state,
            stopped,
            exit,
            stderr_tail,
            success,
        )
    }

    /// Ends the session: closes stdin (the CLI exits), then kills the process group if it is
    /// still there after the kill grace.
    pub fn end(mut self) {
        self.close();
    }

    fn close(&mut self) {
        if self.control.take().is_none() {
            return;
        }
        let (shared, grace) = (Arc::clone(&self.shared), self.grace);
        info!(pid = %shared.pgid, "ending live claude session");
        std::thread::spawn(move || {
            let until = Instant::now() + grace;
            while Instant::now() < until {
                if *lock(&shared.reaped) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            shared.signal(Signal::SIGKILL);
        });
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        self.close();
    }
}

fn write_stdin(mut stdin: ChildStdin, lines: &std::sync::mpsc::Receiver<String>) {
    // Ends when every sender is gone (the session ends: stdin closes) or the CLI is gone.
    for line in lines {
        let wrote = stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.write_all(b"\n"))
            .and_then(|()| stdin.flush());
        if let Err(e) = wrote {
            debug!(error = %e, "the CLI no longer reads its stdin");
            break;
        }
    }
}

fn read_stderr(mut stderr: ChildStderr, shared: &Shared) {
    let mut lines = LineSplitter::new(MAX_LINE_BYTES);
    let mut buf = vec![0_u8; 16 * 1024];
    let mut each = |line: &[u8]| {
        let line = String::from_utf8_lossy(line);
        debug!(line = %line.trim_end(), "claude stderr");
        let mut tail = lock(&shared.stderr_tail);
        push_tail(&mut tail, &line);
        push_tail(&mut tail, "\n");
    };
    loop {
        match stderr.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => lines.push(&buf[..n], &mut each),
        }
    }
    lines.finish(&mut each);
}

/// Reads stdout until it closes, then reaps the process (and kills what is left of its group).
fn read_stdout(
    mut stdout: ChildStdout,
    mut child: std::process::Child,
    shared: &Shared,
    events: &UnboundedSender<SessionEvent>,
    stderr_closed: &std::sync::mpsc::Receiver<()>,
    models: &super::models::ModelCatalog,
) {
    let mut lines = LineSplitter::new(MAX_LINE_BYTES);
    let mut buf = vec![0_u8; 16 * 1024];
    let mut each = |line: &[u8]| {
        let line = line.trim_ascii_end();
        if line.is_empty() {
            return;
        }
        match parse_line(line) {
            Ok(StreamEvent::Models(list)) => {
                debug!(models = list.len(), "the CLI listed its models");
                models.set(list);
            }
            Ok(StreamEvent::ControlResponse {
                request_id,
                success,
                payload,
            }) if lock(&shared.asked).contains_key(&request_id) => {
                if let Some(tx) = lock(&shared.asked).remove(&request_id) {
                    let _ = tx.send(if success {
                        payload
                    } else {
                        serde_json::Value::Null
                    });
                }
            }
            Ok(ev) => {
                let _ = events.send(SessionEvent::Line(ev));
            }
            Err(e) => debug!(error = %e, "claude printed a line that is not JSON"),
        }
    };
    loop {
        match stdout.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => lines.push(&buf[..n], &mut each),
        }
    }
    lines.finish(&mut each);
    if lines.too_long > 0 {
        warn!(
            lines = lines.too_long,
            "claude printed lines too long to keep"
        );
    }
    // Wait without reaping, then reap under the lock, so no signal can reach a reused pid.
    let _ = waitid(
        Id::Pid(shared.pgid),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
    );
    let status = {
        let mut reaped = lock(&shared.reaped);
        // Whatever the session started and left behind goes with it.
        signal_group(shared.pgid, Signal::SIGKILL);
        let status = child.wait();
        *reaped = true;
        status
    };
    let exit = status.map_or_else(|e| format!("unknown exit ({e})"), describe_exit);
    // Its last words on stderr say why it died: read them first (a leftover process holding
    // stderr open is not waited for long).
    let _ = stderr_closed.recv_timeout(Duration::from_secs(2));
    let _ = events.send(SessionEvent::Exited(exit));
}
