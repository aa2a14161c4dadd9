//! End to end through Discord: the real serenity client against the Discord-compatible server
//! in `support::discord` (127.0.0.1), the real application and the stand-in `claude`.

use crate::support;

use crate::support::discord::{content, DiscordServer, BOT_ID};
use crate::support::{spawn_run, spawn_run_with, stop_with, wait_output, TestEnv};
use actors::discord::DiscordConnection;
use actors::ids::ChannelId;
use actors::store::LoadConversation;
use claude_coordinator::settings::Settings;
use claude_coordinator::startup::Application;
use secrecy::SecretString;
use serde_json::Value;

const ALICE: u64 = 7;
const MALLORY: u64 = 666;
const ALPHA: u64 = 1001;
const BETA: u64 = 1002;

pub(crate) struct Service {
    pub(crate) app: Application,
    pub(crate) conn: DiscordConnection,
    pub(crate) server: DiscordServer,
}

pub(crate) async fn start(env: &TestEnv) -> Service {
    start_with(env, |_| {}).await
}

/// The service against a fresh Discord-compatible server, after `change` adjusts the settings.
pub(crate) async fn start_with(env: &TestEnv, change: impl FnOnce(&mut Settings)) -> Service {
    let server = DiscordServer::start().await;
    let mut settings = env.settings();
    settings.discord.api_base_url.clone_from(&server.base);
    settings.discord.max_chunks = 4;
    settings.discord.send_retries = 3;
    settings.discord.retry_backoff_ms = 20;
    settings.discord.progress_edit_secs = 1;
    settings.access.allowed_users = vec![actors::ids::UserId(ALICE)];
    settings.access.refusal_cooldown_secs = 3600;
    settings.discord.token = Some(SecretString::from("test-bot-token-e2e"));
    change(&mut settings);
    let app = Application::build(settings).await.expect("build");
    let conn = app.start_discord().await.expect("gateway starts");
    server.wait_ready(1).await;
    Service { app, conn, server }
}

fn replied_to(r: &support::discord::Recorded) -> Option<String> {
    r.body["message_reference"]["message_id"]
        .as_str()
        .map(str::to_string)
        .or_else(|| {
            r.body["message_reference"]["message_id"]
                .as_u64()
                .map(|v| v.to_string())
        })
}

#[actix_rt::test]
async fn a_message_gets_a_reply_to_it() {
    let env = TestEnv::new();
    let s = start(&env).await;
    let id = s.server.say(ALPHA, ALICE, "hello from discord");
    s.server
        .wait("reply", |srv| !srv.answers(ALPHA).is_empty())
        .await;
    let reply = &s.server.answers(ALPHA)[0];
    assert_eq!(content(reply), "echo: hello from discord");
    assert_eq!(replied_to(reply), Some(id.to_string()));
    assert_eq!(reply.auth, "Bot test-bot-token-e2e");
    // Claude's text can never ping anyone.
    assert_eq!(
        reply.body["allowed_mentions"]["parse"],
        Value::Array(vec![])
    );
    // The typing indicator was shown while it ran.
    assert!(s
        .server
        .requests()
        .iter()
        .any(|r| r.path == format!("/api/v10/channels/{ALPHA}/typing")));
    assert_eq!(env.starts().len(), 1);
}

#[actix_rt::test]
async fn two_channels_are_answered_in_parallel() {
    let env = TestEnv::new();
    let s = start(&env).await;
    let gate = env.gate("g");
    s.server
        .say(ALPHA, ALICE, &format!("alpha GATE:{}", gate.display()));
    s.server
        .say(BETA, ALICE, &format!("beta GATE:{}", gate.display()));
    // Both are running at once before either may finish.
    env.wait_for_runs(2).await;
    env.open_gate("g");
    s.server
        .wait("both replies", |srv| {
            !srv.answers(ALPHA).is_empty() && !srv.answers(BETA).is_empty()
        })
        .await;
    assert!(content(&s.server.answers(ALPHA)[0]).starts_with("echo: alpha"));
    assert!(content(&s.server.answers(BETA)[0]).starts_with("echo: beta"));
    assert_eq!(support::max_overlap(&env.runs()), 2);
}

#[actix_rt::test]
async fn a_thread_is_its_own_conversation_with_the_parents_settings() {
    let env = TestEnv::new();
    let s = start(&env).await;
    let thread = 5_000_000_000_000_001;
    s.server.add_thread(thread, ALPHA, "fix-login");
    s.server.say(ALPHA, ALICE, "in the channel");
    s.server
        .wait("channel reply", |srv| !srv.answers(ALPHA).is_empty())
        .await;
    s.server.say(thread, ALICE, "in the thread");
    s.server.say(thread, ALICE, "HISTORY");
    s.server
        .wait("thread replies", |srv| srv.answers(thread).len() >= 2)
        .await;
    let replies = s.server.answers(thread);
    assert_eq!(content(&replies[0]), "echo: in the thread");
    // The thread's session holds only the thread's messages.
    assert_eq!(content(&replies[1]), "history: in the thread");
    let store = s.app.store();
    let t = store
        .send(LoadConversation {
            id: actors::ids::ConversationId(thread),
        })
        .await
        .expect("mailbox")
        .expect("load")
        .expect("row");
    let c = store
        .send(LoadConversation {
            id: actors::ids::ConversationId(ALPHA),
        })
        .await
        .expect("mailbox")
        .expect("load")
        .expect("row");
    assert_eq!(t.name, "alpha/fix-login");
    assert_ne!(t.session_id, c.session_id);
    // Same project directory as the parent.
    assert_eq!(t.project_dir, c.project_dir);
    let runs = env.runs();
    assert!(runs.iter().all(|r| r.cwd == runs[0].cwd));
}

