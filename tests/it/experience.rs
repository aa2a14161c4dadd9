//! A conversation that feels live, through the real serenity client against the test server:
//! Claude's text streamed into the progress message, its to-do list, a mention when a long
//! turn ends or a prompt waits, *Interrupt and run this now*, `/claude fork`, the terminal
//! hand-off both ways, and the context window (`context`, `compact`).

use serde_json::{json, Value};

use crate::discord::{start_with, Service};
use crate::slash::answered;
use crate::support::discord::{content, highest_marker, DiscordServer, Recorded};
use crate::support::{fake_claude, wait_until, TestEnv};

const ALICE: u64 = 7;
const BOB: u64 = 8;
const MALLORY: u64 = 666;
const ALPHA: u64 = 1001;

/// The service with `alpha` streaming, edits at most every 300 ms.
async fn streaming(
    env: &TestEnv,
    change: impl FnOnce(&mut claude_coordinator::settings::Settings),
) -> Service {
    start_with(env, |st| {
        st.channel[0].profile.stream = true;
        st.discord.stream_edit_ms = 300;
        change(st);
    })
    .await
}

/// The progress message of the run answering `id`, once it has collapsed to its summary.
async fn summarized(server: &DiscordServer, id: u64) -> Vec<Recorded> {
    server
        .wait("the summary", |srv| {
            progress_of(srv, id)
                .last()
                .is_some_and(|r| content(r).starts_with("Done —"))
        })
        .await;
    progress_of(server, id)
}

/// The progress message of the run answering `id`: its post, then its edits, in order.
fn progress_of(server: &DiscordServer, id: u64) -> Vec<Recorded> {
    let posted = server
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.body["nonce"] == format!("{id}-p") && r.status == 200);
    let Some(posted) = posted else {
        return Vec::new();
    };
    let mid = DiscordServer::message_of(&posted, ALPHA)["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut all = vec![posted];
    all.extend(
        server
            .requests()
            .into_iter()
            .filter(|r| r.method == "PATCH" && r.path.ends_with(&format!("/messages/{mid}"))),
    );
    all
}

#[actix_rt::test]
async fn text_streams_into_the_progress_message_in_order_and_the_reply_is_posted_once() {
    let env = TestEnv::new();
    let s = streaming(&env, |_| {}).await;
    // Discord's limits, enforced: the edits keep to what the headers allow.
    s.server
        .enforce_rate_limits(5, std::time::Duration::from_secs(5));
    let id = s.server.say(ALPHA, ALICE, "write slowly STREAM:8:250");
    let reply = s
        .server
        .answer_where(ALPHA, "the reply", |t| t.contains("[d8]"))
        .await;
    assert!(
        reply.starts_with("[d1] streamed words for part 1."),
        "{reply}"
    );
    let progress = summarized(&s.server, id).await;
    let shown: Vec<usize> = progress
        .iter()
        .map(|r| highest_marker(&content(r)))
        .collect();
    // The text grew edit by edit, never backwards, in more than one edit.
    let streamed: Vec<usize> = shown.iter().copied().filter(|n| *n > 0).collect();
    assert!(streamed.len() >= 2, "{shown:?}");
    assert!(streamed.windows(2).all(|w| w[0] <= w[1]), "{shown:?}");
    // At most one edit per 300 ms over the ~2 s the text took, plus the post and the summary.
    assert!(
        progress.len() <= 2 + 2_000 / 300 + 2,
        "{} edits",
        progress.len()
    );
    let last = progress.last().expect("summary");
    assert!(
        !content(last).contains("[d"),
        "the summary leaves the text to the reply"
    );
    assert_eq!(last.body["components"], json!([]), "Stop goes");
    assert_eq!(
        s.server.rate_limited(),
        0,
        "no request went past its bucket"
    );
    // Exactly one reply, and no "typing…" after it.
    assert_eq!(s.server.answers(ALPHA).len(), 1);
    let posted_at = s
        .server
        .answers(ALPHA)
        .first()
        .map(|r| r.at)
        .expect("reply");
    let typing = format!("/api/v10/channels/{ALPHA}/typing");
    assert!(
        !s.server
            .requests()
            .iter()
            .any(|r| r.path == typing && r.at > posted_at),
        "typing after the reply"
    );
}

