//! The core flow in-process: real application, real SQLite file, real stand-in `claude`
//! processes; a collector in place of the front end.

use crate::support;

use crate::support::{argv_of, max_overlap, process_alive, wait_until, Harness, TestEnv};
use actors::frontend::{ProgressStep, ReplyKind};
use actors::registry::CountChannels;
use actors::store::LoadConversation;

#[actix_rt::test]
async fn two_messages_in_one_channel_run_in_order_and_never_overlap() {
    let env = TestEnv::new();
    let mut h = Harness::start(env.one_shot()).await;
    let gate = env.gate("g");
    h.send("alpha", &format!("first GATE:{}", gate.display()));
    h.send("alpha", "second");
    env.wait_for_starts(1).await;
    env.open_gate("g");
    let replies = h.replies(2).await;
    assert!(replies[0].text.starts_with("echo: first"), "{replies:?}");
    assert_eq!(replies[1].text, "echo: second");
    let runs = env.runs();
    assert_eq!(runs.len(), 2);
    assert!(runs[0].prompt.starts_with("first"));
    assert!(runs[0].end <= runs[1].start, "runs overlapped: {runs:?}");
    // The second message resumed the session the first one created.
    let starts = env.starts();
    let second = argv_of(&starts[1]);
    let resumed = &second[second
        .iter()
        .position(|a| a == "--resume")
        .expect("--resume")
        + 1];
    assert_eq!(Some(resumed.as_str()), replies[0].session_id.as_deref());
}

#[actix_rt::test]
async fn channels_run_in_parallel_up_to_the_global_cap() {
    let env = TestEnv::new();
    let mut s = env.settings();
    s.claude.max_concurrent_runs = 2;
    let mut h = Harness::start(s).await;
    let gate = env.gate("g");
    for ch in ["alpha", "beta", "gamma"] {
        h.send(ch, &format!("{ch} GATE:{}", gate.display()));
    }
    // Two run at once and block on the gate; only then is it opened.
    env.wait_for_runs(2).await;
    env.open_gate("g");
    let replies = h.replies(3).await;
    assert!(replies.iter().all(|r| !r.is_error), "{replies:?}");
    let runs = env.runs();
    assert_eq!(runs.len(), 3);
    assert_eq!(max_overlap(&runs), 2, "{runs:?}");
    // Each ran in its own project directory.
    let mut cwds: Vec<&str> = runs.iter().map(|r| r.cwd.as_str()).collect();
    cwds.sort_unstable();
    cwds.dedup();
    assert_eq!(cwds.len(), 3);
}