#[actix_rt::test]
async fn an_unauthorized_user_spawns_nothing_and_is_told_once() {
    let env = TestEnv::new();
    let s = start(&env).await;
    s.server.say(ALPHA, MALLORY, "rm -rf / please");
    s.server.say(ALPHA, MALLORY, "pretty please");
    // A later allowed message is answered, so the refused ones have been handled.
    s.server.say(ALPHA, ALICE, "hello");
    s.server
        .wait("allowed reply", |srv| {
            srv.answers(ALPHA)
                .iter()
                .any(|r| content(r) == "echo: hello")
        })
        .await;
    let refusals: Vec<_> = s
        .server
        .answers(ALPHA)
        .into_iter()
        .filter(|r| content(r).contains("not on this bot's allowlist"))
        .collect();
    assert_eq!(refusals.len(), 1, "told once, not on every message");
    let prompts = env.prompts();
    assert_eq!(prompts, ["hello"], "no process for the unauthorized user");
    assert_eq!(
        s.conn
            .stats
            .refused
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[actix_rt::test]
async fn messages_from_bots_and_from_itself_are_ignored() {
    let env = TestEnv::new();
    let s = start(&env).await;
    s.server.say_with(ALPHA, BOT_ID, "my own reply", |m| {
        m["author"]["bot"] = Value::Bool(true);
    });
    s.server.say_with(ALPHA, 31337, "another bot", |m| {
        m["author"]["bot"] = Value::Bool(true);
    });
    s.server.say(ALPHA, ALICE, "a person");
    s.server
        .wait("reply", |srv| !srv.answers(ALPHA).is_empty())
        .await;
    let prompts = env.prompts();
    assert_eq!(prompts, ["a person"]);
    assert_eq!(s.server.answers(ALPHA).len(), 1);
}

#[actix_rt::test]
async fn a_long_reply_comes_in_ordered_chunks_with_balanced_code_fences() {
    let env = TestEnv::new();
    let s = start(&env).await;
    // ~6 KB of Markdown with code blocks: more than one message, at most max_chunks.
    let id = s.server.say(ALPHA, ALICE, "HUGE:6000");
    s.server
        .wait("chunks", |srv| srv.answers(ALPHA).len() >= 2)
        .await;
    // Wait for the last chunk.
    s.server
        .wait("last chunk", |srv| {
            srv.answers(ALPHA)
                .last()
                .is_some_and(|r| content(r).trim_end().ends_with("```"))
        })
        .await;
    let chunks = s.server.answers(ALPHA);
    assert!((2..=4).contains(&chunks.len()), "{} chunks", chunks.len());
    assert_eq!(replied_to(&chunks[0]), Some(id.to_string()));
    let mut sections = Vec::new();
    for c in &chunks {
        let text = content(c);
        assert!(text.encode_utf16().count() <= 2000);
        let fences = text
            .lines()
            .filter(|l| l.trim_start().starts_with("```"))
            .count();
        assert_eq!(fences % 2, 0, "unbalanced chunk: {text}");
        sections.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("## Section "))
                .map(|n| n.parse::<u32>().expect("section number")),
        );
    }
    // In order, none lost or repeated.
    let expected: Vec<u32> = (1..=sections.len() as u32).collect();
    assert_eq!(sections, expected);
}

#[actix_rt::test]
async fn a_very_long_reply_is_sent_as_a_file_with_a_preview() {
    let env = TestEnv::new();
    let s = start(&env).await;
    s.server.say(ALPHA, ALICE, "HUGE");
    s.server
        .wait("file reply", |srv| {
            srv.posts(ALPHA).iter().any(|r| !r.files.is_empty())
        })
        .await;
    let posts = s.server.answers(ALPHA);
    assert_eq!(posts.len(), 1, "one message carries the file");
    let (_, name, bytes) = &posts[0].files[0];
    assert_eq!(name, "reply.md");
    let full = String::from_utf8(bytes.clone()).expect("utf-8");
    assert!(full.len() >= 100_000 && full.starts_with("Here is a long answer."));
    let preview = content(&posts[0]);
    assert!(preview.starts_with("Here is a long answer."));
    assert!(preview.contains("attached as `reply.md`"));
    assert!(preview.encode_utf16().count() <= 2000);
}

#[actix_rt::test]
async fn a_rate_limited_send_is_retried_and_delivered_once() {
    let env = TestEnv::new();
    let s = start(&env).await;
    s.server.fail_next_posts(&[429, 500]);
    s.server.say(ALPHA, ALICE, "hello despite limits");
    s.server
        .wait("reply", |srv| !srv.answers(ALPHA).is_empty())
        .await;
    let attempts: Vec<u16> = s
        .server
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == format!("/api/v10/channels/{ALPHA}/messages"))
        .map(|r| r.status)
        .collect();
    assert_eq!(attempts, [429, 500, 200]);
    assert_eq!(s.server.answers(ALPHA).len(), 1);
    assert_eq!(
        content(&s.server.answers(ALPHA)[0]),
        "echo: hello despite limits"
    );
    assert_eq!(
        s.conn
            .stats
            .rest
            .retries
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[actix_rt::test]
async fn after_the_gateway_connection_drops_serenity_resumes_and_answers() {
    let env = TestEnv::new();
    let s = start(&env).await;
    s.server.say(ALPHA, ALICE, "before");
    s.server
        .wait("first reply", |srv| !srv.answers(ALPHA).is_empty())
        .await;
    s.server.drop_connection(4000);
    s.server.wait("RESUME", |srv| srv.resumes() >= 1).await;
    let resume = s
        .server
        .frames()
        .into_iter()
        .find(|f| f["op"] == 6)
        .expect("op 6");
    assert_eq!(resume["d"]["session_id"], "test-session");
    s.server.say(ALPHA, ALICE, "HISTORY");
    s.server
        .wait("second reply", |srv| srv.answers(ALPHA).len() >= 2)
        .await;
    assert_eq!(content(&s.server.answers(ALPHA)[1]), "history: before");
    assert_eq!(s.server.readies(), 1, "resumed, not identified again");
}

#[actix_rt::test]
async fn tool_use_shows_in_a_progress_message_that_is_edited_when_done() {
    let env = TestEnv::new();
    let s = start(&env).await;
    s.server.say(ALPHA, ALICE, "TOOL:echo working hard");
    s.server
        .wait("progress finalized", |srv| {
            srv.requests()
                .iter()
                .any(|r| r.method == "PATCH" && content(r).starts_with("Done —"))
        })
        .await;
    let posts = s.server.posts(ALPHA);
    let progress = posts
        .iter()
        .find(|r| content(r).starts_with("Working…"))
        .expect("progress message");
    assert!(
        content(progress).contains("`Bash: echo working hard`"),
        "{}",
        content(progress)
    );
    let edit = s
        .server
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .expect("edit");
    assert!(content(&edit).contains("Bash: echo working hard"));
    assert_eq!(
        content(&s.server.answers(ALPHA)[0]),
        "tool said: working hard"
    );
}

#[actix_rt::test]
async fn a_channel_that_requires_a_mention_answers_only_mentions() {
    let env = TestEnv::new();
    let s = start_with(&env, |s| {
        let mut delta = s.channel[0].clone();
        delta.profile.id = ChannelId(1004);
        delta.profile.name = "delta".into();
        delta.profile.project_dir = "/tmp".into();
        delta.access.require_mention = true;
        s.channel.push(delta);
    })
    .await;
    s.server.say(1004, ALICE, "not for the bot");
    s.server
        .say_with(1004, ALICE, &format!("<@{BOT_ID}> for the bot"), |m| {
            m["mentions"] =
                serde_json::json!([support::discord::user_json(BOT_ID, "coordinator", true)]);
        });
    s.server
        .wait("reply", |srv| !srv.answers(1004).is_empty())
        .await;
    assert_eq!(content(&s.server.answers(1004)[0]), "echo: for the bot");
    let prompts = env.prompts();
    assert_eq!(prompts, ["for the bot"]);
}

#[actix_rt::test]
async fn errors_are_short_and_marked() {
    let env = TestEnv::new();
    let s = start(&env).await;
    s.server.say(ALPHA, ALICE, "FAIL500");
    s.server
        .wait("reply", |srv| !srv.answers(ALPHA).is_empty())
        .await;
    let text = content(&s.server.answers(ALPHA)[0]);
    assert!(text.starts_with("⚠️ API Error: 500"), "{text}");
}

#[actix_rt::test]
async fn the_binary_runs_the_service_and_never_logs_the_token() {
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    let token = "MTIz.secret-token-for-run.XYZ";
    let child = spawn_run(
        &env,
        &server,
        &format!("[access]\nallowed_users = [{ALICE}]\n"),
        Some(token),
    );
    server.wait_ready(1).await;
    let identify = server
        .frames()
        .into_iter()
        .find(|f| f["op"] == 2)
        .expect("IDENTIFY");
    assert_eq!(identify["d"]["token"], format!("Bot {token}"));
    server.say(ALPHA, ALICE, "hello binary");
    server
        .wait("reply", |srv| !srv.answers(ALPHA).is_empty())
        .await;
    assert_eq!(content(&server.answers(ALPHA)[0]), "echo: hello binary");
    let out = stop_with(child, nix::sys::signal::Signal::SIGINT).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("connected to Discord"), "{stderr}");
    assert!(
        !stderr.contains("secret-token-for-run"),
        "token leaked into the logs"
    );
}

