//! Running it as a service: the metrics log, SIGTERM with runs in flight, restarts, `check`,
//! `backup` — all through the real binary.

use crate::support;

use std::time::{Duration, Instant};

use crate::support::discord::DiscordServer;
use crate::support::{json_lines, process_alive, run_with_config, wait_until, TestEnv};
use crate::support::{spawn_run_with, stop_with, wait_output};
use nix::sys::signal::Signal;
use serde_json::Value;

const ALICE: u64 = 7;
const ALPHA: u64 = 1001;

/// The `metrics` events of a JSON log, by kind (the last of each kind).
fn metrics(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "metrics")
        .collect()
}

fn last(events: &[Value], kind: &str) -> Value {
    events
        .iter()
        .rev()
        .find(|e| e["kind"] == kind)
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} metrics in {events:?}"))
}

#[test]
fn the_metrics_log_counts_a_scripted_conversation() {
    let env = TestEnv::new();
    let overlay = env.overlay(
        "",
        "[metrics]\ninterval_secs = 0\n[log]\nformat = \"json\"\nfilter = \"info\"\n",
    );
    let (status, out, err) = run_with_config(
        &overlay,
        &[
            "console",
            "--channel",
            "alpha",
            "--json",
            "--approve",
            "all",
        ],
        "one\ntwo\nFAIL500\n!status\n",
        &[],
    );
    assert!(status.success(), "{err}");
    assert_eq!(json_lines(&out).len(), 4);
    // Every log line is JSON.
    for line in err.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    let m = metrics(&err);
    let channels = last(&m, "channels");
    assert_eq!(channels["runs_started"], 3, "{channels}");
    assert_eq!(channels["runs_succeeded"], 2);
    assert_eq!(channels["runs_failed"], 1);
    assert_eq!(channels["runs_timed_out"], 0);
    assert_eq!(channels["runs_cancelled"], 0);
    assert!(
        (channels["cost_usd"].as_f64().expect("cost") - 0.10).abs() < 1e-9,
        "{channels}"
    );
    assert!(channels["queue_max"].as_u64().expect("queue_max") >= 1);
    assert_eq!(channels["queue_depth"], 0);
    assert!(
        channels["latency_max_ms"].as_u64().expect("max")
            >= channels["latency_p50_ms"].as_u64().expect("p50")
    );
    assert!(
        channels["busiest"]
            .as_str()
            .expect("busiest")
            .starts_with("alpha:runs=3"),
        "{channels}"
    );
    let registry = last(&m, "registry");
    assert_eq!(registry["live_channels"], 1);
    assert_eq!(registry["spawned"], 1);
    let store = last(&m, "store");
    // A start-up load, one load before the first run (the others reuse the saved row), three saves.
    assert!(store["operations"].as_u64().expect("ops") >= 5, "{store}");
    assert_eq!(store["errors"], 0);
    assert!(store["pool_connections"].as_u64().expect("pool") >= 1);
    let process = last(&m, "process");
    assert!(process["rss_kib"].as_u64().expect("rss") > 1000);
    assert!(process["uptime_secs"].is_u64());
    // No gateway in console mode.
    assert!(m.iter().all(|e| e["kind"] != "gateway"));
    // One warm process served the four messages.
    let sessions = last(&m, "sessions");
    assert_eq!(sessions["spawns"], 1, "{sessions}");
    assert_eq!(sessions["resumes"], 0);
    assert_eq!(sessions["ended_crashed"], 0);
    assert_eq!(sessions["approvals_asked"], 0);
}

#[test]
fn the_metrics_log_shows_a_usage_limit_pause_and_the_console_waits_it_out() {
    let env = TestEnv::new();
    let overlay = env.overlay(
        "",
        "[metrics]\ninterval_secs = 0\n[log]\nformat = \"json\"\nfilter = \"info\"\n",
    );
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 2;
    let (status, out, err) = run_with_config(
        &overlay,
        &["console", "--channel", "alpha", "--json"],
        &format!("wait USAGELIMIT:{reset}\n"),
        &[],
    );
    assert!(status.success(), "{err}");
    let lines = json_lines(&out);
    // The notice, then the answer once the limit reset.
    assert!(lines.iter().any(|l| l["kind"] == "notice"), "{out}");
    assert!(
        lines.iter().any(|l| l["reply"]
            .as_str()
            .is_some_and(|r| r.starts_with("echo: wait"))),
        "{out}"
    );
    let usage = last(&metrics(&err), "usage");
    assert_eq!(usage["pauses"], 1, "{usage}");
}

