//! Live sessions, in-process: one warm stand-in `claude` per conversation speaking the
//! control protocol over real pipes, the real channel actors and store, a collecting front end
//! that answers Claude's permission requests through the registry.

use std::time::Duration;

use actors::frontend::{ApprovalAnswer, ApprovalError, ApprovalState, ReplyKind};
use actors::store::{ListApprovals, LoadRules};
use serde_json::Value;

use crate::support::{argv_of, process_alive, wait_until, Harness, TestEnv};

fn starts_of(env: &TestEnv) -> Vec<Value> {
    env.starts()
}

/// `TOOL:touch <proj>/<name>`: a write, which the stand-in (like the CLI) asks about.
fn touch(env: &TestEnv, name: &str) -> String {
    format!("TOOL:touch {}", env.path("proj").join(name).display())
}

#[actix_rt::test]
async fn turns_reuse_one_warm_process_and_keep_the_conversation() {
    let env = TestEnv::new();
    let mut h = Harness::start(env.settings()).await;
    for text in ["one", "two", "HISTORY"] {
        h.send("alpha", text);
    }
    let replies = h.replies(3).await;
    assert_eq!(replies[0].text, "echo: one");
    assert_eq!(replies[2].text, "history: one | two");
    assert_eq!(replies[0].session_id, replies[2].session_id);
    let starts = starts_of(&env);
    assert_eq!(starts.len(), 1, "one spawn for three turns");
    let argv = argv_of(&starts[0]);
    assert!(
        argv.contains(&"--permission-prompt-tool".to_string()),
        "{argv:?}"
    );
    assert!(
        !argv.iter().any(|a| a.contains("one")),
        "no prompt in argv: {argv:?}"
    );
    assert_eq!(env.prompts(), ["one", "two", "HISTORY"]);
    // The cost of each turn is its own share of the session's running total.
    for r in &replies {
        assert!((r.cost_usd - 0.05).abs() < 1e-9, "{r:?}");
    }
}

#[actix_rt::test]
async fn allow_once_runs_the_tool_and_deny_does_not_and_the_turn_goes_on() {
    let env = TestEnv::new();
    let mut h = Harness::start(env.settings()).await;
    h.send("alpha", &touch(&env, "allowed"));
    let asked = h.asked().await;
    let ApprovalState::Asked {
        tool,
        summary,
        requested_by,
        always,
        ..
    } = &asked.state
    else {
        panic!("not asked: {asked:?}");
    };
    assert_eq!(tool, "Bash");
    assert!(
        summary.starts_with("touch ") && summary.ends_with("allowed"),
        "{summary}"
    );
    assert_eq!(*requested_by, actors::ids::UserId(7));
    assert_eq!(always.len(), 1, "only the addRules suggestion: {always:?}");
    assert_eq!(asked.token.len(), 32);
    h.answer(&asked, ApprovalAnswer::AllowOnce, "alice")
        .await
        .expect("taken");
    let reply = h.reply().await;
    assert_eq!(reply.text, "tool said: (Bash completed with no output)");
    assert!(env.path("proj/allowed").exists());

    h.send("alpha", &touch(&env, "denied"));
    let asked = h.asked().await;
    // The same answer twice is refused the second time.
    h.answer(
        &asked,
        ApprovalAnswer::Deny(Some("not today".into())),
        "alice",
    )
    .await
    .expect("taken");
    assert_eq!(
        h.answer(&asked, ApprovalAnswer::AllowOnce, "alice").await,
        Err(ApprovalError::NotPending)
    );
    let reply = h.reply().await;
    assert_eq!(
        reply.text,
        "tool said: Denied by alice: not today\n\n(Denied: Bash.)"
    );
    assert!(!reply.is_error, "the turn went on");
    assert!(!env.path("proj/denied").exists());
    // Every decision is in the audit.
    let audit = h
        .app
        .store()
        .send(ListApprovals {
            conversation_id: Some(actors::ids::ConversationId(1001)),
        })
        .await
        .expect("store")
        .expect("audit");
    let decisions: Vec<(&str, Option<&str>)> = audit
        .iter()
        .map(|a| (a.decision.as_str(), a.decided_by.as_deref()))
        .collect();
    assert_eq!(
        decisions,
        [("denied", Some("alice")), ("allowed", Some("alice"))]
    );
    assert!(audit[1].summary.contains("allowed"));
}