#[actix_rt::test]
async fn run_refuses_to_start_without_an_allowlist_or_a_token() {
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    for (access, token, expect) in [
        ("", Some("tok"), "no allowlist"),
        (
            &format!("[access]\nallowed_users = [{ALICE}]\n")[..],
            None,
            "no token: set DISCORD_TOKEN",
        ),
    ] {
        let child = spawn_run(&env, &server, access, token);
        let out = wait_output(child).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(expect), "{stderr}");
    }
    // Nothing reached the server, and with allow_everyone it starts.
    assert_eq!(server.readies(), 0);
    let mut child = spawn_run(
        &env,
        &server,
        "[access]\nallow_everyone = true\n",
        Some("tok"),
    );
    server.wait_ready(1).await;
    child.kill().expect("kill");
    let _ = child.wait();
}

#[actix_rt::test]
async fn a_reply_to_a_deleted_message_is_sent_without_the_reference() {
    let env = TestEnv::new();
    let s = start(&env).await;
    // Discord answers 400 when the referenced message is gone.
    s.server.fail_next_posts(&[400]);
    s.server.say(ALPHA, ALICE, "hello, then deleted");
    s.server
        .wait("reply", |srv| !srv.answers(ALPHA).is_empty())
        .await;
    let reply = &s.server.answers(ALPHA)[0];
    assert_eq!(content(reply), "echo: hello, then deleted");
    assert_eq!(reply.body.get("message_reference"), None);
}

#[actix_rt::test]
async fn a_reply_that_cannot_be_delivered_is_logged_with_its_ids() {
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    // Logs at info: the test reads stderr only at the end, so it must not fill the pipe.
    let child = spawn_run_with(
        &env,
        &server,
        &format!("[access]\nallowed_users = [{ALICE}]\n"),
        Some("tok"),
        &[("RUST_LOG", "info")],
    );
    server.wait_ready(1).await;
    // More failures than send_retries (5) allows.
    server.fail_next_posts(&[500; 6]);
    let id = server.say(ALPHA, ALICE, "lost in transit");
    server
        .wait("all attempts", |srv| {
            let n = srv
                .requests()
                .iter()
                .filter(|r| r.method == "POST" && r.status == 500)
                .count();
            n == 6
        })
        .await;
    // After the retries, the reply still reaches the user, as a file.
    server
        .wait("the reply as a file", |srv| !srv.answers(ALPHA).is_empty())
        .await;
    server.say(ALPHA, ALICE, "next");
    server
        .wait("next reply", |srv| srv.answers(ALPHA).len() >= 2)
        .await;
    let out = stop_with(child, nix::sys::signal::Signal::SIGTERM).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logged = stderr
        .lines()
        .find(|l| l.contains("reply could not be delivered"))
        .unwrap_or_else(|| panic!("not logged: {stderr}"));
    assert!(logged.contains(&format!("channel_id={ALPHA}")), "{logged}");
    assert!(logged.contains(&format!("message_id={id}")), "{logged}");
    let answers = server.answers(ALPHA);
    assert!(
        content(&answers[0])
            .contains("could not be posted as messages (Discord answered HTTP 500)"),
        "{}",
        content(&answers[0])
    );
    assert_eq!(answers[0].files[0].2, b"echo: lost in transit");
    assert_eq!(content(&answers[1]), "echo: next");
}

/// Writes `text` where the stand-in's `REPLYFILE:` reads it; returns the prompt.
fn reply_with(env: &TestEnv, name: &str, text: &str) -> String {
    let path = env.path(name);
    std::fs::write(&path, text).expect("write reply");
    format!("REPLYFILE:{}", path.display())
}

fn fences_balanced(text: &str) -> bool {
    text.split_inclusive('\n')
        .filter(|l| actors::discord::chunking::fence_info(l, 2000).is_some())
        .count()
        % 2
        == 0
}