#[actix_rt::test]
async fn runs_waiting_for_the_cap_go_in_the_order_they_asked() {
    let env = TestEnv::new();
    let mut s = env.settings();
    s.claude.max_concurrent_runs = 1;
    let mut h = Harness::start(s).await;
    let gate = env.gate("g");
    h.send("alpha", &format!("alpha GATE:{}", gate.display()));
    env.wait_for_starts(1).await;
    for (ch, id) in [("beta", 1002), ("gamma", 1003)] {
        h.send(ch, ch);
        // Wait until this channel is queued for a slot before the next one asks.
        let deadline = std::time::Instant::now() + support::PATIENCE;
        loop {
            let status = h.status(id).await;
            if status.is_some_and(|s| s.waiting_since.is_some()) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{ch} never waited for a slot"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    env.open_gate("g");
    h.replies(3).await;
    let order: Vec<String> = env.runs().into_iter().map(|r| r.prompt).collect();
    assert!(order[0].starts_with("alpha"));
    assert_eq!(&order[1..], ["beta", "gamma"]);
}

#[actix_rt::test]
async fn a_full_queue_answers_busy_and_runs_nothing_more() {
    let env = TestEnv::new();
    let mut s = env.settings();
    s.channels.queue_limit = 1;
    let mut h = Harness::start(s).await;
    let gate = env.gate("g");
    h.send("alpha", &format!("one GATE:{}", gate.display()));
    env.wait_for_starts(1).await;
    h.send("alpha", "two");
    let third = h.send("alpha", "three");
    let busy = h.reply().await;
    assert_eq!(busy.to.message_id(), Some(third));
    assert_eq!(busy.kind, ReplyKind::Busy);
    assert!(busy.text.contains("1 more are waiting"), "{}", busy.text);
    env.open_gate("g");
    let rest = h.replies(2).await;
    assert!(rest[0].text.starts_with("echo: one"));
    assert_eq!(rest[1].text, "echo: two");
    let prompts = env.prompts();
    assert!(!prompts.iter().any(|p| p == "three"), "{prompts:?}");
    // The queued message was announced with its position.
    assert!(h
        .progress
        .iter()
        .any(|p| p.step == ProgressStep::Queued { position: 1 }));
}

#[actix_rt::test]
async fn status_and_cancel_are_answered_while_a_run_is_in_flight() {
    let env = TestEnv::new();
    let mut h = Harness::start(env.one_shot()).await;
    let slow = h.send("alpha", "be SLOW please");
    env.wait_for_starts(1).await;
    h.send("alpha", "after the cancel");
    let status = h.status(1001).await.expect("live channel");
    assert!(status.running_since.is_some());
    assert_eq!(status.queued, 1);
    h.send("alpha", "!status");
    let described = h.reply().await;
    assert_eq!(described.kind, ReplyKind::Command);
    assert!(
        described.text.starts_with("Running for"),
        "{}",
        described.text
    );
    assert!(described.text.contains("1 waiting"), "{}", described.text);

    let cancelled = h.cancel(1001).await;
    assert!(cancelled);
    let reply = h.reply().await;
    assert_eq!(reply.to.message_id(), Some(slow));
    assert_eq!(reply.text, "Cancelled.");
    assert!(reply.is_error);
    // SIGINT is the CLI's clean stop: it printed its result and exited 0.
    let ends: Vec<_> = env
        .records()
        .into_iter()
        .filter(|r| r["event"] == "end")
        .collect();
    assert_eq!(ends[0]["exit"], 0);
    // The queued message then ran, resuming the cancelled run's session.
    let next = h.reply().await;
    assert_eq!(next.text, "echo: after the cancel");
    assert_eq!(next.session_id, reply.session_id);
    let argv = argv_of(&env.starts()[1]);
    assert!(argv.contains(&"--resume".to_string()), "{argv:?}");
    // With nothing running, cancel says so.
    h.send("alpha", "!cancel");
    assert_eq!(h.reply().await.text, "Nothing is running.");
}

#[actix_rt::test]
async fn a_run_past_its_timeout_is_killed_with_its_whole_process_group() {
    let env = TestEnv::new();
    let mut s = env.settings();
    s.claude.timeout_secs = 1;
    let mut h = Harness::start(s).await;
    h.send("alpha", "HANG");
    let reply = h.reply().await;
    assert_eq!(reply.text, "Timed out after 1 s; the run was stopped.");
    assert!(reply.is_error);
    let hang = env
        .records()
        .into_iter()
        .find(|r| r["event"] == "hang")
        .expect("stand-in reported its grandchild");
    let pid = hang["pid"].as_i64().expect("pid") as i32;
    let grandchild = hang["grandchild"].as_i64().expect("grandchild") as i32;
    assert!(grandchild > 0);
    wait_until(
        || !process_alive(pid) && !process_alive(grandchild),
        "the process group to die",
    )
    .await;
    // The session the hung run had started is kept for the next message.
    let stored = h
        .app
        .store()
        .send(LoadConversation {
            id: actors::ids::ConversationId(1001),
        })
        .await
        .expect("store")
        .expect("load")
        .expect("row");
    assert_eq!(stored.session_id, reply.session_id);
    assert!(stored
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("Timed out")));
}

#[actix_rt::test]
async fn a_stale_session_is_replaced_by_a_new_one_and_the_user_is_told() {
    let env = TestEnv::new();
    let mut h = Harness::start(env.one_shot()).await;
    h.send("alpha", "remember me");
    let first = h.reply().await;
    let old = first.session_id.clone().expect("session");
    // The CLI's transcripts are gone (another HOME, a cleaned machine).
    std::fs::remove_dir_all(env.path("home/.claude")).expect("remove transcripts");
    h.send("alpha", "HISTORY");
    let second = h.reply().await;
    assert!(!second.is_error, "{}", second.text);
    assert!(
        second.text.contains(&format!(
            "The earlier conversation (session {old}) could not be resumed"
        )),
        "{}",
        second.text
    );
    assert!(second.text.ends_with("history: "), "{}", second.text);
    let new = second.session_id.clone().expect("new session");
    assert_ne!(new, old);
    let starts = env.starts();
    assert!(argv_of(&starts[1]).contains(&old));
    assert!(!argv_of(&starts[2]).contains(&"--resume".to_string()));
    // The new session is the one stored and resumed next.
    h.send("alpha", "again");
    h.reply().await;
    assert!(argv_of(&env.starts()[3]).contains(&new));
}

#[actix_rt::test]
async fn messages_starting_with_dash_or_slash_reach_claude_verbatim() {
    let env = TestEnv::new();
    let mut s = env.one_shot();
    s.claude.passthrough_commands = vec!["cost".into()];
    let mut h = Harness::start(s).await;
    // The stand-in, like the real CLI, runs built-in commands whatever
    // --disable-slash-commands says: each of these must reach the model as text.
    for text in [
        "-v",
        "--help me",
        "/clear",
        "/model x",
        "/clear now",
        "/cost",
    ] {
        h.send("alpha", text);
    }
    let replies = h.replies(6).await;
    assert_eq!(replies[0].text, "echo: -v");
    assert_eq!(replies[1].text, "echo: --help me");
    // What Claude got: the user's text after one space (the observed escape).
    assert_eq!(replies[2].text, "echo:  /clear");
    assert_eq!(replies[3].text, "echo:  /model x");
    assert_eq!(replies[4].text, "echo:  /clear now");
    // `/clear` was not run: the session is the same.
    assert_eq!(replies[4].session_id, replies[0].session_id);
    // `/cost` is passed through to the CLI, which answers it locally.
    assert!(
        replies[5].text.starts_with("Estimated cost:"),
        "{}",
        replies[5].text
    );
    for s in &env.starts() {
        assert_eq!(s["stdin"], "/dev/null", "stdin must be null: {s}");
        assert!(!argv_of(s).contains(&"--disable-slash-commands".to_string()));
    }
}

#[test]
fn a_slash_message_written_to_stdin_reaches_claude_as_text() {
    use std::io::{BufRead, Write};
    let env = TestEnv::new();
    let mut settings = env.settings();
    settings.claude.passthrough_commands = vec!["cost".into()];
    let runner = actors::claude::ClaudeRunner::new(settings.claude.clone());
    let mut child = std::process::Command::new(support::fake_claude())
        .args([
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
        ])
        .current_dir(env.path("proj"))
        .env("HOME", env.path("home"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the stand-in");
    let mut stdin = child.stdin.take().expect("stdin");
    for prompt in ["/clear now", "/model x", "/cost"] {
        writeln!(stdin, "{}", runner.user_line(prompt)).expect("write");
    }
    drop(stdin);
    let results: Vec<serde_json::Value> =
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
            .filter(|v| v["type"] == "result")
            .collect();
    assert!(child.wait().expect("wait").success());
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["result"], "echo:  /clear now");
    assert_eq!(results[0]["num_turns"], 1);
    assert_eq!(results[1]["result"], "echo:  /model x");
    // Passed through: the CLI ran it, with no model call.
    assert_eq!(results[2]["num_turns"], 0);
}

#[actix_rt::test]
async fn error_results_are_reported_clearly() {
    let env = TestEnv::new();
    let mut h = Harness::start(env.one_shot()).await;
    for text in ["FAIL500", "TOOL MAXTURNS", "CRASH", "GARBAGE", "NOISE"] {
        h.send("alpha", text);
    }
    let r = h.replies(5).await;
    assert!(
        r[0].is_error && r[0].text.starts_with("API Error: 500"),
        "{:?}",
        r[0]
    );
    assert!(
        r[1].is_error && r[1].text.contains("Reached maximum number of turns"),
        "{:?}",
        r[1]
    );
    assert_eq!(r[2].kind, ReplyKind::Failure);
    assert!(
        r[2].text.contains("exit code 3") && r[2].text.contains("simulated crash"),
        "{:?}",
        r[2]
    );
    assert!(
        r[3].is_error && r[3].text.contains("without a result"),
        "{:?}",
        r[3]
    );
    assert!(
        r[3].text.contains("3 unreadable output line(s)"),
        "{:?}",
        r[3]
    );
    // Noise on stderr is not failure.
    assert!(!r[4].is_error && r[4].text == "echo: NOISE", "{:?}", r[4]);
    let row = h
        .app
        .store()
        .send(LoadConversation {
            id: actors::ids::ConversationId(1001),
        })
        .await
        .expect("store")
        .expect("load")
        .expect("row");
    assert_eq!(row.message_count, 5);
    assert_eq!(row.last_error, None, "the last run succeeded");
}

#[actix_rt::test]
async fn a_missing_binary_or_project_dir_is_a_clear_error() {
    let env = TestEnv::new();
    let mut s = env.settings();
    s.claude.binary = env.path("no-such-claude");
    s.channel[1].profile.project_dir = env.path("no-such-dir");
    let mut h = Harness::start(s).await;
    h.send("alpha", "hello");
    h.send("beta", "hello");
    let mut r = h.replies(2).await;
    r.sort_by_key(|x| x.conversation_id);
    assert!(
        r[0].text.contains("could not start") && r[0].text.contains("no-such-claude"),
        "{:?}",
        r[0]
    );
    assert!(
        r[1].text.contains("project directory") && r[1].text.contains("no-such-dir"),
        "{:?}",
        r[1]
    );
    assert!(r.iter().all(|x| x.kind == ReplyKind::Failure));
}

#[actix_rt::test]
async fn cumulative_and_per_call_costs_are_both_stored_right() {
    for version in ["2.1.330", "2.1.197"] {
        let env = TestEnv::new();
        let mut s = env.settings();
        s.claude
            .env
            .insert("FAKE_CLAUDE_VERSION".into(), version.into());
        let mut h = Harness::start(s).await;
        for i in 0..3 {
            h.send("alpha", &format!("message {i}"));
        }
        let replies = h.replies(3).await;
        for r in &replies {
            assert!((r.cost_usd - 0.05).abs() < 1e-9, "{version}: {r:?}");
        }
        let row = h
            .app
            .store()
            .send(LoadConversation {
                id: actors::ids::ConversationId(1001),
            })
            .await
            .expect("store")
            .expect("load")
            .expect("row");
        assert!(
            (row.total_cost_usd - 0.15).abs() < 1e-9,
            "{version}: {row:?}"
        );
        assert_eq!(row.message_count, 3);
    }
}

#[actix_rt::test]
async fn idle_channel_actors_stop_and_the_conversation_continues_later() {
    let env = TestEnv::new();
    let mut s = env.settings();
    s.channels.idle_secs = 1;
    let mut h = Harness::start(s).await;
    h.send("alpha", "hello");
    let first = h.reply().await;
    assert_eq!(h.registry.send(CountChannels).await.expect("registry"), 1);
    let registry = h.registry.clone();
    let mut live = 1;
    while live > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        live = registry.send(CountChannels).await.expect("registry");
    }
    h.send("alpha", "HISTORY");
    let second = h.reply().await;
    assert_eq!(second.text, "history: hello");
    assert_eq!(second.session_id, first.session_id);
}

#[actix_rt::test]
async fn tool_use_is_shown_as_progress() {
    let env = TestEnv::new();
    let mut h = Harness::start(env.settings()).await;
    let id = h.send("alpha", "TOOL:echo from the tool");
    let reply = h.reply().await;
    assert_eq!(reply.text, "tool said: from the tool");
    let steps: Vec<&ProgressStep> = h
        .progress
        .iter()
        .filter(|p| p.origin.message_id == id)
        .map(|p| &p.step)
        .collect();
    assert_eq!(
        steps,
        [
            &ProgressStep::Started,
            &ProgressStep::Tool("Bash: echo from the tool".into())
        ]
    );
}

#[actix_rt::test]
async fn a_store_that_cannot_be_written_loses_no_answer() {
    let env = TestEnv::new();
    let mut s = env.settings();
    s.store.busy_timeout_ms = 100;
    let mut h = Harness::start(s).await;
    // Another process holds the write lock for the whole run.
    let other = rusqlite::Connection::open(env.db()).expect("open");
    other.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    h.send("alpha", "hello");
    let reply = h.reply().await;
    assert!(reply.text.starts_with("echo: hello"), "{}", reply.text);
    assert!(
        reply.text.contains("could not be saved") && reply.text.contains("locked"),
        "{}",
        reply.text
    );
    assert!((reply.cost_usd - 0.05).abs() < 1e-9);
    other.execute_batch("ROLLBACK").expect("unlock");
    // The service kept running: the next message is answered and stored.
    h.send("alpha", "again");
    let next = h.reply().await;
    assert_eq!(next.text, "echo: again");
}

#[actix_rt::test]
async fn queued_messages_continue_the_conversation_while_the_store_cannot_be_written() {
    let env = TestEnv::new();
    let mut s = env.settings();
    s.store.busy_timeout_ms = 100;
    let mut h = Harness::start(s).await;
    // The first run waits on the gate until the second message is queued behind it.
    let gate = env.gate("g");
    let other = rusqlite::Connection::open(env.db()).expect("open");
    other.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    h.send("alpha", &format!("hello GATE:{}", gate.display()));
    env.wait_for_starts(1).await;
    h.send("alpha", "HISTORY");
    env.open_gate("g");
    let replies = h.replies(2).await;
    other.execute_batch("ROLLBACK").expect("unlock");
    assert!(replies[0].text.starts_with("echo: hello"), "{replies:?}");
    // The second run resumed the first one's session although it was never stored, and its
    // cost is still this run's share of the session's running total.
    assert!(replies[1].text.starts_with("history: hello"), "{replies:?}");
    assert_eq!(replies[1].session_id, replies[0].session_id);
    for r in &replies {
        assert!(r.text.contains("could not be saved"), "{r:?}");
        assert!((r.cost_usd - 0.05).abs() < 1e-9, "{r:?}");
    }
}

fn unix_secs_from_now(secs: u64) -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + secs
}

