//! The runner's hold on the CLI process, against small shell scripts standing in for
//! `claude`: output without a final newline, a child that leaves a background process
//! holding its output open, and a run whose future is dropped mid-way.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::support::script_runner;
use actors::claude::{ClaudeRunner, RunError, RunRequest};
use tokio_util::sync::CancellationToken;

/// The documented stream-json result line of a successful run.
const RESULT: &str = r#"{"type":"result","subtype":"success","is_error":false,"result":"done","session_id":"3d9910b4-8b06-4349-b96a-024cb6292830","total_cost_usd":0.01}"#;

fn runner_for(dir: &Path, script: &str) -> ClaudeRunner {
    let mut env = BTreeMap::new();
    env.insert("RESULT".to_string(), RESULT.to_string());
    env.insert(
        "PID_FILE".to_string(),
        dir.join("pids").display().to_string(),
    );
    script_runner(dir, script, env)
}

fn request(dir: &Path) -> RunRequest {
    RunRequest {
        prompt: "hello".into(),
        cwd: dir.to_path_buf(),
        project_dir: dir.to_path_buf(),
        ..RunRequest::default()
    }
}

fn alive(pid: i32) -> bool {
    // A zombie has exited; only its parent has not collected it yet.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

fn pids(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

async fn wait_for<T>(mut probe: impl FnMut() -> Option<T>) -> T {
    for _ in 0..600 {
        if let Some(v) = probe() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached in 30 s");
}

#[actix_rt::test]
async fn a_last_line_without_a_newline_is_still_read() {
    let dir = tempfile::tempdir().expect("tmp");
    let runner = runner_for(dir.path(), r#"printf '%s' "$RESULT""#);
    let report = runner
        .run(&request(dir.path()), |_| {}, &CancellationToken::new())
        .await
        .expect("ran");
    assert_eq!(report.result.expect("result line").text(), "done");
}

#[actix_rt::test]
async fn output_held_open_by_a_leftover_process_does_not_hold_the_run() {
    let dir = tempfile::tempdir().expect("tmp");
    // The background sleep inherits stdout and stderr and outlives the CLI.
    let runner = runner_for(
        dir.path(),
        r#"sleep 300 & echo $! >> "$PID_FILE"; printf '%s\n' "$RESULT""#,
    );
    let (req, cancel) = (request(dir.path()), CancellationToken::new());
    let run = runner.run(&req, |_| {}, &cancel);
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run ended while the leftover process still held its output")
        .expect("ran");
    assert_eq!(report.result.expect("result line").text(), "done");
    for pid in pids(dir.path()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[actix_rt::test]
async fn dropping_a_run_stops_its_whole_process_group() {
    let dir = tempfile::tempdir().expect("tmp");
    // Ignores SIGINT, so only the SIGKILL after the grace period ends it; its background
    // child must go too.
    let runner = runner_for(
        dir.path(),
        r#"trap '' INT; sleep 300 & echo $! >> "$PID_FILE"; echo $$ >> "$PID_FILE"; wait"#,
    );
    let req = request(dir.path());
    let cancel = CancellationToken::new();
    let run = runner.run(&req, |_| {}, &cancel);
    // Poll the run until both processes are up, then drop it.
    let started = tokio::select! {
        _ = run => None,
        pids = wait_for(|| Some(pids(dir.path())).filter(|p| p.len() == 2)) => Some(pids),
    };
    let started = started.expect("the run ended before it was dropped");
    assert!(started.iter().all(|&p| alive(p)), "{started:?}");
    wait_for(|| started.iter().all(|&p| !alive(p)).then_some(())).await;
}

#[actix_rt::test]
async fn an_output_line_past_the_bound_fails_the_run_clearly() {
    let dir = tempfile::tempdir().expect("tmp");
    // 17,000,000 bytes without a newline, then a good result line.
    let runner = runner_for(
        dir.path(),
        r#"head -c 17000000 /dev/zero | tr '\0' a; echo; printf '%s\n' "$RESULT""#,
    );
    let err = runner
        .run(&request(dir.path()), |_| {}, &CancellationToken::new())
        .await
        .expect_err("a line past the bound");
    assert!(matches!(err, RunError::LineTooLong), "{err:?}");
    assert!(err.to_string().contains("longer than 16 MiB"), "{err}");
}
