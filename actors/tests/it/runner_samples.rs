//! The runner against the REAL CLI's recorded outputs: a replay script stands in for `claude`
//! and prints a sample's stdout, stderr and exit code (tests/fixtures/claude-cli, copied from
//! ../shared/claude-cli/samples).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::support::script_runner;
use actors::claude::stream_json::StreamEvent;
use actors::claude::{ClaudeRunner, RunError, RunReport, RunRequest};
use tokio_util::sync::CancellationToken;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/claude-cli")
}

struct Replay {
    dir: tempfile::TempDir,
    runner: ClaudeRunner,
}

fn replay(sample: &str) -> Replay {
    let dir = tempfile::tempdir().expect("tmp");
    let mut env = BTreeMap::new();
    env.insert(
        "SAMPLE".to_string(),
        fixtures().join(sample).display().to_string(),
    );
    env.insert(
        "ARGS_OUT".to_string(),
        dir.path().join("args").display().to_string(),
    );
    let runner = script_runner(
        dir.path(),
        "printf '%s\\n' \"$@\" > \"$ARGS_OUT\"\ncat \"$SAMPLE.stdout\"\ncat \"$SAMPLE.stderr\" >&2\nexit \"$(cat \"$SAMPLE.rc\")\"",
        env,
    );
    Replay { dir, runner }
}

async fn run(
    sample: &str,
    resume: Option<&str>,
) -> (Result<RunReport, RunError>, Vec<StreamEvent>) {
    let r = replay(sample);
    let req = RunRequest {
        prompt: "hello".into(),
        cwd: r.dir.path().to_path_buf(),
        project_dir: r.dir.path().to_path_buf(),
        resume: resume.map(str::to_string),
        ..RunRequest::default()
    };
    // The runner calls back on its own thread.
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&events);
    let out = r
        .runner
        .run(
            &req,
            move |e| sink.lock().expect("events").push(e.clone()),
            &CancellationToken::new(),
        )
        .await;
    let events = std::mem::take(&mut *events.lock().expect("events"));
    (out, events)
}

#[actix_rt::test]
async fn a_stream_json_answer_is_read_with_its_cumulative_cost() {
    let (out, events) = run("b_stream_json", None).await;
    let report = out.expect("success");
    assert!(!report.is_error());
    let result = report.result.as_ref().expect("result");
    assert_eq!(result.text(), "echo: hello stream");
    assert_eq!(
        report.session_id.as_deref(),
        Some("7c82abb0-385d-4975-a3ce-d56de5904ab4")
    );
    let cost = report.cost.expect("cost");
    assert!((cost.total_usd - 0.050_324).abs() < 1e-9);
    assert!(
        cost.cumulative,
        "2.1.330 reports the session's running total"
    );
    assert!(matches!(&events[0], StreamEvent::Init { version: Some(v), .. } if v == "2.1.330"));
}

#[actix_rt::test]
async fn version_2_1_197_costs_are_per_call() {
    let (out, _) = run("v197_stream", None).await;
    assert!(!out.expect("success").cost.expect("cost").cumulative);
}

#[actix_rt::test]
async fn tool_use_lines_become_progress_events() {
    let (out, events) = run("f_tool_stream", None).await;
    assert_eq!(
        out.expect("success").result.expect("result").text(),
        "tool said: hi"
    );
    let tools: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ToolUse(t) => Some(t.summary()),
            _ => None,
        })
        .collect();
    assert_eq!(tools, ["Bash: echo hi"]);
}

#[actix_rt::test]
async fn api_errors_are_errors_despite_subtype_success_and_retries_are_seen() {
    let (out, events) = run("d_api500_stream_maxretries2", None).await;
    let report = out.expect("a report");
    assert!(report.is_error());
    let result = report.result.expect("result");
    assert_eq!(result.subtype, "success");
    assert!(result.text().starts_with("API Error: 500"));
    let retries = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                StreamEvent::Retry {
                    error_status: Some(500),
                    ..
                }
            )
        })
        .count();
    assert_eq!(retries, 2);
}