#[test]
fn approvals_are_counted_in_the_metrics_log() {
    let env = TestEnv::new();
    let overlay = env.overlay(
        "",
        "[metrics]\ninterval_secs = 0\n[log]\nformat = \"json\"\nfilter = \"info\"\n",
    );
    let a = env.path("proj").join("a");
    let b = env.path("proj").join("b");
    let input = format!(
        "TOOL:touch {}\ny\nTOOL:touch {}\nn\n",
        a.display(),
        b.display()
    );
    let (status, _, err) =
        run_with_config(&overlay, &["console", "--channel", "alpha"], &input, &[]);
    assert!(status.success(), "{err}");
    let sessions = last(&metrics(&err), "sessions");
    assert_eq!(sessions["approvals_asked"], 2, "{sessions}");
    assert_eq!(sessions["approvals_allowed"], 1);
    assert_eq!(sessions["approvals_denied"], 1);
    assert_eq!(sessions["approvals_timed_out"], 0);
    assert!(sessions["approval_wait_p95_ms"]
        .as_u64()
        .is_some_and(|ms| ms >= 1));
}

#[test]
fn metrics_are_also_written_every_interval() {
    let env = TestEnv::new();
    let overlay = env.overlay(
        "",
        "[metrics]\ninterval_secs = 1\n[log]\nformat = \"json\"\nfilter = \"warn,metrics=info\"\n",
    );
    // A run of a few seconds: the 1 s timer fires while it is in flight.
    let (status, _, err) = run_with_config(
        &overlay,
        &["console", "--channel", "alpha"],
        "be SLOW\n",
        &[("COORDINATOR__CLAUDE__TIMEOUT_SECS", "3")],
    );
    assert!(status.success(), "{err}");
    let m = metrics(&err);
    let reports: Vec<&Value> = m.iter().filter(|e| e["kind"] == "channels").collect();
    assert!(
        reports.len() >= 2,
        "periodic and final reports: {reports:?}"
    );
    assert_eq!(reports[0]["runs_started"], 1);
    assert_eq!(last(&m, "channels")["runs_timed_out"], 1);
}

const JSON_LOGS: [(&str, &str); 2] = [("COORDINATOR__LOG__FORMAT", "json"), ("RUST_LOG", "info")];

#[actix_rt::test]
async fn sigterm_during_a_slow_run_stops_cleanly_and_the_next_start_resumes() {
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    let extra = format!("[access]\nallowed_users = [{ALICE}]\n[shutdown]\ngrace_secs = 1\n");
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &JSON_LOGS);
    server.wait_ready(1).await;
    server.say(ALPHA, ALICE, "be SLOW please");
    env.wait_for_starts(1).await;
    let stand_in = env.starts()[0]["pid"].as_i64().expect("pid") as i32;
    let signalled = Instant::now();
    let out = stop_with(child, Signal::SIGTERM).await;
    let stopped_after = signalled.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Grace (1 s), SIGINT, the stand-in's clean exit: well under the 30 s a CLI run could take.
    assert!(
        stopped_after < Duration::from_secs(25),
        "took {stopped_after:?}"
    );
    wait_until(|| !process_alive(stand_in), "the stand-in to be gone").await;
    // The user was told, and the final metrics were logged.
    let replies = server.answer_texts(ALPHA);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(
        replies[0].contains("the service is restarting"),
        "{replies:?}"
    );
    let m = metrics(&stderr);
    assert_eq!(last(&m, "channels")["runs_cancelled"], 1);
    assert_eq!(last(&m, "gateway")["messages_routed"], 1);

    // The next start resumes the same conversation.
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &JSON_LOGS);
    server.wait_ready(2).await;
    // After the catch-up: a message posted within milliseconds of READY (before the service
    // has noted it) is found in the history and answered as late.
    server.wait_histories_read(&[ALPHA]).await;
    server.say(ALPHA, ALICE, "HISTORY");
    server
        .wait("answer after restart", |s| s.answer_texts(ALPHA).len() >= 2)
        .await;
    assert_eq!(
        server.answer_texts(ALPHA)[1],
        "history: be SLOW please",
        "{:?}",
        server.answer_texts(ALPHA)
    );
    let argv = support::argv_of(&env.starts()[1]);
    assert!(argv.contains(&"--resume".to_string()), "{argv:?}");
    assert!(stop_with(child, Signal::SIGTERM).await.status.success());
}