#[actix_rt::test]
async fn a_429_on_an_edit_waits_and_sends_only_the_latest_text() {
    let env = TestEnv::new();
    let s = streaming(&env, |_| {}).await;
    // The first edit is refused for 1.5 s; several deltas arrive meanwhile.
    s.server.rate_limit_next_edits(&[1.5]);
    let id = s.server.say(ALPHA, ALICE, "write slowly STREAM:24:200");
    s.server
        .answer_where(ALPHA, "the reply", |t| t.contains("[d24]"))
        .await;
    let progress = summarized(&s.server, id).await;
    let refused = progress
        .iter()
        .position(|r| r.status == 429)
        .expect("an edit was refused");
    let (before, after) = (&progress[refused], &progress[refused + 1]);
    assert!(
        after.at.duration_since(before.at) >= std::time::Duration::from_millis(1_400),
        "the next edit waited the retry_after"
    );
    // Coalesced: the text shown next is the latest, not the refused edit sent again.
    assert!(
        highest_marker(&content(after)) > highest_marker(&content(before)),
        "{:?} then {:?}",
        content(before),
        content(after)
    );
    assert_eq!(
        progress.iter().filter(|r| r.status == 429).count(),
        1,
        "one refusal, nothing queued behind it"
    );
    assert_eq!(s.server.answers(ALPHA).len(), 1);
}

#[actix_rt::test]
async fn claudes_todo_list_is_shown_and_updated() {
    let env = TestEnv::new();
    // Each state of the list lasts longer than the edits' pace (a second, with no text yet).
    let s = streaming(&env, |st| {
        st.claude
            .env
            .insert("FAKE_CLAUDE_TODO_GAP_MS".into(), "1300".into());
    })
    .await;
    let id = s.server.say(ALPHA, ALICE, "TODO");
    s.server
        .answer_where(ALPHA, "the reply", |t| {
            t == "echo: TODO" || t == "the list is kept"
        })
        .await;
    let texts: Vec<String> = summarized(&s.server, id)
        .await
        .iter()
        .map(content)
        .collect();
    assert!(
        texts.iter().any(|t| t.contains("🔄 Run the tests")),
        "in progress shown: {texts:#?}"
    );
    let last = texts.last().expect("summary");
    assert!(
        last.contains("✅ Run the tests") && last.contains("⬜ Fix the bug"),
        "{last}"
    );
    // The to-do tools themselves are not shown as steps.
    assert!(
        !texts.iter().any(|t| t.contains("TaskCreate")),
        "{texts:#?}"
    );
}

#[actix_rt::test]
async fn a_long_turn_and_a_waiting_prompt_mention_only_the_asker() {
    let env = TestEnv::new();
    let s = start_with(&env, |st| {
        st.discord.notify_after_secs = 1;
        st.claude
            .env
            .insert("FAKE_CLAUDE_SLOW_MS".into(), "1500".into());
        st.access.allowed_users.push(actors::ids::UserId(BOB));
    })
    .await;
    s.server.say(ALPHA, ALICE, "quick");
    s.server
        .answer_where(ALPHA, "the quick reply", |t| t == "echo: quick")
        .await;
    s.server.say(ALPHA, BOB, "take your time SLOW");
    s.server
        .wait("the mention", |srv| {
            srv.posts(ALPHA)
                .iter()
                .any(|r| content(r).starts_with(&format!("<@{BOB}> done")))
        })
        .await;
    let pings: Vec<Recorded> = s
        .server
        .posts(ALPHA)
        .into_iter()
        .filter(|r| {
            r.body["allowed_mentions"]["users"]
                .as_array()
                .is_some_and(|u| !u.is_empty())
        })
        .collect();
    assert_eq!(pings.len(), 1, "one mention, for the long turn only");
    assert_eq!(
        pings[0].body["allowed_mentions"]["users"],
        json!([BOB.to_string()])
    );
    assert_eq!(pings[0].body["allowed_mentions"]["parse"], json!([]));
    // Replies themselves ping nobody, and follow their message.
    for r in s.server.answers(ALPHA) {
        assert_ne!(r.body["allowed_mentions"]["replied_user"], json!(true));
    }
    // A permission prompt waits for someone: the asker, who may answer it.
    prompt_mentions_only(&env, &s.server, ALICE, ALICE).await;
}