#[actix_rt::test]
async fn a_usage_limit_pauses_every_conversation_until_it_resets_then_the_queues_run() {
    let env = TestEnv::new();
    let mut h = Harness::start(env.settings()).await;
    let reset = unix_secs_from_now(3);
    let limited = format!("first USAGELIMIT:{reset}");
    h.send("alpha", &limited);
    let notice = h.reply().await;
    assert_eq!(notice.kind, ReplyKind::Notice, "{notice:?}");
    assert!(
        notice.text.contains("usage limit is reached"),
        "{}",
        notice.text
    );
    let reset_at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(reset);
    let shown = humantime::format_rfc3339_seconds(reset_at + std::time::Duration::from_secs(1));
    assert!(notice.text.contains(&shown.to_string()), "{}", notice.text);
    // Another conversation waits too (one account), and says so once.
    h.send("beta", "beta waits");
    let notice = h.reply().await;
    assert_eq!(
        (notice.kind, notice.conversation.as_str()),
        (ReplyKind::Notice, "beta")
    );
    h.send("beta", "!status");
    let status = h.reply().await;
    assert!(
        status.text.contains("Paused by Claude's usage limit"),
        "{}",
        status.text
    );
    assert!(status.text.contains("1 waiting"), "{}", status.text);
    assert!(
        !env.prompts().iter().any(|p| p == "beta waits"),
        "ran during the pause"
    );
    // After the reset both run by themselves, and nothing else is said.
    let answers = h.replies(2).await;
    assert!(
        std::time::SystemTime::now() >= reset_at,
        "answered before the reset"
    );
    let mut texts: Vec<&str> = answers.iter().map(|r| r.text.as_str()).collect();
    texts.sort_unstable();
    assert_eq!(
        texts,
        ["echo: beta waits", format!("echo: {limited}").as_str()]
    );
    assert!(answers
        .iter()
        .all(|r| r.kind == ReplyKind::Answer && !r.is_error));
    let prompts = env.prompts();
    assert_eq!(
        prompts.iter().filter(|p| **p == limited).count(),
        2,
        "refused once, then run"
    );
}