#[actix_rt::test]
async fn a_run_that_ends_within_the_grace_period_is_answered_normally() {
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    let extra = format!("[access]\nallowed_users = [{ALICE}]\n[shutdown]\ngrace_secs = 60\n");
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &JSON_LOGS);
    server.wait_ready(1).await;
    server.wait_histories_read(&[ALPHA]).await;
    let gate = env.gate("g");
    server.say(ALPHA, ALICE, &format!("finish GATE:{}", gate.display()));
    env.wait_for_starts(1).await;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, Signal::SIGTERM).expect("SIGTERM");
    // The run ends during the grace period.
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.open_gate("g");
    let out = wait_output(child).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let replies = server.answer_texts(ALPHA);
    assert_eq!(replies.len(), 1);
    assert!(replies[0].starts_with("echo: finish"), "{replies:?}");
    let m = metrics(&stderr);
    assert_eq!(last(&m, "channels")["runs_succeeded"], 1);
    assert_eq!(last(&m, "channels")["runs_cancelled"], 0);
}

fn check(env: &TestEnv, claude_extra: &str, extra: &str, vars: &[(&str, &str)]) -> (bool, String) {
    let overlay = env.overlay(claude_extra, extra);
    let (status, out, err) = run_with_config(&overlay, &["check"], "", vars);
    (status.success(), format!("{out}{err}"))
}

#[test]
fn check_passes_on_good_settings_and_says_what_it_found() {
    let env = TestEnv::new();
    let (ok, out) = check(
        &env,
        "",
        "[access]\nallowed_users = [7]\n",
        &[("DISCORD_TOKEN", "tok-SECRET-42")],
    );
    assert!(ok, "{out}");
    assert!(out.contains("2.1.330 (Claude Code)"), "{out}");
    assert!(out.contains("opened, migrated, writable"), "{out}");
    assert!(out.contains("token present"), "{out}");
    assert!(
        !out.contains("tok-SECRET-42"),
        "the token must never be printed"
    );
    assert!(!out.contains("FAIL"), "{out}");
    // Without a token it still passes (console works), but says so.
    let (ok, out) = check(&env, "", "[access]\nallowed_users = [7]\n", &[]);
    assert!(ok, "{out}");
    assert!(out.contains("warn  discord    no token"), "{out}");
}

#[test]
fn check_says_what_http_serves_and_never_prints_a_token() {
    let env = TestEnv::new();
    let tokens = env.path("http-tokens");
    std::fs::write(&tokens, "tok-HTTP-SECRET-1\n\ntok-HTTP-SECRET-2\n").expect("write");
    let extra = format!(
        "[access]\nallowed_users = [7]\n[http]\nlisten = \"127.0.0.1:9464\"\ntoken_file = \"{}\"\nprompts_per_minute = 30\n",
        tokens.display()
    );
    let (ok, out) = check(&env, "", &extra, &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("prompts over HTTP for 2 token(s), 30 a minute each"),
        "{out}"
    );
    assert!(!out.contains("HTTP-SECRET"), "a token printed: {out}");
    let (ok, out) = check(
        &env,
        "",
        "[access]\nallowed_users = [7]\n[http]\nlisten = \"127.0.0.1:9464\"\n",
        &[],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("prompts over HTTP refused (no http.token_file"),
        "{out}"
    );
    // Or systemd's credential.
    let creds = env.path("credentials");
    std::fs::create_dir_all(&creds).expect("mkdir");
    std::fs::write(creds.join("http-token"), "tok-HTTP-SECRET-3\n").expect("write");
    let (ok, out) = check(
        &env,
        "",
        "[access]\nallowed_users = [7]\n[http]\nlisten = \"127.0.0.1:9464\"\n",
        &[("CREDENTIALS_DIRECTORY", creds.to_str().expect("utf-8"))],
    );
    assert!(ok, "{out}");
    assert!(out.contains("prompts over HTTP for 1 token(s)"), "{out}");
    assert!(!out.contains("HTTP-SECRET"), "a token printed: {out}");
}