#[actix_rt::test]
async fn a_fence_longer_than_a_chunk_neither_freezes_the_service_nor_breaks_the_limit() {
    let env = TestEnv::new();
    let s = start(&env).await;
    // Defect: this reply made the splitter loop for ever on the actors' thread.
    let hostile = format!("```{}\n{}", "a".repeat(2100), "line of code\n".repeat(200));
    s.server
        .say(ALPHA, ALICE, &reply_with(&env, "hostile", &hostile));
    // Another channel is still answered.
    s.server.say(BETA, ALICE, "still here?");
    s.server
        .wait("both answered", |srv| {
            !srv.answers(BETA).is_empty()
                && srv
                    .answers(ALPHA)
                    .iter()
                    .map(content)
                    .collect::<String>()
                    .contains(&"line of code\n".repeat(3))
        })
        .await;
    assert_eq!(content(&s.server.answers(BETA)[0]), "echo: still here?");
    s.server
        .wait("the whole hostile reply", |srv| {
            srv.answers(ALPHA)
                .iter()
                .map(content)
                .map(|c| c.matches("line of code").count())
                .sum::<usize>()
                == 200
        })
        .await;
    for a in s.server.answers(ALPHA) {
        assert!(content(&a).encode_utf16().count() <= 2000);
    }
    assert!(s.server.requests().iter().all(|r| r.status != 400));
}

#[actix_rt::test]
async fn a_closing_fence_at_the_edge_of_a_chunk_is_delivered_within_the_limit() {
    let env = TestEnv::new();
    let s = start(&env).await;
    // Defect: this reply gave a first chunk of 2,001 characters, which was silently lost.
    let edge = format!("```\n{}\n```\nmore text", "a".repeat(1991));
    s.server.say(ALPHA, ALICE, &reply_with(&env, "edge", &edge));
    s.server
        .wait("the reply", |srv| {
            srv.answers(ALPHA)
                .iter()
                .any(|a| content(a).contains("more text"))
        })
        .await;
    let answers = s.server.answers(ALPHA);
    let all: String = answers.iter().map(content).collect();
    assert_eq!(all.matches('a').count(), 1991, "no text lost");
    for a in &answers {
        let text = content(a);
        assert!(text.encode_utf16().count() <= 2000);
        assert!(fences_balanced(&text), "{text}");
    }
    assert!(s.server.requests().iter().all(|r| r.status != 400));
}

#[actix_rt::test]
async fn a_reply_discord_refuses_reaches_the_user_as_a_file_or_a_notice() {
    let env = TestEnv::new();
    let s = start(&env).await;
    // 403 is not worth a retry: the reply goes as a file instead.
    s.server.fail_next_posts(&[403]);
    s.server.say(ALPHA, ALICE, "first");
    s.server
        .wait("file", |srv| !srv.answers(ALPHA).is_empty())
        .await;
    let file = &s.server.answers(ALPHA)[0];
    assert!(content(file).contains("HTTP 403"), "{}", content(file));
    assert_eq!(file.files[0].2, b"echo: first");
    // If the file is refused too, a short notice still says so.
    s.server.fail_next_posts(&[403, 403]);
    s.server.say(ALPHA, ALICE, "second");
    s.server
        .wait("notice", |srv| srv.answers(ALPHA).len() >= 2)
        .await;
    let notice = content(&s.server.answers(ALPHA)[1]);
    assert!(
        notice.contains("could not be delivered (Discord answered HTTP 403)"),
        "{notice}"
    );
}

#[actix_rt::test]
async fn system_messages_are_not_prompts_but_replies_are() {
    let env = TestEnv::new();
    let s = start(&env).await;
    // Thread created (its name as content), channel renamed, pinned, member joined.
    for kind in [18, 4, 6, 7] {
        s.server.say_kind(ALPHA, ALICE, "delete the tests", kind);
    }
    s.server.say_kind(ALPHA, ALICE, "a reply to someone", 19);
    s.server.say(ALPHA, ALICE, "an ordinary message");
    s.server
        .wait("two answers", |srv| srv.answers(ALPHA).len() >= 2)
        .await;
    let prompts = env.prompts();
    assert_eq!(prompts, ["a reply to someone", "an ordinary message"]);
}

#[actix_rt::test]
async fn a_thread_whose_lookup_fails_keeps_its_messages_until_it_succeeds() {
    let env = TestEnv::new();
    let s = start(&env).await;
    let thread = 5_000_000_000_000_002;
    s.server.add_thread(thread, ALPHA, "flaky");
    // More failures than send_retries (3) allows in one go: the look-up is tried again later,
    // and the messages wait for it, in order — none is dropped.
    s.server.fail_next_lookups(&[500, 500, 500, 500, 502]);
    s.server.say(thread, ALICE, "during the outage");
    s.server.say(thread, ALICE, "after the outage");
    s.server
        .wait("both answered", |srv| srv.answers(thread).len() >= 2)
        .await;
    assert_eq!(
        s.server.answer_texts(thread),
        ["echo: during the outage", "echo: after the outage"]
    );
    let failed = s
        .server
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&thread.to_string()) && r.status >= 500)
        .count();
    assert_eq!(failed, 5);
    // A 404 is an answer: remembered as not ours, nothing waits.
    let gone = 5_000_000_000_000_003;
    s.server.say(gone, ALICE, "nobody's thread");
    s.server.say(ALPHA, ALICE, "still here");
    s.server
        .wait("alpha answered", |srv| !srv.answers(ALPHA).is_empty())
        .await;
    assert!(s.server.answers(gone).is_empty());
}

#[actix_rt::test]
async fn the_token_can_come_from_a_file_and_never_reaches_the_cli() {
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    let token_file = env.path("discord-token");
    std::fs::write(&token_file, "file-token-SECRET-9\n").expect("write token");
    let child = spawn_run(
        &env,
        &server,
        &format!(
            "token_file = \"{}\"\n[access]\nallowed_users = [{ALICE}]\n",
            token_file.display()
        ),
        None,
    );
    server.wait_ready(1).await;
    let identify = server
        .frames()
        .into_iter()
        .find(|f| f["op"] == 2)
        .expect("IDENTIFY");
    assert_eq!(identify["d"]["token"], "Bot file-token-SECRET-9");
    server.say(ALPHA, ALICE, "printenv please");
    server
        .wait("reply", |srv| !srv.answers(ALPHA).is_empty())
        .await;
    let out = stop_with(child, nix::sys::signal::Signal::SIGTERM).await;
    assert!(out.status.success());
    let start = &env.starts()[0];
    assert!(
        !start["env"].to_string().contains("file-token-SECRET-9"),
        "{start}"
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("file-token-SECRET-9"));
}