#[actix_rt::test]
async fn unknown_sessions_are_detected_in_every_shape() {
    for sample in [
        "c_resume_unknown_uuid_stream",
        "c_resume_unknown_uuid",
        "c_resume_garbage",
    ] {
        let (out, _) = run(sample, Some("11111111-2222-3333-4444-555555555555")).await;
        match out {
            Err(RunError::UnknownSession { session_id, .. }) => {
                assert_eq!(session_id, "11111111-2222-3333-4444-555555555555");
            }
            other => panic!("{sample}: {other:?}"),
        }
    }
}

#[actix_rt::test]
async fn usage_errors_carry_the_cli_message() {
    let (out, _) = run("e_bypass_root_json", None).await;
    let err = out.expect_err("usage error");
    assert!(matches!(err, RunError::Failed { .. }));
    assert!(
        err.to_string()
            .contains("cannot be used with root/sudo privileges"),
        "{err}"
    );
    let (out, _) = run("g_stream_json_without_verbose", None).await;
    assert!(out
        .expect_err("usage error")
        .to_string()
        .contains("requires --verbose"));
}

#[actix_rt::test]
async fn a_killed_cli_without_output_is_a_failure_not_a_hang() {
    let (out, _) = run("d_slow_sigterm_stream", None).await;
    let err = out.expect_err("no result");
    assert!(err.to_string().contains("exit code 143"), "{err}");
}

#[actix_rt::test]
async fn a_version_string_instead_of_json_is_no_result() {
    // What `claude -p -v` prints when a prompt is not protected by `--`.
    let (out, _) = run("i_prompt_dash_v", None).await;
    assert!(
        matches!(out, Err(RunError::NoResult { unparsed: 1, .. })),
        "{out:?}"
    );
}

#[actix_rt::test]
async fn the_replay_received_the_documented_flags() {
    let r = replay("b_stream_json");
    let req = RunRequest {
        prompt: "-v is a flag".into(),
        cwd: r.dir.path().to_path_buf(),
        project_dir: r.dir.path().to_path_buf(),
        resume: Some("3d9910b4-8b06-4349-b96a-024cb6292830".into()),
        model: Some("sonnet".into()),
        tools: Some(vec!["Read".into(), "Grep".into()]),
        disallowed_tools: vec!["Bash".into()],
        ..RunRequest::default()
    };
    r.runner
        .run(&req, |_| {}, &CancellationToken::new())
        .await
        .expect("ran");
    let args = std::fs::read_to_string(r.dir.path().join("args")).expect("args");
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(
        args,
        [
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--resume",
            "3d9910b4-8b06-4349-b96a-024cb6292830",
            "--model",
            "sonnet",
            "--append-system-prompt",
            actors::claude::args::SCHEDULING_OFF,
            "--permission-mode",
            "default",
            "--tools",
            "Read,Grep",
            "--disallowedTools",
            "Bash,CronCreate,CronDelete,CronList,ScheduleWakeup",
            "--",
            "-v is a flag",
        ]
    );
}

#[actix_rt::test]
async fn a_usage_limit_is_read_with_its_reset_time_and_an_api_key_429_without() {
    let reset = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_183_334);
    // A subscription's limit, observed with the real CLI (observed-usage-limit.md).
    let (out, events) = run("u_oauth_limit_stream", None).await;
    let report = out.expect("a report");
    assert_eq!(report.usage_limit(), Some(Some(reset)));
    assert!(events
        .iter()
        .any(|e| matches!(e, StreamEvent::RateLimit(r) if r.is_rejected())));
    // The API key's 429 of ../shared: a limit, with no reset time.
    let (out, _) = run("u_api429_stream", None).await;
    assert_eq!(out.expect("a report").usage_limit(), Some(None));
    // An ordinary answer is no limit.
    let (out, _) = run("b_stream_json", None).await;
    assert_eq!(out.expect("a report").usage_limit(), None);
}