/// Extra overlay, environment, expected output.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);

#[test]
fn check_fails_clearly_on_broken_settings() {
    let env = TestEnv::new();
    std::fs::write(env.path("a-file"), b"not a directory").expect("write");
    let under_a_file = format!("{}/db.sqlite", env.path("a-file").display());
    let delta =
        "[[channel]]\nid = 1004\nname = \"delta\"\nproject_dir = \"/nonexistent/project\"\n";
    let cases: [Case; 3] = [
        (
            "",
            vec![("COORDINATOR__CLAUDE__BINARY", "/nonexistent/claude")],
            "FAIL  claude     `/nonexistent/claude` not found",
        ),
        (
            "",
            vec![("COORDINATOR__STORE__PATH", under_a_file.as_str())],
            "FAIL  store      cannot create the directory",
        ),
        (
            delta,
            vec![],
            "FAIL  channel    delta: project_dir /nonexistent/project",
        ),
    ];
    for (extra, vars, expected) in cases {
        let (ok, out) = check(&env, "", extra, &vars);
        assert!(!ok, "{expected}: {out}");
        assert!(out.contains(expected), "expected `{expected}` in:\n{out}");
    }
}

#[test]
fn check_flags_root_with_bypass_permissions() {
    let env = TestEnv::new();
    let root = nix::unistd::geteuid().is_root();
    let (ok, out) = check(
        &env,
        "permission_mode = \"bypassPermissions\"",
        "",
        &[("IS_SANDBOX", "yes")],
    );
    if root {
        assert!(!ok, "{out}");
        assert!(
            out.contains("FAIL  user") && out.contains("non-root user"),
            "{out}"
        );
    } else {
        assert!(!out.contains("FAIL  user"), "{out}");
    }
    // IS_SANDBOX=1 (exactly) in the CLI's environment lifts the CLI's refusal.
    let (_, out) = check(
        &env,
        "permission_mode = \"bypassPermissions\"",
        "",
        &[("IS_SANDBOX", "1")],
    );
    assert!(!out.contains("FAIL  user"), "{out}");
}

#[test]
fn backup_writes_a_consistent_copy() {
    let env = TestEnv::new();
    let overlay = env.overlay("", "");
    let (status, _, err) =
        run_with_config(&overlay, &["console", "--channel", "alpha"], "hello\n", &[]);
    assert!(status.success(), "{err}");
    let target = env.path("backup.db");
    let (status, out, err) = run_with_config(
        &overlay,
        &["backup", target.to_str().expect("utf-8")],
        "",
        &[],
    );
    assert!(status.success(), "{err}");
    assert!(out.contains("backed up"), "{out}");
    let copy = rusqlite::Connection::open(&target).expect("open backup");
    let (n, session): (i64, Option<String>) = copy
        .query_row(
            "SELECT count(*), max(session_id) FROM conversations",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("query");
    assert_eq!(n, 1);
    assert!(session.is_some());
    // An existing file is never overwritten.
    let (status, _, err) = run_with_config(
        &overlay,
        &["backup", target.to_str().expect("utf-8")],
        "",
        &[],
    );
    assert!(!status.success());
    assert!(err.contains("already exists"), "{err}");
}

#[actix_rt::test]
async fn a_database_held_by_a_running_service_refuses_a_second_user() {
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    let extra = format!("[access]\nallowed_users = [{ALICE}]\n");
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &JSON_LOGS);
    server.wait_ready(1).await;
    let overlay = env.overlay("", "");
    for args in [
        &["console", "--channel", "alpha"][..],
        &["sessions", "reset", "alpha"][..],
        &["run"][..],
    ] {
        let (status, _, err) =
            run_with_config(&overlay, args, "hello\n", &[("DISCORD_TOKEN", "tok")]);
        assert!(!status.success(), "{args:?}: {err}");
        assert!(
            err.contains("is in use by another claude-coordinator (pid ") && err.contains("(run))"),
            "{args:?}: {err}"
        );
    }
    assert!(env.starts().is_empty(), "nothing ran Claude");
    // Reading is fine.
    let (status, _, err) = run_with_config(&overlay, &["sessions", "list"], "", &[]);
    assert!(status.success(), "{err}");
    assert!(stop_with(child, Signal::SIGTERM).await.status.success());
    // Once it has stopped, the console may use the database.
    let (status, out, err) =
        run_with_config(&overlay, &["console", "--channel", "alpha"], "hello\n", &[]);
    assert!(status.success(), "{err}");
    assert_eq!(out, "echo: hello\n");
}