#[actix_rt::test]
async fn an_api_429_without_a_reset_time_is_waited_out_with_a_backoff() {
    let env = TestEnv::new();
    let mut settings = env.one_shot();
    settings.channels.usage_backoff_secs = 1;
    let mut h = Harness::start(settings).await;
    let until = unix_secs_from_now(2);
    let prompt = format!("x API429:{until}");
    h.send("alpha", &prompt);
    let notice = h.reply().await;
    assert_eq!(notice.kind, ReplyKind::Notice);
    assert!(
        notice.text.contains("gave no reset time"),
        "{}",
        notice.text
    );
    // Refused again at least once (1 s, then 2 s), told once, then answered.
    let answer = h.reply().await;
    assert_eq!(answer.kind, ReplyKind::Answer, "{answer:?}");
    assert_eq!(answer.text, format!("echo: {prompt}"));
    assert!(env.prompts().len() >= 2, "{:?}", env.prompts());
}

fn flag_value(argv: &[String], flag: &str) -> Option<String> {
    argv.iter()
        .position(|a| a == flag)
        .and_then(|i| argv.get(i + 1).cloned())
}

#[actix_rt::test]
async fn usage_sessions_and_resume_work_from_chat() {
    let env = TestEnv::new();
    let mut h = Harness::start(env.one_shot()).await;
    h.send("alpha", "one");
    let first = h.reply().await;
    let old = first.session_id.clone().expect("session");
    h.send("alpha", "two");
    h.reply().await;
    h.send("alpha", "!usage");
    let usage = h.reply().await;
    // The stand-in costs 0.05 a call.
    assert!(
        usage.text.contains("this conversation $0.1000"),
        "{}",
        usage.text
    );
    assert!(usage.text.contains("over 2 run(s)"), "{}", usage.text);
    h.send("alpha", "!reset");
    h.reply().await;
    h.send("alpha", "three");
    let fresh = h.reply().await;
    assert_ne!(fresh.session_id.as_deref(), Some(old.as_str()));
    h.send("alpha", "!sessions");
    let list = h.reply().await;
    assert!(
        list.text.contains(&old) && list.text.contains("2 message(s)"),
        "{}",
        list.text
    );
    assert!(list.text.contains("← current"), "{}", list.text);
    h.send("alpha", "!resume not-a-session");
    let refused = h.reply().await;
    assert!(
        refused.is_error && refused.text.contains("not one of"),
        "{}",
        refused.text
    );
    h.send("alpha", &format!("!resume {old}"));
    let switched = h.reply().await;
    assert!(switched.text.contains(&old), "{}", switched.text);
    h.send("alpha", "HISTORY");
    let history = h.reply().await;
    assert_eq!(history.text, "history: one | two");
    let argv = argv_of(env.starts().last().expect("a start"));
    assert_eq!(flag_value(&argv, "--resume"), Some(old));
}