/// `author` asks for a tool that needs permission; the prompt ends with a mention of
/// `mentioned`, the only user it may notify.
async fn prompt_mentions_only(env: &TestEnv, server: &DiscordServer, author: u64, mentioned: u64) {
    let file = env.path("proj/touched");
    server.say(ALPHA, author, &format!("TOOL:touch {}", file.display()));
    let prompt = server
        .post_where(ALPHA, "the prompt", |r| {
            content(r).contains("Claude wants to use")
        })
        .await;
    assert!(
        content(&prompt).ends_with(&format!("\n<@{mentioned}>")),
        "{}",
        content(&prompt)
    );
    assert_eq!(
        prompt.body["allowed_mentions"]["users"],
        json!([mentioned.to_string()])
    );
}

#[actix_rt::test]
async fn a_prompt_the_asker_may_not_answer_mentions_the_approvers() {
    let env = TestEnv::new();
    let s = start_with(&env, |st| {
        st.access.allowed_users.push(actors::ids::UserId(BOB));
        st.access.approvers = Some(vec![actors::ids::UserId(ALICE)]);
    })
    .await;
    // Bob may not approve: the approver is asked.
    prompt_mentions_only(&env, &s.server, BOB, ALICE).await;
}

/// The "queued" notice of message `id`, once posted.
async fn queued_notice(server: &DiscordServer, id: u64) -> Recorded {
    let nonce = format!("{id}-q");
    server
        .wait("the queued notice", |srv| {
            srv.requests()
                .iter()
                .any(|r| r.body["nonce"] == nonce.as_str())
        })
        .await;
    server
        .requests()
        .into_iter()
        .find(|r| r.body["nonce"] == nonce.as_str())
        .expect("notice")
}

#[actix_rt::test]
async fn a_queued_message_runs_now_from_its_notices_button() {
    let env = TestEnv::new();
    let s = start_with(&env, |st| {
        st.claude
            .env
            .insert("FAKE_CLAUDE_SLOW_MS".into(), "60000".into());
        st.access.allowed_users.push(actors::ids::UserId(BOB));
        st.access.approvers = Some(vec![actors::ids::UserId(ALICE)]);
    })
    .await;
    s.server.say(ALPHA, ALICE, "a long job SLOW");
    wait_until(|| !env.prompts().is_empty(), "the first turn").await;
    let second = s.server.say(ALPHA, BOB, "more urgent");
    let notice = queued_notice(&s.server, second).await;
    assert!(
        content(&notice).starts_with("⏳ Queued (position 1)"),
        "{}",
        content(&notice)
    );
    let button = notice.body["components"][0]["components"][0].clone();
    assert_eq!(button["label"], "Interrupt and run this now");
    assert_eq!(button["custom_id"], format!("cc:now:{ALPHA}:{second}"));
    let message = DiscordServer::message_of(&notice, ALPHA);
    let custom = button["custom_id"].as_str().expect("id").to_string();
    // Neither its author nor an approver: told privately, nothing changes.
    let token = s.server.click(ALPHA, &message, &custom, MALLORY);
    assert_eq!(
        s.server.callback(&token).await.body["data"]["flags"],
        json!(64)
    );
    // Its author may.
    s.server.click(ALPHA, &message, &custom, BOB);
    let interrupted = s
        .server
        .answer_where(ALPHA, "the interrupted reply", |t| {
            t.contains("Interrupted")
        })
        .await;
    assert!(
        interrupted.contains("a newer message runs now"),
        "{interrupted}"
    );
    s.server
        .answer_where(ALPHA, "the urgent reply", |t| t == "echo: more urgent")
        .await;
    let texts = s.server.answer_texts(ALPHA);
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert_eq!(env.prompts(), ["a long job SLOW", "more urgent"]);
    // The notice lost its button.
    let mid = message["id"].as_str().expect("id").to_string();
    s.server
        .wait("the notice closed", |srv| {
            srv.requests().iter().any(|r| {
                r.method == "PATCH" && r.path.ends_with(&mid) && r.body["components"] == json!([])
            })
        })
        .await;
}