#[actix_rt::test]
async fn a_wrong_token_changes_nothing() {
    let env = TestEnv::new();
    let mut h = Harness::start(env.settings()).await;
    h.send("alpha", &touch(&env, "x"));
    let asked = h.asked().await;
    let mut forged = asked.clone();
    forged.token = "0".repeat(32);
    assert_eq!(
        h.answer(&forged, ApprovalAnswer::AllowOnce, "mallory")
            .await,
        Err(ApprovalError::BadToken)
    );
    assert!(!env.path("proj/x").exists());
    let status = h.status(1001).await.expect("live");
    assert_eq!(status.pending_approvals, 1, "still waiting");
    h.answer(&asked, ApprovalAnswer::Deny(None), "alice")
        .await
        .expect("taken");
    h.reply().await;
}

#[actix_rt::test]
async fn always_is_not_asked_again_in_the_process_nor_after_it_was_ended_and_resumed() {
    let env = TestEnv::new();
    let mut s = env.settings();
    s.claude.keep_warm_secs = 1;
    let mut h = Harness::start(s).await;
    let command = touch(&env, "always");
    h.send("alpha", &command);
    let asked = h.asked().await;
    h.answer(&asked, ApprovalAnswer::AllowAlways, "alice")
        .await
        .expect("taken");
    h.reply().await;
    // Same process: not asked.
    h.send("alpha", &command);
    let reply = h.reply().await;
    assert_eq!(reply.text, "tool said: (Bash completed with no output)");
    assert!(
        h.approvals
            .iter()
            .filter(|a| matches!(a.state, ApprovalState::Asked { .. }))
            .count()
            == 0
    );
    let rules = h
        .app
        .store()
        .send(LoadRules {
            id: actors::ids::ConversationId(1001),
        })
        .await
        .expect("store")
        .expect("rules");
    assert_eq!(rules.len(), 1);
    assert!(
        rules[0].starts_with("Bash(touch ") && rules[0].ends_with("always)"),
        "{rules:?}"
    );
    // The idle process ends; the next message resumes in a new one, given the stored rule.
    let pid = starts_of(&env)[0]["pid"].as_i64().expect("pid") as i32;
    wait_until(|| !process_alive(pid), "the idle process to end").await;
    h.send("alpha", &command);
    let reply = h.reply().await;
    assert_eq!(reply.text, "tool said: (Bash completed with no output)");
    let starts = starts_of(&env);
    assert_eq!(starts.len(), 2);
    let argv = argv_of(&starts[1]);
    assert!(argv.contains(&"--resume".to_string()), "{argv:?}");
    let settings = &argv[argv
        .iter()
        .position(|a| a == "--settings")
        .expect("--settings")
        + 1];
    assert!(
        settings.contains(&rules[0].replace('"', "\\\"")),
        "{settings}"
    );
    // `!rules` lists it, `!rules clear` forgets it.
    h.send("alpha", "!rules");
    assert!(h.reply().await.text.contains(&rules[0]));
    h.send("alpha", "!rules clear");
    assert!(h.reply().await.text.starts_with("Forgot 1"));
    h.send("alpha", &command);
    h.asked().await;
}

#[actix_rt::test]
async fn an_unanswered_request_times_out_into_a_denial_that_says_so() {
    let env = TestEnv::new();
    let mut s = env.settings();
    s.claude.approval_timeout_secs = 1;
    let mut h = Harness::start(s).await;
    h.send("alpha", &touch(&env, "late"));
    let asked = h.asked().await;
    let reply = h.reply().await;
    assert_eq!(
        reply.text,
        "tool said: No one answered within 1 s, so this was denied.\n\n(Denied: Bash.)"
    );
    assert!(h
        .approvals
        .iter()
        .any(|a| a.request_id == asked.request_id && a.state == ApprovalState::TimedOut));
    assert!(!env.path("proj/late").exists());
}

#[actix_rt::test]
async fn cancel_while_a_request_is_pending_withdraws_it_and_keeps_the_process_warm() {
    let env = TestEnv::new();
    let mut h = Harness::start(env.settings()).await;
    h.send("alpha", &touch(&env, "never"));
    let asked = h.asked().await;
    assert!(h.cancel(1001).await);
    let reply = h.reply().await;
    assert_eq!(reply.text, "Cancelled.");
    assert!(h
        .approvals
        .iter()
        .any(|a| a.request_id == asked.request_id && a.state == ApprovalState::Withdrawn));
    assert_eq!(
        h.answer(&asked, ApprovalAnswer::AllowOnce, "alice").await,
        Err(ApprovalError::NotPending)
    );
    h.send("alpha", "after the cancel");
    assert_eq!(h.reply().await.text, "echo: after the cancel");
    assert_eq!(starts_of(&env).len(), 1, "the process stayed warm");
    assert!(!env.path("proj/never").exists());
}