#[actix_rt::test]
async fn the_model_and_mode_chosen_from_chat_are_used_and_kept() {
    let env = TestEnv::new();
    let mut settings = env.one_shot();
    settings.channel[1].profile.allow_mode_change = true;
    let mut h = Harness::start(settings.clone()).await;
    h.send("alpha", "!model");
    assert!(h.reply().await.text.contains("CLI's default"));
    h.send("alpha", "!model sonnet");
    assert!(h.reply().await.text.contains("`sonnet`"));
    h.send("alpha", "!model ;rm&&$(id)");
    assert!(h.reply().await.is_error, "not a model name");
    h.send("alpha", "hello");
    h.reply().await;
    let argv = argv_of(env.starts().last().expect("a start"));
    assert_eq!(flag_value(&argv, "--model").as_deref(), Some("sonnet"));
    // Alpha does not allow mode changes; beta does, but never bypassPermissions.
    h.send("alpha", "!mode plan");
    let refused = h.reply().await;
    assert!(
        refused.is_error && refused.text.contains("allow_mode_change"),
        "{}",
        refused.text
    );
    h.send("beta", "!mode bypassPermissions");
    assert!(h.reply().await.is_error);
    h.send("beta", "!mode nonsense");
    assert!(h
        .reply()
        .await
        .text
        .contains("One of: default, acceptEdits, plan"));
    h.send("beta", "!mode plan");
    assert!(h.reply().await.text.contains("`plan`"));
    h.send("beta", "hi");
    h.reply().await;
    let argv = argv_of(env.starts().last().expect("a start"));
    assert_eq!(
        flag_value(&argv, "--permission-mode").as_deref(),
        Some("plan")
    );
    // Kept across a restart of the service.
    drop(h);
    let mut h = Harness::start(settings.clone()).await;
    h.send("alpha", "!model");
    assert!(h.reply().await.text.contains("`sonnet` (chosen here"));
    h.send("beta", "!mode");
    assert!(h.reply().await.text.contains("`plan`"));
    drop(h);
    // The channel's policy changes: the choice made under the old one no longer holds —
    // neither once mode changes are no longer allowed, nor once its own mode is another.
    let mut stricter = settings.clone();
    stricter.channel[1].profile.allow_mode_change = false;
    let mut h = Harness::start(stricter).await;
    h.send("beta", "after the change");
    h.reply().await;
    let argv = argv_of(env.starts().last().expect("a start"));
    assert_eq!(
        flag_value(&argv, "--permission-mode").as_deref(),
        Some("default")
    );
    drop(h);
    let mut other = settings.clone();
    other.channel[1].profile.permission_mode = Some(actors::claude::PermissionMode::DontAsk);
    let mut h = Harness::start(other).await;
    h.send("beta", "and another");
    h.reply().await;
    let argv = argv_of(env.starts().last().expect("a start"));
    assert_eq!(
        flag_value(&argv, "--permission-mode").as_deref(),
        Some("dontAsk")
    );
    drop(h);
    // Back as it was: the choice holds again.
    let mut h = Harness::start(settings).await;
    h.send("beta", "as before");
    h.reply().await;
    let argv = argv_of(env.starts().last().expect("a start"));
    assert_eq!(
        flag_value(&argv, "--permission-mode").as_deref(),
        Some("plan")
    );
}