#[actix_rt::test]
async fn with_while_busy_interrupt_a_new_message_interrupts_the_turn_in_flight() {
    let env = TestEnv::new();
    let s = start_with(&env, |st| {
        st.channel[0].profile.while_busy = actors::conversation::WhileBusy::Interrupt;
        st.claude
            .env
            .insert("FAKE_CLAUDE_SLOW_MS".into(), "60000".into());
    })
    .await;
    s.server.say(ALPHA, ALICE, "a long job SLOW");
    wait_until(|| !env.prompts().is_empty(), "the first turn").await;
    s.server.say(ALPHA, ALICE, "never mind, this instead");
    s.server
        .answer_where(ALPHA, "the new reply", |t| {
            t == "echo: never mind, this instead"
        })
        .await;
    let texts = s.server.answer_texts(ALPHA);
    assert!(texts[0].contains("Interrupted"), "{texts:?}");
    assert_eq!(texts.len(), 2);
}

#[actix_rt::test]
async fn a_fork_remembers_what_the_parent_said_and_leaves_the_parent_unchanged() {
    let env = TestEnv::new();
    let s = start_with(&env, |_| {}).await;
    s.server.say(ALPHA, ALICE, "remember PELICAN");
    s.server
        .answer_where(ALPHA, "the first reply", |t| t == "echo: remember PELICAN")
        .await;
    let token = s.server.command(
        ALPHA,
        ALICE,
        "fork",
        &json!([{"type": 3, "name": "name", "value": "side quest"}]),
    );
    let (callback, text) = answered(&s.server, &token).await;
    assert_eq!(callback.body["type"], 5, "deferred");
    assert!(text.starts_with("Forked into <#"), "{text}");
    let made = s
        .server
        .requests()
        .into_iter()
        .find(|r| r.path == format!("/api/v10/channels/{ALPHA}/threads"))
        .expect("the thread was made");
    assert_eq!(made.body["name"], "side quest");
    let thread: u64 = text
        .trim_start_matches("Forked into <#")
        .split('>')
        .next()
        .and_then(|t| t.parse().ok())
        .expect("thread id");
    // The thread starts from the parent's conversation…
    s.server.say(thread, ALICE, "in the fork HISTORY");
    let forked = s
        .server
        .answer_where(thread, "the fork's reply", |t| t.starts_with("history:"))
        .await;
    assert_eq!(forked, "history: remember PELICAN");
    // …and the parent knows nothing of the fork's turn.
    s.server.say(ALPHA, ALICE, "back home HISTORY");
    let parent = s
        .server
        .answer_where(ALPHA, "the parent's reply", |t| t.starts_with("history:"))
        .await;
    assert_eq!(parent, "history: remember PELICAN");
    let sessions = |id: u64| {
        let store = s.app.store().clone();
        async move {
            store
                .send(actors::store::LoadConversation {
                    id: actors::ids::ConversationId(id),
                })
                .await
                .expect("mailbox")
                .expect("load")
                .and_then(|c| c.session_id)
        }
    };
    let (a, b) = (sessions(ALPHA).await, sessions(thread).await);
    assert!(a.is_some() && b.is_some() && a != b, "{a:?} {b:?}");
    // The fork was made with --fork-session from the parent's session.
    let fork_start = env
        .starts()
        .into_iter()
        .find(|r| {
            crate::support::argv_of(r)
                .iter()
                .any(|a| a == "--fork-session")
        })
        .expect("a fork");
    assert!(crate::support::argv_of(&fork_start).contains(a.as_ref().expect("parent")));
}