#[actix_rt::test]
async fn cancel_during_a_slow_turn_interrupts_it_and_the_process_stays_warm() {
    let env = TestEnv::new();
    let mut h = Harness::start(env.settings()).await;
    h.send("alpha", "be SLOW please");
    wait_until(|| !env.prompts().is_empty(), "the turn to start").await;
    assert!(h.cancel(1001).await);
    assert_eq!(h.reply().await.text, "Cancelled.");
    h.send("alpha", "HISTORY");
    assert_eq!(h.reply().await.text, "history: be SLOW please");
    assert_eq!(starts_of(&env).len(), 1);
}

#[actix_rt::test]
async fn ask_user_question_is_answered_with_the_chosen_option() {
    let env = TestEnv::new();
    let mut h = Harness::start(env.settings()).await;
    h.send("alpha", "ASKQ");
    let asked = h.asked().await;
    let ApprovalState::Asked {
        questions, tool, ..
    } = &asked.state
    else {
        panic!("not asked");
    };
    assert_eq!(tool, "AskUserQuestion");
    assert_eq!(questions[0].options, ["Blue", "Red"]);
    let q = questions[0].question.clone();
    h.answer(
        &asked,
        ApprovalAnswer::Answers(vec![(q, "Blue".into())]),
        "alice",
    )
    .await
    .expect("taken");
    let reply = h.reply().await;
    assert!(
        reply
            .text
            .contains(r#""Which color should the button be?"="Blue""#),
        "{}",
        reply.text
    );
}

#[actix_rt::test]
async fn an_idle_process_ends_and_the_least_recently_used_is_ended_for_room() {
    let env = TestEnv::new();
    let mut s = env.settings();
    s.claude.max_warm_sessions = 1;
    let mut h = Harness::start(s).await;
    h.send("alpha", "first");
    h.reply().await;
    let alpha = starts_of(&env)[0]["pid"].as_i64().expect("pid") as i32;
    h.send("beta", "second");
    h.reply().await;
    // Only one may stay warm: alpha's, the least recently used, is ended.
    wait_until(|| !process_alive(alpha), "alpha's process to be ended").await;
    let beta = starts_of(&env)[1]["pid"].as_i64().expect("pid") as i32;
    assert!(process_alive(beta));
    // And alpha's conversation goes on in a new process.
    h.send("alpha", "HISTORY");
    assert_eq!(h.reply().await.text, "history: first");

    let env = TestEnv::new();
    let mut s = env.settings();
    s.claude.keep_warm_secs = 1;
    let mut h = Harness::start(s).await;
    h.send("alpha", "hello");
    h.reply().await;
    let pid = starts_of(&env)[0]["pid"].as_i64().expect("pid") as i32;
    wait_until(|| !process_alive(pid), "the idle process to end").await;
    let end = env
        .records()
        .into_iter()
        .find(|r| r["event"] == "end")
        .expect("an end record");
    assert_eq!(end["exit"], 0, "ended by closing stdin");
}

#[actix_rt::test]
async fn a_process_that_dies_between_turns_is_replaced_with_resume() {
    let env = TestEnv::new();
    let mut h = Harness::start(env.settings()).await;
    h.send("alpha", "remember me");
    let first = h.reply().await;
    let pid = starts_of(&env)[0]["pid"].as_i64().expect("pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    wait_until(|| !process_alive(pid), "the process to die").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.send("alpha", "HISTORY");
    let second = h.reply().await;
    assert_eq!(second.text, "history: remember me");
    assert_eq!(second.session_id, first.session_id);
    // The session's running total survives the respawn: this turn's cost is its own.
    assert!((second.cost_usd - 0.05).abs() < 1e-9, "{second:?}");
    let argv = argv_of(&starts_of(&env)[1]);
    let resumed = &argv[argv.iter().position(|a| a == "--resume").expect("--resume") + 1];
    assert_eq!(Some(resumed.as_str()), first.session_id.as_deref());
}

#[actix_rt::test]
async fn a_crash_mid_turn_is_told_and_the_next_message_resumes() {
    let env = TestEnv::new();
    let mut h = Harness::start(env.settings()).await;
    h.send("alpha", "before");
    let first = h.reply().await;
    h.send("alpha", "CRASH now");
    let crashed = h.reply().await;
    assert_eq!(crashed.kind, ReplyKind::Failure);
    assert!(
        crashed.text.contains("exit code 3") && crashed.text.contains("simulated crash"),
        "{}",
        crashed.text
    );
    h.send("alpha", "HISTORY");
    let next = h.reply().await;
    assert_eq!(next.text, "history: before");
    assert_eq!(next.session_id, first.session_id);
    assert_eq!(starts_of(&env).len(), 2);
}

#[actix_rt::test]
async fn a_channel_may_set_its_own_permission_mode() {
    let env = TestEnv::new();
    let mut s = env.settings();
    s.channel[1].profile.permission_mode = Some(actors::claude::PermissionMode::AcceptEdits);
    let mut h = Harness::start(s).await;
    h.send("alpha", "hello");
    h.reply().await;
    h.send("beta", "hello");
    h.reply().await;
    let mode = |start: &Value| {
        let argv = argv_of(start);
        argv[argv
            .iter()
            .position(|a| a == "--permission-mode")
            .expect("mode")
            + 1]
        .clone()
    };
    let starts = starts_of(&env);
    assert_eq!(mode(&starts[0]), "default");
    assert_eq!(mode(&starts[1]), "acceptEdits");
}

#[actix_rt::test]
async fn a_stored_session_the_cli_no_longer_knows_starts_a_new_one_and_says_so() {
    let env = TestEnv::new();
    let mut s = env.settings();
    s.claude.keep_warm_secs = 1;
    let mut h = Harness::start(s).await;
    h.send("alpha", "remember me");
    let first = h.reply().await;
    let old = first.session_id.clone().expect("session");
    let pid = starts_of(&env)[0]["pid"].as_i64().expect("pid") as i32;
    wait_until(|| !process_alive(pid), "the idle process to end").await;
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
    assert_ne!(second.session_id.as_deref(), Some(old.as_str()));
    let starts = starts_of(&env);
    assert_eq!(starts.len(), 3, "the failed resume, then a fresh process");
    assert!(argv_of(&starts[1]).contains(&old));
    assert!(!argv_of(&starts[2]).contains(&"--resume".to_string()));
}

/// The most live stand-in processes at once, from their start and end records (one with no end
/// counts as running to the end).
fn peak_live_processes(env: &TestEnv) -> usize {
    let records = env.records();
    let mut edges: Vec<(u64, i32)> = Vec::new();
    for start in records
        .iter()
        .filter(|r| r["event"] == "start" && crate::support::is_live(r))
    {
        let at = start["at_ms"].as_u64().unwrap_or_default();
        let end = records
            .iter()
            .find(|e| e["event"] == "end" && e["pid"] == start["pid"])
            .and_then(|e| e["at_ms"].as_u64())
            .unwrap_or(u64::MAX);
        edges.push((at, 1));
        edges.push((end, -1));
    }
    edges.sort_unstable();
    let (mut now, mut peak) = (0_i32, 0_i32);
    for (_, d) in edges {
        now += d;
        peak = peak.max(now);
    }
    peak as usize
}

#[actix_rt::test]
async fn the_cap_on_live_processes_holds_at_every_moment() {
    let env = TestEnv::new();
    let mut s = env.settings();
    s.claude.max_warm_sessions = 2;
    s.claude.max_concurrent_runs = 4;
    s.claude
        .env
        .insert("FAKE_CLAUDE_SLOW_MS".into(), "300".into());
    // Six conversations, two messages each, all at once.
    for i in 0..3_u64 {
        let mut more = s.channel[0].clone();
        more.profile.id = actors::ids::ChannelId(2001 + i);
        more.profile.name = format!("more{i}");
        s.channel.push(more);
    }
    let names: Vec<String> = s.channel.iter().map(|c| c.profile.name.clone()).collect();
    let mut h = Harness::start(s).await;
    for round in 0..2 {
        for name in &names {
            h.send(name, &format!("SLOW {name} {round}"));
        }
    }
    let replies = h.replies(names.len() * 2).await;
    assert!(replies.iter().all(|r| !r.is_error), "{replies:?}");
    let peak = peak_live_processes(&env);
    assert!(
        peak <= 2,
        "{peak} live processes at once, over the cap of 2"
    );
    assert!(
        env.starts().len() >= names.len(),
        "every conversation got a process"
    );
}