/// The `custom_id`s of a posted message's buttons.
fn buttons(r: &support::discord::Recorded) -> Vec<(String, String)> {
    r.body["components"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
        .map(|b| {
            (
                b["label"].as_str().unwrap_or_default().to_string(),
                b["custom_id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[actix_rt::test]
async fn claude_asks_with_buttons_and_only_an_allowed_user_can_answer() {
    let env = TestEnv::new();
    let s = start(&env).await;
    let file = env.path("proj").join("from-discord");
    s.server
        .say(ALPHA, ALICE, &format!("TOOL:touch {}", file.display()));
    let is_prompt = |r: &support::discord::Recorded| content(r).starts_with("🔐");
    let prompt = s.server.post_where(ALPHA, "the prompt", is_prompt).await;
    assert!(
        content(&prompt).contains("Claude wants to use **Bash**"),
        "{}",
        content(&prompt)
    );
    assert!(content(&prompt).contains(&format!("touch {}", file.display())));
    let labels: Vec<String> = buttons(&prompt).into_iter().map(|(l, _)| l).collect();
    assert_eq!(
        labels,
        ["Allow once", "Always allow (this conversation)", "Deny"]
    );
    // Claude's text cannot ping anyone from the prompt either.
    assert_eq!(
        prompt.body["allowed_mentions"]["parse"],
        Value::Array(vec![])
    );
    let message = support::discord::DiscordServer::message_of(&prompt, ALPHA);
    let allow = buttons(&prompt)[0].1.clone();
    // A stranger's click: told privately, nothing changes.
    let token = s.server.click(ALPHA, &message, &allow, MALLORY);
    let refusal = s.server.callback(&token).await;
    assert_eq!(refusal.body["type"], 4);
    assert_eq!(refusal.body["data"]["flags"], 64, "ephemeral");
    assert!(!file.exists());
    // Alice may: the click is acknowledged, the tool runs, the prompt shows who allowed it.
    let token = s.server.click(ALPHA, &message, &allow, ALICE);
    s.server
        .wait("the answer", |srv| {
            srv.answers(ALPHA)
                .iter()
                .any(|r| content(r) == "tool said: (Bash completed with no output)")
        })
        .await;
    assert!(file.exists());
    let ack = s.server.callback(&token).await;
    assert_eq!(ack.body["type"], 6, "deferred update");
    assert_eq!(ack.status, 204);
    let mid = message["id"].as_str().expect("id").to_string();
    s.server
        .wait("the prompt edited", |srv| {
            srv.requests().iter().any(|r| {
                r.method == "PATCH"
                    && r.path.ends_with(&mid)
                    && content(r).contains("Allowed once by <@7>")
            })
        })
        .await;
    let edit = s
        .server
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH" && r.path.ends_with(&mid))
        .expect("edit");
    assert_eq!(
        edit.body["components"],
        Value::Array(vec![]),
        "buttons removed"
    );
    // A late click on the answered prompt is told it is over.
    let late = s.server.click(ALPHA, &message, &allow, ALICE);
    let late = s.server.callback(&late).await;
    assert!(late.body["data"]["content"]
        .as_str()
        .is_some_and(|c| c.contains("no longer waiting")));
}

#[actix_rt::test]
async fn a_discord_prompt_times_out_into_a_denial_and_says_so() {
    let env = TestEnv::new();
    let s = start_with(&env, |s| s.claude.approval_timeout_secs = 1).await;
    let file = env.path("proj").join("never");
    s.server
        .say(ALPHA, ALICE, &format!("TOOL:touch {}", file.display()));
    s.server
        .wait("the timed-out prompt", |srv| {
            srv.requests()
                .iter()
                .any(|r| r.method == "PATCH" && content(r).contains("Timed out"))
        })
        .await;
    s.server
        .wait("the answer", |srv| {
            srv.answers(ALPHA)
                .iter()
                .any(|r| content(r).contains("No one answered within 1 s"))
        })
        .await;
    assert!(!file.exists());
}

#[actix_rt::test]
async fn a_send_retried_after_its_response_was_lost_is_posted_once() {
    let env = TestEnv::new();
    let s = start(&env).await;
    // Discord creates the message, but the answer is lost (a 500 after the fact).
    s.server.lose_next_responses(&[500]);
    let id = s.server.say(ALPHA, ALICE, "exactly once please");
    s.server
        .wait("the retry", |srv| {
            srv.requests()
                .iter()
                .filter(|r| {
                    r.method == "POST" && r.path == format!("/api/v10/channels/{ALPHA}/messages")
                })
                .count()
                >= 2
        })
        .await;
    let sends: Vec<_> = s
        .server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == format!("/api/v10/channels/{ALPHA}/messages"))
        .collect();
    assert_eq!(sends[0].body["nonce"], format!("{id}-0"));
    assert_eq!(sends[0].body["enforce_nonce"], true);
    assert_eq!(
        sends[1].body["nonce"], sends[0].body["nonce"],
        "the retry carries the same nonce"
    );
    assert_eq!(
        s.server.answer_texts(ALPHA),
        ["echo: exactly once please"],
        "one message, not two"
    );
}

#[actix_rt::test]
async fn replies_in_one_channel_go_out_in_order_and_never_interleave() {
    let env = TestEnv::new();
    let s = start(&env).await;
    // The first reply's first chunk is retried twice: slow to go out.
    s.server.fail_next_posts(&[500, 500]);
    s.server.say(ALPHA, ALICE, "HUGE:5000");
    s.server.say(ALPHA, ALICE, "short one");
    s.server
        .wait("both replies", |srv| {
            srv.answer_texts(ALPHA)
                .iter()
                .any(|t| t == "echo: short one")
        })
        .await;
    let texts = s.server.answer_texts(ALPHA);
    let short = texts
        .iter()
        .position(|t| t == "echo: short one")
        .expect("short reply");
    assert_eq!(
        short,
        texts.len() - 1,
        "the short reply came last: {texts:?}"
    );
    assert!(short >= 2, "the long reply came in chunks first: {texts:?}");
    assert!(texts[0].starts_with("Here is a long answer."), "{texts:?}");
}

#[actix_rt::test]
async fn the_stop_button_on_the_progress_message_interrupts_the_run() {
    let env = TestEnv::new();
    let s = start(&env).await;
    // A tool step shows the progress message; the tool then runs for a long time.
    let id = s.server.say(ALPHA, ALICE, "TOOL:echo working && sleep 30");
    s.server
        .wait("the progress message", |srv| {
            srv.posts(ALPHA)
                .iter()
                .any(|r| content(r).starts_with("Working…") && !buttons(r).is_empty())
        })
        .await;
    let progress = s
        .server
        .posts(ALPHA)
        .into_iter()
        .find(|r| content(r).starts_with("Working…"))
        .expect("progress");
    let (label, stop) = buttons(&progress)[0].clone();
    assert_eq!(label, "Stop");
    assert_eq!(stop, format!("cc:stop:{ALPHA}:{id}"));
    let message = support::discord::DiscordServer::message_of(&progress, ALPHA);
    // Someone not allowed here cannot stop it.
    let token = s.server.click(ALPHA, &message, &stop, MALLORY);
    assert_eq!(s.server.callback(&token).await.body["data"]["flags"], 64);
    // Alice can.
    let token = s.server.click(ALPHA, &message, &stop, ALICE);
    assert_eq!(s.server.callback(&token).await.body["type"], 6);
    s.server
        .wait("the cancelled reply", |srv| {
            srv.answer_texts(ALPHA).iter().any(|t| t == "⚠️ Cancelled.")
        })
        .await;
    let mid = message["id"].as_str().expect("id").to_string();
    s.server
        .wait("the button removed", |srv| {
            srv.requests().iter().any(|r| {
                r.method == "PATCH"
                    && r.path.ends_with(&mid)
                    && content(r).starts_with("Done —")
                    && r.body["components"] == Value::Array(vec![])
            })
        })
        .await;
}

#[actix_rt::test]
async fn a_message_delivered_twice_is_answered_once() {
    let env = TestEnv::new();
    let s = start(&env).await;
    let id = s.server.say(ALPHA, ALICE, "only once");
    // The same MESSAGE_CREATE again, as a resumed gateway session may replay it.
    s.server.say_with(ALPHA, ALICE, "only once", |m| {
        m["id"] = Value::String(id.to_string());
    });
    s.server.say(ALPHA, ALICE, "after");
    s.server
        .wait("the later reply", |srv| {
            srv.answer_texts(ALPHA).iter().any(|t| t == "echo: after")
        })
        .await;
    assert_eq!(
        s.server.answer_texts(ALPHA),
        ["echo: only once", "echo: after"]
    );
    assert_eq!(env.prompts(), ["only once", "after"]);
}

#[actix_rt::test]
async fn questions_are_select_menus_answered_once_all_are_chosen() {
    let env = TestEnv::new();
    let s = start(&env).await;
    s.server.say(ALPHA, ALICE, "ASKQ2");
    let is_prompt = |r: &support::discord::Recorded| content(r).starts_with("❓");
    let prompt = s.server.post_where(ALPHA, "the questions", is_prompt).await;
    let rows = prompt.body["components"].as_array().expect("rows").clone();
    assert_eq!(rows.len(), 3, "two questions and Decline");
    let menu = |i: usize| rows[i]["components"][0].clone();
    assert_eq!(menu(0)["type"], 3, "a select menu");
    assert_eq!(menu(0)["max_values"], 1);
    assert_eq!(menu(1)["max_values"], 3, "several sizes may be chosen");
    let message = support::discord::DiscordServer::message_of(&prompt, ALPHA);
    let first = menu(0)["custom_id"].as_str().expect("id").to_string();
    let second = menu(1)["custom_id"].as_str().expect("id").to_string();
    // An option that is not offered is refused.
    let token = s.server.select(ALPHA, &message, &first, &["7"], ALICE);
    assert_eq!(s.server.callback(&token).await.body["data"]["flags"], 64);
    // The first answer alone is only acknowledged.
    let blue = value_of(&menu(0), "Blue");
    let token = s.server.select(ALPHA, &message, &first, &[&blue], ALICE);
    assert_eq!(s.server.callback(&token).await.body["type"], 6);
    assert!(s
        .server
        .answers(ALPHA)
        .iter()
        .all(|r| !content(r).starts_with("tool said")));
    let (small, large) = (value_of(&menu(1), "S"), value_of(&menu(1), "L"));
    let token = s
        .server
        .select(ALPHA, &message, &second, &[&small, &large], ALICE);
    assert_eq!(s.server.callback(&token).await.body["type"], 6);
    let reply = s
        .server
        .answer_where(ALPHA, "the answer", |t| t.starts_with("tool said"))
        .await;
    assert!(
        reply.contains(r#""Which color should the button be?"="Blue""#),
        "{reply}"
    );
    assert!(
        reply.contains(r#""Which sizes should it come in?"="S, L""#),
        "{reply}"
    );
}

/// The value of the option labelled `label` in select menu `menu`.
fn value_of(menu: &Value, label: &str) -> String {
    menu["options"]
        .as_array()
        .and_then(|o| o.iter().find(|x| x["label"] == label))
        .and_then(|x| x["value"].as_str())
        .expect("the option")
        .to_string()
}

#[actix_rt::test]
async fn questions_whose_labels_repeat_or_run_long_are_still_shown_and_answered() {
    let env = TestEnv::new();
    let s = start(&env).await;
    s.server.say(ALPHA, ALICE, "ASKQODD");
    let is_prompt = |r: &support::discord::Recorded| content(r).starts_with("❓");
    let prompt = s.server.post_where(ALPHA, "the question", is_prompt).await;
    let menu = prompt.body["components"][0]["components"][0].clone();
    let labels: Vec<&str> = menu["options"]
        .as_array()
        .expect("options")
        .iter()
        .filter_map(|o| o["label"].as_str())
        .collect();
    assert_eq!(labels[..2], ["Same", "Same"]);
    assert!(labels[2].chars().count() <= 100, "{}", labels[2]);
    let message = support::discord::DiscordServer::message_of(&prompt, ALPHA);
    let id = menu["custom_id"].as_str().expect("id").to_string();
    let second = menu["options"][1]["value"]
        .as_str()
        .expect("value")
        .to_string();
    s.server.select(ALPHA, &message, &id, &[&second], ALICE);
    let reply = s
        .server
        .answer_where(ALPHA, "the answer", |t| t.starts_with("tool said"))
        .await;
    assert!(reply.contains(r#""Which one?"="Same""#), "{reply}");
}

#[actix_rt::test]
async fn a_prompt_discord_refuses_to_post_is_denied_at_once_and_the_channel_told() {
    let env = TestEnv::new();
    // A day's timeout: only an immediate denial lets this test end.
    let s = start_with(&env, |st| st.claude.approval_timeout_secs = 86_400).await;
    s.server.refuse_next_prompts(1);
    s.server.say(ALPHA, ALICE, "TOOL:touch refused.txt");
    let note = s
        .server
        .answer_where(ALPHA, "the channel told", |t| {
            t.contains("could not be shown here")
        })
        .await;
    assert!(note.contains("denied"), "{note}");
    let reply = s
        .server
        .answer_where(ALPHA, "Claude's answer", |t| t.starts_with("tool said"))
        .await;
    assert!(
        reply.contains("could not be shown"),
        "Claude was told why: {reply}"
    );
    assert!(!env.path("proj/refused.txt").exists());
}

#[actix_rt::test]
async fn a_rate_limited_post_is_retried_no_sooner_than_discord_asked_in_proxy_mode() {
    let env = TestEnv::new();
    // The backoff alone would retry after 20 ms.
    let s = start(&env).await;
    s.server.rate_limit_next_posts(&[1.2, 0.3]);
    let id = s.server.say(ALPHA, ALICE, "wait for it");
    s.server
        .wait("the answer", |srv| {
            srv.answer_texts(ALPHA)
                .iter()
                .any(|t| t == "echo: wait for it")
        })
        .await;
    let tries: Vec<_> = s
        .server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.body["nonce"] == format!("{id}-0"))
        .collect();
    assert_eq!(
        tries.iter().map(|r| r.status).collect::<Vec<_>>(),
        [429, 429, 200]
    );
    assert!(tries[1].at - tries[0].at >= std::time::Duration::from_millis(1200));
    assert!(tries[2].at - tries[1].at >= std::time::Duration::from_millis(300));
    assert_eq!(s.server.answer_texts(ALPHA), ["echo: wait for it"]);
}

#[actix_rt::test]
async fn files_claude_writes_to_its_outbox_come_back_as_attachments() {
    let env = TestEnv::new();
    let s = start_with(&env, |st| st.files.max_attachment_bytes = 10_000).await;
    let id = s.server.say(
        ALPHA,
        ALICE,
        "make WRITEFILE:report.md WRITEFILE:big.bin:20000",
    );
    let nonce = format!("{id}-a");
    s.server
        .wait("the files", |srv| {
            srv.posts(ALPHA)
                .iter()
                .any(|r| r.body["nonce"] == nonce.as_str())
        })
        .await;
    let posts = s.server.posts(ALPHA);
    let text = posts
        .iter()
        .find(|r| r.body["nonce"] == format!("{id}-0"))
        .map(content)
        .expect("the answer");
    assert!(text.starts_with("echo: make"), "{text}");
    assert!(
        text.contains("too many or too large") && text.contains("big.bin"),
        "{text}"
    );
    let files = &posts
        .iter()
        .find(|r| r.body["nonce"] == nonce.as_str())
        .expect("files")
        .files;
    assert_eq!(files.len(), 1, "big.bin is listed, not attached");
    assert_eq!(files[0].1, "report.md");
    assert_eq!(files[0].2, b"written by the stand-in: report.md\n");
    // The CLI was told where, and the delivered copy is gone from disk.
    let start = env.starts().pop().expect("a start");
    let outbox = start["env"]["CLAUDE_COORDINATOR_OUTBOX"]
        .as_str()
        .expect("the outbox in the CLI's environment")
        .to_string();
    assert!(
        outbox.ends_with(&format!(".claude-coordinator/outbox/{ALPHA}")),
        "{outbox}"
    );
    let argv = support::argv_of(&start);
    let line = argv
        .iter()
        .position(|a| a == "--append-system-prompt")
        .and_then(|i| argv.get(i + 1))
        .expect("--append-system-prompt");
    assert!(
        line.contains("CLAUDE_COORDINATOR_OUTBOX") && line.contains(&outbox),
        "{line}"
    );
    // Both were moved out of the outbox into sent/, kept there until files.retention_days.
    let sent = env.path(&format!("proj/.claude-coordinator/sent/{id}"));
    assert!(sent.join("report.md").exists() && sent.join("big.bin").exists());
    assert_eq!(
        std::fs::read_dir(env.path(&format!("proj/.claude-coordinator/outbox/{ALPHA}")))
            .expect("the outbox")
            .count(),
        0
    );
}

/// Plants a symbolic link at `link` pointing at `target` (directories made as needed).
fn plant_link(target: &std::path::Path, link: &std::path::Path) {
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

#[actix_rt::test]
async fn a_link_planted_at_any_level_of_the_files_root_is_refused_and_the_user_told() {
    let env = TestEnv::new();
    // Outside every project: what a link could reach (the service's data, the CLI's login).
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(outside.join("token"), "SECRET-TOKEN").expect("write");
    for proj in ["proj", "proj2", "proj3", "proj4"] {
        std::fs::create_dir_all(env.path(proj)).expect("mkdir");
        std::fs::write(env.path(proj).join("main.rs"), "fn main() {}").expect("write");
    }
    // beta: the files root is a link; gamma: an entry of its outbox; delta: `outbox` itself.
    plant_link(&outside, &env.path("proj2/.claude-coordinator"));
    plant_link(
        &outside.join("token"),
        &env.path("proj3/.claude-coordinator/outbox/1003/token.txt"),
    );
    plant_link(&outside, &env.path("proj4/.claude-coordinator/outbox"));
    let s = start_with(&env, |st| {
        let mut delta = st.channel[0].clone();
        delta.profile.id = ChannelId(1004);
        delta.profile.name = "delta".into();
        delta.profile.project_dir = env.path("proj4");
        st.channel.push(delta);
    })
    .await;
    // alpha: Claude replaces its outbox with a link to the project (`ln -s ../..`).
    let asked = [
        (ALPHA, "LINKOUTBOX:../.. WRITEFILE:a.txt"),
        (1002, "WRITEFILE:b.txt"),
        (1003, "WRITEFILE:c.txt"),
        (1004, "WRITEFILE:d.txt"),
    ];
    for (channel, prompt) in asked {
        s.server.say(channel, ALICE, prompt);
    }
    for (channel, _) in asked {
        s.server
            .wait("an answer", |srv| !srv.answers(channel).is_empty())
            .await;
    }
    let text = |channel: u64| s.server.answer_texts(channel).join("\n");
    for channel in [ALPHA, 1002, 1004] {
        let t = text(channel);
        assert!(t.contains("is a symbolic link"), "the user is told: {t}");
    }
    let t = text(1003);
    assert!(
        t.contains("token.txt") && t.contains("left where they are"),
        "{t}"
    );
    // gamma's own file is attached; the link is not read.
    s.server
        .wait("gamma's files", |srv| {
            srv.posts(1003).iter().any(|r| !r.files.is_empty())
        })
        .await;
    let attached: Vec<(String, Vec<u8>)> = s
        .server
        .requests()
        .into_iter()
        .flat_map(|r| r.files)
        .map(|(_, name, bytes)| (name, bytes))
        .collect();
    assert_eq!(attached.len(), 1, "{attached:?}");
    assert_eq!(attached[0].0, "c.txt");
    assert!(!attached.iter().any(|(_, b)| b == b"SECRET-TOKEN"));
    // Nothing outside was written, moved or deleted; no project lost a file.
    let outside_now: Vec<String> = std::fs::read_dir(&outside)
        .expect("outside")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(outside_now, ["token"]);
    assert_eq!(
        std::fs::read_to_string(outside.join("token")).expect("token"),
        "SECRET-TOKEN"
    );
    for proj in ["proj", "proj2", "proj3", "proj4"] {
        assert_eq!(
            std::fs::read_to_string(env.path(proj).join("main.rs")).expect("a project file"),
            "fn main() {}",
            "{proj}"
        );
    }
    // What Claude wrote through its own link stays where it wrote it.
    assert!(env.path("proj/a.txt").exists());
}

#[actix_rt::test]
async fn an_image_reaches_claude_as_an_image_block_and_a_file_lands_in_the_inbox_with_a_safe_name()
{
    let env = TestEnv::new();
    let s = start(&env).await;
    // A PNG header of 64×32 pixels, then its (here meaningless) data.
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x40\0\0\0\x20\x08\x02\0\0\0".to_vec();
    png.resize(72, 7);
    let image = s.server.attachment("pic.png", &png, "image/png", png.len());
    let hostile = s
        .server
        .attachment("../../etc/passwd", b"root:x:0:0\n", "text/plain", 11);
    // Named and typed as an image, but its bytes are not one: saved as a file, and said so.
    let fake = s
        .server
        .attachment("fake.png", b"<script>not a png</script>", "image/png", 26);
    let id = s.server.say_with(ALPHA, ALICE, "look at these", |m| {
        m["attachments"] = serde_json::json!([image, hostile, fake]);
    });
    let answer = s
        .server
        .answer_where(ALPHA, "the answer", |t| t.contains("echo: look at these"))
        .await;
    assert!(
        answer.contains("`fake.png` was not shown to Claude as an image")
            && answer.contains("saved as a file"),
        "{answer}"
    );
    assert!(env
        .path(&format!("proj/.claude-coordinator/inbox/{id}/fake.png"))
        .exists());
    let line = env
        .records()
        .into_iter()
        .rev()
        .find(|r| r["event"] == "user_line")
        .expect("a user line");
    assert_eq!(line["blocks"][0]["type"], "image");
    assert_eq!(line["blocks"][0]["media_type"], "image/png");
    // base64 of 72 bytes.
    assert_eq!(line["blocks"][0]["bytes"], 96);
    assert_eq!(line["blocks"][1]["type"], "text");
    let saved = env.path(&format!("proj/.claude-coordinator/inbox/{id}/passwd"));
    assert_eq!(
        std::fs::read(&saved).expect("saved in the inbox"),
        b"root:x:0:0\n"
    );
    assert!(
        !env.path("etc").exists(),
        "nothing written outside the inbox"
    );
    let prompt = env.prompts().pop().expect("a prompt");
    assert!(
        prompt.contains(&format!(".claude-coordinator/inbox/{id}/passwd (11 bytes)")),
        "{prompt}"
    );
    let ignore = std::fs::read_to_string(env.path("proj/.claude-coordinator/.gitignore"))
        .expect("a .gitignore");
    assert!(ignore.lines().any(|l| l == "*"));
    // An image whose header is fine but the API cannot process: the CLI removes it and Claude
    // answers without it (observed-image-unprocessable.md); the user is told, and the next
    // message goes on in the same session.
    let mut broken = png.clone();
    broken.extend_from_slice(b"BADPIXELS");
    let bad = s
        .server
        .attachment("broken.png", &broken, "image/png", broken.len());
    s.server.say_with(ALPHA, ALICE, "and this one", |m| {
        m["attachments"] = serde_json::json!([bad]);
    });
    let answer = s
        .server
        .answer_where(ALPHA, "the answer without the image", |t| {
            t.contains("echo: and this one")
        })
        .await;
    assert!(
        answer.contains("could not process an image") && answer.contains("answered without it"),
        "{answer}"
    );
    s.server.say(ALPHA, ALICE, "go on");
    s.server
        .answer_where(ALPHA, "the next answer", |t| t == "echo: go on")
        .await;
    // One warm process throughout: the conversation was not restarted.
    assert_eq!(env.starts().len(), 1);
}

#[actix_rt::test]
async fn oversize_foreign_or_broken_files_are_told_and_the_message_still_runs() {
    let env = TestEnv::new();
    let s = start_with(&env, |st| st.files.max_bytes = 1000).await;
    let big = s
        .server
        .attachment("big.zip", b"PK", "application/zip", 30_000_000);
    let short = s
        .server
        .attachment("short.txt", b"only this", "text/plain", 500);
    let foreign = serde_json::json!({"id": "5", "filename": "x.txt", "size": 3,
        "url": "http://evil.example/x.txt", "proxy_url": "http://evil.example/x.txt"});
    s.server.say_with(ALPHA, ALICE, "here", |m| {
        m["attachments"] = serde_json::json!([big, short, foreign]);
    });
    let answer = s
        .server
        .answer_where(ALPHA, "the answer", |t| t.contains("echo: here"))
        .await;
    assert!(
        answer.contains("`big.zip` (30000000 bytes) was not read"),
        "{answer}"
    );
    assert!(
        answer.contains("`short.txt` could not be read: 9 of 500 bytes arrived"),
        "{answer}"
    );
    assert!(
        answer.contains("`x.txt` was not read: it is not on Discord's attachment hosts"),
        "{answer}"
    );
    assert!(
        !s.server
            .requests()
            .iter()
            .any(|r| r.path.contains("big.zip")),
        "an oversize file is not downloaded at all"
    );
}