#[actix_rt::test]
async fn a_reset_by_anyone_keeps_the_always_rules_only_approvers_may_clear() {
    let env = TestEnv::new();
    let h = Harness::start(env.settings()).await;
    h.app
        .store()
        .send(actors::store::AddRules {
            id: actors::ids::ConversationId(1001),
            rules: vec!["Bash(touch x)".into()],
        })
        .await
        .expect("store")
        .expect("add");
    let mut h = h;
    h.send("alpha", "!reset");
    assert!(h.reply().await.text.contains("new conversation"));
    h.send("alpha", "!rules");
    let rules = h.reply().await.text;
    assert!(rules.contains("Bash(touch x)"), "{rules}");
}

#[actix_rt::test]
async fn an_image_an_older_cli_sends_again_every_turn_starts_a_new_session_instead_of_failing_on() {
    let env = TestEnv::new();
    let mut s = env.settings();
    // 2.1.197 keeps an image the API refused in the session (2.1.330 removes it itself).
    s.claude
        .env
        .insert("FAKE_CLAUDE_VERSION".into(), "2.1.197".into());
    let mut h = Harness::start(s).await;
    h.send("alpha", "hello");
    let first = h.reply().await;
    h.send("alpha", "look BADIMAGE");
    let stuck = h.reply().await;
    assert!(stuck.is_error);
    assert!(
        stuck.text.contains("could not process an image")
            && stuck
                .text
                .contains("next message starts a new Claude session"),
        "{}",
        stuck.text
    );
    h.send("alpha", "and now?");
    let after = h.reply().await;
    assert!(!after.is_error, "{}", after.text);
    assert_eq!(after.text, "echo: and now?");
    assert_ne!(after.session_id, first.session_id, "a new session");
}