#[actix_rt::test]
async fn handoff_gives_a_command_that_resumes_here_and_a_terminal_session_can_come_back() {
    let env = TestEnv::new();
    let s = start_with(&env, |st| {
        st.access.allowed_users.push(actors::ids::UserId(BOB));
        st.access.approvers = Some(vec![actors::ids::UserId(ALICE)]);
    })
    .await;
    s.server.say(ALPHA, ALICE, "said in chat");
    s.server
        .answer_where(ALPHA, "the reply", |t| t == "echo: said in chat")
        .await;
    let token = s.server.command(ALPHA, ALICE, "handoff", &json!([]));
    let (callback, text) = answered(&s.server, &token).await;
    assert_eq!(callback.body["data"]["flags"], json!(64), "private");
    let command = text
        .lines()
        .find(|l| l.starts_with("cd "))
        .expect("the command")
        .to_string();
    assert!(command.contains(" && claude --resume "), "{command}");
    // Run it, as a person would in a terminal (the stand-in is `claude` here).
    let run = |cmd: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{cmd} -p HISTORY --output-format json"))
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    fake_claude().parent().expect("dir").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("HOME", env.path("home"))
            .output()
            .expect("sh");
        serde_json::from_slice::<Value>(&out.stdout).expect("json result")
    };
    let resumed = run(&command);
    assert_eq!(resumed["result"], "history: said in chat");
    // A session started in the terminal in the channel's directory, taken on by an approver.
    let fresh = run(&format!("cd '{}' && claude", env.path("proj").display()));
    let id = fresh["session_id"].as_str().expect("session").to_string();
    let token = s.server.command(
        ALPHA,
        BOB,
        "resume",
        &json!([{"type": 3, "name": "id", "value": id}]),
    );
    let (_, refused) = answered(&s.server, &token).await;
    assert!(
        refused.contains("is not one of this conversation's sessions"),
        "{refused}"
    );
    let token = s.server.command(
        ALPHA,
        ALICE,
        "resume",
        &json!([{"type": 3, "name": "id", "value": id}]),
    );
    let (_, taken) = answered(&s.server, &token).await;
    assert!(taken.contains("taken on from the terminal"), "{taken}");
    s.server.say(ALPHA, ALICE, "continue HISTORY");
    let history = s
        .server
        .answer_where(ALPHA, "the adopted session's reply", |t| {
            t.starts_with("history:") && t.contains("HISTORY")
        })
        .await;
    assert_eq!(history, "history: HISTORY");
}

#[actix_rt::test]
async fn context_is_shown_and_compaction_runs_as_a_turn() {
    let env = TestEnv::new();
    let s = start_with(&env, |_| {}).await;
    let token = s.server.command(ALPHA, ALICE, "context", &json!([]));
    let (_, none) = answered(&s.server, &token).await;
    assert_eq!(none, "No Claude session here yet.");
    s.server.say(ALPHA, ALICE, "hello");
    s.server
        .answer_where(ALPHA, "the reply", |t| t == "echo: hello")
        .await;
    let token = s.server.command(ALPHA, ALICE, "context", &json!([]));
    let (_, full) = answered(&s.server, &token).await;
    assert!(
        full.starts_with("Context: 12,527 of 1,000,000 tokens (1%)"),
        "{full}"
    );
    s.server.say(ALPHA, ALICE, "!compact");
    let compacted = s
        .server
        .answer_where(ALPHA, "the compaction", |t| t.starts_with("Compacted"))
        .await;
    assert_eq!(
        compacted,
        "Compacted the conversation: 12527 → 2587 tokens in the context."
    );
    assert!(
        env.prompts().iter().any(|p| p == "/compact"),
        "{:?}",
        env.prompts()
    );
    s.server.say(ALPHA, ALICE, "!context");
    let after = s
        .server
        .answer_where(ALPHA, "the context after", |t| {
            t.starts_with("Context: 2,587")
        })
        .await;
    assert!(after.contains("of 1,000,000"), "{after}");
}
