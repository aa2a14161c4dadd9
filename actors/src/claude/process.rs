//! Driving one CLI process from spawn to reaping, on one blocking thread: a single `poll`
//! waits for output, the child's exit (a pidfd), a cancel (the stop pipe hung up) and the next
//! timer. The child leads its own process group, so a cancel or timeout reaches everything it
//! started: SIGINT first (the CLI's clean stop), SIGKILL to the group after the grace period.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::process::{pidfd_open, PidfdFlags};
use tracing::{debug, info, warn};

use super::args::args;
use super::lines::{push_tail, LineSplitter, MAX_LINE_BYTES};
use super::report::{report, StreamState};
use super::stream_json::StreamEvent;
use super::{ClaudeConfig, ClaudeRunner, RunError, RunReport, RunRequest, StopReason};

/// After the CLI exits, how long to keep reading output that a leftover child may still hold.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// Without a pidfd, how often to check whether the CLI has exited.
const EXIT_CHECK: Duration = Duration::from_millis(50);
/// Bytes taken from a pipe per `read`.
const READ_CHUNK: usize = 16 * 1024;

/// Runs the CLI for `req` until it is reaped, on this (blocking) thread; the body of
/// [`ClaudeRunner::run`].
pub(super) fn run_to_end(
    runner: &ClaudeRunner,
    req: &RunRequest,
    on_event: impl FnMut(&StreamEvent),
    stop: &OwnedFd,
) -> Result<RunReport, RunError> {
    let mut drive = Drive::start(runner, req, on_event)?;
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
    report(
        &runner.config,
        req,
        state,
        stopped,
        exit,
        stderr_tail,
        status.success(),
    )
}

/// Starts the CLI for `req`: in the project directory, stdin null, own process group.
fn spawn(runner: &ClaudeRunner, req: &RunRequest) -> Result<Process, RunError> {
    spawn_child(runner, req, &args(&runner.config, req), Stdio::null())
        .map(|child| Process::new(child, runner.process_log()))
}

/// Starts the CLI with `args` in `req`'s project directory, in its own process group, with
/// the CLI's environment, stdout and stderr piped.
pub(super) fn spawn_child(
    runner: &ClaudeRunner,
    req: &RunRequest,
    args: &[std::ffi::OsString],
    stdin: Stdio,
) -> Result<Child, RunError> {
    let mut cmd = match &runner.sandbox {
        Some(sandbox) => sandbox.command(
            &runner.config.binary,
            &req.cwd,
            &req.project_dir,
            runner.home(),
        ),
        None => Command::new(&runner.config.binary),
    };
    cmd.args(args)
        .current_dir(&req.cwd)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_clear()
        .envs(runner.env.iter().map(|(k, v)| (k, v)))
        .process_group(0);
    if let Some(dir) = &req.outbox {
        cmd.env("CLAUDE_COORDINATOR_OUTBOX", dir);
    }
    let spawned = cmd.spawn();
    if let Ok(child) = &spawned {
        runner.process_started(i32::try_from(child.id()).unwrap_or(i32::MAX));
    }
    spawned.map_err(|cause| {
        // A missing working directory fails the spawn just like a missing binary; only on
        // failure is it worth a look at the directory to tell which.
        match std::fs::metadata(&req.cwd) {
            Ok(m) if m.is_dir() => RunError::Spawn {
                binary: runner.config.binary.clone(),
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
        }
    })
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
        let mut proc = spawn(runner, req)?;
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
        self.status = self.proc.try_reap()?;
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
    log: Option<Arc<dyn super::ProcessLog>>,
}

impl Process {
    fn new(child: Child, log: Option<Arc<dyn super::ProcessLog>>) -> Self {
        // Linux pids fit in an i32 (pid_max is at most 2^22).
        let pgid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        Self {
            child,
            pgid,
            reaped: false,
            log,
        }
    }

    fn signal(&self, signal: Signal) {
        signal_group(self.pgid, signal);
    }

    /// Reaps the child if it has exited — however it ended, whatever it started and left in
    /// its group (a background job of a tool) is killed first. The exit is seen without
    /// reaping (`WNOWAIT`), so the group's id cannot have been reused when it is signalled.
    fn try_reap(&mut self) -> Result<Option<ExitStatus>, RunError> {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
        match waitid(Id::Pid(self.pgid), flags) {
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(_) => self.signal(Signal::SIGKILL),
            // Not waitable (already reaped): fall through to what std knows.
            Err(_) => {}
        }
        let status = self.child.try_wait().map_err(RunError::Wait)?;
        if status.is_some() {
            self.reaped = true;
            if let Some(log) = &self.log {
                log.ended(self.pgid.as_raw());
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
            if let Some(log) = &self.log {
                log.ended(self.pgid.as_raw());
            }
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

pub(super) fn signal_group(pgid: Pid, signal: Signal) {
    // ESRCH (already gone) is the expected case after exit.
    if let Err(e) = killpg(pgid, signal) {
        debug!(%pgid, ?signal, error = %e, "signal not delivered");
    }
}

pub(super) fn describe_exit(status: ExitStatus) -> String {
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
    use rustix::pipe::{pipe_with, PipeFlags};

    use super::*;
    use crate::claude::args::tests::config_with;
    use crate::claude::stream_json::ResultLine;

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
        let mut config = config_with(&[]);
        config.binary.clone_from(&script);
        let runner = ClaudeRunner::new(config);
        let req = RunRequest {
            prompt: "hello".into(),
            cwd: dir.path().to_path_buf(),
            project_dir: dir.path().to_path_buf(),
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
        let leftover: Option<i32> = std::fs::read_to_string(dir.path().join("claude.pid"))
            .ok()
            .and_then(|pid| pid.trim().parse().ok());
        let running = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or_default()
                    .trim_start()
                    .starts_with('Z')
            })
        };
        // A SIGKILL takes effect asynchronously: give the kernel a moment to
        // carry it out before deciding the job survived it.
        let alive = leftover.is_some_and(|pid| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while running(pid) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let alive = running(pid);
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            alive
        });
        let (exited_ok, text) = outcome.expect("the run ended").expect("ran");
        assert!(exited_ok);
        assert_eq!(text.as_deref(), Some("done"));
        // It exited normally, and what it left running in its group went with it.
        assert!(
            leftover.is_some(),
            "the script wrote its background job's pid"
        );
        assert!(!alive, "the background job outlived the run");
    }
}