#[actix_rt::test]
async fn cli_processes_left_by_a_killed_service_are_killed_at_the_next_start() {
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    let extra = format!("[access]\nallowed_users = [{ALICE}]\n");
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &JSON_LOGS);
    server.wait_ready(1).await;
    // A turn that never ends and ignores its stdin closing: it would outlive the service.
    server.say(ALPHA, ALICE, "HANG");
    wait_until(
        || env.records().iter().any(|r| r["event"] == "hang"),
        "the stand-in to hang",
    )
    .await;
    let hang = env
        .records()
        .into_iter()
        .find(|r| r["event"] == "hang")
        .expect("hang record");
    let pid = hang["pid"].as_i64().expect("pid") as i32;
    let grandchild = hang["grandchild"].as_i64().expect("grandchild") as i32;
    let out = stop_with(child, Signal::SIGKILL).await;
    assert!(!out.status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        process_alive(pid) && process_alive(grandchild),
        "left behind"
    );
    // The next start kills what was left, and says so.
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &JSON_LOGS);
    server.wait_ready(2).await;
    wait_until(
        || !process_alive(pid) && !process_alive(grandchild),
        "the leftover process group to be killed",
    )
    .await;
    let out = stop_with(child, Signal::SIGTERM).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("killed the claude process group a previous instance left running"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("\"pid\":{pid}")), "{stderr}");
}

#[actix_rt::test]
async fn at_shutdown_no_channel_starts_a_queued_run_and_the_queued_one_runs_at_the_next_start() {
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    let extra = format!("[access]\nallowed_users = [{ALICE}]\n[shutdown]\ngrace_secs = 3\n");
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &JSON_LOGS);
    server.wait_ready(1).await;
    let gate = env.gate("g");
    // Every channel runs something that outlasts the signal; beta has a message queued.
    for channel in [ALPHA, 1003] {
        server.say(channel, ALICE, "be SLOW");
    }
    server.say(1002, ALICE, &format!("first GATE:{}", gate.display()));
    wait_until(|| env.prompts().len() >= 3, "three runs").await;
    server.say(1002, ALICE, "queued for beta");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, Signal::SIGTERM).expect("SIGTERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Beta's run ends within the grace period: its queued message must not start.
    env.open_gate("g");
    let out = wait_output(child).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !env.prompts().iter().any(|p| p == "queued for beta"),
        "{:?}",
        env.prompts()
    );
    // It stays in the inbox, unanswered, and runs at the next start, answered late.
    assert!(
        !server
            .answer_texts(1002)
            .iter()
            .any(|t| t.contains("queued for beta") || t.contains("not sent")),
        "{:?}",
        server.answer_texts(1002)
    );
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &JSON_LOGS);
    let answer = server
        .answer_where(1002, "the queued message answered after the restart", |t| {
            t.contains("echo: queued for beta")
        })
        .await;
    assert!(answer.contains("Answered late"), "{answer}");
    stop_with(child, Signal::SIGTERM).await;
}
